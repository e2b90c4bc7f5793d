"""``FaultProxy`` against a real HTTP upstream: every mode, new and open connections, stop."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from harness.errors import HarnessInputError
from harness.faults import Cut, Drop, FaultProxy, Mode, Pass, parse_mode
from tests.faults.conftest import CLOSE, GET_CLOSE, GET_KEEP, KEEP, HttpUpstream
from tests.support import free_port

TEST_TIMEOUT_S = 30.0


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; the generous cap only turns a hang into a failure."""

    async def capped() -> None:
        await asyncio.wait_for(test(), TEST_TIMEOUT_S)

    asyncio.run(capped())


async def proxied(
    upstream_port: int, mode: Mode | str = "pass", seed: int | None = None
) -> FaultProxy:
    proxy = FaultProxy("127.0.0.1", upstream_port, seed=seed)
    proxy.set_mode(mode)
    await proxy.start()
    return proxy


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def exchange(port: int, request: bytes = GET_CLOSE) -> bytes:
    """One request on a fresh connection, everything read up to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_to_eof(reader)
    finally:
        writer.close()


async def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- new connections, one mode each -------------------------------------------------


def test_pass_forwards_both_ways_and_counts(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        try:
            assert await exchange(proxy.port) == CLOSE
            await wait_until(lambda: proxy.stats.open == 0, "the connection to close")
            stats = proxy.stats
            assert (stats.accepted, stats.affected, stats.resets) == (1, 0, 0)
            assert (stats.bytes_up, stats.bytes_down) == (len(GET_CLOSE), len(CLOSE))
            assert proxy.address == f"127.0.0.1:{proxy.port}"
        finally:
            await proxy.stop()

    run(body)


def test_cut_delivers_exactly_that_many_bytes_then_eof(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "cut:100")
        try:
            got = await exchange(proxy.port)
            assert got == CLOSE[:100]
            assert proxy.stats.affected == 1 and proxy.stats.bytes_down == 100
        finally:
            await proxy.stop()

    run(body)


def test_delay_adds_at_least_the_delay(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "delay:200ms")
        try:
            started = time.monotonic()
            assert await exchange(proxy.port) == CLOSE
            assert time.monotonic() - started >= 0.18
        finally:
            await proxy.stop()

    run(body)


def test_slowclose_keeps_the_client_open_after_the_body(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "slowclose:300ms")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(GET_CLOSE)
            got = await reader.readexactly(len(CLOSE))
            body_done = time.monotonic()
            assert got == CLOSE
            assert await reader.read() == b""  # EOF, but only after the wait
            assert time.monotonic() - body_done >= 0.28
            writer.close()
        finally:
            await proxy.stop()

    run(body)


def test_reset_gives_the_client_connection_reset(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "reset")
        try:
            with pytest.raises(ConnectionResetError):
                await exchange(proxy.port)
            assert http_upstream.accepted == 0
            assert proxy.stats.resets == 1 and proxy.stats.affected == 1
        finally:
            await proxy.stop()

    run(body)


def test_drop_closes_with_eof_and_never_reaches_upstream(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "drop")
        try:
            assert await exchange(proxy.port) == b""
            assert http_upstream.accepted == 0
            assert proxy.stats.resets == 0 and proxy.stats.affected == 1
        finally:
            await proxy.stop()

    run(body)


def test_blackhole_never_answers_never_closes(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "blackhole")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(GET_KEEP)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            assert http_upstream.accepted == 0 and proxy.stats.open == 1
            # Leaving the blackhole closes a connection that has no upstream to resume.
            proxy.set_mode("pass")
            assert await asyncio.wait_for(read_to_eof(reader), 5) == b""
            writer.close()
        finally:
            await proxy.stop()

    run(body)


def test_share_affects_some_but_not_all_and_is_seeded(http_upstream: HttpUpstream) -> None:
    async def pattern(seed: int) -> list[bool]:
        proxy = await proxied(http_upstream.port, "reset@0.5", seed=seed)
        hits = []
        try:
            for _ in range(40):
                try:
                    hits.append(await exchange(proxy.port) != CLOSE)
                except ConnectionResetError:
                    hits.append(True)
            assert proxy.stats.resets == sum(hits) == proxy.stats.affected
        finally:
            await proxy.stop()
        return hits

    async def body() -> None:
        first = await pattern(7)
        assert 0 < sum(first) < 40
        assert await pattern(7) == first

    run(body)


def test_upstream_refusing_closes_the_client_and_the_proxy_goes_on() -> None:
    async def body() -> None:
        proxy = await proxied(free_port())  # nothing listens there
        try:
            assert await exchange(proxy.port) == b""
            assert await exchange(proxy.port) == b""
            assert proxy.stats.upstream_errors == 2 and proxy.stats.accepted == 2
        finally:
            await proxy.stop()

    run(body)


# -- open connections when the mode changes ----------------------------------------


async def open_keepalive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A kept-alive connection through the proxy that has had one full answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET_KEEP)
    assert await reader.readexactly(len(KEEP)) == KEEP
    return reader, writer


@pytest.mark.parametrize(
    ("mode", "expect"),
    [("drop", b""), ("reset", ConnectionResetError)],
)
def test_drop_and_reset_close_open_connections(
    http_upstream: HttpUpstream, mode: str, expect: bytes | type[Exception]
) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        try:
            reader, writer = await open_keepalive(proxy.port)
            proxy.set_mode(mode)
            if isinstance(expect, bytes):
                assert await asyncio.wait_for(read_to_eof(reader), 5) == expect
            else:
                with pytest.raises(expect):
                    await asyncio.wait_for(read_to_eof(reader), 5)
            writer.close()
            await wait_until(lambda: proxy.stats.open == 0, "the link to go")
            proxy.set_mode("pass")
            assert await exchange(proxy.port) == CLOSE  # a new connection works again
        finally:
            await proxy.stop()

    run(body)


def test_blackhole_stops_forwarding_on_open_connections(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        try:
            reader, writer = await open_keepalive(proxy.port)
            proxy.set_mode("blackhole")
            writer.write(GET_KEEP)  # swallowed
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            proxy.set_mode(
                "pass"
            )  # it had an upstream: forwarding resumes, the lost bytes stay lost
            writer.write(GET_KEEP)
            assert await asyncio.wait_for(reader.readexactly(len(KEEP)), 5) == KEEP
            writer.close()
        finally:
            await proxy.stop()

    run(body)


def test_cut_on_an_open_connection_counts_from_the_switch(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        try:
            reader, writer = await open_keepalive(proxy.port)
            proxy.set_mode(Cut(10))
            writer.write(GET_KEEP)
            assert await asyncio.wait_for(read_to_eof(reader), 5) == KEEP[:10]
            writer.close()
        finally:
            await proxy.stop()

    run(body)


def test_client_reset_mid_answer_leaves_the_proxy_serving(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port, "delay:50ms")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(GET_KEEP)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # the client vanishes with RST before the answer
            await wait_until(lambda: proxy.stats.open == 0, "the link to go")
            proxy.set_mode("pass")
            assert await exchange(proxy.port) == CLOSE
        finally:
            await proxy.stop()

    run(body)


# -- schedule and stop ----------------------------------------------------------------


class RecordingProxy(FaultProxy):
    """A real proxy that also notes when each mode took effect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changes: list[tuple[float, Mode]] = []

    def set_mode(self, mode: Mode | str) -> None:
        super().set_mode(mode)
        self.changes.append((time.monotonic(), self.mode))


def test_schedule_applies_steps_in_order_not_early(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = RecordingProxy("127.0.0.1", http_upstream.port)
        await proxy.start()
        try:
            started = time.monotonic()
            await proxy.run_schedule([(0.0, Drop()), (0.15, parse_mode("cut:10")), (0.3, Pass())])
            assert [mode for _, mode in proxy.changes] == [Drop(), Cut(10), Pass()]
            offsets = [at - started for at, _ in proxy.changes]
            assert offsets[1] >= 0.14 and offsets[2] >= 0.29
            assert await exchange(proxy.port) == CLOSE  # the last step holds
        finally:
            await proxy.stop()

    run(body)


def test_schedule_refuses_a_negative_offset(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        try:
            with pytest.raises(HarnessInputError, match="offset"):
                await proxy.run_schedule([(0.0, Drop()), (-1.0, Pass())])
            assert proxy.mode == Pass()  # refused as a whole, before any step
        finally:
            await proxy.stop()

    run(body)


def test_stop_closes_every_connection_and_the_listener(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = await proxied(http_upstream.port)
        port = proxy.port
        kept = await open_keepalive(port)
        proxy.set_mode("delay:10s")
        mid = await asyncio.open_connection("127.0.0.1", port)
        mid[1].write(GET_KEEP)  # stuck in a 10 s delay
        proxy.set_mode("blackhole")
        held = await asyncio.open_connection("127.0.0.1", port)
        held[1].write(GET_KEEP)
        await wait_until(lambda: proxy.stats.open == 3, "three links")
        await proxy.stop()
        for reader, writer in (kept, mid, held):
            assert await asyncio.wait_for(read_to_eof(reader), 5) == b""
            writer.close()
        assert proxy.stats.open == 0
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    run(body)


def test_a_taken_port_is_one_input_error() -> None:
    async def body() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            proxy = FaultProxy("127.0.0.1", 1, port=taken.getsockname()[1])
            with pytest.raises(HarnessInputError, match="cannot listen"):
                await proxy.start()

    run(body)


def test_bad_mode_text_is_refused_and_the_mode_kept() -> None:
    proxy = FaultProxy("127.0.0.1", 1)
    proxy.set_mode("drop")
    with pytest.raises(HarnessInputError):
        proxy.set_mode("explode")
    assert proxy.mode == Drop()
