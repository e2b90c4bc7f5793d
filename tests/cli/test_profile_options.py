"""The server-profile options keep the bad-input rule on every command: one line, exit 2."""

from __future__ import annotations

import pytest

from tests.support import run_harness

BAD = [
    (["--profile", "v6"], "--profile: unknown profile 'v6'"),
    (["--environment", ""], "--environment: '' is not an environment name"),
    (["--redis-state", "bogus"], "'bogus' is not one of"),
    (["--profile", "v5-head", "--auto-register-secret", "static:" + "ab" * 32],
     "--auto-register-secret"),
    (["--profile", "v5-head", "--atomic-idempotency"], "--atomic-idempotency"),
    (["--auto-register-secret", "static:zz"], "--auto-register-secret"),
]  # fmt: skip
COMMANDS = [
    ["soak", "--claims", "5"],
    ["compat", "--fleet", "fleets/compat.toml", "--claims-per-cohort", "1"],
    ["serve", "--port", "0"],
    ["hil", "run", "--bench", "hil/bench.example.toml"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c[0] != "hil" else "hil-run")
@pytest.mark.parametrize(("args", "says"), BAD, ids=[b[1][:24] for b in BAD])
def test_bad_profile_option_is_one_line_exit_2(
    command: list[str], args: list[str], says: str
) -> None:
    proc = run_harness(*command, *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fleet_file_names_a_bad_profile_with_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fleet = tmp_path / "f.toml"
    fleet.write_text("[fleet]\nname = 'x'\nprofile = 'v4'\n[[cohorts]]\nname = 'a'\ncount = 1\n")
    proc = run_harness("soak", "--fleet", str(fleet), "--claims", "5", timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"{fleet}:3" in proc.stderr and "unknown profile 'v4'" in proc.stderr
