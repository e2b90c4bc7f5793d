"""pytest plugin: bench tests in plain pytest, with JUnit from pytest itself.

Registered through the ``pytest11`` entry point, so it is always loaded, and
therefore does nothing until a test asks for one of its fixtures: no import of
the HIL stack, no board started, no port opened.

Options: ``--bench FILE`` (the bench file), ``--board-reset=session|function``
(reset every board before each test, or only once), ``--board-log-dir DIR``
(per-board logs; default: a temporary directory), ``--board-no-flash``.

Fixtures:

* ``bench``: the parsed :class:`~harness.hil.bench.Bench` (session);
* ``bench_session``: the bench brought up once per session
  (:class:`~harness.hil.session.BenchSession`: flashed, bridges open);
* ``boards``: every board (``BenchBoard``: ``.board`` the serial bridge with
  ``request``/``expect``/``reset``, ``.identity``, ``.signer``), reset first
  under ``--board-reset=function``;
* ``board``: one board: ``@pytest.mark.parametrize("board", ["name"], indirect=True)``
  picks it by name, else the first board of the bench.

A board that did not come up (no port, boot loop, no answer) fails only the
tests that use it, with its reason; ``boards`` needs all of them.

When a test that used a board fails, the tail of each board's log (already
masked) is added to its failure text, so pytest shows it and ``--junitxml``
keeps it in the ``<failure>`` element; each board's log path is a JUnit property.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.hil.bench import Bench
    from harness.hil.session import BenchBoard, BenchSession

LOG_TAIL_LINES = 60
_FIXTURES = ("board", "boards", "bench_session")
_USED_KEY = pytest.StashKey[list[Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness-hil", "HIL bench (harness)")
    group.addoption("--bench", default=None, metavar="FILE", help="HIL bench file (TOML).")
    group.addoption(
        "--board-reset",
        choices=("session", "function"),
        default="session",
        help="Reset boards once per session (default) or before every test.",
    )
    group.addoption("--board-log-dir", default=None, metavar="DIR", help="Per-board logs here.")
    group.addoption(
        "--board-no-flash", action="store_true", help="Do not flash; boards run what they have."
    )


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> Bench:
    from harness.errors import HarnessInputError
    from harness.hil.bench import load_bench

    path = request.config.getoption("--bench")
    if not path:
        pytest.fail("this test needs a bench: run pytest with --bench FILE", pytrace=False)
    try:
        return load_bench(path)
    except HarnessInputError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def bench_session(request: pytest.FixtureRequest, bench: Bench) -> Iterator[BenchSession]:
    from harness.hil.session import BenchSession

    cfg = request.config
    log_dir = cfg.getoption("--board-log-dir")
    with BenchSession(
        bench, Path(log_dir) if log_dir else None, flash=not cfg.getoption("--board-no-flash")
    ) as session:
        yield session


def _fail_if_down(entries: list[BenchBoard]) -> None:
    """A board that did not come up fails the tests that use it, with its reason."""
    down = [f"{b.name}: {b.error}" for b in entries if not b.ok]
    if down:
        pytest.fail("bench board did not come up: " + "; ".join(down), pytrace=False)


@pytest.fixture
def boards(request: pytest.FixtureRequest, bench_session: BenchSession) -> list[BenchBoard]:
    _fail_if_down(bench_session.boards)
    ready = bench_session.ready()
    _mark_used(request, ready)
    if request.config.getoption("--board-reset") == "function":
        _reset(bench_session, ready)
    return ready


@pytest.fixture
def board(request: pytest.FixtureRequest, bench_session: BenchSession) -> BenchBoard:
    from harness.errors import HarnessInputError

    name = getattr(request, "param", None)
    try:
        entry = bench_session.board(name) if name else bench_session.boards[0]
    except HarnessInputError as exc:
        pytest.fail(str(exc), pytrace=False)
    _fail_if_down([entry])
    _mark_used(request, [entry])
    if request.config.getoption("--board-reset") == "function":
        _reset(bench_session, [entry])
    return entry


def _reset(session: BenchSession, entries: list[BenchBoard]) -> None:
    from harness.hil.board_errors import BoardError

    try:
        session.reset_boards(entries)
    except BoardError as exc:
        pytest.fail(str(exc), pytrace=False)


def _mark_used(request: pytest.FixtureRequest, entries: list[BenchBoard]) -> None:
    used = request.node.stash.setdefault(_USED_KEY, [])
    used.extend(e for e in entries if e not in used)
    for entry in entries:
        if entry.board is not None and entry.board.log.path is not None:
            request.node.user_properties.append(
                (f"board_log:{entry.name}", str(entry.board.log.path))
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    used = item.stash.get(_USED_KEY, None)
    if not used or not report.failed:
        return
    for entry in used:
        board = entry.board
        if board is None:
            continue
        path = board.log.path
        text = ""
        if path is not None and path.exists():
            text = "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        counters = ", ".join(f"{k}={v}" for k, v in board.stats().items())
        title = f"board {entry.name} log ({counters})"
        longrepr = report.longrepr
        if hasattr(longrepr, "addsection"):
            # Part of the failure text: shown by pytest and written into JUnit's <failure>.
            longrepr.addsection(title, text)
        else:
            report.sections.append((title, text))
