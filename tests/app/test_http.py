"""app/http.py: a response's head leaves with its first body part in one write; a head alone leaves at the end of
the loop's turn; closing sends what is held; everything else passes straight through."""

from __future__ import annotations

import asyncio
from typing import Any

from app.http import H11, HeadWithBody, HttpTools, protocol


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def wrapped() -> tuple[HeadWithBody, Recorder]:
    inner = Recorder()
    return HeadWithBody(inner), inner  # type: ignore[arg-type]


def test_a_head_and_its_body_leave_in_one_write() -> None:
    asyncio.run(_test_a_head_and_its_body_leave_in_one_write())


async def _test_a_head_and_its_body_leave_in_one_write() -> None:
    transport, inner = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert inner.writes == []
    transport.write(b"{}")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left
    assert len(inner.writes) == 1


def test_a_head_without_a_body_in_the_same_turn_leaves_at_its_end() -> None:
    asyncio.run(_test_a_head_without_a_body_in_the_same_turn_leaves_at_its_end())


async def _test_a_head_without_a_body_in_the_same_turn_leaves_at_its_end() -> None:
    transport, inner = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    transport.write(b"5\r\nhello\r\n")  # a stream's later parts go straight out
    assert inner.writes[-1] == b"5\r\nhello\r\n"


def test_closing_sends_the_held_head_first_and_the_rest_is_the_transports() -> None:
    asyncio.run(_test_closing_sends_the_held_head_first_and_the_rest_is_the_transports())


async def _test_closing_sends_the_held_head_first_and_the_rest_is_the_transports() -> None:
    transport, inner = wrapped()
    transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
    transport.close()
    assert inner.writes == [b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"] and inner.closed
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)
    await asyncio.sleep(0)
    assert len(inner.writes) == 1


def test_each_http_setting_gets_its_protocol() -> None:
    assert protocol("h11") is H11 and protocol("httptools") is HttpTools and protocol("auto") is HttpTools
