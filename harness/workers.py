"""Run one job as N worker processes on one machine and merge their results exactly.

CPython runs one core per process, so ``harness soak --workers N`` starts N
``spawn`` processes, each running shard ``i/N`` of the fleet (see
``harness.shard``), and merges the ``RunResults`` they return: counters add and
HDR histograms add, so the merged report is the one a single (infinitely fast)
process would have written. ``spawn`` rather than ``fork``: each worker gets a
fresh interpreter and its own event loop, with no inherited sockets or threads.

API::

    def run_one(index: int, count: int) -> dict:   # module-level, picklable
        ...                                        # run shard index/count
        return results.to_dict()                   # RunResults.to_dict()

    merged = run_workers(4, run_one)               # RunResults

Use ``functools.partial(run_one_with_options, options)`` to pass settings; the
partial and its arguments must be picklable.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from harness.errors import HarnessInputError
from harness.results import RunResults

RunOne = Callable[[int, int], dict[str, Any]]


class WorkerError(RuntimeError):
    """A worker process died or raised something other than bad input."""


def default_workers() -> int:
    """The issue's default for ``--workers``: one process per usable core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _call(run_one: RunOne, index: int, count: int) -> tuple[str, Any]:
    """Run in the worker: bad input travels back as plain data (it does not pickle as is)."""
    try:
        return "ok", run_one(index, count)
    except HarnessInputError as exc:
        return "input", (exc.field, exc.reason, exc.where)


def _ignore_stop_signals() -> None:
    """In a worker until its run installs its own handlers: a Ctrl-C during start-up must
    not kill it (and with it the whole job's report)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def _forwarding_stop_signals() -> Iterator[None]:
    """While workers run, SIGINT/SIGTERM to the parent goes on to them: each stops sending,
    answers what it has in flight and returns its (partial) results, which merge into the
    report as usual. The parent itself must not die of it and lose them all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: object) -> None:
        for child in multiprocessing.active_children():
            if child.pid:  # never 0: that would signal the whole process group
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_workers(n: int, run_one: RunOne) -> RunResults:
    """Run ``run_one(i, n)`` for i in 0..n-1, one spawned process each; merged results.

    A worker's ``HarnessInputError`` is raised again here unchanged (exit 2 in the
    CLI); any other failure, or a worker that dies, raises ``WorkerError`` naming it.
    """
    if n < 1:
        raise HarnessInputError("--workers", f"must be >= 1, got {n}")
    if n == 1:
        kind, value = _call(run_one, 0, 1)
        return _collect([(0, kind, value)])
    ctx = multiprocessing.get_context("spawn")
    outcomes: list[tuple[int, str, Any]] = []
    pool_args: dict[str, Any] = {"mp_context": ctx, "initializer": _ignore_stop_signals}
    with _forwarding_stop_signals(), ProcessPoolExecutor(max_workers=n, **pool_args) as pool:
        futures = [pool.submit(_call, run_one, i, n) for i in range(n)]
        for i, fut in enumerate(futures):
            try:
                kind, value = fut.result()
            except BrokenProcessPool as exc:
                raise WorkerError(f"worker {i}/{n} died: {exc}") from None
            except Exception as exc:
                raise WorkerError(f"worker {i}/{n} failed: {type(exc).__name__}: {exc}") from exc
            outcomes.append((i, kind, value))
    return _collect(outcomes)


def _collect(outcomes: list[tuple[int, str, Any]]) -> RunResults:
    merged = RunResults()
    for i, kind, value in outcomes:
        if kind == "input":
            field, reason, where = value
            raise HarnessInputError(field, reason, where)
        if not isinstance(value, dict):
            raise WorkerError(f"worker {i} returned {type(value).__name__}, expected a dict")
        merged.merge(RunResults.from_dict(value))
    return merged
