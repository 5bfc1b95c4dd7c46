"""uvicorn's HTTP protocols with one send per answer: a response's head goes out with its first body part.

uvicorn writes an answer's status line and headers, then its body, as two transport writes; on a TCP socket with
Nagle's algorithm off (asyncio's default) that is two send() calls and two segments, and the client wakes for
each. Here the head waits, within the same turn of the event loop, for the first body part and leaves with it:
one send() per single-part answer (py-spy under wrk: the two sends were the event loop's largest single cost per
/sentiment request; bench/peers.py). A head that no body part follows in the same turn (a stream whose first event
is still coming) is sent at the end of the turn, on its own, as before.

`python -m app` passes these classes to uvicorn (its `http` option takes a protocol class).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD = b"HTTP/"  # what a response head starts with; nothing else uvicorn writes does


class HeadWithBody:
    """A transport that holds a response head until the next write, or the end of the loop's turn, and sends
    both as one. Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop = asyncio.get_running_loop()  # the connection's, looked up once rather than per answer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif bytes(data[: len(HEAD)]) == HEAD:
            self._head = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpTools(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]


class H11(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]


def protocol(http: str) -> type[asyncio.Protocol]:
    """The protocol class for RNN_HTTP (auto: httptools when it is installed, as uvicorn chooses)."""
    if http == "h11":
        return H11
    if http == "httptools":
        return HttpTools
    try:
        import httptools  # noqa: F401
    except ImportError:
        return H11
    return HttpTools
