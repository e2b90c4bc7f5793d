"""The fleet model: cohorts of virtual ESP32s, deterministic from a seed.

A fleet file (``fleets/*.toml``) describes cohorts; this module turns it into
``VirtualDevice`` objects on demand. Everything a device is (its ID as the
firmware holds it, its OOB secret, its child) is a pure function of the fleet
seed and the device's key (its cohort's position in the file and its number
within the cohort), so the same file and seed give the same
devices in every process and on every shard, and 100,000 devices are created
lazily and cheaply (``__slots__``, no per-device ``random.Random``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from harness.errors import HarnessInputError
from harness.firmware import FIRMWARES, habits_for
from harness.mqtt.spec import SessionSpec
from harness.protocol import claim_message, derive_oob_v5, normalize_id, user_agent
from harness.protocol.identity import case_variant
from harness.server.seed import Seed

# Espressif's OUI, so generated MACs look like the real fleet's.
ESPRESSIF_OUI = "CCDBA7"
_MASK24 = (1 << 24) - 1
# A device's key: 6 bits of cohort position, 18 bits of its number within the cohort.
# Keys, not fleet-wide indexes, make IDs: a fleet scaled down (--devices) keeps a
# subset of the very devices the full fleet has, so one provisioning serves both.
LOCAL_BITS = 18
MAX_COHORTS = 1 << (24 - LOCAL_BITS)
MAX_COHORT_DEVICES = (1 << LOCAL_BITS) - 1


def _mix24(index: int, salt: int) -> int:
    """A bijection on 24 bits: distinct device indexes always give distinct MAC/suffix bits."""
    x = (index * 0x9E3779 + salt) & _MASK24
    x ^= x >> 11
    x = (x * 0x5BD1E5) & _MASK24  # odd multiplier: invertible mod 2**24
    x ^= x >> 13
    return x


def _digest(seed: int, label: str, index: int, size: int = 32) -> bytes:
    """Deterministic per-device bytes (secrets, case patterns) from the fleet seed."""
    return hashlib.blake2b(
        f"{label}:{index}".encode(), key=seed.to_bytes(8, "big", signed=True), digest_size=size
    ).digest()


@dataclass(frozen=True, slots=True)
class Cohort:
    """One group of devices that share firmware, ID style, provisioning and network habits."""

    name: str
    count: int
    id_style: str = "mac-upper"  # mac-upper | mac-lower | prefixed | mixed-case | spaces
    prefix: str = ""
    suffix: str = "hex"  # hex | HEX | number
    firmware_version: str = "5.0.3"
    signing: str = "legacy"  # legacy | normalized
    oob: str = "v5-derived"  # v5-derived | provisioned | static
    static_secret: bytes | None = None
    provisioned: bool = True
    active: bool = True
    child: str = "active"  # active | inactive | unknown | an explicit child ID
    child_case: str = "as-is"  # as-is | upper | mixed | spaces
    loss: float = 0.0
    retry_delay: float = 0.05
    concurrent_duplicates: float = 0.0
    bad_hmac_first: float = 0.0
    replay_other_hmac: float = 0.0
    invalid_bodies: float = 0.0  # a body the server's validation refuses, then the right one
    weight: float = 1.0
    # The firmware claim path (harness.firmware): "live" or "claim-device"; None: the
    # harness's own device (id_style, prefix and the network habits above only).
    firmware: str | None = None
    time_scale: float = 1.0  # multiplies the firmware's waits (resends, back-off)
    # Retry habits (harness.firmware.HABITS): None: the firmware's, else "outage" habits.
    habits: str | None = None
    # What its devices do on MQTT after the claim (a fleet's [session] tables); the
    # default is no session at all.
    session: SessionSpec = field(default_factory=SessionSpec)
    offset: int = 0  # global index of this cohort's first device
    # Part of every device's key; the loader sets it to the cohort's place in the file,
    # so a fleet cut down to some cohorts (compat) keeps their IDs. None: its position.
    ordinal: int | None = None
    line: int = 0  # where the cohort starts in its file (for messages)

    @property
    def network_shares(self) -> tuple[float, float, float, float, float]:
        """(loss, concurrent_duplicates, replay_other_hmac, bad_hmac_first, invalid_bodies)."""
        return (
            self.loss,
            self.concurrent_duplicates,
            self.replay_other_hmac,
            self.bad_hmac_first,
            self.invalid_bodies,
        )


@dataclass(frozen=True, slots=True)
class ChildProfile:
    child_id: str
    is_active: bool = True


@lru_cache(maxsize=256)
def _firmware_strings(
    version: str, firmware: str | None = None
) -> tuple[tuple[tuple[str, str], ...], str]:
    """Per-firmware strings every device of that version shares (headers, body tail)."""
    if firmware is not None:
        profile = FIRMWARES[firmware]
        tail = f'","firmware_version":"{version}"}}' if profile.body_has_version else '"}'
        return profile.headers(version), tail
    return (("User-Agent", user_agent(version)),), f'","firmware_version":"{version}"}}'


@lru_cache(maxsize=4096)
def _normalized_child(child_id: str) -> str:
    return normalize_id(child_id)


class VirtualDevice:
    """One simulated ESP32: identity, secret, firmware habits; cheap enough for 100k of them.

    ``device_id``/``child_id`` are exactly what the firmware holds and sends
    (case and padding included). ``child_state`` says what the server knows of
    the child: ``active``, ``inactive`` or ``unknown``.
    """

    __slots__ = (
        "_body_head",
        "_body_tail",
        "_msg_ids",
        "active",
        "child_id",
        "child_state",
        "cohort",
        "device_id",
        "firmware",
        "firmware_version",
        "habits",
        "headers",
        "index",
        "norm_ids",
        "oob",
        "provisioned",
        "signer",
        "signing",
    )
    # A virtual device signs and claims here, in the harness; a bench's board is the device
    # with a ``remote`` (harness.hil.devices).
    remote = None

    def __init__(
        self,
        index: int,
        cohort: Cohort,
        device_id: str,
        child_id: str,
        child_state: str,
        oob: bytes,
    ) -> None:
        self.index = index
        self.cohort = cohort
        self.device_id = device_id
        self.child_id = child_id
        self.child_state = child_state
        self.oob = oob
        self.signing = cohort.signing
        # Who signs its claims (harness.signer.Signer, e.g. the C signer); None: the Python
        # core, inline (the runner gives every device of a run its --signer).
        self.signer: Any = None
        self.firmware = FIRMWARES[cohort.firmware] if cohort.firmware else None
        # What it does after a failure: resends, fresh attempts, back-off (harness.firmware).
        self.habits = habits_for(cohort.firmware, cohort.habits)
        # What the body carries (None: the live path sends no firmware_version).
        self.firmware_version: str | None = cohort.firmware_version
        if self.firmware is not None and not self.firmware.body_has_version:
            self.firmware_version = None
        self.provisioned = cohort.provisioned
        self.active = cohort.active
        # What the server keys on (contract step 2), and what its tokens carry.
        self.norm_ids = (normalize_id(device_id), _normalized_child(child_id))
        strings = _firmware_strings(cohort.firmware_version, cohort.firmware)
        self.headers = strings[0]
        self._msg_ids = claim_message(device_id, child_id, "", self.signing)  # IDs, no nonce
        # IDs are [A-Za-z0-9_-] plus surrounding spaces: no JSON escaping needed.
        self._body_head = f'{{"device_id":"{device_id}","child_id":"{child_id}","nonce":"'
        self._body_tail = strings[1]

    def __repr__(self) -> str:  # never the secret
        return f"VirtualDevice({self.index}, {self.cohort.name!r})"

    @property
    def normalized_id(self) -> str:
        return self.norm_ids[0]

    def message(self, nonce_hex: str) -> bytes:
        """What this firmware HMACs: IDs as held (legacy) or normalised, then the nonce bytes."""
        return self._msg_ids + bytes.fromhex(nonce_hex)

    def body(self, nonce_hex: str, hmac_hex: str) -> bytes:
        """The claim body, byte for byte what ``ClaimRequest.to_json`` produces."""
        return (
            self._body_head + nonce_hex + '","hmac_hex":"' + hmac_hex + self._body_tail
        ).encode()


@dataclass(frozen=True, slots=True)
class Fleet:
    """A named, seeded set of cohorts plus the children they claim for."""

    name: str
    seed: int
    cohorts: tuple[Cohort, ...]
    children: tuple[ChildProfile, ...]
    source: str = "<memory>"
    child_prefix: str = "child-"
    # The server profile this fleet is judged against unless the command says otherwise.
    profile: str | None = None
    environment: str | None = None
    # Fault windows a soak of this fleet runs through (harness.faults.windows), [[faults]].
    faults: tuple[Any, ...] = ()
    # The server's access-token lifetime for this fleet's runs ([session] access_ttl), so
    # that sessions refresh within a soak; None: the server's own (v5: an hour).
    access_ttl_s: int | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ordinals = [i if c.ordinal is None else c.ordinal for i, c in enumerate(self.cohorts)]
        if len(set(ordinals)) != len(ordinals) or not all(0 <= o < MAX_COHORTS for o in ordinals):
            raise HarnessInputError(
                "cohorts", f"at most {MAX_COHORTS}, each with its own ordinal", self.source
            )
        for cohort in self.cohorts:
            if not 0 <= cohort.count <= MAX_COHORT_DEVICES:
                raise HarnessInputError(
                    f"cohort {cohort.name}", f"count must be within 0..{MAX_COHORT_DEVICES}"
                )

    def __len__(self) -> int:
        return sum(c.count for c in self.cohorts)

    @property
    def active_children(self) -> tuple[ChildProfile, ...]:
        cached = self._cache.get("active_children")
        if cached is None:
            cached = self._cache["active_children"] = tuple(c for c in self.children if c.is_active)
        return cached  # type: ignore[no-any-return]

    def cohort_of(self, index: int) -> Cohort:
        return self._locate(index)[1]

    def _locate(self, index: int) -> tuple[int, Cohort]:
        """(position of the cohort in the fleet, cohort) of fleet-wide device ``index``."""
        for position, cohort in enumerate(self.cohorts):
            if cohort.offset <= index < cohort.offset + cohort.count:
                return position, cohort
        raise IndexError(f"device index {index} outside fleet of {len(self)}")

    def device(self, index: int) -> VirtualDevice:
        """Device number ``index`` (0-based, fleet-wide), rebuilt from the seed each call."""
        position, cohort = self._locate(index)
        ordinal = position if cohort.ordinal is None else cohort.ordinal
        key = (ordinal << LOCAL_BITS) | (index - cohort.offset)
        device_id = self._device_id(cohort, key)
        child_id, child_state = self._child(cohort, key)
        return VirtualDevice(
            index, cohort, device_id, child_id, child_state, self._secret(cohort, key, device_id)
        )

    def devices(self) -> Iterator[VirtualDevice]:
        """Every device, in index order, created as iterated."""
        for i in range(len(self)):
            yield self.device(i)

    # --- identities ------------------------------------------------------------
    def _base_mac(self, index: int) -> str:
        return f"{ESPRESSIF_OUI}{_mix24(index, self.seed & _MASK24):06X}"

    def _prefixed(self, cohort: Cohort, index: int) -> str:
        if cohort.suffix == "number":
            return f"{cohort.prefix}{(index & MAX_COHORT_DEVICES) + 1:04d}"
        bits = f"{_mix24(index, self.seed & _MASK24):06x}"
        return cohort.prefix + (bits.upper() if cohort.suffix == "HEX" else bits)

    def _device_id(self, cohort: Cohort, index: int) -> str:
        if cohort.firmware is not None:  # the firmware derives it from the MAC
            return FIRMWARES[cohort.firmware].device_id(self._base_mac(index))
        style = cohort.id_style
        if style == "mac-upper":
            return self._base_mac(index)
        if style == "mac-lower":
            return self._base_mac(index).lower()
        base = self._prefixed(cohort, index) if cohort.prefix else self._base_mac(index)
        if style == "prefixed":
            return base
        if style == "mixed-case":
            rng = random.Random(int.from_bytes(_digest(self.seed, "case", index, 8), "big"))
            return case_variant(base, "mixed", rng)
        return f" {base} "  # spaces

    def _child(self, cohort: Cohort, index: int) -> tuple[str, str]:
        choice = cohort.child
        if choice == "unknown":
            child_id, state = f"{self.child_prefix}unknown-{index:06d}", "unknown"
        elif choice == "inactive":
            inactive = [c for c in self.children if not c.is_active]
            child_id, state = inactive[index % len(inactive)].child_id, "inactive"
        elif choice == "active":
            active = self.active_children
            child_id, state = active[index % len(active)].child_id, "active"
        else:
            known = {normalize_id(c.child_id): c for c in self.children}
            profile = known.get(normalize_id(choice))
            state = (
                "unknown" if profile is None else ("active" if profile.is_active else "inactive")
            )
            child_id = choice
        case = cohort.child_case
        if case == "upper":
            child_id = child_id.upper()
        elif case == "mixed":
            rng = random.Random(int.from_bytes(_digest(self.seed, "child-case", index, 8), "big"))
            child_id = case_variant(child_id, "mixed", rng)
        elif case == "spaces":
            child_id = f" {child_id} "
        return child_id, state

    def _secret(self, cohort: Cohort, index: int, device_id: str) -> bytes:
        if cohort.oob == "v5-derived":
            if cohort.firmware is not None:  # of the string that firmware derives it from
                device_id = FIRMWARES[cohort.firmware].key_id(self._base_mac(index))
            return bytes.fromhex(derive_oob_v5(device_id))
        if cohort.oob == "static":
            if cohort.static_secret is not None:
                return cohort.static_secret
            return _digest(self.seed, f"static:{cohort.name}", 0)
        return _digest(self.seed, "oob", index)

    # --- derived fleets ----------------------------------------------------------
    def with_seed(self, seed: int) -> Fleet:
        """The same fleet under another seed (``--seed``): a 64-bit signed integer, as in a
        fleet file, because device keys are derived from its 8 bytes."""
        if not -(2**63) <= seed < 2**63:
            raise HarnessInputError("--seed", f"must fit in 64 bits (-2**63..2**63-1), got {seed}")
        return replace(self, seed=seed, _cache={})

    def scaled(self, devices: int) -> Fleet:
        """The same mix with ``devices`` devices in all (largest remainder; each cohort keeps 1)."""
        total = len(self)
        if devices == total:
            return self
        n = len(self.cohorts)
        quotas = [devices * c.count / total for c in self.cohorts]
        counts = [int(q) for q in quotas]
        order = sorted(range(n), key=lambda i: (counts[i] - quotas[i], i))
        for i in order[: devices - sum(counts)]:
            counts[i] += 1
        if devices >= n:  # a cohort never vanishes: take its one device from the largest
            for i, cohort in enumerate(self.cohorts):
                if cohort.count and not counts[i]:
                    counts[counts.index(max(counts))] -= 1
                    counts[i] = 1
        if max(counts) > MAX_COHORT_DEVICES:
            raise HarnessInputError(
                "--devices", f"{devices} devices put more than {MAX_COHORT_DEVICES} in one cohort"
            )
        cohorts, offset = [], 0
        for cohort, count in zip(self.cohorts, counts, strict=True):
            cohorts.append(replace(cohort, count=count, offset=offset))
            offset += count
        return replace(self, cohorts=tuple(cohorts), _cache={})

    # --- provisioning ---------------------------------------------------------------
    def seed_export(self) -> dict[str, Any]:
        """The server seed (``harness serve --seed`` format): provisioned devices and children.

        Device IDs are stored as the server keys them (``strip().lower()``) with the
        secret the firmware really uses, so a provisioned device passes the HMAC
        check whatever its case.
        """
        devices = [
            {
                "device_id": dev.normalized_id,
                "oob_secret_hex": dev.oob.hex().upper(),
                "is_active": dev.active,
            }
            for dev in self.devices()
            if dev.provisioned
        ]
        children = [
            {"child_id": normalize_id(c.child_id), "is_active": c.is_active} for c in self.children
        ]
        return {"devices": devices, "children": children}

    def to_seed(self) -> Seed:
        """``seed_export`` as the server's ``Seed`` value."""
        return Seed.from_dict(self.seed_export(), where=f"fleet {self.name}")
