"""The rollout question: which cohorts break when NORMALIZE_IDS_IN_HMAC (or idempotency) changes.

For each cohort of a fleet and each of four configurations (NORMALIZE off/on x
idempotency off/on, the other flags as declared) this plays the same
deterministic claim plan and counts what each *device* ends up with: the
answer it acts on (after a lost response, its identical retry's answer; after
a bad HMAC, its corrected retry's; of two concurrent duplicates, the better).

* Without ``--target`` every configuration is **measured** on the embedded
  reference server (one server per configuration, the fleet's seed loaded).
* With ``--target`` the configuration the target is declared to run
  (``--flag``) is **measured** there and the other three are **predicted** by
  the oracle (``harness.oracle``, a pure function), episode by episode over the
  same plan and with the same scenario objects (``harness.scenarios``) a
  measured column plays. Every column says which it is.

The go / no-go line compares NORMALIZE off and on at the declared idempotency
setting: a cohort whose rejected share rises means devices the firmware will
not retry (a 4xx is final) would be locked out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.fleet.model import Cohort, Fleet, VirtualDevice
from harness.fleet.plan import plan_episodes
from harness.judge import RunObserver
from harness.oracle import ServerProfile, body_refusal, expect_send
from harness.preflight import preflight
from harness.profiles import declared_profile
from harness.protocol.claim import CLAIM_PATH
from harness.run import SoakOptions, run_soak
from harness.run.options import prepare_fleet
from harness.scenarios import predict
from harness.server.embedded import embedded_server
from harness.tls import client_context

Source = Literal["measured", "predicted"]
DEFAULT_CLAIMS_PER_COHORT = 100
# A cohort whose rejected share rises by more than this makes turning a flag on a no-go.
NO_GO_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class Configuration:
    """One column of the matrix: the declared flags with NORMALIZE and idempotency set."""

    normalize: bool
    idempotency: bool
    flags: Flags
    source: Source

    @property
    def key(self) -> str:
        n, i = ("on" if v else "off" for v in (self.normalize, self.idempotency))
        return f"normalize={n},idempotency={i}"

    @property
    def title(self) -> str:
        n = "on" if self.normalize else "off"
        i = "on" if self.idempotency else "off"
        return f"NORM {n} / IDEM {i}"


def configurations(declared: Flags, measured_all: bool) -> list[Configuration]:
    """The four columns; with a target only the declared one is measured."""
    out = []
    for idem in (False, True):
        for norm in (False, True):
            flags = replace(declared, normalize_ids_in_hmac=norm, enable_idempotency=idem)
            is_declared = (
                norm == declared.normalize_ids_in_hmac and idem == declared.enable_idempotency
            )
            source: Source = "measured" if measured_all or is_declared else "predicted"
            out.append(Configuration(norm, idem, flags, source))
    return out


def is_rejected(key: str) -> bool:
    """A final 4xx (429 is a back-off, not a rejection): the firmware will not retry it."""
    return key.isdigit() and key.startswith("4") and key != "429"


class EpisodeOutcomes(RunObserver):
    """A run observer counting the answer each device acts on after each episode
    (``on_episode``): the measured half of a cell, whatever the run's concurrency."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    def on_episode(self, dev: object, scenario: str, outcome: str) -> None:
        self.outcomes[outcome] += 1


def predict_cohort(
    fleet: Fleet, cohort: Cohort, profile: ServerProfile, claims: int
) -> Counter[str]:
    """Outcome counts the oracle predicts for the same plan a measured run plays: each
    episode's scenario (``harness.scenarios``) answered by the oracle instead of a server."""
    sub = cohort_fleet(fleet, cohort)
    devices: dict[int, VirtualDevice] = {}
    out: Counter[str] = Counter()
    for ep in plan_episodes(sub, claims):
        dev = devices.get(ep.device)
        if dev is None:
            dev = devices[ep.device] = sub.device(ep.device)
        out[predict(profile, dev, ep.scenario)] += 1
    return out


def cohort_fleet(fleet: Fleet, cohort: Cohort) -> Fleet:
    """The fleet reduced to one cohort; device indexes (so IDs and secrets) stay the same."""
    return replace(fleet, cohorts=(replace(cohort, weight=1.0),), _cache={})


@dataclass(slots=True)
class Cell:
    """One cohort under one configuration: episode outcome counts."""

    source: Source
    outcomes: Counter[str]
    predicted: Counter[str] | None = None  # the oracle's view of a measured cell
    failed_checks: list[str] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return sum(self.outcomes.values())

    def share(self, key: str) -> float:
        return self.outcomes.get(key, 0) / self.episodes if self.episodes else 0.0

    @property
    def rejected_share(self) -> float:
        if not self.episodes:
            return 0.0
        return sum(n for k, n in self.outcomes.items() if is_rejected(k)) / self.episodes

    @property
    def oracle_agrees(self) -> bool | None:
        return None if self.predicted is None else self.predicted == self.outcomes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "episodes": self.episodes,
            "outcomes": dict(sorted(self.outcomes.items())),
            "share": {k: round(self.share(k), 4) for k in sorted(self.outcomes)},
            "rejected_share": round(self.rejected_share, 4),
        }
        if self.predicted is not None:
            out["oracle_predicted"] = dict(sorted(self.predicted.items()))
            out["oracle_agrees"] = self.oracle_agrees
        if self.failed_checks:
            out["failed_checks"] = self.failed_checks
        return out


@dataclass(slots=True)
class CompatReport:
    fleet: str
    target: str
    declared: Flags
    configs: list[Configuration]
    cohorts: list[Cohort]
    cells: dict[tuple[str, str], Cell]  # (cohort name, config key) -> cell
    claims_per_cohort: int
    profile: ServerProfile = field(default_factory=ServerProfile)
    fleet_obj: Fleet | None = None

    @property
    def devices(self) -> int:
        return sum(c.count for c in self.cohorts)

    def config(self, normalize: bool, idempotency: bool) -> Configuration:
        for c in self.configs:
            if c.normalize == normalize and c.idempotency == idempotency:
                return c
        raise KeyError((normalize, idempotency))

    def fleet_rejected_share(self, config: Configuration) -> float:
        """Share of the fleet's devices rejected, each cohort weighted by its device count."""
        total = self.devices
        if not total:
            return 0.0
        return (
            sum(c.count * self.cells[(c.name, config.key)].rejected_share for c in self.cohorts)
            / total
        )

    def normalize_verdict(self) -> tuple[bool, str]:
        """(go, line) for turning NORMALIZE_IDS_IN_HMAC on at the declared idempotency."""
        idem = self.declared.enable_idempotency
        off, on = self.config(False, idem), self.config(True, idem)
        worse, better = [], []
        for c in self.cohorts:
            before = self.cells[(c.name, off.key)]
            after = self.cells[(c.name, on.key)]
            if before.rejected_share - after.rejected_share > NO_GO_TOLERANCE:
                better.append(
                    f"{c.name} {before.rejected_share:.1%} -> {after.rejected_share:.1%} rejected"
                )
            if after.rejected_share - before.rejected_share > NO_GO_TOLERANCE:
                top = max(
                    (k for k in after.outcomes if is_rejected(k)),
                    key=lambda k: after.outcomes[k],
                )
                worse.append(
                    f"{c.name} ({c.count:,} devices) {before.rejected_share:.1%} -> "
                    f"{after.rejected_share:.1%} rejected, mostly {top}"
                )
        was, will = self.fleet_rejected_share(off), self.fleet_rejected_share(on)
        idem_txt = "on" if idem else "off"
        gains = f" It helps {'; '.join(better)}." if better else ""
        untrusted = self.untrusted()
        if untrusted:  # the measurement is not of the declared server: no GO from it
            return False, (
                f"NO VERDICT: the measured answers are not what {self.profile.name} with the "
                f"declared flags gives ({'; '.join(untrusted[:3])}"
                f"{'; ...' if len(untrusted) > 3 else ''}), so the fleet was rejected for "
                "reasons other than the flag under study. Check the declaration "
                "(harness probe --target) and that the target holds the fleet."
            )
        blocked = self.blocked(off, on)
        if blocked:
            return False, (
                f"NO VERDICT: provisioned cohorts are rejected with NORMALIZE off and on "
                f"(idempotency {idem_txt}): {'; '.join(blocked)}. They are rejected for a reason "
                "other than the flag under study, so its effect on them cannot be judged."
            )
        if worse:
            return False, (
                f"NO-GO: turning on NORMALIZE_IDS_IN_HMAC (idempotency {idem_txt}) rejects "
                f"{will:.1%} of the fleet (now {was:.1%}): "
                + "; ".join(worse)
                + ". Update their firmware to normalised signing first."
                + gains
            )
        return True, (
            f"GO: turning on NORMALIZE_IDS_IN_HMAC (idempotency {idem_txt}) rejects "
            f"{will:.1%} of the fleet (now {was:.1%}); no cohort gets worse.{gains}"
        )

    def idempotency_line(self) -> str:
        norm = self.declared.normalize_ids_in_hmac
        off, on = self.config(norm, False), self.config(norm, True)
        was, will = self.fleet_rejected_share(off), self.fleet_rejected_share(on)
        return (
            f"ENABLE_IDEMPOTENCY (NORMALIZE {'on' if norm else 'off'}): {was:.1%} of the fleet "
            f"rejected with it off, {will:.1%} with it on (lost responses retried: 409 vs replay)."
        )

    def blocked(self, off: Configuration, on: Configuration) -> list[str]:
        """Cohorts that should claim (provisioned, active, an active child, a body the server
        accepts) but are mostly rejected with the flag off *and* on: rejected for another
        reason than the flag, with the oracle's reason."""
        out = []
        for c in self.cohorts:
            if not (c.provisioned and c.active and c.child == "active" and c.count):
                continue
            dev = self.fleet_obj.device(c.offset) if self.fleet_obj is not None else None
            if dev is not None and body_refusal(dev) is not None:
                continue  # a body refused on purpose (the validation check covers it)
            before, after = self.cells[(c.name, off.key)], self.cells[(c.name, on.key)]
            if before.rejected_share > 0.5 and after.rejected_share > 0.5:
                why = "see the matrix"
                if dev is not None:
                    why = expect_send(replace(self.profile, flags=off.flags), dev).describe()
                out.append(f"{c.name} {before.rejected_share:.0%} rejected ({why})")
        return out

    def untrusted(self) -> list[str]:
        """Measured cells whose checks failed or whose outcomes the oracle did not predict."""
        out = []
        for (cohort, key), cell in self.cells.items():
            if cell.source != "measured":
                continue
            if cell.failed_checks:
                out.append(f"{cohort} @ {key}: {', '.join(cell.failed_checks)} failed")
            elif cell.oracle_agrees is False:
                out.append(f"{cohort} @ {key}: outcomes differ from the oracle's")
        return out

    def disagreements(self) -> list[str]:
        """Measured cells where the reference server and the oracle differ (should be none)."""
        out = []
        for (cohort, key), cell in self.cells.items():
            if cell.oracle_agrees is False:
                out.append(f"{cohort} @ {key}")
        return out

    def to_dict(self) -> dict[str, Any]:
        go, line = self.normalize_verdict()
        return {
            "fleet": self.fleet,
            "target": self.target,
            "profile": self.profile.to_dict(),
            "declared_flags": self.declared.to_env(),
            "claims_per_cohort": self.claims_per_cohort,
            "devices": self.devices,
            "configurations": [
                {"key": c.key, "title": c.title, "source": c.source, "flags": c.flags.to_env()}
                for c in self.configs
            ],
            "cohorts": [
                {
                    "name": c.name,
                    "devices": c.count,
                    "id_style": c.id_style,
                    "signing": c.signing,
                    "firmware_version": c.firmware_version,
                    "provisioned": c.provisioned,
                    "by_configuration": {
                        cfg.key: self.cells[(c.name, cfg.key)].to_dict() for cfg in self.configs
                    },
                }
                for c in self.cohorts
            ],
            "fleet_rejected_share": {
                cfg.key: round(self.fleet_rejected_share(cfg), 4) for cfg in self.configs
            },
            "normalize_go": go,
            "decision": line.split(":", 1)[0],  # GO, NO-GO or NO VERDICT (its first words)
            "verdict": line,
            "idempotency": self.idempotency_line(),
            "oracle_disagreements": self.disagreements(),
        }

    def table(self, width: int = 100) -> str:
        """The console matrix: a row per cohort, a column per configuration. When the
        configurations' titles would make it wider than ``width``, the columns are
        lettered and a legend above says which configuration each letter is."""
        wide = self._table([f"{c.title} ({c.source})" for c in self.configs])
        if max(len(line) for line in wide.splitlines()) <= width:
            return wide
        letters = [chr(ord("A") + i) for i in range(len(self.configs))]
        legend = [
            f"{k}: {c.title} ({c.source})" for k, c in zip(letters, self.configs, strict=True)
        ]
        return "\n".join([*legend, "", self._table(letters)])

    def _table(self, titles: list[str]) -> str:
        head = ["cohort", "devices", *titles]
        rows = [head]
        for c in self.cohorts:
            row = [c.name, f"{c.count:,}"]
            for cfg in self.configs:
                row.append(_cell_text(self.cells[(c.name, cfg.key)]))
            rows.append(row)
        rows.append(
            ["fleet rejected", f"{self.devices:,}"]
            + [f"{self.fleet_rejected_share(cfg):.1%}" for cfg in self.configs]
        )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


def _cell_text(cell: Cell) -> str:
    if not cell.episodes:
        return "-"
    parts = [
        f"{k} {cell.share(k):.0%}"
        for k, _ in sorted(cell.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return " ".join(parts[:3]) + (" ..." if len(parts) > 3 else "")


@dataclass(slots=True)
class CompatOptions:
    fleet: Fleet | str | Path
    target: str | None = None
    claim_path: str = CLAIM_PATH
    flags: Flags = field(default_factory=Flags)  # declared (target) / base (embedded)
    claims_per_cohort: int = DEFAULT_CLAIMS_PER_COHORT
    devices: int | None = None
    seed: int | None = None
    timeout: float = 10.0
    # Devices in flight while measuring (each with one episode at a time); None: the soak's
    # default. 1 against a target whose rate limit would answer 429s the oracle cannot know.
    concurrency: int | None = None
    # The server profile (harness.profiles); None: the fleet file's, else v5.0.
    profile: str | None = None
    environment: str | None = None
    bare_router: bool = False
    redis: str = "up"
    auto_register_secret: bytes | None = None
    atomic_idempotency: bool = False
    # An https:// target's TLS (harness.tls): verified by default.
    insecure: bool = False
    ca_bundle: str | None = None

    def server_profile(self, fleet: Fleet, flags: Flags) -> ServerProfile:
        return declared_profile(
            flags, self, default_name=fleet.profile, default_environment=fleet.environment
        )


def _load(options: CompatOptions) -> Fleet:
    fleet = prepare_fleet(SoakOptions(fleet=options.fleet, devices=options.devices,
                                      seed=options.seed))  # fmt: skip
    assert fleet is not None
    return fleet


async def _measure(
    url: str,
    fleet: Fleet,
    cohort: Cohort,
    flags: Flags,
    options: CompatOptions,
    jwt_secret: str | None = None,
) -> tuple[Counter[str], list[str]]:
    """Play one cohort's plan against a running server, at the run's usual concurrency
    (a device still has one episode in flight), counting each episode's outcome."""
    outcomes = EpisodeOutcomes()
    profile = options.server_profile(fleet, flags)
    outcome = await run_soak(
        SoakOptions(
            target=url,
            claim_path=options.claim_path,
            fleet=cohort_fleet(fleet, cohort),
            claims=options.claims_per_cohort,
            concurrency=options.concurrency,
            flags=flags,
            timeout=options.timeout,
            observers=[outcomes],
            jwt_secret=jwt_secret,
            firmware_time_scale=0.0,  # outcomes do not depend on the firmware's waits
            insecure=options.insecure,
            ca_bundle=options.ca_bundle,
            **profile.declaration(),
        )
    )
    failed = [
        t.name
        for t in outcome.results.checks.values()
        if not t.passed and not (t.name == "concurrent_retry" and _only_the_race(t, profile))
    ]
    return outcomes.outcomes, failed


def _only_the_race(tally: Any, profile: ServerProfile) -> bool:
    """The v5 race the declared build has (two tokens for one claim), not another answer:
    the build behaving as declared, so no reason to distrust the measurement."""
    if profile.atomic_idempotency or not profile.flags.enable_idempotency:
        return False
    return bool(tally.examples) and all(
        "different tokens" in str(e.get("got")) for e in tally.examples
    )


async def run_compat(options: CompatOptions) -> CompatReport:
    """The matrix: measured (embedded: every column; target: the declared one), else predicted."""
    if options.claims_per_cohort < 1:
        raise HarnessInputError("--claims-per-cohort", "must be at least 1")
    fleet = _load(options)
    declared = options.server_profile(fleet, options.flags)  # bad options: exit 2 up front
    tls = client_context(options.insecure, options.ca_bundle)  # a bad bundle: exit 2 up front
    if options.target is not None:
        await preflight(options.target, fleet, options.claim_path, options.timeout, ssl_context=tls)
    cohorts = [c for c in fleet.cohorts if c.count > 0]
    configs = configurations(options.flags, measured_all=options.target is None)
    cells: dict[tuple[str, str], Cell] = {}
    for cfg in configs:
        profile = options.server_profile(fleet, cfg.flags)
        predicted = {
            c.name: predict_cohort(fleet, c, profile, options.claims_per_cohort) for c in cohorts
        }
        if cfg.source == "predicted":
            for c in cohorts:
                cells[(c.name, cfg.key)] = Cell("predicted", predicted[c.name])
            continue
        measured = await _measure_config(options, fleet, cohorts, cfg)
        for c in cohorts:
            outcomes, failed = measured[c.name]
            cells[(c.name, cfg.key)] = Cell("measured", outcomes, predicted[c.name], failed)
    target = options.target or "embedded reference server"
    return CompatReport(
        fleet.name,
        target,
        options.flags,
        configs,
        cohorts,
        cells,
        options.claims_per_cohort,
        declared,
        fleet,
    )


async def _measure_config(
    options: CompatOptions, fleet: Fleet, cohorts: Iterable[Cohort], cfg: Configuration
) -> dict[str, tuple[Counter[str], list[str]]]:
    if options.target is not None:
        return {
            c.name: await _measure(options.target, fleet, c, cfg.flags, options) for c in cohorts
        }
    server = embedded_server(options.server_profile(fleet, cfg.flags), fleet.to_seed())
    async with server:
        return {
            c.name: await _measure(server.url, fleet, c, cfg.flags, options, server.jwt_secret)
            for c in cohorts
        }


def run_compat_sync(options: CompatOptions) -> CompatReport:
    return asyncio.run(run_compat(options))
