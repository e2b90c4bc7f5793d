"""Real Redis and PostgreSQL servers, started on a free port in a temp dir and stopped here.

A soak with fault windows on the embedded server needs the real stores behind
its fault proxies (a memory store cannot be cut mid-run), and the tests need the
same; so both start them through this one module. PostgreSQL refuses to run as
root, so as root every PostgreSQL command runs as the ``postgres`` user on a temp
dir owned by it. A missing binary is one ``HarnessInputError`` naming the package.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from harness.errors import HarnessInputError

START_TIMEOUT_S = 20.0
# Debian puts some server binaries outside PATH.
EXTRA_BIN_DIRS = [
    Path("/usr/sbin"),
    *sorted(Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
]


def find_binary(name: str) -> str | None:
    """A binary on PATH or in the Debian-specific directories, or None."""
    found = shutil.which(name)
    if found:
        return found
    for d in EXTRA_BIN_DIRS:
        cand = d / name
        if cand.exists() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def require_binary(name: str, package: str | None = None) -> str:
    """The binary's path, or one line saying which Debian package has it."""
    path = find_binary(name)
    if path is None:
        raise HarnessInputError(name, f"not found (apt-get install {package or name})")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise HarnessInputError(what, f"did not listen on {host}:{port} within {timeout_s:g} s")


class ChildServer:
    """A server run as a child process of the harness: a temp dir, a loopback port, and a
    stop (terminate, then kill) and close (stop, then remove the dir) that never hang.
    Subclasses say how to ``start``."""

    def __init__(self, prefix: str, port: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (the port stays reserved for a later ``start()``)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(ChildServer):
    """``redis-server`` on a free port in a temp dir; ``.start()`` again after ``.stop()``."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        super().__init__("harness-redis-", port)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> Self:
        if self.running:
            return self
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        # Its own session: a terminal's Ctrl-C meant for the soak must not stop its Redis.
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessInputError("redis-server", f"exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise HarnessInputError("redis-server", f"not ready on port {self.port}: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else ""


class PostgresServer:
    """A throw-away PostgreSQL cluster (``initdb`` + ``pg_ctl``), tuned for tests not durability."""

    def __init__(self, port: int | None = None) -> None:
        self.initdb = require_binary("initdb", "postgresql")
        self.pg_ctl = require_binary("pg_ctl", "postgresql")
        self.psql = require_binary("psql", "postgresql-client")
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="test-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._started = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else list(cmd)
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            tail = res.stderr.strip()[-300:].replace("\n", " ")
            raise HarnessInputError(Path(cmd[0]).name, f"failed ({res.returncode}): {tail}")
        return res

    def start(self) -> Self:
        if self._started:
            return self
        if not (self.data / "PG_VERSION").exists():
            self._run(
                self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--no-sync", "--no-instructions",
            )  # fmt: skip
        opts = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-o", opts,
            "-l", str(self.root / "postgres.log"), "-w", "-t", str(int(START_TIMEOUT_S)), "start",
        )  # fmt: skip
        self._started = True
        _wait_port(self.host, self.port, START_TIMEOUT_S, "postgres")
        return self

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql as the superuser; returns psql's unaligned output."""
        res = self._run(
            self.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql,
        )  # fmt: skip
        return res.stdout.strip()

    def create_database(self, name: str) -> str:
        """A fresh database; returns its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
