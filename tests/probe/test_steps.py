"""harness probe names the reference server's flags, from its answers alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.flags import Flags
from harness.probe import BURST, BURSTS, PROBED_FLAGS, ProbeDevice, probe_embedded, probe_target
from harness.protocol import derive_oob_v5
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from harness.server.seed import Seed, SeedChild, SeedDevice
from tests.support import free_port

DEVICE_LOWER = "teddy-esp32-00a1b2"  # provisioned lower-case: the probe sends an upper variant
CHILD = "child-0001"


def _run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code or 0)


def _server(flags: Flags) -> EmbeddedServer:
    seed = Seed(
        (SeedDevice(DEVICE_LOWER, derive_oob_v5(DEVICE_LOWER)),),
        (SeedChild(CHILD),),
    )
    return EmbeddedServer(ServerConfig(flags=flags, seed=seed))


PROFILES = [("v5.0", "production"), ("atomic", "production"), ("v5-head", "production"),
            ("v5-head", "development")]  # fmt: skip
COMBOS = [(p, e, f) for p, e in PROFILES for f in Flags.all_combinations()]


@pytest.mark.parametrize(
    ("profile", "environment", "flags"), COMBOS, ids=[f"{p}-{e}-{f.key()}" for p, e, f in COMBOS]
)
def test_probe_names_the_build_and_every_flag(profile: str, environment: str, flags: Flags) -> None:
    result = probe_embedded(flags, profile, environment)
    assert result.decided, result.table()
    declared = flags.to_env()
    for flag in PROBED_FLAGS:
        expected = "on" if declared[flag] == "true" else "off"
        if profile == "v5-head" and flag == "ENABLE_AUTO_REGISTER":
            expected = "no effect"  # v5-head creates prefixed devices whatever the flag
        assert result.verdict(flag) == expected, result.table()
    named = result.profile.name
    if profile == "atomic" and not flags.enable_idempotency:
        assert named == "v5.0", result.table()  # the two answer alike: either declaration holds
    else:
        assert named == profile, result.table()
    if profile == "v5-head":
        assert result.profile.environment == (
            "production" if environment == "production" else "not production"
        )
    assert result.profile.bare_router is False  # the embedded server runs the deployed app
    # A handful of claims, plus the bursts when idempotency is on.
    bursts = BURSTS * BURST if flags.enable_idempotency else 0
    assert len(result.claims) <= 7 + bursts
    assert all(c.correlation_id for c in result.claims)
    line = result.soak_line()
    assert f"--profile {named}" in line and line.count("--flag") == (
        2 if profile == "v5-head" else 3
    )


def test_probe_reads_the_bare_routers_error_bodies() -> None:
    result = probe_embedded(Flags(), bare_router=True)
    assert result.decided and result.profile.bare_router is True, result.table()
    assert "--bare-router" in result.soak_line()


def test_cli_against_a_target_with_a_given_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = Flags(enable_idempotency=True, normalize_ids_in_hmac=True)
    report = tmp_path / "probe.json"
    with _server(flags) as server:
        code = _run_cli(
            [
                "probe",
                "--target",
                server.url,
                "--device-id",
                DEVICE_LOWER,
                "--oob",
                derive_oob_v5(DEVICE_LOWER),
                "--child-id",
                CHILD,
                "--report",
                str(report),
            ]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "--flag ENABLE_IDEMPOTENCY=true" in out
    assert "--flag NORMALIZE_IDS_IN_HMAC=true" in out
    assert "--flag ENABLE_AUTO_REGISTER=false" in out
    data = json.loads(report.read_text())
    verdicts = {v["flag"]: v["verdict"] for v in data["verdicts"]}
    assert verdicts["NORMALIZE_IDS_IN_HMAC"] == "on"
    text = report.read_text() + out
    assert derive_oob_v5(DEVICE_LOWER) not in text and DEVICE_LOWER not in text


def test_wrong_secret_leaves_normalize_undecided_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _server(Flags()) as server:
        code = _run_cli(
            [
                "probe",
                "--target",
                server.url,
                "--device-id",
                DEVICE_LOWER,
                "--oob",
                derive_oob_v5(DEVICE_LOWER.upper()),  # not what the server stores
                "--child-id",
                CHILD,
            ]
        )
    captured = capsys.readouterr()
    assert code == 1
    assert "undecided" in captured.out and "wrong OOB secret" in captured.out
    # Idempotency is still decided from the 401's identical resend (off -> 409).
    assert "ENABLE_IDEMPOTENCY=false" in captured.out


def test_idempotency_decided_from_a_rejected_claim() -> None:
    wrong = ProbeDevice(DEVICE_LOWER, bytes(32), CHILD)
    with _server(Flags(enable_idempotency=True)) as server:
        result = asyncio.run(probe_target(server.url, wrong))
    assert result.verdict("NORMALIZE_IDS_IN_HMAC") == "undecided"
    assert result.verdict("ENABLE_IDEMPOTENCY") == "on"  # 401 again, not 409
    assert not result.decided


def test_cli_takes_the_device_from_a_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.fleet import load_fleet
    from tests.support.fleet_fixture import write_small_fleet

    fleet_path = write_small_fleet(tmp_path)
    seed = load_fleet(fleet_path).to_seed()
    config = ServerConfig(flags=Flags(enable_auto_register=True), seed=seed)
    with EmbeddedServer(config) as server:
        code = _run_cli(["probe", "--target", server.url, "--fleet", str(fleet_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "--flag ENABLE_AUTO_REGISTER=true" in out
    assert "--flag NORMALIZE_IDS_IN_HMAC=false" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target", "http://127.0.0.1:1", "--device-id", DEVICE_LOWER], "together"),
        (["--target", "http://127.0.0.1:1"], "needs a provisioned device"),
        (["--target", "ftp://x", "--fleet", "f.toml"], "http(s)://"),
        (["--target", "http://x", "--fleet", "missing.toml"], "missing.toml"),
        (["--device-id", DEVICE_LOWER, "--oob", "00" * 32, "--child-id", CHILD], "need --target"),
        (["--flag", "NORMALIZE=true"], "unknown flag"),
        (
            [
                *("--target", f"http://127.0.0.1:{free_port()}", "--device-id", DEVICE_LOWER),
                *("--oob", "00" * 32, "--child-id", CHILD),
            ],
            "cannot reach",
        ),
        (
            [
                "--target",
                "nope",
                "--device-id",
                DEVICE_LOWER,
                "--oob",
                "00" * 32,
                "--child-id",
                CHILD,
            ],
            "http(s)://",
        ),
        (
            [
                "--target",
                "http://x",
                "--device-id",
                DEVICE_LOWER,
                "--oob",
                "zz",
                "--child-id",
                CHILD,
            ],
            "--oob",
        ),
    ],
)
def test_bad_usage_is_one_line_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["probe", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_static_auto_register_secret_still_reads_as_on() -> None:
    seed = Seed((SeedDevice(DEVICE_LOWER, derive_oob_v5(DEVICE_LOWER)),), (SeedChild(CHILD),))
    config = ServerConfig(
        flags=Flags(enable_auto_register=True), seed=seed, auto_register_secret=bytes(range(32))
    )
    device = ProbeDevice(DEVICE_LOWER, bytes.fromhex(derive_oob_v5(DEVICE_LOWER)), CHILD)
    with EmbeddedServer(config) as server:
        result = asyncio.run(probe_target(server.url, device))
    assert result.verdict("ENABLE_AUTO_REGISTER") == "on"
    evidence = next(v.evidence for v in result.verdicts if v.flag == "ENABLE_AUTO_REGISTER")
    assert "401" in evidence and "static" in evidence


def test_a_rate_limited_server_is_waited_out_not_misread() -> None:
    seed = Seed((SeedDevice(DEVICE_LOWER, derive_oob_v5(DEVICE_LOWER)),), (SeedChild(CHILD),))
    flags = Flags(enable_idempotency=True)
    config = ServerConfig(flags=flags, seed=seed, rate_limit=2.0)
    device = ProbeDevice(DEVICE_LOWER, bytes.fromhex(derive_oob_v5(DEVICE_LOWER)), CHILD)
    with EmbeddedServer(config) as server:
        result = asyncio.run(probe_target(server.url, device))
        limited = server.state.metrics.registry.get_sample_value("claim_rate_limited_total")
    assert limited and limited >= 1  # the probe did meet a 429 and waited
    assert result.decided, result.table()
    assert result.verdict("ENABLE_IDEMPOTENCY") == "on"
    assert result.verdict("NORMALIZE_IDS_IN_HMAC") == "off"


def test_a_server_whose_redis_is_down_is_undecided_and_says_why() -> None:
    from tests.support.services import RedisServer

    seed = Seed((SeedDevice(DEVICE_LOWER, derive_oob_v5(DEVICE_LOWER)),), (SeedChild(CHILD),))
    device = ProbeDevice(DEVICE_LOWER, bytes.fromhex(derive_oob_v5(DEVICE_LOWER)), CHILD)
    with RedisServer() as redis:
        config = ServerConfig(seed=seed, redis_url=redis.url)  # idempotency off, fail closed
        with EmbeddedServer(config) as server:
            redis.stop()
            result = asyncio.run(probe_target(server.url, device))
    assert not result.decided
    assert result.verdict("ENABLE_IDEMPOTENCY") == "undecided"
    assert "503" in result.table() and "store" in result.table()
