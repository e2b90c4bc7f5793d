"""harness compat: the rollout matrix, measured on the reference server or predicted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.compat import EpisodeOutcomes
from harness.flags import Flags
from harness.fleet import load_fleet
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from tests.support import ROOT, free_port

TEDDY = str(ROOT / "fleets" / "teddy-v5.toml")
COMPAT = str(ROOT / "fleets" / "compat.toml")
OFF_OFF, ON_OFF = "normalize=off,idempotency=off", "normalize=on,idempotency=off"
OFF_ON, ON_ON = "normalize=off,idempotency=on", "normalize=on,idempotency=on"


def _run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code or 0)


def _cohorts(report: dict) -> dict[str, dict]:
    return {c["name"]: c["by_configuration"] for c in report["cohorts"]}


def test_teddy_v5_normalize_before_the_update_rejects_the_legacy_cohort(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "compat.json"
    code = _run_cli(["compat", "--fleet", TEDDY, "--report", str(out_json)])
    out = capsys.readouterr().out
    assert code == 1  # NO-GO
    report = json.loads(out_json.read_text())
    cohorts = _cohorts(report)
    legacy, normalized = cohorts["v5.0-legacy-upper"], cohorts["v5.1-normalized"]
    fleet = load_fleet(TEDDY)
    loss = next(c for c in fleet.cohorts if c.name == "v5.0-legacy-upper").loss
    # NORMALIZE off: legacy devices get in (only lost responses retried into 409, idempotency off).
    assert legacy[OFF_OFF]["share"]["200"] >= 1 - 2 * loss - 0.02
    assert legacy[OFF_ON]["rejected_share"] == 0.0
    # NORMALIZE on: every legacy upper-case device is rejected, 401 first.
    for key in (ON_OFF, ON_ON):
        assert legacy[key]["rejected_share"] == 1.0
        assert max(legacy[key]["outcomes"], key=legacy[key]["outcomes"].get) == "401"
    # ...while the normalised cohort is the one locked out today.
    assert normalized[OFF_ON]["outcomes"] == {"401": normalized[OFF_ON]["episodes"]}
    assert normalized[ON_ON]["rejected_share"] == 0.0
    assert all(c["source"] == "measured" for c in report["configurations"])
    assert report["oracle_disagreements"] == []
    # The fleet share follows the cohort sizes (8,500 of 10,000 devices are legacy).
    assert report["fleet_rejected_share"][ON_ON] == pytest.approx(0.85, abs=0.001)
    assert report["normalize_go"] is False and report["decision"] == "NO-GO"
    assert "NO-GO" in out and "v5.0-legacy-upper (8,500 devices)" in out and "401" in out
    assert "85.5%" in out or "85.0%" in out


def test_target_measures_the_declared_column_and_predicts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = load_fleet(COMPAT)
    flags = Flags(enable_idempotency=True, enable_auto_register=True)
    declared = ["--flag", "ENABLE_IDEMPOTENCY=true", "--flag", "ENABLE_AUTO_REGISTER=true"]
    out_json = tmp_path / "compat.json"
    with EmbeddedServer(ServerConfig(flags=flags, seed=fleet.to_seed())) as server:
        code = _run_cli(
            [
                *("compat", "--fleet", COMPAT, "--target", server.url),
                *("--claims-per-cohort", "40", "--report", str(out_json)),
                *declared,
            ]
        )
    captured = capsys.readouterr()
    assert code == 1
    report = json.loads(out_json.read_text())
    sources = {c["key"]: c["source"] for c in report["configurations"]}
    assert sources == {
        OFF_OFF: "predicted",
        ON_OFF: "predicted",
        OFF_ON: "measured",
        ON_ON: "predicted",
    }
    assert "(measured)" in captured.out and "(predicted)" in captured.out
    cohorts = _cohorts(report)
    for name, by in cohorts.items():
        assert by[OFF_ON]["oracle_agrees"] is True, name
        assert "oracle_agrees" not in by[ON_ON]
    assert cohorts["upper-legacy"][ON_ON]["rejected_share"] == 1.0
    assert cohorts["lower-legacy"][ON_ON]["rejected_share"] == 0.0
    assert "warning" not in captured.err


def test_a_wrong_declaration_shows_as_disagreement(capsys: pytest.CaptureFixture[str]) -> None:
    fleet = load_fleet(COMPAT)
    with EmbeddedServer(ServerConfig(flags=Flags(), seed=fleet.to_seed())) as server:
        _run_cli(
            [
                *("compat", "--fleet", COMPAT, "--target", server.url, "--claims-per-cohort", "30"),
                *("--flag", "ENABLE_IDEMPOTENCY=true"),  # the server runs with it off
            ]
        )
    err = capsys.readouterr().err
    assert "differ from the oracle" in err and "harness probe" in err


def test_a_fleet_that_already_signs_lower_case_is_a_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lower.toml"
    path.write_text(
        '[fleet]\nname = "lower"\nseed = 3\n[children]\ncount = 3\n'
        '[[cohorts]]\nname = "mac-lower"\ncount = 30\nid_style = "mac-lower"\n'
        '[[cohorts]]\nname = "updated"\ncount = 20\nsigning = "normalized"\n'
    )
    code = _run_cli(["compat", "--fleet", str(path), "--claims-per-cohort", "20"])
    printed = capsys.readouterr().out
    assert code == 0
    assert max(len(line) for line in printed.splitlines()) <= 100
    out = " ".join(printed.split())  # the verdict is wrapped at 100 columns
    assert "GO: turning on NORMALIZE_IDS_IN_HMAC" in out and "no cohort gets worse" in out
    assert "It helps updated" in out


def test_measured_outcomes_come_from_each_episode_at_full_concurrency() -> None:
    """The on_episode hook counts the answer each device acts on, one per episode, in a
    run of 8 lanes; the concurrent pair's rule (the better answer) is the scenario's own."""
    from harness.run import SoakOptions, run_soak_sync
    from harness.scenarios import SCENARIOS

    fleet = load_fleet(COMPAT)
    outcomes = EpisodeOutcomes()
    out = run_soak_sync(SoakOptions(fleet=fleet, claims=200, concurrency=8, observers=[outcomes]))
    assert out.info["concurrency"] == 8
    episodes = sum(n for (label, _), n in out.results.by_scenario.items()
                   if label in {s.labels[0] for s in SCENARIOS.values()})  # fmt: skip
    pairs = out.results.by_scenario  # a pair's two sends share one label
    pair_sends = sum(n for (label, _), n in pairs.items() if label == "concurrent_duplicate")
    assert sum(outcomes.outcomes.values()) == episodes - pair_sends // 2 > 50
    play = SCENARIOS["concurrent_duplicate"].play(_Ctx(), fleet.device(0), "00" * 16, "0" * 64, b"")
    next(play)
    with pytest.raises(StopIteration) as done:
        play.send((_Reply(409), _Reply(401)))
    assert done.value.value == 401


class _Reply:
    def __init__(self, status: int) -> None:
        self.status, self.headers, self.body = status, {}, b""


class _Ctx:
    from harness.profiles import ServerProfile

    profile = ServerProfile()

    def registered(self, dev: object) -> bool:
        return False


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fleet", "nowhere.toml"], "nowhere.toml"),
        (["--fleet", COMPAT, "--claims-per-cohort", "0"], "--claims-per-cohort"),
        (["--fleet", COMPAT, "--target", "localhost:8000"], "http(s)://"),
        (["--fleet", COMPAT, "--flag", "NORMALIZE=on"], "unknown flag"),
        (["--fleet", COMPAT, "--target", f"http://127.0.0.1:{free_port()}"], "cannot reach"),
    ],
)
def test_bad_usage_is_one_line_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["compat", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_the_known_race_is_no_reason_to_distrust_a_measurement() -> None:
    """On v5.0 with idempotency on, concurrent duplicates get two tokens: the build as
    declared. compat gives its verdict; it does not call the measurement untrusted."""
    import asyncio

    from harness.compat import CompatOptions, run_compat

    fleet = load_fleet(ROOT / "fleets" / "soak.toml").scaled(300)
    racy = [c for c in fleet.cohorts if c.name in ("mac-upper-legacy", "mac-lower-legacy")]
    from dataclasses import replace as dc_replace

    fleet = dc_replace(fleet, cohorts=tuple(
        dc_replace(c, concurrent_duplicates=0.5, loss=0.0, bad_hmac_first=0.0,
                   replay_other_hmac=0.0) for c in racy), _cache={})  # fmt: skip
    report = asyncio.run(
        run_compat(CompatOptions(fleet, flags=Flags(enable_idempotency=True), claims_per_cohort=80))
    )
    line = report.normalize_verdict()[1]
    assert not line.startswith("NO VERDICT"), line
    assert not report.untrusted()
