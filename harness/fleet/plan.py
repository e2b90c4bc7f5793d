"""The claim plan: which device does what, episode by episode, as a pure function of the seed.

An *episode* is one device's attempt at a claim with one fresh nonce: a single
first claim, or a pair of sends that exercise a server rule (retry after a lost
response, concurrent duplicates, the same nonce with another HMAC, a bad HMAC
then the corrected retry). Cohorts and scenarios are picked with Weyl
(low-discrepancy) sequences rather than random draws, so every cohort and every
scenario appears in close to its declared share in *any* run of a few hundred
episodes, not just on average. The plan does not depend on timing or on what
the server answers, so shards that each run the episodes of their own devices
add up to exactly the plan of one process.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import NamedTuple

from harness.errors import HarnessInputError
from harness.fleet.model import Fleet
from harness.scenarios import SCENARIOS as SCENARIO_OBJECTS

# Episode scenarios (harness.scenarios), how many claims (HTTP sends) each makes, and the
# label each send is counted under (bounded: safe as a metrics label).
SCENARIO_SENDS: dict[str, int] = {name: s.sends for name, s in SCENARIO_OBJECTS.items()}
SCENARIOS: tuple[str, ...] = tuple(SCENARIO_SENDS)
SEND_LABELS: dict[str, tuple[str, ...]] = {n: s.labels for n, s in SCENARIO_OBJECTS.items()}
_NETWORK_SCENARIOS = (
    "lost_response",
    "concurrent_duplicate",
    "replay_other_hmac",
    "bad_hmac_first",
    "invalid_body",
)

_GOLDEN = 0.6180339887498949  # (sqrt(5) - 1) / 2
_SQRT2 = 0.4142135623730951  # sqrt(2) - 1: rationally independent of the golden ratio
_M64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Episode(NamedTuple):
    """One planned claim attempt: global episode number, device index, scenario, send slots.

    A NamedTuple: one is made per claim attempt, and tuples are the cheapest to make.
    """

    index: int
    device: int
    scenario: str
    sends: int
    first_send: int  # global index of its first claim: the open model schedules on it


def plan_episodes(
    fleet: Fleet,
    claims: int | None,
    owns: Callable[[int], bool] | None = None,
) -> Iterator[Episode]:
    """The fleet's episodes until ``claims`` sends are planned (forever when None).

    ``owns(device_index)`` keeps only a shard's devices; the global numbering
    (episode and send indexes) is unchanged, so shards schedule on one timeline.
    """
    cohorts = [c for c in fleet.cohorts if c.count > 0 and c.weight > 0]
    if not cohorts:
        raise HarnessInputError(
            "fleet", "no cohort has devices and a positive weight", fleet.source
        )
    weights = [c.count * c.weight for c in cohorts]
    total = sum(weights)
    cumulative: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w / total
        cumulative.append(acc)
    cumulative[-1] = 1.0
    scenario_tables = []
    for c in cohorts:
        edges, names, acc = [], [], 0.0
        for name, share in zip(_NETWORK_SCENARIOS, c.network_shares, strict=True):
            if share > 0:
                acc += share
                edges.append(acc)
                names.append(name)
        scenario_tables.append((edges, names))
    seed = fleet.seed & _M64
    a1 = (_splitmix(seed ^ 0x51) >> 11) / (1 << 53)
    a2 = (_splitmix(seed ^ 0xA7) >> 11) / (1 << 53)
    # The loop runs once per claim attempt, so it works on locals and inlines
    # ``_splitmix`` (the same arithmetic: tests hold the plan to its pinned output).
    offsets = [c.offset for c in cohorts]
    counts = [c.count for c in cohorts]
    last = len(cohorts) - 1
    sends_of = SCENARIO_SENDS
    bisect_right = bisect.bisect_right
    make = tuple.__new__  # Episode(...) without NamedTuple's Python-level __new__

    k = 0
    sent = 0
    while claims is None or sent < claims:
        ci = bisect_right(cumulative, (a1 + k * _GOLDEN) % 1.0) if last else 0
        if ci > last:
            ci = last
        x = (seed ^ (k * 0x2545F4914F6CDD1D & _M64)) + 0x9E3779B97F4A7C15 & _M64
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
        device = offsets[ci] + (x ^ (x >> 31)) % counts[ci]
        edges, names = scenario_tables[ci]
        if edges:
            si = bisect_right(edges, (a2 + k * _SQRT2) % 1.0)
            scenario = names[si] if si < len(names) else "first_claim"
        else:
            scenario = "first_claim"
        sends = sends_of[scenario]
        if claims is not None and sent + sends > claims:
            scenario, sends = "first_claim", 1  # the last slot: no room for a pair
        if owns is None or owns(device):
            yield make(Episode, (k, device, scenario, sends, sent))
        sent += sends
        k += 1
