"""The secret grep: nothing the harness writes carries a secret of the run.

Two runs, each through a recording forwarder (``tests.support.capture``) so the
test knows every nonce, HMAC and token that crossed the wire: a faulted soak
(cut answers and resets in front of the server) and a bench run of virtual
boards. Then every OOB secret, nonce, HMAC and token, whole or as any
16-character piece, and every device ID and MAC, whole, is looked for
(case-insensitively) in every file and stream the harness wrote.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.fleet import load_fleet
from harness.protocol import derive_oob_v5, mac_to_device_id
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from harness.server.seed import Seed, SeedChild, SeedDevice
from tests.hil.conftest import write_bench
from tests.support import HARNESS, ROOT
from tests.support.capture import Capture

SOAK = ROOT / "fleets" / "soak.toml"
PIECE = 16


def _pieces(value: str) -> set[str]:
    """The value and every 16-character piece of it; of a JWT, only its claims and
    signature (its header is the same public text in every token)."""
    value = value.lower()
    if value.count(".") == 2:
        value = value.split(".", 1)[1]
    return {value[i : i + PIECE] for i in range(max(1, len(value) - PIECE + 1))}


def _written(*paths: Path, streams: tuple[str, ...] = ()) -> str:
    """Every file under ``paths`` and every stream, as one lower-case text."""
    texts = list(streams)
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        texts += [f.read_bytes().decode("utf-8", "replace") for f in files]
    return "\n".join(texts).lower()


def _leaks(written: str, secrets: set[str], identities: set[str]) -> list[str]:
    seen = {written[i : i + PIECE] for i in range(len(written) - PIECE + 1)}
    leaks = [s for s in secrets if _pieces(s) & seen]
    leaks += [i for i in identities if i.lower() in written]
    return leaks


def test_a_faulted_soak_writes_no_secret(tmp_path: Path) -> None:
    fleet = load_fleet(SOAK)
    out = tmp_path / "out"
    out.mkdir()
    config = ServerConfig(seed=fleet.to_seed())
    with EmbeddedServer(config) as server, Capture("127.0.0.1", server.port) as wire:
        run = subprocess.run(
            [*HARNESS, "soak", "--target", wire.url, "--duration", "6", "--concurrency", "8",
             "--workers", "1", "--no-progress", "--fault", "server:cut:150@0.3@1s+2s",
             "--fault", "server:reset@3.5s+1s", "--report", str(out / "r.json"),
             "--junit", str(out / "r.xml"), "--journal", str(out / "claims.jsonl"),
             "--textfile", str(out), "--html", str(out / "r.html")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={"JWT_SECRET": config.jwt_secret, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    report = json.loads((out / "r.json").read_text())
    assert report["claims"]["sent"] > 500 and report["claims"]["by_status"].get("200")
    secrets = wire.secrets() | {config.jwt_secret}
    assert len(secrets) > 1000  # nonces, HMACs and tokens of the run
    devices = [fleet.device(i) for i in range(len(fleet))]
    secrets |= {d.oob.hex() for d in devices}
    identities = {d.device_id.strip() for d in devices if len(d.device_id.strip()) >= 8}
    written = _written(out, streams=(run.stdout, run.stderr))
    # What was grepped is what was written: the journal's lines, the report's, the summary.
    assert '"kind":"claim"' in written and '"report_version"' in written and "passed" in written
    assert 'data-chart="outcomes"' in written and "examples (masked)" in written  # the html
    assert _leaks(written, secrets, identities) == []
    one = sorted(secrets)[0]  # and the grep does find a secret that is there, in any case
    assert _leaks((written + f" {one.upper()} ").lower(), {one}, set()) == [one]


def test_a_bench_run_writes_no_secret(tmp_path: Path) -> None:
    from harness.hil.bench import load_bench

    bench_file = write_bench(tmp_path / "bench.toml", ["5.0.3", "5.1.0"])
    bench = load_bench(bench_file)
    macs = [spec.mac or "" for spec in bench.boards]
    ids = [mac_to_device_id(mac) for mac in macs]
    seed = Seed(tuple(SeedDevice(d, derive_oob_v5(d)) for d in ids),
                tuple(SeedChild(c) for c in bench.children))  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    config = ServerConfig(seed=seed)
    with EmbeddedServer(config) as server, Capture("127.0.0.1", server.port) as wire:
        run = subprocess.run(
            [*HARNESS, "hil", "run", "--bench", str(bench_file), "--target", wire.url,
             "--report", str(out / "r.json"), "--junit", str(out / "r.xml"),
             "--html", str(out / "r.html"), "--log-dir", str(out / "logs")],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert list((out / "logs").iterdir()), "no board logs were written"
    secrets = wire.secrets() | {derive_oob_v5(d) for d in ids}
    assert len(secrets) > 4
    identities = set(ids) | set(macs) | {m.replace(":", "") for m in macs}
    written = _written(out, streams=(run.stdout, run.stderr))
    assert "data-board=" in written  # the html report's boards table was grepped too
    assert _leaks(written, secrets, identities) == []
