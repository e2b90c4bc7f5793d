"""Judging inside fault windows: the declared profile's failure rows, and the checks that
say what an outage did to the fleet.

A claim whose send and answer overlap a window that was in force is judged here
instead of by the healthy oracle: it must get that fault's row (CONTRACT.md
section 3) for the declared build and flags. A claim that straddles a window's
edge may also get the healthy answer, since the fault may not have reached it.
Outside every window the healthy oracle judges, and silence is a violation.

The checks (each counted once per claim it applies to, with masked examples):

- ``fault_rows``: every answer in a window is its row's;
- ``replay_protection_during_outage``: a replay (the same nonce again) answered
  200 with new tokens in a Redis window got through while protection was off;
- ``redis_outage_continuity``: the checklist's promise that
  ``DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE=true`` "ensures continuity": judged
  when idempotency and that flag are on; a 503 in a Redis window breaks it;
- ``db_outage_strands_devices``: an episode that ended on a 404 a PostgreSQL
  outage caused (the healthy answer was 200): the claim-device firmware never
  retries a 404 and the live path gives up after five attempts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from harness.faults.modes import Delay, SlowClose
from harness.faults.windows import FaultWindow
from harness.oracle import body_refusal, device_status
from harness.scenarios import LIVE_RESEND, Pair, Send

if TYPE_CHECKING:
    from harness.device import Device
    from harness.judge import Judge
    from harness.profiles import ServerProfile
    from harness.transport import HttpResponse

SETTLE_S = 0.1  # a claim sent this soon after a fault began may still have missed it
CHECK_NOTES = {
    "redis_outage_continuity": (
        "v5.0 makes its Redis client once, at the first good PING; an outage after that "
        "is a 503 whatever DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE says (CONTRACT.md section 3)"
    ),
    "db_outage_strands_devices": (
        "a PostgreSQL outage turns claims into 404s; claimDevice() never retries a 404 and "
        "the live path gives up after five attempts (about 15 s), so these devices stay "
        "unclaimed (CONTRACT.md section 3)"
    ),
    "replay_protection_during_outage": (
        "with Redis down since start, idempotency on and DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE"
        "=true the server carries on without replay protection (CONTRACT.md section 3)"
    ),
}
FAULT_CHECKS = tuple(["fault_rows", *CHECK_NOTES])
_REPLAY_CHECKS = ("idempotent_retry", "replay_conflict", "concurrent_retry")


@dataclass(slots=True)
class Applied:
    """A window as it really happened: when the fault began and ended (monotonic)."""

    window: FaultWindow
    began: float
    ended: float | None = None  # None: still in force
    redis_client_made: bool = True  # the server had answered a claim before it began
    claims: int = 0  # claims judged by its rows
    off_row: int = 0  # ...that got something else

    def to_dict(self, start: float) -> dict[str, Any]:
        return {
            **self.window.to_dict(),
            "began_after_s": round(self.began - start, 3),
            "lasted_s": None if self.ended is None else round(self.ended - self.began, 3),
            "claims": self.claims,
            "off_row": self.off_row,
        }


class FaultJudge:
    """The judge's delegate for claims in fault windows (``Judge.faults``)."""

    def __init__(self, judge: Judge, timeout: float) -> None:
        self.judge = judge
        self.timeout = timeout
        self.applied: list[Applied] = []
        # When a claim last passed the nonce step (so the server has its Redis client), and
        # when the server last came back from a restart (a new process: no client yet).
        self.nonce_step_at: float | None = None
        self.restarted_at: float | None = None
        self._strand: dict[int, dict[str, Any]] = {}  # device -> its stranding 404
        self._touched: set[int] = set()  # devices with a claim in a PostgreSQL window
        self.judged: set[int] = set()  # ids of answers judged here: the healthy judge skips
        results = judge.results
        for name in FAULT_CHECKS:
            results.check(name)
        self.continuity_promised = (
            judge.profile.flags.enable_idempotency
            and judge.profile.flags.disable_idempotency_on_redis_failure
        )

    # --- the windows, as the stage applies them ----------------------------------------------
    def began(self, window: FaultWindow, t: float) -> None:
        step, restart = self.nonce_step_at, self.restarted_at
        made = step is not None and step < t and (restart is None or step > restart)
        self.applied.append(Applied(window, t, None, made))

    def ended(self, window: FaultWindow, t: float) -> None:
        for a in self.applied:
            if a.window == window and a.ended is None:
                a.ended = t
        if window.restart:
            self.restarted_at = t

    def at(self, start: float, end: float) -> tuple[Applied, bool] | None:
        """The window a claim sent at ``start`` and over at ``end`` fell in, and whether it
        lay wholly inside it (settled) rather than across an edge."""
        for a in self.applied:
            over = a.ended if a.ended is not None else math.inf
            if end >= a.began and start <= over:
                return a, start >= a.began + SETTLE_S and end <= over
        return None

    # --- one claim ---------------------------------------------------------------------------
    def claim(
        self,
        dev: Device,
        label: str,
        send: Send | Pair | None,
        response: HttpResponse | None,
        status: str,
        start: float,
        end: float,
    ) -> bool:
        """Judge one claim if it fell in a window (True), else leave it to the healthy judge."""
        code = None if response is None else response.status
        if code == 429:
            return False  # rate limited before the stores are asked: an outcome, no row
        if code is not None and code not in (422, 500, 502, 503, 504):
            self.nonce_step_at = end  # it got past Redis: the server has its client
        hit = self.at(start, end)
        if hit is None:
            self._strand.pop(dev.index, None)
            return False
        applied, settled = hit
        healthy, early = self._healthy(dev, send)
        row, silence, why = self._row(applied, dev, healthy, early)
        if type(send) is Pair and not self.judge.profile.flags.enable_idempotency:
            row = row | {409}  # one of the pair passes the nonce step, the other is refused
        ok = (code is None and silence) or code in row or (not settled and code in healthy)
        results = self.judge.results
        w = applied.window
        applied.claims += 1
        if ok:
            results.check("fault_rows").evaluated += 1
        else:
            applied.off_row += 1
            expected = "/".join(map(str, sorted(row))) + (" or no answer" if silence else "")
            self.judge.violation("fault_rows", dev, label, f"{expected}: {why} ({w.text})",
                                 status.replace("_", " "))  # fmt: skip
        if w.target == "redis" and response is not None:
            self._redis_checks(applied, settled, dev, label, send, response)
        if w.target == "postgres":
            self._touched.add(dev.index)
        if w.target == "postgres" and code == 404 and healthy == {200}:
            self._strand[dev.index] = {"label": label, "window": w.text}
        else:
            self._strand.pop(dev.index, None)
        if response is not None:
            self.judged.add(id(response))
        return True

    def episode_over(self, dev: Device, cut: bool = False) -> None:
        """A device's episode ended: ended on an outage's 404, it is stranded (unless the
        run ended while it was still going to try again: ``cut``)."""
        if dev.index not in self._touched:
            return  # no PostgreSQL outage in this episode
        self._touched.discard(dev.index)
        stranded = self._strand.pop(dev.index, None)
        if cut:
            return
        if stranded is None:
            self.judge.results.check("db_outage_strands_devices").evaluated += 1
            return
        self.judge.violation("db_outage_strands_devices", dev, stranded["label"],
                             f"a 200 once PostgreSQL is back ({stranded['window']})",
                             "404, and the device stopped trying")  # fmt: skip

    def _redis_checks(
        self,
        applied: Applied,
        settled: bool,
        dev: Device,
        label: str,
        send: Send | Pair | None,
        response: HttpResponse,
    ) -> None:
        judge, results, code = self.judge, self.judge.results, response.status
        if self.continuity_promised:
            if code == 503:
                judge.violation("redis_outage_continuity", dev, label,
                                "an answer other than 503 (the checklist's continuity)",
                                f"503 in {applied.window.text}")  # fmt: skip
            else:
                results.check("redis_outage_continuity").evaluated += 1
        unprotected = not applied.redis_client_made and self.continuity_promised
        if unprotected and settled and _is_replay(label, send):  # protection was off
            cached = response.headers.get("x-idempotent-request", "").lower() == "true"
            if code == 200 and not cached:
                judge.violation("replay_protection_during_outage", dev, label,
                                "409, or the cached 200 of the first send",
                                f"200 with new tokens in {applied.window.text}")  # fmt: skip
            else:
                results.check("replay_protection_during_outage").evaluated += 1

    # --- the rows ----------------------------------------------------------------------------
    def _healthy(self, dev: Device, send: Send | Pair | None) -> tuple[frozenset[int], bool]:
        """What the send would get with nothing failing, and whether the nonce step (Redis)
        decides it, before any database lookup (a 409, or an idempotent replay)."""
        if type(send) is Pair:
            codes = frozenset(code for pair in send.expect.outcomes for code in pair)
            return codes, False
        if send is None or send.first or send.expect is None:
            return self.judge.expect_first(dev)[0].statuses, False
        codes = set(send.expect.statuses)
        if send.alternative is not None:
            codes |= send.alternative.statuses
        return frozenset(codes), send.expect.replay or codes <= {409}

    def _row(
        self, applied: Applied, dev: Device, healthy: frozenset[int], early: bool
    ) -> tuple[frozenset[int], bool, str]:
        """The fault's row for this device: statuses, whether silence is expected, why."""
        w = applied.window
        mode = w.proxy_mode
        if isinstance(mode, Delay | SlowClose) and w.target == "server":
            late = mode.seconds >= self.timeout if isinstance(mode, Delay) else False
            return healthy, late, "the server slowed down"
        if w.target == "server":
            return healthy, True, "the server is unreachable or its answers are cut"
        if healthy == {422} or body_refusal(dev) is not None:
            return frozenset({422}), False, "validation comes before any store"
        # Slowed, cut or for a share only: a claim may get through (the healthy answer), or
        # meet the server's own store timeout (the row).
        slowed = isinstance(mode, Delay | SlowClose)
        partial = mode.share < 1.0 or slowed or w.mode.startswith("cut")
        if w.target == "redis":
            return self._redis_row(applied, dev, healthy, partial)
        if early:  # answered at step 3 (Redis), before any database lookup
            return healthy, False, "decided at the nonce step, before the database"
        return self._postgres_row(dev, healthy, partial)

    def _redis_row(
        self, applied: Applied, dev: Device, healthy: frozenset[int], partial: bool
    ) -> tuple[frozenset[int], bool, str]:
        profile = self.judge.profile
        state = "down-later" if applied.redis_client_made else "down-since-start"
        answer = _with_redis(profile, state).redis_answer()
        if answer == "503":
            why = ("Redis down after the first claim: 503 whatever the flags" if
                   state == "down-later" else "Redis down since start: no client, 503")  # fmt: skip
            row = {503}
        else:  # down since start, idempotency on, DISABLE_...=true: no replay protection
            row = {device_status(profile, dev, "good")[0], device_status(profile, dev, "bad")[0]}
            why = "Redis down since start: carries on without replay protection"
        return frozenset(row | (healthy if partial else set())), False, why

    def _postgres_row(
        self, dev: Device, healthy: frozenset[int], partial: bool
    ) -> tuple[frozenset[int], bool, str]:
        profile = self.judge.profile
        if profile.build.db_error_is_missing:  # v5.0 swallows the errors
            row = {404}
            if profile.auto_registers(dev.norm_ids[0]):
                row.add(401)  # goes on with the record it would have stored; HMAC, then child
            why = f"{profile.name}: database errors swallowed, device or child 'missing'"
        else:
            row, why = {500}, f"{profile.name}: a database error is a 500"
        return frozenset(row | (healthy if partial else set())), False, why


def _with_redis(profile: ServerProfile, state: str) -> ServerProfile:
    return replace(profile, redis=state)  # type: ignore[arg-type]


def _is_replay(label: str, send: Send | Pair | None) -> bool:
    """The same nonce again: a resend, a concurrent duplicate, a retry after loss."""
    if label == LIVE_RESEND or type(send) is Pair:
        return True
    return type(send) is Send and not send.first and send.check in _REPLAY_CHECKS
