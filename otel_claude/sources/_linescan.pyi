"""Types of the optional C module built from ``_linescan.c``."""

def classify_lines(
    data: bytes, max_line: int, /
) -> tuple[int, int, int, list[tuple[int, int, int]]]: ...
