"""deploy/: the Prometheus configuration is valid, and the Indexed Job agrees with the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from harness.cli import main
from harness.cli.soak import soak
from tests.support import ROOT, require_binary

DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _job(path: Path) -> dict[str, Any]:
    (job,) = [d for d in _docs(path) if d["kind"] == "Job"]
    return job


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_prometheus_config_passes_promtool() -> None:
    promtool = require_binary("promtool", "prometheus")
    proc = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_indexed_job_is_consistent_with_itself_and_the_soak_command() -> None:
    docs = _docs(DEPLOY / "k8s" / "soak-job.yaml")
    job = _job(DEPLOY / "k8s" / "soak-job.yaml")
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    args = container["args"]

    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["JOB_COMPLETIONS"]["value"])
    index_ref = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "batch.kubernetes.io/job-completion-index" in index_ref
    assert args[0] == "soak"
    assert "--shard" not in args  # every pod runs the same args; the index picks the slice
    known = {opt for p in soak.params if isinstance(p, click.Option) for opt in p.opts}
    known |= {opt for p in soak.params if isinstance(p, click.Option) for opt in p.secondary_opts}
    used = [a for a in args[1:] if a.startswith("--")]
    assert used and set(used) <= known, set(used) - known
    assert "$(JOB_COMPLETION_INDEX)" in _option(args, "--report")
    # One run ID for every shard of the Job: from the Job's UID label, not per pod.
    assert _option(args, "--run-id") == "$(RUN_ID)"
    run_id_ref = env["RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "controller-uid" in run_id_ref and run_id_ref.startswith("metadata.labels[")
    assert _option(args, "--workers") == "1"
    port = int(_option(args, "--metrics-port"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())

    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    dns = jobs["harness-soak-shards"]["dns_sd_configs"][0]
    assert dns["port"] == port
    assert dns["names"][0].startswith(f"{service['metadata']['name']}.")
    gateway = _option(args, "--pushgateway").removeprefix("http://")
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == [gateway]
    assert jobs["pushgateway"]["honor_labels"] is True

    merge = _job(DEPLOY / "k8s" / "merge-job.yaml")
    (merger,) = merge["spec"]["template"]["spec"]["containers"]
    assert "harness report merge /reports/shard-*.json" in " ".join(merger["args"])


def test_a_pod_environment_selects_its_shard_in_the_real_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What one pod of the Job does, minus Kubernetes: the index and count from the
    # environment, no --shard; the report says which slice ran.
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("JOB_COMPLETIONS", "2")
    report = tmp_path / "shard-1.json"
    with pytest.raises(SystemExit) as done:
        main(
            ["soak", "--devices", "40", "--claims", "60", "--report", str(report), "--no-progress"]
        )
    assert done.value.code in (0, 1)
    data = json.loads(report.read_text())
    assert data["run"]["shard"] == "1/2"
    assert data["run"]["devices"] == 20
    assert data["claims"]["sent"] > 0
