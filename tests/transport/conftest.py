"""Transport tests run their servers and clients on one event loop: uvloop, as in production."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""

    def _run(coro: Coroutine[Any, Any, Any]) -> Any:
        if request.param == "uvloop":
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(asyncio.wait_for(coro, 30))
        return asyncio.run(asyncio.wait_for(coro, 30))

    return _run
