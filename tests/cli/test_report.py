"""``harness report merge``: shard reports merged equal the whole run in every count."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.report import merge_reports
from harness.results import RunResults
from harness.shard import Shard, shard_indices
from tests.support.equality import assert_same_results
from tests.support.synthetic import record_devices

FLEET = 400


def write_shard_reports(tmp_path: Path, count: int = 4) -> list[Path]:
    paths = []
    for i in range(count):
        res = record_devices(shard_indices(FLEET, Shard(i, count)))
        report = res.to_dict() | {"shard": f"{i}/{count}", "fleet": "synthetic", "target": "t"}
        path = tmp_path / f"shard-{i}.json"
        path.write_text(json.dumps(report))
        paths.append(path)
    return paths


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["report", "merge", *args])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_four_shards_merged_equal_the_whole_run(tmp_path: Path) -> None:
    paths = write_shard_reports(tmp_path)
    merged = merge_reports(paths)
    whole = record_devices(range(FLEET))
    assert_same_results(RunResults.from_dict(merged), whole)
    assert merged["shards"] == ["0/4", "1/4", "2/4", "3/4"]
    assert merged["fleet"] == "synthetic"
    # Percentiles come from the merged histogram, not from averaging the shards' own.
    assert merged["latency_seconds"]["p99"] == whole.latency.percentile(99)
    assert merged["latency_seconds"]["count"] == whole.latency.count


def test_cli_writes_report_and_junit_and_exits_by_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in write_shard_reports(tmp_path)]
    whole = record_devices(range(FLEET))
    out_json, out_xml = tmp_path / "merged.json", tmp_path / "merged.xml"
    # The synthetic run has check violations, so it fails whatever the thresholds say.
    code, out, _ = run_cli(
        capsys,
        *paths,
        "--threshold",
        "claims>=1",
        "--report",
        str(out_json),
        "--junit",
        str(out_xml),
    )
    assert code == 1
    merged = json.loads(out_json.read_text())
    assert merged["claims"]["sent"] == whole.sent
    assert merged["thresholds"][0]["passed"] is True
    assert merged["checks_passed"] is False
    suites = ET.parse(out_xml).getroot()
    assert int(suites.get("failures", "0")) >= 1
    assert "FAILED" in out


def test_exit_zero_when_checks_and_thresholds_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for i in range(2):
        res = RunResults()
        for j in range(50):
            res.record_claim("first_claim", "200", 0.001 * (1 + j + 50 * i))
            res.check("first_claim").record(True)
        res.duration_s = 5.0
        path = tmp_path / f"ok-{i}.json"
        path.write_text(json.dumps(res.to_dict() | {"shard": f"{i}/2"}))
        paths.append(str(path))
    code, out, _ = run_cli(capsys, *paths, "--threshold", "p99<0.1", "--threshold", "claims==100")
    assert code == 0, out
    code, out, _ = run_cli(capsys, *paths, "--threshold", "p50<0.01")  # merged p50 is 0.05 s
    assert code == 1
    assert "threshold p50<0.01: FAIL" in out


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.write_text("{not json"), "not JSON: "),
        (lambda p: p.write_text("[]"), "top level must be a JSON object"),
        (lambda p: p.write_text('{"claims": {"sent": 1}}'), "claims.by_status: missing"),
        (lambda p: p.write_text(p.with_name("shard-0.json").read_text()), "0/4 also in"),
        (lambda p: p.unlink(), "cannot read"),
        (
            lambda p: p.write_text(
                json.dumps(RunResults().to_dict() | {"histograms": {"latency": "!!"}})
            ),
            "histograms: cannot decode",
        ),
    ],
)
def test_bad_report_files_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: object, expected: str
) -> None:
    paths = write_shard_reports(tmp_path)
    mutate(paths[1])  # type: ignore[operator]
    code, _, err = run_cli(capsys, *map(str, paths))
    assert code == 2
    assert expected in err
    assert str(paths[1]) in err or "also in" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fleet", "teddy-v5"),
        ("seed", 7),
        ("flags", {"ENABLE_IDEMPOTENCY": True}),
        ("profile", {"name": "v5-head"}),
        ("target", "http://other"),
        ("run_id", "another-run"),
        ("report_version", 99),
    ],
)
def test_shards_of_different_runs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: object
) -> None:
    """A merge of reports that are not one run's shards would not be exact: exit 2, naming
    the field, whether it differs or is missing in one of them."""
    paths = write_shard_reports(tmp_path)
    data = json.loads(paths[2].read_text())
    data[key] = value
    paths[2].write_text(json.dumps(data))
    code, _, err = run_cli(capsys, *map(str, paths))
    assert code == 2 and f"{key}: " in err and str(paths[2]) in err, err
    assert len(err.strip().splitlines()) == 1
    del data[key]
    paths[2].write_text(json.dumps(data))
    code, _, err = run_cli(capsys, *map(str, paths))
    if key in ("fleet", "target"):  # present in the others: missing here differs too
        assert code == 2 and "missing here" in err, err


def test_missing_shard_and_bad_threshold_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in write_shard_reports(tmp_path)]
    code, _, err = run_cli(capsys, *paths[:3])
    assert (code, "missing 3/4" in err) == (2, True)
    code, _, _ = run_cli(capsys, *paths[:3], "--allow-partial")
    assert code == 1  # merged (synthetic checks fail), not rejected
    code, _, err = run_cli(capsys, *paths, "--threshold", "p95 fast")
    assert code == 2
    assert "--threshold" in err
