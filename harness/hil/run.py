"""``hil run``: boards sign claims with their own crypto; the fleet's oracle judges the answers.

A board is one more kind of device (ARCHITECTURE: "HIL is another kind of
signer and device, not a second pipeline"): its facts come from its identity
(device ID as the firmware holds it, HMAC mode from its firmware version), its
secret is the one v5 firmware derives, and every answer goes through the same
``harness.oracle`` functions and the same check names as ``soak``, into the
same ``RunResults``, report JSON, JUnit and Prometheus metrics.

Per board: ``claims_per_board`` claims with fresh nonces the board draws itself
(cycling through the bench's children), then one byte-identical resend of the
last one (the firmware's retry after a timeout), which exercises
``idempotent_retry`` or ``replay_conflict``. With ``board_claims = true`` the
board POSTs each claim itself over its own network and reports the answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.hil.bench import Bench
from harness.hil.board_signer import BoardSignature
from harness.hil.bridge import BoardError
from harness.hil.session import BenchBoard, BenchSession
from harness.masking import mask_id, scrub
from harness.oracle import (
    CORRELATION_HEADER,
    Sent,
    ServerProfile,
    check_category,
    expect_send,
    judge_send,
)
from harness.protocol import check_token, derive_oob_v5, user_agent
from harness.protocol.claim import CLAIM_PATH
from harness.results import CONNECTION_ERROR, TIMEOUT, RunResults
from harness.thresholds import ThresholdResult, evaluate, parse_thresholds
from harness.transport import (
    HttpResponse,
    Transport,
    TransportTimeout,
    make_transport,
)

SCENARIO_FIRST = "board_claim"
SCENARIO_RETRY = "board_retry"
HTTP_TIMEOUT_S = 10.0

# Called in the board's worker after each claim: (session, board name, claim index).
ClaimHook = Callable[[BenchSession, str, int], None]


@dataclass(frozen=True, slots=True)
class BoardFacts:
    """A board as the oracle sees a device (``harness.oracle.DeviceFacts``)."""

    device_id: str
    child_id: str
    oob: bytes
    signing: str
    provisioned: bool = True
    active: bool = True
    child_state: str = "active"


@dataclass
class Answer:
    """What came back for one claim, whoever sent it (harness transport or the board)."""

    status_key: str
    status: int | None
    headers: dict[str, str]
    body: bytes
    latency_s: float


@dataclass
class HilRunOutcome:
    """A finished run: its results, the report written from them, and whether it passed."""

    results: RunResults
    report: dict[str, Any]
    thresholds: list[ThresholdResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def seed_for(session: BenchSession) -> Any:
    """The embedded server's rows: each board's ID with its v5-derived secret, the children."""
    from harness.server.seed import Seed, SeedChild, SeedDevice

    devices = tuple(
        SeedDevice(b.identity.device_id, derive_oob_v5(b.identity.device_id))
        for b in session.ready()
        if b.identity is not None
    )
    children = tuple(SeedChild(c) for c in session.bench.children)
    return Seed(devices, children)


def run_bench(
    bench: Bench,
    *,
    log_dir: Path | str | None = None,
    claims_per_board: int | None = None,
    thresholds: Sequence[str] = (),
    flash: bool = True,
    on_claim: ClaimHook | None = None,
    metrics: Any = None,
) -> HilRunOutcome:
    """Bring the bench up, run the claims, judge them; the report is returned, not written."""
    gates = parse_thresholds(thresholds)
    started = datetime.now(UTC)
    with BenchSession(bench, log_dir, flash=flash) as session:
        if bench.target is None:
            from harness.server.config import ServerConfig
            from harness.server.embedded import EmbeddedServer

            config = ServerConfig.running(bench.profile, seed_for(session))
            with EmbeddedServer(config) as server:
                runner = _Runner(session, server.url, server.jwt_secret, claims_per_board)
                target = f"embedded ({server.url})"
                results = runner.drive(on_claim, metrics)
        else:
            runner = _Runner(session, bench.target, None, claims_per_board)
            target = bench.target
            results = runner.drive(on_claim, metrics)
        checked = evaluate(gates, results)
        report = build_report(session, runner, checked, target, started)
    return HilRunOutcome(results, report, checked)


class _Runner:
    def __init__(
        self, session: BenchSession, url: str, jwt_secret: str | None, claims: int | None
    ) -> None:
        self.session = session
        self.bench = session.bench
        self.url = url
        self.jwt_secret = jwt_secret
        self.claims = claims or self.bench.claims_per_board
        self.profile: ServerProfile = self.bench.profile
        self.results = RunResults()
        self.run_id = uuid.uuid4().hex[:12]
        self.on_claim: ClaimHook | None = None
        self.metrics: Any = None
        self.per_board: dict[str, dict[str, int]] = {}
        self.tokens_checked = 0

    def drive(self, on_claim: ClaimHook | None, metrics: Any) -> RunResults:
        """Run every ready board's claims concurrently; returns the results."""
        self.on_claim = on_claim
        self.metrics = metrics
        if metrics is not None:
            ready = len(self.session.ready())
            metrics.on_start({"run_id": self.run_id, "fleet": self.bench.name, "devices": ready})
        t0 = time.perf_counter()
        asyncio.run(self.run())
        self.results.duration_s = time.perf_counter() - t0
        if metrics is not None:
            metrics.on_finish(self.results)
        return self.results

    async def run(self) -> None:
        transport = make_transport(self.url, mode="fresh", timeout=HTTP_TIMEOUT_S)
        try:
            await asyncio.gather(*(self._board(b, transport) for b in self.session.ready()))
        finally:
            await transport.aclose()

    async def _board(self, entry: BenchBoard, transport: Transport) -> None:
        counts = self.per_board.setdefault(entry.name, {})
        last: tuple[BoardSignature, Answer, BoardFacts] | None = None
        try:
            for i in range(self.claims):
                child = self.bench.children[i % len(self.bench.children)]
                if self.bench.board_claims:
                    sig, answer = await asyncio.to_thread(self._board_claim, entry, child)
                else:
                    sig = await asyncio.to_thread(entry.signer.sign_claim, child)
                    answer = await self._post(transport, entry, sig.body)
                facts = self._facts(entry, sig.child_id)
                self._judge(entry, facts, answer, history=(), scenario=SCENARIO_FIRST)
                counts[answer.status_key] = counts.get(answer.status_key, 0) + 1
                last = (sig, answer, facts)
                if self.on_claim is not None:
                    await asyncio.to_thread(self.on_claim, self.session, entry.name, i)
            if last is not None and not self.bench.board_claims:
                sig, first, facts = last
                answer = await self._post(transport, entry, sig.body)
                history = (Sent("good", first.status or 0),) if first.status else ()
                self._judge(entry, facts, answer, history=history, scenario=SCENARIO_RETRY)
                counts[answer.status_key] = counts.get(answer.status_key, 0) + 1
        except BoardError as exc:
            entry.error = str(exc)

    def _facts(self, entry: BenchBoard, child_id: str) -> BoardFacts:
        ident = entry.identity
        assert ident is not None
        return BoardFacts(
            device_id=ident.device_id,
            child_id=child_id,
            oob=bytes.fromhex(derive_oob_v5(ident.device_id)),
            signing=ident.hmac_mode,
        )

    async def _post(self, transport: Transport, entry: BenchBoard, body: bytes) -> Answer:
        assert entry.identity is not None
        headers = (
            ("Content-Type", "application/json"),
            ("User-Agent", user_agent(entry.identity.fw)),
        )
        t0 = time.perf_counter()
        try:
            resp: HttpResponse = await transport.post(CLAIM_PATH, body, headers)
        except TransportTimeout:
            return Answer(TIMEOUT, None, {}, b"", time.perf_counter() - t0)
        except Exception:  # TransportConnectionError and kin: no HTTP answer
            return Answer(CONNECTION_ERROR, None, {}, b"", time.perf_counter() - t0)
        return Answer(
            str(resp.status), resp.status, resp.headers, resp.body, time.perf_counter() - t0
        )

    def _board_claim(self, entry: BenchBoard, child: str) -> tuple[BoardSignature, Answer]:
        """The board POSTs the claim itself; its reply carries status, correlation ID, body."""
        assert entry.board is not None and entry.identity is not None
        t0 = time.perf_counter()
        reply = entry.board.request(
            "claim", url=self.url, child_id=child, timeout=HTTP_TIMEOUT_S + 5
        )
        latency = time.perf_counter() - t0
        body = reply.get("body")
        raw = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        status = int(reply.get("status", 0))
        headers = {CORRELATION_HEADER: str(reply.get("correlation_id", ""))}
        sig = BoardSignature(entry.identity.device_id, child, str(reply.get("nonce", "")), "", b"")
        return sig, Answer(str(status), status, headers, raw, latency)

    def _judge(
        self,
        entry: BenchBoard,
        facts: BoardFacts,
        answer: Answer,
        history: tuple[Sent, ...],
        scenario: str,
    ) -> None:
        res = self.results
        res.record_claim(scenario, answer.status_key, answer.latency_s)
        if self.metrics is not None:
            self.metrics.on_claim(scenario, answer.status_key, answer.latency_s)
        exp = expect_send(self.profile, facts, "good", history)
        if history:
            name = (
                "idempotent_retry" if self.profile.flags.enable_idempotency else "replay_conflict"
            )
        else:
            name = check_category(facts)
        if answer.status is None:
            problem: str | None = f"no HTTP answer ({answer.status_key})"
        else:
            problem = judge_send(exp, answer.status, answer.headers, answer.body, None)
        example = {
            "device_id": mask_id(facts.device_id),
            "child_id": mask_id(facts.child_id),
            "cohort": entry.name,
            "scenario": scenario,
            "hmac_mode": facts.signing,
            "expected": exp.describe(),
            "got": problem or answer.status_key,
        }
        self._record(name, problem is None, example)
        if answer.status is None:
            return
        has_id = bool(answer.headers.get(CORRELATION_HEADER))
        if has_id or self.profile.correlation_on(answer.status):
            self._record("correlation_id", has_id, {**example, "got": "no X-Correlation-Id"})
        if answer.status == 200 and not exp.replay:
            self._check_tokens(facts, answer, example)

    def _check_tokens(self, facts: BoardFacts, answer: Answer, example: dict[str, Any]) -> None:
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        problems: list[str] = []
        if not isinstance(data, dict):
            problems.append("200 body is not a JSON object")
        else:
            for key, kind in (("access_token", "access"), ("refresh_token", "refresh")):
                token = data.get(key)
                if not isinstance(token, str):
                    problems.append(f"{key} missing")
                    continue
                self.tokens_checked += 1
                check = check_token(
                    token, facts.device_id, facts.child_id, kind, secret=self.jwt_secret
                )
                # What is wrong, not the values: a sub/aud problem quotes the device ID unmasked.
                names = sorted({p.split("=", 1)[0].split(":", 1)[0] for p in check.problems})
                problems.extend(f"{key}: {name}" for name in names)
        self._record("token_claims", not problems, {**example, "got": scrub("; ".join(problems))})

    def _record(self, name: str, ok: bool, example: dict[str, Any]) -> None:
        self.results.check(name).record(ok, None if ok else example)
        if not ok and self.metrics is not None:
            self.metrics.on_violation(name)


@dataclass
class _ReportInput:
    """What ``harness.report.build_report`` reads from a soak outcome, filled from a bench run."""

    results: RunResults
    info: dict[str, Any]
    tokens_checked: int
    token_signatures_verified: int
    extra: dict[str, Any]
    by_cohort: dict[tuple[str, str], int]


def build_report(
    session: BenchSession,
    runner: _Runner,
    thresholds: Sequence[ThresholdResult],
    target: str,
    started: datetime,
) -> dict[str, Any]:
    """The soak report (``harness.report``), with the bench's boards as the devices.

    Boards play the part of cohorts in ``by_cohort``; ``boards`` adds each
    board's bridge counters (reconnects, bad frames, garbage bytes, boots, state)
    and its error if it failed. A board that failed fails the run.
    """
    from harness.report import build_report as soak_report

    boards = []
    for entry in session.boards:
        row = entry.summary()
        row["claims_by_status"] = dict(sorted(runner.per_board.get(entry.name, {}).items()))
        boards.append(row)
    bench = session.bench
    info = {
        "run_id": runner.run_id,
        "fleet": f"bench:{bench.name}",
        "target": target,
        "flags": bench.flags.to_env(),
        "profile": bench.profile.to_dict(),
        "kind": "hil",
        "bench": str(bench.path),
        "started_at": started.isoformat(timespec="seconds"),
        "devices": len(boards),
        "claims_per_board": runner.claims,
        "board_claims": bench.board_claims,
        "model": "bench",
        "connection": "board" if bench.board_claims else "fresh",
    }
    by_cohort = {
        (name, status): n
        for name, counts in runner.per_board.items()
        for status, n in counts.items()
    }
    report = soak_report(
        _ReportInput(
            runner.results,
            info,
            runner.tokens_checked,
            runner.tokens_checked if runner.jwt_secret else 0,
            {},
            by_cohort,
        ),
        thresholds,
    )
    report["kind"] = "hil"
    report["boards"] = boards
    boards_ok = all(b["ok"] for b in boards)
    report["boards_passed"] = boards_ok
    report["passed"] = bool(report["passed"] and boards_ok and runner.results.sent > 0)
    return report


def boards_table(report: dict[str, Any]) -> str:
    """One line per board: firmware, claims by status, bridge counters, or why it failed."""
    lines = []
    for b in report["boards"]:
        if not b["ok"]:
            lines.append(f"{b['name']:<14} FAILED  {b['error']}")
            continue
        status = " ".join(f"{k}x{v}" for k, v in b["claims_by_status"].items()) or "-"
        flash = b.get("flash") or {}
        flashed = "" if not flash else ("  flash skipped" if flash.get("skipped") else "  flashed")
        lines.append(
            f"{b['name']:<14} fw {b['fw']:<8} {b['hmac_mode']:<10} claims {status:<18}"
            f" reconnects {b['reconnects']}  bad frames {b['bad_frames']}"
            f"  garbage bytes {b['garbage_bytes']}{flashed}"
        )
    return "\n".join(lines)


SUITE_BOARDS = "harness.boards"


def write_junit(report: dict[str, Any], path: Path | str) -> Path:
    """The soak JUnit (checks, thresholds) plus one testcase per board.

    A board that failed to come up or dropped out is a failed testcase with its
    reason, so CI shows *which* board broke, not only that the run failed.
    """
    import xml.etree.ElementTree as ET

    from harness.junit import build_junit, write_tree

    tree = build_junit(report)
    root = tree.getroot()
    suite = ET.SubElement(root, "testsuite", name=SUITE_BOARDS, errors="0", skipped="0")
    failures = 0
    for row in report.get("boards", []):
        case = ET.SubElement(suite, "testcase", classname=SUITE_BOARDS, name=str(row["name"]))
        case.set("time", "0.000")
        if row["ok"]:
            counters = ", ".join(
                f"{k}={row.get(k)}" for k in ("fw", "hmac_mode", "reconnects", "bad_frames")
            )
            ET.SubElement(case, "system-out").text = scrub(counters)
        else:
            failures += 1
            fail = ET.SubElement(case, "failure", type="BoardFailed")
            fail.set("message", scrub(f"{row['name']}: {row['error']}"))
            fail.text = scrub(str(row["error"]))
    suite.set("tests", str(len(report.get("boards", []))))
    suite.set("failures", str(failures))
    suite.set("time", "0.000")
    for attr in ("tests", "failures"):
        total = sum(int(s.get(attr, "0")) for s in root.iter("testsuite"))
        root.set(attr, str(total))
    ET.indent(root)
    return write_tree(tree, path)
