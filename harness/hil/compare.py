"""``hil compare``: boards and the simulator sign the same inputs; any difference fails.

For every board the simulator is told what the bench declares the board runs
(``firmware``, else the version in the board's ``image``, else what the board
reports) and derives the device ID from the board's MAC as v5 firmware does.
The Python core and the C signer then sign the same child IDs and nonces the
board is given. Compared per case: the HMAC from each of the three, and the
whole claim body the board would POST against the one the simulator builds
(device ID, child ID, nonce, HMAC, firmware version). The child IDs include
case variants, so a board that signs in the other mode cannot agree by luck.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hil.bench import Bench
from harness.hil.board_errors import BoardError
from harness.hil.image import validate_image
from harness.hil.probe_app import cohort_signing_table, signing_mode_for
from harness.hil.session import BenchBoard, BenchSession
from harness.masking import mask_id, scrub
from harness.protocol import ClaimRequest, derive_oob_v5, mac_to_device_id
from harness.protocol.signing import SigningMode
from harness.signer import CSigner, PythonSigner, Signer

DEFAULT_CASES = 8


@dataclass(frozen=True, slots=True)
class Case:
    child_id: str
    nonce: str


@dataclass(slots=True)
class CaseResult:
    """One board, one input: who agreed with the Python core."""

    board: str
    index: int
    child_id: str
    c_matches: bool
    board_matches: bool
    body_matches: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.c_matches and self.board_matches and self.body_matches


@dataclass(slots=True)
class BoardComparison:
    """One board: what the simulator was told, what the board says, and every case."""

    board: str
    told_version: str | None = None
    told_mode: SigningMode | None = None
    board_version: str | None = None
    board_mode: str | None = None
    device_id_matches: bool = False
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None

    @property
    def differing(self) -> int:
        return sum(not c.ok for c in self.cases)

    @property
    def ok(self) -> bool:
        return self.error is None and self.device_id_matches and self.cases and not self.differing


@dataclass(slots=True)
class CompareOutcome:
    boards: list[BoardComparison]

    @property
    def passed(self) -> bool:
        return bool(self.boards) and all(b.ok for b in self.boards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "boards": [
                {
                    "board": b.board,
                    "told": f"{b.told_version} ({b.told_mode})",
                    "board_says": f"{b.board_version} ({b.board_mode})",
                    "device_id_matches": b.device_id_matches,
                    "cases": len(b.cases),
                    "differing": b.differing,
                    "error": b.error,
                }
                for b in self.boards
            ],
        }

    def table(self) -> str:
        """A plain-text table: one row per board, then the differing cases (IDs masked)."""
        head = ("board", "simulator told", "board reports", "device id", "cases", "differ", "")
        rows = [head]
        for b in self.boards:
            rows.append(
                (
                    b.board,
                    f"{b.told_version} {b.told_mode}" if b.told_version else "-",
                    f"{b.board_version} {b.board_mode}" if b.board_version else "-",
                    "same" if b.device_id_matches else "DIFF",
                    str(len(b.cases)),
                    str(b.differing),
                    "ok" if b.ok else f"FAIL {b.error or ''}".strip(),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        details = [
            f"  {c.board} case {c.index} child {mask_id(c.child_id)}: "
            + (
                c.error
                or ", ".join(
                    f"{who} {'same' if same else 'DIFF'}"
                    for who, same in (
                        ("C signer", c.c_matches),
                        ("board HMAC", c.board_matches),
                        ("body", c.body_matches),
                    )
                )
            )
            for b in self.boards
            for c in b.cases
            if not c.ok
        ]
        if details:
            lines += ["differing cases (HMACs are secrets and are not shown):", *details[:40]]
            if len(details) > 40:
                lines.append(f"  ... {len(details) - 40} more")
        return "\n".join(line.rstrip() for line in lines)


def make_cases(children: tuple[str, ...], n: int, seed: int) -> list[Case]:
    """``n`` inputs: the bench's children and case variants of them, seeded nonces."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        child = children[i % len(children)]
        variant = (child, child.upper(), child.lower(), f"Kid-{i}X")[(i // len(children)) % 4]
        cases.append(Case(variant, rng.randbytes(16).hex()))
    return cases


def told_version(entry: BenchBoard) -> str | None:
    """What the simulator is told this board runs: declared, else the image's, else None."""
    spec = entry.spec
    if spec.firmware:
        return spec.firmware
    if spec.image is not None:
        return validate_image(spec.image, f"board {spec.name} image").version
    return None


def compare_session(
    session: BenchSession, cases: int = DEFAULT_CASES, seed: int = 0
) -> CompareOutcome:
    """Compare every board of a brought-up bench with the Python core and the C signer."""
    python, c_signer = PythonSigner(), CSigner.build()
    table = cohort_signing_table(None)
    inputs = make_cases(session.bench.children, cases, seed)
    out: list[BoardComparison] = []
    for entry in session.boards:
        out.append(_compare_board(entry, inputs, python, c_signer, table))
    return CompareOutcome(out)


def compare_bench(
    bench: Bench,
    *,
    cases: int = DEFAULT_CASES,
    seed: int = 0,
    log_dir: Path | str | None = None,
    flash: bool = True,
) -> CompareOutcome:
    """Bring the bench up and compare (``harness hil compare``)."""
    with BenchSession(bench, log_dir, flash=flash) as session:
        return compare_session(session, cases, seed)


def _compare_board(
    entry: BenchBoard,
    inputs: list[Case],
    python: Signer,
    c_signer: Signer,
    table: dict[str, SigningMode],
) -> BoardComparison:
    cmp = BoardComparison(entry.name)
    if not entry.ok or entry.identity is None:
        cmp.error = scrub(entry.error or "board did not come up")  # may quote a frame
        return cmp
    ident = entry.identity
    cmp.board_version, cmp.board_mode = ident.fw, ident.hmac_mode
    version = told_version(entry) or ident.fw
    mode = signing_mode_for(version, table)
    cmp.told_version, cmp.told_mode = version, mode
    device_id = mac_to_device_id(ident.mac)
    cmp.device_id_matches = device_id == ident.device_id
    oob_hex = python.derive(device_id)
    if c_signer.derive(device_id) != oob_hex or oob_hex != derive_oob_v5(device_id):
        cmp.error = "C signer and Python core derive different secrets"
        return cmp
    oob = bytes.fromhex(oob_hex)
    signer = entry.signer
    for i, case in enumerate(inputs):
        want = python.sign(device_id, case.child_id, case.nonce, oob, mode)
        got_c = c_signer.sign(device_id, case.child_id, case.nonce, oob, mode)
        body = ClaimRequest(device_id, case.child_id, case.nonce, want, version).to_json()
        try:
            sig = signer.sign_claim(case.child_id, case.nonce)
        except BoardError as exc:
            cmp.cases.append(CaseResult(entry.name, i, case.child_id, got_c == want, False, False))
            cmp.cases[-1].error = scrub(str(exc))  # may quote the board's answer
            continue
        cmp.cases.append(
            CaseResult(
                entry.name,
                i,
                case.child_id,
                c_matches=got_c == want,
                board_matches=sig.hmac_hex == want,
                body_matches=sig.body == body,
            )
        )
    return cmp
