"""``hil run``: bring a bench up and run its boards as devices of the one runner.

What is a bench's own stays here: flashing, resetting and reading identities
(``harness.hil.session``), and the report's rows per board. Everything else is
the same pipeline ``soak`` uses (``harness.run``): the boards are devices
(``harness.hil.devices``) that sign with their own firmware crypto, scheduled,
sent, judged by ``harness.judge`` against the bench's profile, and reported
through the same report, JUnit and Prometheus exporters. A fleet given beside
the bench runs its virtual cohorts in the same run and the same report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.fleet.model import Fleet
from harness.hil.bench import Bench
from harness.hil.devices import BenchPlan, ClaimHook
from harness.hil.session import BenchSession
from harness.judge import Observer
from harness.report import build_report
from harness.results import RunResults
from harness.run import SoakOptions, run_soak_sync
from harness.run.options import DEFAULT_CONCURRENCY
from harness.thresholds import ThresholdResult, evaluate, parse_thresholds


@dataclass
class HilRunOutcome:
    """A finished run: its results, the report written from them, and whether it passed."""

    results: RunResults
    report: dict[str, Any]
    thresholds: list[ThresholdResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def run_bench(
    bench: Bench,
    *,
    log_dir: Path | str | None = None,
    claims_per_board: int | None = None,
    thresholds: Sequence[str] = (),
    flash: bool = True,
    on_claim: ClaimHook | None = None,
    metrics: Observer | None = None,
    fleet: Fleet | None = None,
    claims: int | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
) -> HilRunOutcome:
    """Bring the bench up, run the boards (and ``fleet``'s virtual cohorts, ``claims``
    claims of them, when given), judge them; the report is returned, not written.
    ``insecure`` / ``ca_bundle``: an https:// target's TLS, as ``soak`` takes them."""
    gates = parse_thresholds(thresholds)
    started = datetime.now(UTC)
    per_board = claims_per_board or bench.claims_per_board
    with BenchSession(bench, log_dir, flash=flash) as session:
        plan = BenchPlan(session, per_board, on_claim)
        lanes = len(plan.remotes) + (min(DEFAULT_CONCURRENCY, len(fleet)) if fleet else 0)
        options = SoakOptions(
            target=bench.target,
            fleet=fleet,
            claims=claims if fleet is not None else None,
            concurrency=max(lanes, 1),
            flags=bench.flags,
            **bench.profile.declaration(),
            observers=[metrics] if metrics is not None else [],
            token_verify_every=1,  # boards are slow: pyjwt checks every token too
            check_refresh_tokens=True,
            bench=plan,
            insecure=insecure,
            ca_bundle=ca_bundle,
        )
        outcome = run_soak_sync(options)
        checked = evaluate(gates, outcome.results)
        info = outcome.info
        info.update(kind="hil", bench=str(bench.path), claims_per_board=per_board,
                    started_at=started.isoformat(timespec="seconds"),
                    board_claims=bench.board_claims)  # fmt: skip
        if bench.board_claims:
            info["connection"] = "board"
        report = build_report(outcome, checked)
        boards = []
        for entry in session.boards:
            row = entry.summary()
            remote = plan.remotes.get(entry.name)
            row["claims_by_status"] = dict(sorted(remote.by_status.items())) if remote else {}
            boards.append(row)
    report["kind"] = "hil"
    report["boards"] = boards
    report["boards_passed"] = boards_ok = all(b["ok"] for b in boards)
    report["passed"] = bool(report["passed"] and boards_ok and outcome.results.sent > 0)
    return HilRunOutcome(outcome.results, report, checked)
