"""A TCP proxy on loopback whose outages are real: :meth:`TcpProxy.stop` closes its listening
socket and resets every live connection, so clients see what they see when an object store's
endpoint goes away (connection refused, connection reset); :meth:`TcpProxy.start` listens again
on the same port, as an endpoint that comes back.

Plain threads and sockets: the clients under test (botocore, aiohttp) run their own event loops
in other threads or processes, and the proxy must not share one with them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` while started."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = 0  # chosen by the first start, kept by later ones
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._ended: dict[frozenset[socket.socket], list[socket.socket]] = {}
        #: connections accepted so far (a test can tell its clients really went through it)
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # the port of the last start is in TIME_WAIT after the resets: take it back at once
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Refuse new connections and reset the live ones (RST, not a polite FIN: a client in the
        middle of a request must see it fail, not a short response)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not on Linux
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _reset(conn)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # stopped
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    _reset(client)
                    _reset(upstream)
                    return
                self._conns |= {client, upstream}
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), name="tcp-proxy-pump", daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:  # reset by stop() or by a peer
            pass
        # this direction is over: pass the close on, so the other direction's pump ends too;
        # the second pump to end closes both sockets
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with self._lock:
            ended = self._ended.setdefault(frozenset((src, dst)), [])
            ended.append(src)
            last = len(ended) == 2
            if last:
                del self._ended[frozenset((src, dst))]
                self._conns -= {src, dst}
        if last:
            src.close()
            dst.close()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER on, zero timeout). ``shutdown(SHUT_RD)`` first
    wakes a pump blocked in ``recv`` on it (a plain close from another thread would not) and
    sends nothing to the peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()
