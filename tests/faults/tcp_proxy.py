"""A TCP proxy a test can cut: the database "goes away" for the hub, for everyone else not.

Why a proxy rather than stopping PostgreSQL: the server is shared with the other tests
running in parallel. The hub under test connects through this proxy; :meth:`outage`
closes every open connection and refuses new ones for a while, as a database restart or a
network partition would, then lets connections through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``upstream``; :meth:`outage` cuts it for a while."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._stopped = False
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def outage(self, seconds: float) -> None:
        """Close every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            doomed, self._open = self._open, set()
        for sock in doomed:
            _close(sock)

    def stop(self) -> None:
        self._stopped = True
        self.outage(0)
        _close(self._listener)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
