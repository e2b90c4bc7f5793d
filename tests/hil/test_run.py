"""``harness hil run``: virtual boards flashed by esptool, against the embedded server."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.hil.bench import load_bench
from harness.hil.run import run_bench
from harness.hil.session import BenchSession
from harness.junit import write_junit
from tests.support import run_harness

from .conftest import write_bench

NORMALIZE = {"NORMALIZE_IDS_IN_HMAC": True}


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["boards"]}


def test_eight_boards_pass_and_a_legacy_reflash_under_normalize_gets_401(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0"] * 8, flags=NORMALIZE)
    proc = run_harness(
        "hil",
        "run",
        "--bench",
        str(bench),
        "--report",
        str(tmp_path / "r.json"),
        "--junit",
        str(tmp_path / "r.xml"),
        "--log-dir",
        str(logs),
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True and report["kind"] == "hil"
    rows = _rows(report)
    assert len(rows) == 8
    for row in rows.values():
        assert row["ok"] and row["fw"] == "5.1.0" and row["hmac_mode"] == "normalized"
        assert row["flash"]["skipped"] is False
        assert row["claims_by_status"] == {"200": 4, "409": 1}  # 4 claims, then a resend
    assert report["claims"]["by_status"] == {"200": 32, "409": 8}
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["hmac_normalization"]["evaluated"] == 32
    assert checks["token_claims"]["evaluated"] == 32 and checks["token_claims"]["passed"]
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert suites.get("failures") == "0" and int(suites.get("tests", "0")) >= 9 + 8
    boards_suite = next(s for s in suites.iter("testsuite") if s.get("name") == "harness.boards")
    assert [c.get("name") for c in boards_suite.iter("testcase")] == [f"v{i}" for i in range(8)]

    # Reflash one board with the legacy image; the other seven already run 5.1.0.
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0"] * 3 + ["5.0.3"] + ["5.1.0"] * 4)
    outcome = run_bench(load_bench(bench, ["NORMALIZE_IDS_IN_HMAC=true"]), log_dir=logs)
    rows = _rows(outcome.report)
    assert rows["v3"]["fw"] == "5.0.3" and rows["v3"]["hmac_mode"] == "legacy"
    assert rows["v3"]["flash"]["skipped"] is False
    assert rows["v3"]["claims_by_status"] == {"401": 4, "409": 1}
    for name, row in rows.items():
        if name != "v3":
            assert row["flash"]["skipped"] is True, name
            assert row["claims_by_status"] == {"200": 4, "409": 1}, name
    assert outcome.report["claims"]["by_status"] == {"200": 28, "401": 4, "409": 8}
    # The server did what NORMALIZE_IDS_IN_HMAC=true must do: the oracle expected the 401s.
    assert outcome.passed


def test_unplug_and_replug_mid_run_is_survived_and_reported(tmp_path: Path) -> None:
    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.1.0", "5.1.0"], flags=NORMALIZE))
    pulled: list[int] = []

    def pull_cable(session: BenchSession, name: str, index: int) -> None:
        if name == "v1" and index == 1:
            board = session.board("v1").virtual
            board.unplug()
            pulled.append(index)
            threading.Timer(0.5, board.replug).start()

    outcome = run_bench(bench, log_dir=tmp_path / "logs", on_claim=pull_cable)
    assert pulled == [1]
    row = _rows(outcome.report)["v1"]
    assert row["ok"] is True and row["error"] is None
    assert row["reconnects"] == 1
    assert row["claims_by_status"] == {"200": 4, "409": 1}
    assert _rows(outcome.report)["v0"]["reconnects"] == 0
    assert outcome.passed
    log = Path(row["log"]).read_text()
    assert "state reconnecting" in log.replace("  ", " ") and "reconnected (1)" in log


def test_blank_board_boot_loop_is_reported_as_image_error(tmp_path: Path) -> None:
    bench = load_bench(write_bench(tmp_path / "bench.toml", [None, "5.1.0"], flags=NORMALIZE))
    assert bench.boards[0].image is None and bench.boards[1].image is not None
    outcome = run_bench(bench, log_dir=tmp_path / "logs")
    rows = _rows(outcome.report)
    assert rows["v0"]["ok"] is False
    assert "image error: invalid magic byte" in rows["v0"]["error"]
    assert rows["v0"]["state"] == "image_error"
    assert rows["v1"]["ok"] is True and rows["v1"]["claims_by_status"] == {"200": 4, "409": 1}
    assert outcome.passed is False
    write_junit(outcome.report, tmp_path / "r.xml")
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "r.xml").getroot().iter("testcase")}
    failure = cases["v0"].find("failure")
    assert failure is not None and "image error" in (failure.get("message") or "")
    assert cases["v1"].find("failure") is None


def test_boards_post_their_own_claims_when_the_bench_says_so(tmp_path: Path) -> None:
    path = write_bench(
        tmp_path / "bench.toml",
        ["5.1.0", "5.0.3"],
        flags=NORMALIZE,
        bench="board_claims = true\nclaims_per_board = 3",
    )
    outcome = run_bench(load_bench(path), log_dir=tmp_path / "logs")
    rows = _rows(outcome.report)
    assert rows["v0"]["claims_by_status"] == {"200": 3}  # no resend: the board gives up or is done
    assert rows["v1"]["claims_by_status"] == {"401": 3}  # legacy firmware under NORMALIZE
    checks = {c["name"]: c for c in outcome.report["checks"]}
    assert checks["correlation_id"]["evaluated"] == 6 and checks["correlation_id"]["passed"]
    assert checks["token_claims"]["evaluated"] == 3 and checks["token_claims"]["passed"]
    assert outcome.report["run"]["connection"] == "board"
    assert outcome.passed


def test_target_server_with_the_boards_loaded(tmp_path: Path) -> None:
    import dataclasses

    from harness.flags import Flags
    from harness.protocol import derive_oob_v5, mac_to_device_id
    from harness.server.config import ServerConfig
    from harness.server.embedded import EmbeddedServer
    from harness.server.seed import Seed, SeedChild, SeedDevice

    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.0.3", "5.0.3"]))
    ids = [mac_to_device_id(spec.mac or "") for spec in bench.boards]
    seed = Seed(
        tuple(SeedDevice(d, derive_oob_v5(d)) for d in ids[:1]),  # only v0 is provisioned
        tuple(SeedChild(c) for c in bench.children),
    )
    with EmbeddedServer(ServerConfig(flags=Flags(), seed=seed)) as server:
        outcome = run_bench(dataclasses.replace(bench, target=server.url), log_dir=tmp_path / "l")
    rows = _rows(outcome.report)
    assert outcome.report["target"] == server.url
    assert rows["v0"]["claims_by_status"] == {"200": 4, "409": 1}
    # The bench declares every board loaded on the target; v1 is not: the oracle flags it.
    assert rows["v1"]["claims_by_status"] == {"404": 4, "409": 1}
    checks = {c["name"]: c for c in outcome.report["checks"]}
    assert checks["case_insensitive_id"]["violations"] == 4
    assert outcome.passed is False


def test_token_problems_name_the_claim_not_the_device_id() -> None:
    import time
    from types import SimpleNamespace

    import jwt

    from harness.judge import Judge
    from harness.profiles import ServerProfile

    judge = Judge(ServerProfile(), None, [], token_verify_every=1, check_refresh=True)
    now = int(time.time())
    wrong = jwt.encode(
        {"sub": "device:ccdba795baa4:child:someone-else", "iat": now, "exp": now + 900},
        "x" * 32,
    )
    body = json.dumps({"access_token": wrong, "refresh_token": wrong}).encode()
    board = SimpleNamespace(device_id="CCDBA795BAA4", child_id="child-1", index=0,
                            norm_ids=("ccdba795baa4", "child-1"),
                            cohort=SimpleNamespace(name="v0"))  # fmt: skip
    judge.check_token(board, "first_claim", body)
    (example,) = judge.results.check("token_claims").examples
    assert "sub" in example["got"]
    assert "ccdba795baa4" not in example["got"].lower() and "someone-else" not in example["got"]


def test_the_bench_profile_reaches_the_server_and_the_oracle(tmp_path: Path) -> None:
    """profile = "v5-head": the embedded server checks every board against its one static
    secret, so boards signing with their own get 401, and the oracle expects exactly that."""
    bench = write_bench(tmp_path / "bench.toml", ["5.0.3"] * 2, bench='profile = "v5-head"')
    outcome = run_bench(load_bench(bench), claims_per_board=2)
    report = outcome.report
    assert report["run"]["profile"]["name"] == "v5-head"
    assert report["claims"]["by_status"] == {"401": 4, "409": 2}
    assert outcome.passed, report["checks"]
    # --profile overrides the bench file's: the embedded server runs v5.0, the boards pass.
    proc = run_harness("hil", "run", "--bench", str(bench), "--profile", "v5.0",
                       "--claims-per-board", "1", "--report", str(tmp_path / "r.json"),
                       timeout=100)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    overridden = json.loads((tmp_path / "r.json").read_text())
    assert overridden["run"]["profile"]["name"] == "v5.0"
    assert overridden["claims"]["by_status"] == {"200": 2, "409": 2}
    bad = tmp_path / "bad.toml"
    bad.write_text(bench.read_text().replace('profile = "v5-head"', 'profile = "v6"'))
    proc = run_harness("hil", "run", "--bench", str(bad), timeout=60)
    assert proc.returncode == 2 and "unknown profile 'v6'" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_bench_and_a_virtual_cohort_in_one_run_and_one_report(tmp_path: Path) -> None:
    """Two virtual boards and a fleet's virtual cohorts are devices of one run: one
    embedded server holds both, one judge checks both, one report counts both."""
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0", "5.0.3"], flags=NORMALIZE)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        '[fleet]\nname = "beside"\nseed = 5\n[children]\ncount = 4\n'
        '[[cohorts]]\nname = "updated"\ncount = 30\nsigning = "normalized"\n'
        'firmware_version = "5.1.0"\nloss = 0.2\n'
        '[[cohorts]]\nname = "legacy"\ncount = 20\n'
    )
    proc = run_harness("hil", "run", "--bench", str(bench), "--fleet", str(fleet),
                       "--claims", "200", "--report", str(tmp_path / "r.json"),
                       "--log-dir", str(tmp_path / "logs"), timeout=100)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    rows = _rows(report)
    assert rows["v0"]["claims_by_status"] == {"200": 4, "409": 1}
    assert rows["v1"]["claims_by_status"] == {"401": 4, "409": 1}  # legacy under NORMALIZE
    assert set(report["by_cohort"]) == {"v0", "v1", "updated", "legacy"}
    assert report["by_cohort"]["legacy"] == {"401": report["by_cohort"]["legacy"]["401"]}
    assert report["claims"]["sent"] == 200 + 2 * 5
    assert report["run"]["fleet"] == "beside+bench:bench" and report["kind"] == "hil"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["hmac_normalization"]["evaluated"] > 4 + 20  # boards and the cohort
    assert checks["idempotent_retry"]["evaluated"] > 2  # the boards' resends and the losses
    assert report["passed"] is True


def test_a_board_is_judged_for_the_child_of_each_claim(tmp_path: Path) -> None:
    """One board claims for one child after another: under NORMALIZE a legacy board whose
    ID is already lower-case (an all-digit MAC) gets 200 for child-1 and 401 for Child-Two,
    and the oracle expects each for its own child, whichever comes first."""
    from firmware_fixtures.images import fixture_path

    for children in ("['child-1', 'Child-Two']", "['Child-Two', 'child-1']"):
        path = tmp_path / "bench.toml"
        path.write_text(
            f"[bench]\nchildren = {children}\n[flags]\nNORMALIZE_IDS_IN_HMAC = true\n"
            "[[board]]\nname = 'v0'\nvirtual = true\nmac = '30:83:98:12:34:56'\n"
            f"image = '{fixture_path('5.0.3')}'\n"
        )
        outcome = run_bench(load_bench(path), log_dir=tmp_path / "logs")
        assert _rows(outcome.report)["v0"]["claims_by_status"] == {"200": 2, "401": 2, "409": 1}
        assert outcome.passed, [c for c in outcome.report["checks"] if not c["passed"]]


def test_board_logs_carry_no_device_id_or_mac_in_clear(tmp_path: Path) -> None:
    """Under the v5 derivation a device ID is its own secret: the per-board log masks it,
    and the MAC it comes from, wherever the firmware's lines and frames carry them."""
    from harness.protocol import mac_to_device_id

    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.1.0"], flags=NORMALIZE))
    outcome = run_bench(bench, log_dir=tmp_path / "logs", claims_per_board=2)
    assert outcome.passed
    mac = bench.boards[0].mac or ""
    device_id = mac_to_device_id(mac)
    log = Path(_rows(outcome.report)["v0"]["log"]).read_text()
    assert '"device_id":"' in log  # the frames are there...
    for value in (device_id, device_id.lower(), mac, mac.replace(":", "")):
        assert value not in log, value  # ...their identities are not
