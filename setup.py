"""Build hook for the one optional C extension; everything else is in pyproject.toml.

``otel_claude.sources._linescan`` speeds up transcript scans. ``optional=True``: without a
C compiler or the Python headers the build goes on and the package uses the pure-Python
twin (``transcripts.classify_lines``), with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "otel_claude.sources._linescan",
            sources=["otel_claude/sources/_linescan.c"],
            optional=True,
        )
    ]
)
