"""The control API in-process: a real uvicorn on the proxy's loop, called over HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from harness.faults import FaultProxy, Reset
from harness.faults.control import ControlServer
from tests.faults.conftest import CLOSE, HttpUpstream
from tests.faults.test_proxy import exchange, run


def call(
    url: str, method: str = "GET", body: bytes | None = None, ctype: str = ""
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    if ctype:
        request.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def acall(*args: Any) -> tuple[int, Any]:
    """urllib off the loop: the server answering it runs on this loop."""
    return await asyncio.to_thread(call, *args)


def test_get_put_and_refuse(http_upstream: HttpUpstream) -> None:
    async def body() -> None:
        proxy = FaultProxy("127.0.0.1", http_upstream.port, seed=3)
        await proxy.start()
        control = ControlServer(proxy)
        await control.start()
        base = control.url
        try:
            assert await acall(f"{base}/health") == (200, {"status": "ok"})
            assert await exchange(proxy.port) == CLOSE
            status, state = await acall(f"{base}/mode")
            assert status == 200 and state["mode"] == "pass"
            assert state["stats"]["accepted"] == 1 and state["stats"]["bytes_down"] == len(CLOSE)

            put = json.dumps({"mode": "reset@0.5"}).encode()
            status, state = await acall(f"{base}/mode", "PUT", put, "application/json")
            assert (status, state["mode"]) == (200, "reset@0.5")
            assert proxy.mode == Reset(share=0.5)

            form = "application/x-www-form-urlencoded"  # what `curl -d '{...}'` sends
            status, state = await acall(f"{base}/mode", "PUT", b'{"mode": "cut:5"}', form)
            assert (status, state["mode"]) == (200, "cut:5")

            status, state = await acall(f"{base}/mode", "PUT", b"drop", "text/plain")
            assert (status, state["mode"]) == (200, "drop")
            assert await exchange(proxy.port) == b""  # in force at once

            for bad, ctype in [
                (b'{"mode": "explode"}', "application/json"),
                (b"delay:-1s", "text/plain"),
                (b'{"mode": 5}', "application/json"),
                (b"{not json", "application/json"),
            ]:
                status, answer = await acall(f"{base}/mode", "PUT", bad, ctype)
                assert status == 422 and isinstance(answer["error"], str) and answer["error"]
            assert (await acall(f"{base}/mode"))[1]["mode"] == "drop"  # unchanged
        finally:
            await control.stop()
            await proxy.stop()

    run(body)
