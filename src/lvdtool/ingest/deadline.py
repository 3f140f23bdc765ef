"""A watchdog that enforces a hard wall-clock deadline on sockets.

Socket timeouts bound each single read, not a whole request: a server that sends one byte every
second (headers or body) keeps a worker busy forever. The watchdog shuts a socket down when its
deadline passes, which wakes any thread blocked on it (connect excepted, which has its own timeout).

It holds a duplicate of each socket's descriptor, so closing the original (http.client does this
itself once a body is read) never lets the number be reused by another connection while a
deadline for it is still pending.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class SocketWatchdog:
    """Thread-safe; one daemon thread serves every socket of a Fetcher."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, socket.socket] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, sock: socket.socket, deadline: float) -> int:
        """Shut `sock` down at time.monotonic() == deadline unless disarmed first; returns a token."""
        duplicate = sock.dup()
        with self._cond:
            if self._closed:
                duplicate.close()
                raise RuntimeError("socket watchdog is closed")
            token = next(self._tokens)
            self._armed[token] = duplicate
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lvd-socket-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            duplicate = self._armed.pop(token, None)
        if duplicate is not None:
            duplicate.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            armed, self._armed = list(self._armed.values()), {}
            self._cond.notify()
        for duplicate in armed:
            duplicate.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, token = heapq.heappop(self._heap)
                    duplicate = self._armed.pop(token, None)  # None: disarmed already
                    if duplicate is not None:
                        _shutdown(duplicate)
                # Disarmed entries stay in the heap until their deadline; that is bounded by
                # requests per second times the deadline, so no sweeping is needed.
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)


def _shutdown(duplicate: socket.socket) -> None:
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already closed by the peer
    finally:
        duplicate.close()
