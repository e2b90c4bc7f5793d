"""What one run takes and gives: ``SoakOptions`` in, ``SoakOutcome`` out.

The CLI, compat, ``hil run`` and tests fill in ``SoakOptions``; nothing in a
run rewrites them. A run's figures all live in ``RunResults`` (one merge); the
outcome adds what the report says about the run (``info``) and the target's own
counters.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from harness.errors import HarnessInputError
from harness.faults.windows import FaultWindow
from harness.flags import Flags
from harness.fleet.loader import load_fleet
from harness.fleet.model import Fleet
from harness.fleet.plan import Episode
from harness.judge import Observer
from harness.mqtt.fleet import MqttOptions
from harness.profiles import ServerProfile, declared_profile
from harness.protocol.claim import CLAIM_PATH
from harness.results import RunResults
from harness.server.seed import Seed
from harness.shard import Shard
from harness.signer import Signer

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = "fleets/soak.toml"
DEFAULT_CLAIMS = 3000
DEFAULT_CONCURRENCY = 50


class Bench(Protocol):
    """Devices with their own plan that run beside the fleet's (``harness.hil.devices``):
    boards on a bench, each a device that signs (or claims) over its serial bridge."""

    name: str

    def episodes(self, first_index: int) -> list[tuple[Episode, Any]]:
        """Each board's episodes with its device, boards numbered from ``first_index``."""
        ...

    def seed_rows(self) -> Any:
        """The boards' rows for an embedded server (``harness.server.seed.Seed``)."""
        ...


@dataclass(slots=True)
class SoakOptions:
    """Everything one run needs; the CLI is a thin layer that fills this in."""

    target: str | None = None  # None: start the embedded reference server
    claim_path: str = CLAIM_PATH
    fleet: Fleet | str | Path | None = DEFAULT_FLEET  # None: a bench's boards only
    devices: int | None = None  # rescale the fleet to this many devices
    seed: int | None = None  # override the fleet's seed
    claims: int | None = None  # stop after this many claims (sends)...
    duration: float | None = None  # ...or after this many seconds (both: whichever first)
    rate: float | None = None  # open model: claims/s over the whole fleet (all shards)
    concurrency: int | None = None  # closed model: this many devices at once
    flags: Flags = field(default_factory=Flags)  # the configuration the server is declared to run
    keepalive: bool = False  # default: a fresh connection per claim, like the firmware
    timeout: float = 10.0
    shard: tuple[int, int] | None = None  # (index, count): run only this slice of devices
    observers: list[Observer] = field(default_factory=list)
    progress: bool = False
    progress_stream: IO[str] | None = None
    # --workers: this process's running counts go to this file every PROGRESS_FILE_S
    # (never per claim), and the parent prints the combined progress line.
    progress_file: str | None = None
    # Every 200's token is checked (claims, and HS256 signature when the secret is known);
    # every Nth is also cross-checked by pyjwt, which costs about 150 µs (two claims' worth):
    # 1 in 10 added about 15 µs to every claim, 1 in 100 adds 1.5 µs and still means
    # 1,000 pyjwt checks per 100,000 claims. The benchmark runs this same default.
    token_verify_every: int = 100
    check_refresh_tokens: bool = False  # the refresh token of every 200 too (benches)
    # The server profile (harness.profiles): what the embedded server runs and what the
    # oracle is told a --target is. ``redis``: up, down-since-start or down-later (the
    # embedded server reproduces a declared outage with its in-memory store).
    profile: str | None = None  # None: the fleet file's, else v5.0
    environment: str | None = None  # None: the fleet file's, else production
    bare_router: bool = False
    redis: str = "up"
    atomic_idempotency: bool = False
    auto_register_secret: bytes | None = None
    server_mode: str = "thread"  # embedded server: "thread" or "process"
    # Multiplies the firmware's waits (resends, back-off) instead of each cohort's
    # time_scale; compat sets 0: outcomes do not depend on them.
    firmware_time_scale: float | None = None
    max_connections: int = 256
    run_id: str | None = None
    jwt_secret: str | None = None  # a --target's token secret, when known (signature checks)
    server_counters: bool = False  # scrape the target's /metrics v5 counters before and after
    # Who signs the virtual devices' claims (e.g. CSigner): each device is given it. None:
    # the Python core, inline. A bench's boards always sign with their own firmware.
    signer: Signer | None = None
    bench: Bench | None = None  # boards that run beside the fleet (hil run)
    # An https:// target's TLS (harness.tls): plain values, since an SSLContext does not
    # pickle; every process builds its own context from them. Default: verified.
    insecure: bool = False  # --insecure: no certificate verification
    ca_bundle: str | None = None  # --ca-bundle: trust these CAs (PEM) instead of the system's
    # --journal: the claim journal (harness.journal) run_job writes, workers included.
    journal: str | None = None
    # --fault / [[faults]]: windows the run goes through (harness.faults.windows); on the
    # embedded server behind fault proxies, in front of real Redis and PostgreSQL.
    faults: tuple[FaultWindow, ...] = ()
    # --mqtt / [session] mqtt = true: claimed devices go online (harness.mqtt.fleet).
    mqtt: MqttOptions | None = None
    # --access-ttl: the access-token lifetime a --target issues (None: the fleet's
    # [session] access_ttl, which an embedded server is told, else v5's 3600 s).
    access_ttl_s: int | None = None


@dataclass(slots=True)
class SoakOutcome:
    """What a run produced: results plus what the report needs to say about the run."""

    results: RunResults
    info: dict[str, Any]
    # The target's v5 counters before and after the run (empty: not scraped / not served).
    server_before: dict[str, float] = field(default_factory=dict)
    server_after: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.results.passed

    @property
    def extra(self) -> Counter[str]:
        return self.results.extra

    @property
    def by_cohort(self) -> Counter[tuple[str, str]]:
        return self.results.by_cohort

    @property
    def tokens_checked(self) -> int:
        return self.results.tokens_checked

    @property
    def token_signatures_verified(self) -> int:
        return self.results.token_signatures_verified

    @property
    def tokens_cross_checked(self) -> int:
        return self.results.tokens_cross_checked


def new_run_id() -> str:
    """A run's ID when none is given: 12 hex digits (a Pushgateway grouping value)."""
    return uuid.uuid4().hex[:12]


def resolve_fleet_path(path: str | Path) -> Path:
    """A fleet path as given, else relative to the repository root (``fleets/soak.toml``)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    alt = ROOT / p
    return alt if alt.exists() else p


def prepare_fleet(options: SoakOptions) -> Fleet | None:
    """The run's fleet, loaded, re-seeded and rescaled as the options say (None: no fleet)."""
    fleet = options.fleet
    if fleet is None:
        return None
    if not isinstance(fleet, Fleet):
        fleet = load_fleet(resolve_fleet_path(fleet))
    if options.seed is not None:
        fleet = fleet.with_seed(options.seed)
    if options.devices is not None:
        if options.devices < 1:
            raise HarnessInputError("--devices", f"must be at least 1, got {options.devices}")
        fleet = fleet.scaled(options.devices)
    return fleet


def validate_options(options: SoakOptions) -> None:
    """Bad combinations as one-line input errors, before anything starts."""
    for name, value in (("--rate", options.rate), ("--duration", options.duration),
                        ("--timeout", options.timeout)):  # fmt: skip
        if value is not None and not math.isfinite(value):
            raise HarnessInputError(name, f"must be a finite number, got {value}")
    if options.claims is not None and options.claims < 1:
        raise HarnessInputError("--claims", f"must be at least 1, got {options.claims}")
    if options.duration is not None and options.duration <= 0:
        raise HarnessInputError("--duration", f"must be positive, got {options.duration}")
    if options.rate is not None and options.rate <= 0:
        raise HarnessInputError("--rate", f"must be positive, got {options.rate}")
    if options.concurrency is not None and options.concurrency < 1:
        raise HarnessInputError("--concurrency", f"must be at least 1, got {options.concurrency}")
    if options.rate is not None and options.concurrency is not None:
        raise HarnessInputError("--rate", "give --rate (open model) or --concurrency, not both")
    if options.timeout <= 0:
        raise HarnessInputError("--timeout", f"must be positive, got {options.timeout}")
    if options.token_verify_every < 1:
        raise HarnessInputError("token_verify_every", "must be at least 1")
    if not options.claim_path.startswith("/"):
        raise HarnessInputError("--claim-path", f"must start with /, got {options.claim_path!r}")
    if options.shard is not None:
        Shard(*options.shard)  # raises the one-line --shard error
    if options.fleet is None and options.bench is None:
        raise HarnessInputError("--fleet", "a run needs a fleet, a bench, or both")
    if options.bench is not None and options.rate is not None:
        raise HarnessInputError("--rate", "a bench's boards run in the closed model only")


def server_profile(options: SoakOptions, fleet: Fleet | None) -> ServerProfile:
    """The declared server profile of a run: the options, else the fleet file's, else v5.0."""
    return declared_profile(
        options.flags,
        options,
        default_name=fleet.profile if fleet is not None else None,
        default_environment=fleet.environment if fleet is not None else None,
    )


def run_seed(options: SoakOptions, fleet: Fleet | None) -> Seed:
    """What the embedded reference server is seeded with: the fleet's rows and the bench's."""
    seed = fleet.to_seed() if fleet is not None else Seed()
    if options.bench is not None:
        seed = seed.merged(options.bench.seed_rows())
    return seed
