"""``ProxyThread`` in front of a real Redis, driven by redis-py from synchronous code."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.errors import HarnessInputError
from harness.faults import Drop, Pass, ProxyThread
from tests.support.services import RedisServer


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[ProxyThread]:
    with ProxyThread(redis_server.host, redis_server.port, seed=1) as running:
        yield running


def client(proxy: ProxyThread, timeout: float = 5.0) -> redis.Redis:
    """No retries, so one faulted command is one visible error."""
    return redis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def test_ping_through_pass_then_drop_reset_and_back(proxy: ProxyThread) -> None:
    r = client(proxy)
    try:
        assert r.ping() is True
        proxy.set_mode("drop")  # the pooled connection is closed under the client
        assert proxy.mode == Drop()
        with pytest.raises(redis.ConnectionError):
            r.ping()
        with pytest.raises(redis.ConnectionError):
            r.ping()  # and a new one is closed at accept
        proxy.set_mode("reset")
        with pytest.raises(redis.ConnectionError):
            r.ping()
        proxy.set_mode(Pass())
        assert r.ping() is True  # a new connection goes through again
        r.set("fault-proxy", "ok")
        assert r.get("fault-proxy") == b"ok"
    finally:
        r.close()
    stats = proxy.stats
    assert stats.accepted >= 4 and stats.affected >= 2 and stats.resets >= 1
    assert stats.bytes_up > 0 and stats.bytes_down > 0


def test_blackhole_makes_a_client_time_out(proxy: ProxyThread) -> None:
    proxy.set_mode("blackhole")
    r = client(proxy, timeout=0.3)
    try:
        with pytest.raises(redis.TimeoutError):
            r.ping()
    finally:
        r.close()
    proxy.set_mode("pass")
    r = client(proxy)
    try:
        assert r.ping() is True
    finally:
        r.close()


def test_reset_on_an_open_connection_is_seen_by_the_client(proxy: ProxyThread) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        proxy.set_mode("reset")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_bad_mode_text_raises_in_the_caller(proxy: ProxyThread) -> None:
    with pytest.raises(HarnessInputError, match="is not a mode"):
        proxy.set_mode("explode")
    assert proxy.mode == Pass()


def test_a_taken_port_raises_at_start_and_stop_is_idempotent() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        thread = ProxyThread("127.0.0.1", 1, port=taken.getsockname()[1])
        with pytest.raises(HarnessInputError, match="cannot listen"):
            thread.start()
        thread.stop()
        thread.stop()


def test_stop_closes_open_connections(redis_server: RedisServer) -> None:
    thread = ProxyThread(redis_server.host, redis_server.port).start()
    port = thread.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        thread.stop()
        assert sock.recv(100) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
