"""``harness fault-proxy`` as a user runs it: a real subprocess, its line, its control API."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import HARNESS, ROOT, free_port
from tests.support.services import RedisServer

LINE = re.compile(
    r"^fault proxy listening on 127\.0\.0\.1:(\d+) -> (\S+) \| mode (\S+) \| control (http://\S+)"
)


@contextmanager
def fault_proxy(*args: str) -> Iterator[tuple[int, str, str, subprocess.Popen[str]]]:
    """The command running; yields (listen port, control URL, its line, the process)."""
    proc = subprocess.Popen(
        [*HARNESS, "fault-proxy", "--listen", "127.0.0.1:0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LINE.match(line)
        if not match:
            proc.kill()
            raise AssertionError(
                f"no start line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield int(match.group(1)), match.group(4), line, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def put_mode(control: str, mode: str) -> dict[str, object]:
    body = json.dumps({"mode": mode}).encode()
    request = urllib.request.Request(f"{control}/mode", data=body, method="PUT")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def get_mode(control: str) -> str:
    with urllib.request.urlopen(f"{control}/mode", timeout=10) as reply:
        return str(json.loads(reply.read())["mode"])


def ping(port: int) -> bool:
    r = redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    try:
        return bool(r.ping())
    finally:
        r.close()


def test_put_a_mode_see_it_act_and_stop_with_sigint(redis_server: RedisServer) -> None:
    upstream = f"127.0.0.1:{redis_server.port}"
    with fault_proxy("--upstream", upstream, "--seed", "1") as (port, control, line, proc):
        assert port != 0 and f"-> {upstream} | mode pass |" in line
        with urllib.request.urlopen(f"{control}/health", timeout=10) as reply:
            assert reply.status == 200
        assert ping(port)
        assert put_mode(control, "reset")["mode"] == "reset"
        with pytest.raises(redis.ConnectionError):
            ping(port)
        put_mode(control, "pass")
        assert ping(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""  # still just the one line
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_start_mode_and_schedule(redis_server: RedisServer) -> None:
    args = ["--upstream", f"127.0.0.1:{redis_server.port}", "--mode", "drop"]
    args += ["--schedule", "300ms=pass"]
    with fault_proxy(*args) as (port, control, line, proc):
        assert "| mode drop |" in line and "| schedule 300ms=pass" in line
        deadline = time.monotonic() + 10
        while get_mode(control) != "pass":
            assert time.monotonic() < deadline, "the schedule never switched to pass"
            time.sleep(0.05)
        assert ping(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "nowhere", "--upstream", "127.0.0.1:6379"], "--listen: 'nowhere'"),
        (["--listen", "127.0.0.1:99999", "--upstream", "127.0.0.1:6379"], "--listen:"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0"], "--upstream:"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:x"], "--upstream:"),
        (["--listen", "127.0.0.1:0", "--upstream", "h:1", "--control", "h"], "--control:"),
        (["--listen", "127.0.0.1:0", "--upstream", "h:1", "--mode", "explode"], "--mode:"),
        (["--listen", "127.0.0.1:0", "--upstream", "h:1", "--mode", "delay:-1s"], "negative"),
        (["--listen", "127.0.0.1:0", "--upstream", "h:1", "--schedule", "5s"], "--schedule:"),
        (["--listen", "127.0.0.1:0", "--upstream", "h:1", "--schedule", "1s=nan"], "--schedule:"),
        (["--upstream", "127.0.0.1:6379"], "--listen"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    done = subprocess.run(
        [*HARNESS, "fault-proxy", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_listen_port_is_exit_2() -> None:
    port = free_port()
    with fault_proxy("--upstream", "127.0.0.1:1") as (taken, _, _, proc):
        done = subprocess.run(
            [
                *HARNESS,
                "fault-proxy",
                "--listen",
                f"127.0.0.1:{taken}",
                "--upstream",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--listen: cannot listen" in done.stderr
