"""Optional protection of the HTTP pages: TLS and basic auth, as Prometheus exporters do it.

Modelled on the Prometheus ``web.config.yml`` convention (certificate and key files, users
with bcrypt password hashes), but read from otel-claude's own TOML config::

    [web]
    tls_cert_file = "/etc/otel-claude/tls.crt"
    tls_key_file = "/etc/otel-claude/tls.key"
    [web.basic_auth_users]
    prometheus = "$2b$12$..."   # htpasswd -nBC 12 prometheus | cut -d: -f2

With users configured every page except ``/healthz`` needs basic auth (``/v1/events`` keeps
its bearer token). A successful check is remembered by a digest of the header, so bcrypt's
deliberate slowness is paid once per credential, not on every scrape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from otel_claude.errors import OtelClaudeError


@dataclass
class WebSecurity:
    """TLS context and basic-auth users for the exporter's HTTP server."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    _accepted: set[bytes] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        """Whether basic auth is required."""
        return bool(self.users)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context (TLS 1.2+) when a certificate is configured."""
        if self.tls_cert_file is None:
            if self.tls_key_file is not None:
                raise OtelClaudeError("web.tls_key_file is set without web.tls_cert_file")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise OtelClaudeError(
                f"web.tls_cert_file: cannot load the certificate and key: {exc}"
            ) from None
        return context

    def authorized(self, header: str | None) -> bool:
        """Check an ``Authorization: Basic …`` header against the configured users."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        digest = hashlib.sha256(header.encode()).digest()
        with self._lock:
            if digest in self._accepted:
                return True
        try:
            user, sep, password = (
                base64.b64decode(header[6:], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            # Spend comparable time for unknown users, so names cannot be probed by timing.
            bcrypt.checkpw(b"x", _DUMMY)
            return False
        if not bcrypt.checkpw(password.encode(), hashed.encode()):
            return False
        with self._lock:
            if len(self._accepted) > 1000:
                self._accepted.clear()
            self._accepted.add(digest)
        return True


_DUMMY = bcrypt.hashpw(b"otel-claude", bcrypt.gensalt(rounds=4))
