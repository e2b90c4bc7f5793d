"""A bench's boards as devices of a run (ARCHITECTURE: "HIL is another kind of signer and
device, not a second pipeline").

A board is a device whose facts come from its identity (the device ID as the
firmware holds it, the HMAC mode its firmware version implies, the secret v5
firmware derives) and whose ``remote`` signs claims on the board over the
serial bridge, or, with ``board_claims = true``, has the board POST them over
its own network. The runner (``harness.run``) schedules, sends and judges
them exactly as it does a virtual device, in the same results and report.

Per board: ``claims_per_board`` episodes cycling through the bench's children,
the last of them a lost response (the same body again: the firmware's retry
after a timeout), which exercises ``idempotent_retry``. A board that posts its
own claims makes first claims only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.fleet.plan import Episode
from harness.hil.board_errors import BoardError
from harness.hil.session import BenchBoard, BenchSession
from harness.oracle import CORRELATION_HEADER
from harness.protocol import derive_oob_v5, normalize_id, user_agent
from harness.protocol.claim import ClaimRequest
from harness.server.seed import Seed, SeedChild, SeedDevice
from harness.transport import HttpResponse, TransportConnectionError

HTTP_TIMEOUT_S = 10.0
# Called after each of a board's episodes: (session, board name, episode index). The last
# episode is a lost response, so its hook runs after the resend, not between the two.
ClaimHook = Callable[[BenchSession, str, int], None]


@dataclass(frozen=True, slots=True)
class BoardCohort:
    """What the runner reads of a device's cohort, for a board (its name in reports)."""

    name: str
    retry_delay: float = 0.0  # a board's "lost response" resend goes at once
    time_scale: float = 1.0


class BoardRemote:
    """A board's side of a run: its serial calls, its answers counted, how it failed."""

    def __init__(self, session: BenchSession, entry: BenchBoard, posts: bool,
                 hook: ClaimHook | None) -> None:  # fmt: skip
        self.session = session
        self.entry = entry
        self.claims = posts  # the board POSTs its claims itself
        self.signs = not posts  # else it signs and the harness POSTs
        self.by_status: dict[str, int] = {}
        self._hook = hook
        self._episodes = 0
        self.after = self._after if hook is not None else None

    def sign(self, dev: BoardDevice) -> tuple[str, str, bytes]:
        """The board signs a claim for the episode's child with a nonce it draws itself."""
        self._alive()
        sig = self.entry.signer.sign_claim(dev.child_id)
        return sig.nonce, sig.hmac_hex, sig.body

    def claim(self, url: str, dev: BoardDevice) -> HttpResponse:
        """The board POSTs the claim over its own network and reports the answer."""
        self._alive()
        assert self.entry.board is not None
        reply = self.entry.board.request(
            "claim", url=url, child_id=dev.child_id, timeout=HTTP_TIMEOUT_S + 5
        )
        status = int(reply.get("status") or 0)
        if status <= 0:
            raise TransportConnectionError(f"{self.entry.name}: the board got no HTTP answer")
        body = reply.get("body")
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {}
        if reply.get("correlation_id"):
            headers[CORRELATION_HEADER] = str(reply["correlation_id"])
        return HttpResponse(status, headers, raw)

    def answered(self, key: str) -> None:
        self.by_status[key] = self.by_status.get(key, 0) + 1

    def failed(self, exc: BaseException) -> bool:
        """A board that failed (vanished, boot loop) is the bench's to report: True. Anything
        else is a harness bug for the run to raise: False."""
        if not isinstance(exc, BoardError):
            return False
        if self.entry.error is None:
            self.entry.error = str(exc)
        return True

    def _after(self) -> None:
        index, self._episodes = self._episodes, self._episodes + 1
        if self._hook is not None:
            self._hook(self.session, self.entry.name, index)

    def _alive(self) -> None:
        if self.entry.error is not None:
            raise BoardError(self.entry.error)


class BoardDevice:
    """One board claiming for one child: what the oracle and the runner read of a device."""

    firmware = None  # its retries are its firmware's own, not the harness's
    habits = None
    firmware_version = None  # the body is the board's (None: the oracle reads no version)
    signer = None
    provisioned = True  # a bench declares its boards loaded on the target
    active = True
    child_state = "active"

    def __init__(self, index: int, remote: BoardRemote, child_id: str) -> None:
        ident = remote.entry.identity
        assert ident is not None
        self.index = index
        self.remote = remote
        self.cohort = BoardCohort(remote.entry.name)
        self.device_id = ident.device_id
        self.child_id = child_id
        self.signing = ident.hmac_mode
        self.oob = bytes.fromhex(derive_oob_v5(ident.device_id))
        self.norm_ids = (normalize_id(ident.device_id), normalize_id(child_id))
        self.headers = (("Content-Type", "application/json"), ("User-Agent", user_agent(ident.fw)))

    def body(self, nonce_hex: str, hmac_hex: str) -> bytes:
        return ClaimRequest(self.device_id, self.child_id, nonce_hex, hmac_hex).to_json()

    def __repr__(self) -> str:  # never the secret
        return f"BoardDevice({self.index}, {self.cohort.name!r})"


class BenchPlan:
    """The ready boards of a session and their episodes (``harness.run.options.Bench``)."""

    def __init__(self, session: BenchSession, claims: int, hook: ClaimHook | None = None) -> None:
        bench = session.bench
        self.name = bench.name
        self.session = session
        self.claims = claims
        self.remotes = {
            e.name: BoardRemote(session, e, bench.board_claims, hook) for e in session.ready()
        }

    def episodes(self, first_index: int) -> list[tuple[Episode, Any]]:
        children = self.session.bench.children
        out: list[tuple[Episode, Any]] = []
        posts = self.session.bench.board_claims
        for b, remote in enumerate(self.remotes.values()):
            index = first_index + b
            for i in range(self.claims):
                last = i == self.claims - 1 and not posts
                scenario = "lost_response" if last else "first_claim"
                dev = BoardDevice(index, remote, children[i % len(children)])
                out.append((Episode(i, index, scenario, 2 if last else 1, 0), dev))
        return out

    def seed_rows(self) -> Seed:
        """Each board's ID with its v5-derived secret, and the bench's children."""
        ids = [r.entry.identity.device_id for r in self.remotes.values() if r.entry.identity]
        devices = tuple(SeedDevice(d, derive_oob_v5(d)) for d in ids)
        return Seed(devices, tuple(SeedChild(c) for c in self.session.bench.children))
