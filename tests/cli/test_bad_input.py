"""Bad input anywhere is one line naming what and where, exit 2: never a traceback, and never
after a board was touched or a run was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ROOT, free_port, run_harness

FLEET = str(ROOT / "fleets" / "soak.toml")
BENCH = str(ROOT / "hil" / "bench.example.toml")


def _files(tmp: Path) -> dict[str, Path]:
    files = {
        "binary": tmp / "binary.toml",
        "latin1": tmp / "latin1.toml",
        "deep": tmp / "deep.toml",
        "a_file": tmp / "a_file",
    }
    files["binary"].write_bytes(b"\xff\xfe\x00binary")
    files["latin1"].write_bytes(b'[fleet]\nname = "caf\xe9"\n')
    files["deep"].write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    files["a_file"].write_text("")
    return files


CASES = [
    (("soak", "--fleet", "{binary}", "--claims", "5"), "not UTF-8 text (byte 0xff at offset 0)"),
    (("soak", "--fleet", "{latin1}", "--claims", "5"), "not UTF-8 text (byte 0xe9"),
    (("soak", "--fleet", "{deep}", "--claims", "5"), "nested too deeply"),
    (("compat", "--fleet", "{binary}"), "not UTF-8 text"),
    (("soak", "--rate", "nan", "--claims", "5"), "--rate: must be a finite number"),
    (("soak", "--duration", "inf"), "--duration: must be a finite number"),
    (("serve", "--port", "-1"), "--port"),
    (("serve", "--seed", "{binary}", "--port", "0"), "seed: not UTF-8 text"),
    (("provision", "export", "--fleet", FLEET, "--format", "json", "-o", "{a_file}/x.json"),
     "cannot write"),
    (("hil", "run", "--bench", BENCH, "--log-dir", "{a_file}"), "--log-dir: cannot write logs"),
    (("hil", "run", "--bench", "{binary}"), "not UTF-8 text"),
    (("soak", "--claims", "5", "--pushgateway", "http://127.0.0.1:{dead}"), "cannot reach"),
    (("probe", "--report", "{a_file}/p.json"), "--report: cannot write"),
    (("compat", "--fleet", FLEET, "--report", "{a_file}/c.json"), "--report: cannot write"),
    (("hil", "run", "--bench", BENCH, "--pushgateway", "http://127.0.0.1:{dead}"),
     "cannot reach"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    names = {k: str(v) for k, v in _files(tmp_path).items()} | {"dead": str(free_port())}
    proc = run_harness(*(a.format(**names) for a in args), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
