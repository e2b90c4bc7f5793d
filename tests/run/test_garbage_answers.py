"""A server answering garbage: every answer is an outcome with a reason, never an
exception out of a device, and every claim is still accounted for once.

The server is a real TCP server (asyncio streams) that answers each connection with
the next of its broken answers: 500s, non-JSON, the wrong content type, truncated
JSON, a body cut short of its Content-Length, a huge body, bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import pytest

from harness.fleet import parse_fleet
from harness.run import SoakOptions, run_soak_sync
from harness.transport import MAX_ANSWER_BYTES


def _answer(status: str, body: bytes, ctype: str = "application/json", length: int = -1) -> bytes:
    n = len(body) if length < 0 else length
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


ANSWERS = [
    _answer("500 Internal Server Error", b'{"detail": "boom"}'),
    _answer("200 OK", b"hello, not json", "text/plain"),
    _answer("200 OK", b'{"access_token": "x"}', "text/html"),
    _answer("200 OK", b'{"access_token": "eyJ'),  # truncated JSON, length as sent
    _answer("200 OK", b'{"access_token": "eyJ', length=400),  # cut short of its length
    _answer("200 OK", b"{" + b" " * (MAX_ANSWER_BYTES + 10) + b"}"),  # huge
    b"\x00\xffGARBAGE\r\n\r\n",  # not HTTP at all
    _answer("503 Service Unavailable", b"<html>down</html>", "text/html"),
]


@pytest.fixture
def garbage_server() -> Iterator[str]:
    answers = itertools.cycle(ANSWERS)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(next(answers))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def main() -> None:
        server = loop.run_until_complete(asyncio.start_server(client, "127.0.0.1", 0))
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{port[0]}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_garbage_answers_are_outcomes_with_reasons(garbage_server: str) -> None:
    fleet = parse_fleet('[fleet]\nname = "g"\nseed = 3\n\n[[cohorts]]\nname = "a"\ncount = 40\n')
    options = SoakOptions(fleet=fleet, target=garbage_server, claims=160, concurrency=4,
                          timeout=5.0, firmware_time_scale=0.0)  # fmt: skip
    outcome = run_soak_sync(options)  # no exception out of any device
    results = outcome.results
    assert results.sent >= 160 and results.sent == sum(results.by_status.values())
    assert results.by_status["500"] > 0 and results.by_status["503"] > 0
    assert results.by_status["200"] > 0 and results.by_status["connection_error"] > 0
    assert not results.passed
    examples = [ex for c in results.checks.values() for ex in c.examples]
    got = " | ".join(str(ex["got"]) for ex in examples)
    assert "connection error" in got or "500" in got, got
    assert all(ex["got"] and ex["expected"] for ex in examples)  # each says what and why
