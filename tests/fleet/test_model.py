"""Fleet files: determinism from the seed, provisioning export, and errors naming file:line key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import HarnessInputError
from harness.fleet import load_fleet, parse_fleet, plan_episodes
from harness.fleet.model import Fleet
from harness.fleet.plan import _GOLDEN, _M64, _SQRT2, SCENARIO_SENDS, SCENARIOS, _splitmix
from harness.protocol import ClaimRequest, normalize_id, sign_claim, validate_device_id
from harness.server.seed import Seed
from tests.support import ROOT

FLEETS = sorted((ROOT / "fleets").glob("*.toml"))


def _snapshot(path: Path, seed: int | None = None) -> list[tuple[str, str, str, str]]:
    fleet = load_fleet(path)
    if seed is not None:
        fleet = fleet.with_seed(seed)
    return [(d.device_id, d.child_id, d.oob.hex(), d.cohort.name) for d in fleet.devices()]


@pytest.mark.parametrize("path", FLEETS, ids=lambda p: p.name)
def test_shipped_fleets_load_and_are_valid(path: Path) -> None:
    fleet = load_fleet(path)
    ids = [d.device_id for d in fleet.devices()]
    assert len(ids) == len(fleet) > 0
    for device_id in ids:
        validate_device_id(device_id)
    assert len({normalize_id(i) for i in ids}) == len(ids), "IDs must be unique case-insensitively"
    Seed.from_dict(fleet.seed_export())  # the server accepts the export


def test_same_file_and_seed_give_the_same_devices() -> None:
    path = ROOT / "fleets" / "soak.toml"
    assert _snapshot(path) == _snapshot(path)
    assert _snapshot(path, 99) == _snapshot(path, 99)
    assert _snapshot(path, 99) != _snapshot(path)


def test_plan_is_deterministic_and_shards_partition_it() -> None:
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    whole = list(plan_episodes(fleet, 2000))
    assert whole == list(plan_episodes(fleet, 2000))
    assert sum(e.sends for e in whole) == 2000
    parts = [list(plan_episodes(fleet, 2000, lambda i, k=k: i % 4 == k)) for k in range(4)]
    merged = sorted((e for part in parts for e in part), key=lambda e: e.index)
    assert merged == whole


def _plain_plan(fleet: Fleet, claims: int) -> list[tuple[int, int, str, int, int]]:
    """The plan as the module docstring defines it, written plainly (no inlining, no locals)."""
    cohorts = [c for c in fleet.cohorts if c.count > 0 and c.weight > 0]
    total = sum(c.count * c.weight for c in cohorts)
    seed = fleet.seed & _M64
    a1 = (_splitmix(seed ^ 0x51) >> 11) / (1 << 53)
    a2 = (_splitmix(seed ^ 0xA7) >> 11) / (1 << 53)
    out, k, sent = [], 0, 0
    while sent < claims:
        u1, acc, ci = (a1 + k * _GOLDEN) % 1.0, 0.0, len(cohorts) - 1
        for i, c in enumerate(cohorts[:-1]):
            acc += c.count * c.weight / total
            if u1 < acc:
                ci = i
                break
        cohort = cohorts[ci]
        device = cohort.offset + _splitmix(seed ^ (k * 0x2545F4914F6CDD1D & _M64)) % cohort.count
        u2, acc, scenario = (a2 + k * _SQRT2) % 1.0, 0.0, "first_claim"
        for name, share in zip(SCENARIOS[1:], cohort.network_shares, strict=True):
            acc += share
            if share > 0 and u2 < acc:
                scenario = name
                break
        sends = SCENARIO_SENDS[scenario]
        if sent + sends > claims:
            scenario, sends = "first_claim", 1
        out.append((k, device, scenario, sends, sent))
        sent += sends
        k += 1
    return out


@pytest.mark.parametrize("name", ["soak.toml", "teddy-v5.toml", "compat.toml"])
def test_plan_is_the_plain_definition(name: str) -> None:
    fleet = load_fleet(ROOT / "fleets" / name)
    assert [tuple(e) for e in plan_episodes(fleet, 3001)] == _plain_plan(fleet, 3001)


def test_soak_fleet_covers_every_scenario_and_cohort_in_1000_claims() -> None:
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    episodes = list(plan_episodes(fleet, 1000))
    assert {e.scenario for e in episodes} == set(SCENARIOS)
    used = {fleet.cohort_of(e.device).name for e in episodes}
    assert used == {c.name for c in fleet.cohorts}


def test_device_body_is_the_firmware_body() -> None:
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    nonce = "00112233445566778899aabbccddeeff"
    for dev in list(fleet.devices())[::97]:
        mode = "normalized" if dev.signing == "normalized" else "legacy"
        want = ClaimRequest.build(
            dev.device_id, dev.child_id, nonce, dev.oob.hex(), mode, dev.firmware_version
        )
        assert dev.body(nonce, want.hmac_hex) == want.to_json()
        assert sign_claim(dev.device_id, dev.child_id, nonce, dev.oob, mode) == want.hmac_hex


def test_seed_export_lower_cases_provisioned_devices_only() -> None:
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    export = fleet.seed_export()
    provisioned = [d for d in fleet.devices() if d.provisioned]
    assert len(export["devices"]) == len(provisioned)
    first = export["devices"][0]
    assert first["device_id"] == normalize_id(provisioned[0].device_id)
    assert bytes.fromhex(first["oob_secret_hex"]) == provisioned[0].oob
    assert any(not d["is_active"] for d in export["devices"])
    assert any(not c["is_active"] for c in export["children"])
    json.dumps(export)


def test_scaled_keeps_the_mix() -> None:
    fleet = load_fleet(ROOT / "fleets" / "teddy-v5.toml")
    small = fleet.scaled(100)
    assert len(small) == 100
    assert [c.count for c in small.cohorts] == [85, 15]
    assert len(fleet.scaled(100_000)) == 100_000


MINIMAL = """\
[fleet]
name = "t"
seed = 1

[[cohorts]]
name = "a"
count = 3
"""


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (MINIMAL + "colour = 'red'\n", 8, "cohorts[0].colour"),
        (MINIMAL + "id_style = 'shouting'\n", 8, "cohorts[0].id_style"),
        (MINIMAL + "loss = 1.5\n", 8, "cohorts[0].loss"),
        (MINIMAL + "retry_delay = inf\n", 8, "cohorts[0].retry_delay"),  # would never retry
        (MINIMAL + "weight = nan\n", 8, "cohorts[0].weight"),
        (MINIMAL + "count2 = 1\n", 8, "cohorts[0].count2"),
        (MINIMAL.replace("count = 3", "count = 'three'"), 7, "cohorts[0].count"),
        (MINIMAL.replace("seed = 1", "seed = true"), 3, "fleet.seed"),
        ("[defaults]\nsigning = 'sideways'\n" + MINIMAL, 2, "defaults.signing"),
        (MINIMAL + "prefix = 'bad prefix '\nid_style = 'prefixed'\n", 8, "cohorts[0].prefix"),
        (MINIMAL + "[[cohorts]]\nname = 'a'\ncount = 1\n", 9, "cohorts[1].name"),
        (MINIMAL + "child = 'inactive'\n[children]\ninactive = 0\n", 8, "cohorts[0].child"),
        (MINIMAL.replace('name = "t"', 'name = "t'), 2, "toml"),
    ],
)
def test_bad_fleet_file_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(HarnessInputError) as err:
        load_fleet(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert key in message
    assert "\n" not in message


def test_missing_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(HarnessInputError, match="cannot read"):
        load_fleet(tmp_path / "nope.toml")


def test_parse_minimal_defaults() -> None:
    fleet = parse_fleet(MINIMAL)
    assert [d.device_id for d in fleet.devices()] == [d.device_id for d in fleet.devices()]
    assert all(d.device_id == d.device_id.upper() for d in fleet.devices())


def test_scaled_down_fleet_is_a_subset_of_the_full_one() -> None:
    """Provision the full fleet once; a --devices run uses devices it already has."""
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    full = {d.device_id: (d.oob, d.child_id) for d in fleet.devices()}
    small = list(fleet.scaled(200).devices())
    assert len(small) == 200
    for dev in small:
        assert full[dev.device_id] == (dev.oob, dev.child_id)


def test_numbered_prefix_must_be_unique(tmp_path: Path) -> None:
    path = tmp_path / "numbers.toml"
    path.write_text(
        MINIMAL
        + "id_style = 'prefixed'\nprefix = 'Teddy-'\nsuffix = 'number'\n"
        + "[[cohorts]]\nname = 'b'\ncount = 2\nid_style = 'prefixed'\nprefix = 'teddy-'\n"
        + "suffix = 'number'\n"
    )
    with pytest.raises(HarnessInputError, match=r"numbers.toml:15: cohorts\[1\].prefix"):
        load_fleet(path)


def test_a_fleet_cut_to_one_cohort_keeps_its_device_ids() -> None:
    """compat plays one cohort at a time against a server provisioned with the whole fleet."""
    from dataclasses import replace

    fleet = load_fleet(ROOT / "fleets" / "compat.toml")
    cohort = fleet.cohorts[2]
    alone = replace(fleet, cohorts=(cohort,), _cache={})
    whole = [fleet.device(i).device_id for i in range(cohort.offset, cohort.offset + 5)]
    assert [alone.device(i).device_id for i in range(cohort.offset, cohort.offset + 5)] == whole
