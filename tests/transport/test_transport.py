"""The hot-path transport against real sockets: reuse, closing, timeouts, failures, chunked, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn

from harness.errors import HarnessInputError
from harness.transport import (
    TransportConnectionError,
    TransportTimeout,
    make_transport,
)
from tests.support import free_port
from tests.transport.servers import Request, ScriptedServer, echo, reply, self_signed

Run = Callable[[Any], Any]


def test_keepalive_reuses_one_connection_for_sequential_requests(run: Run) -> None:
    async def main() -> tuple[int, list[int]]:
        async with ScriptedServer() as srv:
            t = make_transport(srv.url, mode="keepalive")
            statuses = [(await t.post("/c", b'{"i":%d}' % i)).status for i in range(20)]
            await t.aclose()
            return srv.seen.connections, statuses

    connections, statuses = run(main())
    assert statuses == [200] * 20
    assert connections == 1


def test_keepalive_pool_never_exceeds_max_connections(run: Run) -> None:
    async def slow(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        return await echo(req, r, w)

    async def main() -> tuple[int, int, int]:
        async with ScriptedServer(slow) as srv:
            t = make_transport(srv.url, mode="keepalive", max_connections=3)
            results = await asyncio.gather(*(t.post("/c", b"{}") for _ in range(30)))
            await t.aclose()
            ok = sum(r.status == 200 for r in results)
            return ok, srv.seen.max_open, srv.seen.connections

    ok, max_open, connections = run(main())
    assert ok == 30
    assert max_open == 3
    assert connections == 3


def test_fresh_mode_opens_and_closes_a_connection_per_request(run: Run) -> None:
    async def main() -> tuple[int, list[str], int]:
        async with ScriptedServer() as srv:
            t = make_transport(srv.url, mode="fresh")
            for _ in range(5):
                assert (await t.post("/c", b"{}")).status == 200
            await asyncio.sleep(0.05)
            await t.aclose()
            return (
                srv.seen.connections,
                [r.headers["connection"] for r in srv.seen.requests],
                (srv.seen.open_now),
            )

    connections, conn_headers, still_open = run(main())
    assert connections == 5
    assert conn_headers == ["close"] * 5
    assert still_open == 0


def test_request_carries_host_length_type_prefix_and_caller_headers(run: Run) -> None:
    async def main() -> tuple[Request, Request, dict[str, str], bytes, int]:
        async with ScriptedServer() as srv:
            t = make_transport(f"http://127.0.0.1:{srv.port}/teddy/", mode="keepalive")
            body = json.dumps({"device_id": "Teddy-ESP32-0001"}).encode()
            resp = await t.post("/api/v1/pair/claim", body, [("User-Agent", "ESP32-TeddyBear/5")])
            await t.get("/health")
            await t.aclose()
            return srv.seen.requests[0], srv.seen.requests[1], resp.headers, resp.body, srv.port

    post, get, headers, body, port = run(main())
    assert post.method == "POST"
    assert post.target == "/teddy/api/v1/pair/claim"
    assert post.headers["host"] == f"127.0.0.1:{port}"
    assert post.headers["content-type"] == "application/json"
    assert int(post.headers["content-length"]) == len(post.body)
    assert post.headers["user-agent"] == "ESP32-TeddyBear/5"
    assert json.loads(post.body) == {"device_id": "Teddy-ESP32-0001"}
    assert body == post.body
    assert (get.method, get.target, get.body) == ("GET", "/teddy/health", b"")
    assert "content-type" not in get.headers
    assert headers["x-seen"] == "yes, twice"  # repeated headers joined, names lower-case


def test_no_answer_within_timeout_is_a_timeout(run: Run) -> None:
    async def silent(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def main() -> float:
        async with ScriptedServer(silent) as srv:
            t = make_transport(srv.url, mode="keepalive", timeout=0.3)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TransportTimeout):
                await t.post("/c", b"{}")
            took = loop.time() - start
            await t.aclose()
            return took

    took = run(main())
    assert 0.25 <= took < 2.0


def test_post_nowait_on_a_silent_kept_alive_connection_times_out_through_its_callback(
    run: Run,
) -> None:
    """The second request rides the idle connection (no task at all); the sweep still
    ends it with a timeout."""
    calls = [0]

    async def first_only(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            return await echo(req, r, w)
        await asyncio.sleep(5)
        return False

    async def main() -> tuple[int, object, float, int]:
        loop = asyncio.get_running_loop()
        async with ScriptedServer(first_only) as srv:
            t = make_transport(srv.url, mode="keepalive", timeout=0.3)
            first = (await t.post("/c", b"{}")).status
            outcome = loop.create_future()
            start = loop.time()
            t.post_nowait("/c", b"{}", (), lambda r, e: outcome.set_result(e))
            exc = await outcome
            took = loop.time() - start
            await t.aclose()
            return first, exc, took, srv.seen.connections

    first, exc, took, connections = run(main())
    assert first == 200
    assert isinstance(exc, TransportTimeout)
    assert 0.25 <= took < 2.0
    assert connections == 1  # the timed-out request used the kept-alive connection


def test_refused_port_is_a_connection_error(run: Run) -> None:
    async def main() -> None:
        for mode in ("fresh", "keepalive"):
            t = make_transport(f"http://127.0.0.1:{free_port()}", mode=mode)  # type: ignore[arg-type]
            with pytest.raises(TransportConnectionError, match="cannot connect"):
                await t.post("/c", b"{}")
            await t.aclose()

    run(main())


def test_server_closing_mid_response_is_a_connection_error_and_nothing_is_resent(run: Run) -> None:
    async def half(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await w.drain()
        return False  # close with 90 bytes missing

    async def main() -> int:
        async with ScriptedServer(half) as srv:
            t = make_transport(srv.url, mode="keepalive")
            with pytest.raises(TransportConnectionError, match="closed before"):
                await t.post("/c", b"{}")
            await t.aclose()
            return len(srv.seen.requests)

    assert run(main()) == 1


def test_request_that_reached_the_server_is_not_retried_on_close(run: Run) -> None:
    async def drop(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        return False  # read the claim, answer nothing, close

    async def main() -> int:
        async with ScriptedServer(drop) as srv:
            t = make_transport(srv.url, mode="keepalive")
            with pytest.raises(TransportConnectionError):
                await t.post("/c", b"{}")
            await t.aclose()
            return len(srv.seen.requests)

    assert run(main()) == 1


def test_idle_connection_closed_by_server_is_replaced_transparently(run: Run) -> None:
    async def once(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(reply(200, b"{}"))  # says keep-alive, then closes anyway (idle timeout)
        await w.drain()
        return False

    async def main() -> tuple[list[int], int, int]:
        async with ScriptedServer(once) as srv:
            t = make_transport(srv.url, mode="keepalive")
            statuses = []
            for _ in range(3):
                statuses.append((await t.post("/c", b"{}")).status)
                await asyncio.sleep(0.05)  # let the server's FIN arrive while idle
            await t.aclose()
            return statuses, srv.seen.connections, len(srv.seen.requests)

    statuses, connections, requests = run(main())
    assert statuses == [200, 200, 200]
    assert connections == 3
    assert requests == 3


def test_chunked_and_eof_delimited_bodies(run: Run) -> None:
    async def chunked(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'{"access', b'_token":', b'"abc"}'):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    async def until_eof(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(b'{"detail":"redis down"}')
        await w.drain()
        return False

    async def main() -> tuple[Any, ...]:
        async with ScriptedServer(chunked) as srv:
            t = make_transport(srv.url, mode="keepalive")
            a = await t.post("/c", b"{}")
            b = await t.post("/c", b"{}")
            await t.aclose()
            chunked_conns = srv.seen.connections
        async with ScriptedServer(until_eof) as srv:
            t = make_transport(srv.url, mode="keepalive")
            c = await t.post("/c", b"{}")
            await t.aclose()
        return a, b, chunked_conns, c

    a, b, chunked_conns, c = run(main())
    assert json.loads(a.body) == {"access_token": "abc"} == json.loads(b.body)
    assert chunked_conns == 1  # a chunked answer ends cleanly, the connection is reused
    assert (c.status, c.body) == (503, b'{"detail":"redis down"}')


def test_malformed_answer_is_a_connection_error(run: Run) -> None:
    async def junk(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.5)
        return False

    async def main() -> None:
        async with ScriptedServer(junk) as srv:
            t = make_transport(srv.url, mode="fresh", timeout=5)
            with pytest.raises(TransportConnectionError, match="malformed"):
                await t.post("/c", b"{}")
            await t.aclose()

    run(main())


@pytest.mark.parametrize("mode", ["fresh", "keepalive"])
def test_tls_with_self_signed_certificate(run: Run, mode: str, tmp_path: Any) -> None:
    cert_pem, key_pem = self_signed()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=cert_pem.decode())

    async def main() -> tuple[list[int], int, bool]:
        async with ScriptedServer(echo, ssl_context=server_ctx) as srv:
            t = make_transport(srv.url, mode=mode, ssl_context=trusting)  # type: ignore[arg-type]
            statuses = [(await t.post("/c", b'{"tls":true}')).status for _ in range(3)]
            await t.aclose()
            # The default context does not trust the self-signed certificate.
            strict = make_transport(srv.url, mode=mode)  # type: ignore[arg-type]
            try:
                await strict.post("/c", b"{}")
                rejected = False
            except TransportConnectionError:
                rejected = True
            await strict.aclose()
            return statuses, srv.seen.connections, rejected

    statuses, connections, rejected = run(main())
    assert statuses == [200, 200, 200]
    assert connections == (1 if mode == "keepalive" else 3)  # the rejected handshake never opens
    assert rejected


def test_keepalive_against_uvicorn_survives_its_idle_timeout(run: Run) -> None:
    opened: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    async def main() -> list[int]:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=free_port(), log_level="warning", timeout_keep_alive=1
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        t = make_transport(f"http://127.0.0.1:{config.port}", mode="keepalive", max_idle=30)
        statuses = [(await t.get("/a")).status, (await t.get("/b")).status]
        opened.append(len(server.server_state.connections))
        await asyncio.sleep(1.5)  # uvicorn closes the idle connection
        statuses.append((await t.post("/c", b"{}")).status)
        await t.aclose()
        server.should_exit = True
        await task
        return statuses

    assert run(main()) == [200, 200, 200]
    assert opened == [1]


def test_bad_arguments_are_input_errors() -> None:
    with pytest.raises(HarnessInputError, match="target"):
        make_transport("ftp://x")
    with pytest.raises(HarnessInputError, match="target"):
        make_transport("http://host:notaport")
    with pytest.raises(HarnessInputError, match="timeout"):
        make_transport("http://x", timeout=0)
    with pytest.raises(HarnessInputError, match="max_connections"):
        make_transport("http://x", max_connections=0)
    with pytest.raises(HarnessInputError, match="mode"):
        make_transport("http://x", mode="pipelined")  # type: ignore[arg-type]


def test_waiting_for_a_free_connection_counts_against_the_timeout(run: Run) -> None:
    async def slow(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(1.0)
        return await echo(req, r, w)

    async def main() -> tuple[int, type[BaseException] | None, int]:
        async with ScriptedServer(slow) as srv:
            t = make_transport(srv.url, mode="keepalive", max_connections=1, timeout=0.4)
            first, second = await asyncio.gather(
                t.post("/c", b"{}"), t.post("/c", b"{}"), return_exceptions=True
            )
            await t.aclose()
            kinds = {type(first), type(second)}
            return len(kinds), next(iter(kinds)), srv.seen.max_open

    n_kinds, kind, max_open = run(main())
    assert (n_kinds, kind) == (1, TransportTimeout)  # the holder times out, so does the waiter
    assert max_open == 1


def test_aclose_fails_requests_in_flight(run: Run) -> None:
    async def silent(req: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def main() -> BaseException | None:
        async with ScriptedServer(silent) as srv:
            t = make_transport(srv.url, mode="keepalive", timeout=5)
            pending = asyncio.create_task(t.post("/c", b"{}"))
            while not srv.seen.requests:
                await asyncio.sleep(0.01)
            await t.aclose()
            result = (await asyncio.gather(pending, return_exceptions=True))[0]
            with pytest.raises(TransportConnectionError, match="closed"):
                await t.post("/c", b"{}")
            return result if isinstance(result, BaseException) else None

    assert isinstance(run(main()), TransportConnectionError)


def test_host_names_are_resolved_once_and_unresolvable_ones_fail_cleanly(run: Run) -> None:
    async def main() -> tuple[list[int], int]:
        async with ScriptedServer() as srv:
            t = make_transport(f"http://localhost:{srv.port}", mode="fresh")
            statuses = [(await t.post("/c", b"{}")).status for _ in range(3)]
            resolved = list(t._addrs)  # type: ignore[attr-defined]
            await t.aclose()
            bad = make_transport("http://no-such-host.invalid:80", mode="fresh", timeout=10)
            with pytest.raises(TransportConnectionError, match="cannot resolve no-such-host"):
                await bad.post("/c", b"{}")
            await bad.aclose()
            return statuses, len(resolved)

    statuses, n_addresses = run(main())
    assert statuses == [200, 200, 200]
    assert n_addresses >= 1  # localhost's addresses, reused by the three connections


def test_paths_and_headers_that_would_split_the_request_are_refused(run: Run) -> None:
    async def main() -> None:
        t = make_transport("http://127.0.0.1:9", mode="keepalive")
        with pytest.raises(HarnessInputError, match="header"):
            await t.post("/c", b"{}", [("X-Evil", "a\r\nHost: other")])
        with pytest.raises(HarnessInputError, match="header"):
            await t.get("/c", [("Bad Name", "v")])
        with pytest.raises(HarnessInputError, match="path"):
            await t.get("/c HTTP/1.0\r\n")
        with pytest.raises(HarnessInputError, match="path"):
            await t.get("relative")
        await t.aclose()

    run(main())


def test_post_nowait_hands_answers_and_failures_to_its_callback_never_before_returning(
    run: Run,
) -> None:
    async def main() -> tuple[list[int], list[BaseException], bool, int]:
        loop = asyncio.get_running_loop()
        statuses: list[int] = []
        failures: list[BaseException] = []
        finished = loop.create_future()
        returned = [False]
        early = [False]

        async with ScriptedServer() as srv:
            t = make_transport(srv.url, mode="keepalive")

            def chain(response: Any, exc: Any) -> None:
                early[0] = early[0] or not returned[0]
                if exc is not None:  # fail the test here, not hang it (the loop would log it)
                    finished.set_exception(exc)
                    return
                statuses.append(response.status)
                if len(statuses) < 10:
                    returned[0] = False
                    t.post_nowait("/c", b"{}", (), chain)  # the next one from inside the callback
                    returned[0] = True
                else:
                    finished.set_result(None)

            t.post_nowait("/c", b"{}", (), chain)
            returned[0] = True
            await finished
            await t.aclose()
            connections = srv.seen.connections

        refused = make_transport(f"http://127.0.0.1:{free_port()}", mode="keepalive")
        failed = loop.create_future()
        refused.post_nowait("/c", b"{}", (), lambda r, e: failed.set_result((r, e)))
        assert not failed.done()
        response, exc = await failed
        assert response is None
        failures.append(exc)
        await refused.aclose()
        return statuses, failures, early[0], connections

    statuses, failures, early, connections = run(main())
    assert statuses == [200] * 10
    assert connections == 1  # the chain reused one kept-alive connection
    assert not early
    assert isinstance(failures[0], TransportConnectionError)


def test_a_done_callback_that_raises_goes_to_the_loop_and_the_connection_stays_usable(
    run: Run,
) -> None:
    async def main() -> tuple[list[str], int, int]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(str(ctx.get("exception"))))
        async with ScriptedServer() as srv:
            t = make_transport(srv.url, mode="keepalive")
            called = loop.create_future()

            def buggy(response: Any, exc: Any) -> None:
                called.set_result(response.status)
                raise RuntimeError("bug in the caller")

            t.post_nowait("/c", b"{}", (), buggy)
            await called
            status = (await t.post("/c", b"{}")).status
            await t.aclose()
            return reported, status, srv.seen.connections

    reported, status, connections = run(main())
    assert reported == ["bug in the caller"]
    assert status == 200
    assert connections == 1  # not dropped as a malformed answer


def test_a_waiting_post_is_not_starved_by_a_chain_of_post_nowait(run: Run) -> None:
    """Callbacks run before woken tasks: without holding the freed connection for the
    waiter, a chain re-posting from its callback would take it every time."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        chain_done = loop.create_future()
        async with ScriptedServer() as srv:
            t = make_transport(srv.url, mode="keepalive", max_connections=1, timeout=10)

            def chain(response: Any, exc: Any) -> None:
                order.append("chain")
                if order.count("chain") < 30:
                    t.post_nowait("/c", b"{}", (), chain)
                else:
                    chain_done.set_result(None)

            t.post_nowait("/c", b"{}", (), chain)
            await asyncio.sleep(0)  # the chain holds the only connection now
            waiting = asyncio.create_task(t.post("/c", b"{}"))
            await waiting
            order.append("post")
            await chain_done
            await t.aclose()
        return order.index("post")

    assert run(main()) <= 3
