"""What the client tests' stand-ins for a sidecar share: reading one HTTP message, and a
loopback listener that hands each connection to a thread of its own."""

from __future__ import annotations

import socket
import threading
from typing import BinaryIO


def read_message(stream: BinaryIO) -> bytes | None:
    """One HTTP message with a Content-Length body, as bytes; None at EOF."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            return None
        head += line
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + stream.read(length)


class LoopbackServer:
    """Listens on a free loopback port and calls `handle` with each accepted connection,
    in a daemon thread per connection; `connections` counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
