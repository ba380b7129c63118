"""Polling ``/readyz`` as lightly as possible: the poller shares the cores it measures."""

from __future__ import annotations

import socket


class ReadyProbe:
    """``GET /readyz`` over one keep-alive connection, written and read on a raw socket.

    The poller shares the machine with the exporter it times: httpx spends about 0.4 ms of
    CPU per request (30 ms over a cold start polled every 10 ms), a raw request a tenth of
    that. Any failure (not listening yet, connection closed) reads as "not ready".
    """

    REQUEST = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buffer = b""

    def ready(self) -> bool:
        try:
            if self._sock is None:
                self._sock = socket.create_connection(("127.0.0.1", self._port), timeout=5.0)
                self._buffer = b""
            self._sock.sendall(self.REQUEST)
            while b"\r\n\r\n" not in self._buffer:
                self._fill()
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(self._buffer) < length:
                self._fill()
            self._buffer = self._buffer[length:]
            return head.split(b" ", 2)[1] == b"200"
        except (OSError, ValueError, IndexError):
            self.close()
            return False

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the exporter")
        self._buffer += chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
