"""``harness serve`` as a user runs it: a real subprocess, its start line, its exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import HARNESS, ROOT
from tests.support.httpclient import Client
from tests.support.world import World, claim_body

LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+) \| flags on: ([^|]+) \|")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENABLE_", "DISABLE_"))}
    for name in ("FAIL_OPEN_ON_REDIS_ERROR", "NORMALIZE_IDS_IN_HMAC", "ATOMIC_IDEMPOTENCY"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_harness(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HARNESS, *args], capture_output=True, text=True, timeout=30, env=_env(**env), check=False
    )


@contextmanager
def serving(*args: str, **env: str) -> Iterator[tuple[int, str, subprocess.Popen[str]]]:
    proc = subprocess.Popen(
        [*HARNESS, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**env),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LINE.search(line)
        if not match:
            proc.kill()
            raise AssertionError(
                f"no start line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield int(match.group(1)), line, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_no_options_one_line_real_port_and_clean_stop() -> None:
    with serving() as (port, line, proc):
        assert port != 0
        assert line.count("\n") == 1
        assert "flags on: DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE |" in line  # production defaults
        assert "nonce store memory, registry memory" in line
        with Client(f"http://127.0.0.1:{port}") as client:
            reply = client.get("/health")
            assert reply.status == 200 and reply.headers["x-correlation-id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""  # still just the one line
        assert proc.stderr is not None
        logged = [json.loads(x) for x in proc.stderr.read().splitlines()]
        # stderr is the request log: no banner, one JSON line for the one request
        assert [(e["event"], e["path"], e["status"]) for e in logged] == [
            ("request", "/health", 200)
        ]


def test_flags_from_env_and_overrides_and_seed(tmp_path: Path) -> None:
    world = World.make("cli-seed")
    seed = tmp_path / "seed.json"
    world.seed().dump(seed)
    log = tmp_path / "serve.log"
    with serving(
        "--seed", str(seed), "--flag", "ENABLE_IDEMPOTENCY=false", "--flag",
        "normalize_ids_in_hmac=ON", "--log-file", str(log),
        ENABLE_IDEMPOTENCY="true", ENABLE_AUTO_REGISTER="yes",
    ) as (port, line, _):  # fmt: skip
        flags = LINE.search(line).group(2).strip()  # type: ignore[union-attr]
        assert flags == (
            "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE, ENABLE_AUTO_REGISTER, NORMALIZE_IDS_IN_HMAC"
        )
        assert "3 devices, 2 children seeded" in line
        with Client(f"http://127.0.0.1:{port}") as client:
            body = claim_body(world.lower, world.child, world.lower_oob, "normalized")
            assert client.claim(body).status == 200
            assert client.claim(body).status == 409  # idempotency overridden off
    events = [json.loads(x)["event"] for x in log.read_text().splitlines()]
    assert events[0] == "server_start" and "request" in events


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--flag", "ENABLE_IDEMPOTENCY=maybe"], {}, "ENABLE_IDEMPOTENCY"),
        (["--flag", "ENABLE_IDEMPOTENCE=true"], {}, "ENABLE_IDEMPOTENCE"),
        (["--flag", "ENABLE_IDEMPOTENCY"], {}, "--flag"),
        ([], {"NORMALIZE_IDS_IN_HMAC": "treu"}, "NORMALIZE_IDS_IN_HMAC"),
        ([], {"ATOMIC_IDEMPOTENCY": "2"}, "ATOMIC_IDEMPOTENCY"),
        (["--auto-register-secret", "static:abcd"], {}, "--auto-register-secret"),
        (["--rate-limit", "0"], {}, "--rate-limit"),
        (["--log-file", "/nonexistent-dir/x.log"], {}, "--log-file"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], names: str
) -> None:
    res = run_harness("serve", "--port", "0", *args, **env)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], res.stderr


def test_bad_seed_names_file_and_entry(tmp_path: Path) -> None:
    seed = tmp_path / "bad-seed.json"
    seed.write_text(
        json.dumps(
            {
                "devices": [
                    {"device_id": "teddy-esp32-0001", "oob_secret_hex": "00" * 32},
                    {"device_id": "teddy-esp32-0002", "oob_secret_hex": "xyz"},
                ]
            }
        )
    )
    res = run_harness("serve", "--port", "0", "--seed", str(seed))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(seed) in lines[0] and "devices[1].oob_secret_hex" in lines[0]


def test_port_in_use_is_one_line() -> None:
    with serving() as (port, _, _):
        res = run_harness("serve", "--port", str(port))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "--port" in res.stderr


def test_migrate_then_serve_on_postgres_and_redis(postgres_server, redis_server) -> None:  # type: ignore[no-untyped-def]
    url = postgres_server.create_database(f"cli_{int(time.time() * 1000)}")
    res = run_harness("serve", "--port", "0", "--database-url", url)
    assert res.returncode == 2 and "migrate" in res.stderr  # no schema yet: says what to do
    assert len(res.stderr.strip().splitlines()) == 1
    first = run_harness(
        "serve", "migrate", "--database-url", url.replace("postgresql", "postgresql+asyncpg")
    )
    assert first.returncode == 0 and "migrated" in first.stdout, first.stderr
    again = run_harness("serve", "migrate", "--database-url", url)
    assert again.returncode == 0 and "already" in again.stdout
    world = World.make("cli-pg")
    seed = Path(postgres_server.root) / "cli-seed.json"
    world.seed().dump(seed)
    with serving(
        "--database-url", url, "--redis-url", redis_server.url, "--seed", str(seed),
        "--atomic-idempotency", "--log-file", "none",
    ) as (port, line, _):  # fmt: skip
        assert "nonce store redis, registry postgresql" in line and "profile atomic" in line
        with Client(f"http://127.0.0.1:{port}") as client:
            assert client.claim(claim_body(world.upper, world.child, world.upper_oob)).status == 200
            assert client.get("/health/db").json()["backend"] == "postgresql"
            assert client.get("/health/redis").json()["backend"] == "redis"
