"""A real Mosquitto for a run: ``--mqtt embedded`` starts one, tests start one.

Started from the ``mosquitto`` binary on a free loopback port with a generated
config: persistence off, and, when asked, a password file and an ACL that lets a
device write only under its own topics (``Topics.acl_pattern``: the client ID,
which is the normalised device ID). Mosquitto cannot verify a JWT itself, so the
password file holds each device's access token as its password: the harness
writes it (``set_passwords``), ``mosquitto_passwd -U`` hashes it in one run, and
a SIGHUP makes the broker read it again, as an operator's reload would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Self

from harness.errors import HarnessInputError
from harness.mqtt.topics import Topics
from harness.services import ChildServer, require_binary

START_TIMEOUT_S = 10.0
OBSERVER_USER = "harness-observer"  # the harness's own subscriber: reads every device


class MosquittoBroker(ChildServer):
    """``mosquitto`` in a temp dir; ``url``, ``port``, ``restart()``, ``set_passwords()``."""

    def __init__(
        self,
        *,
        auth: bool = False,
        topics: Topics | None = None,
        port: int | None = None,
        observer_password: str | None = None,
    ) -> None:
        self.binary = require_binary("mosquitto", "mosquitto")
        self.passwd_tool = require_binary("mosquitto_passwd", "mosquitto") if auth else None
        super().__init__("harness-mqtt-", port)
        self.auth = auth
        self.topics = topics or Topics()
        self.observer_password = observer_password or os.urandom(16).hex()
        self._passwords: dict[str, str] = {}
        self._lock = threading.RLock()  # start, stop and the password file: one at a time
        self._hashed: dict[str, tuple[str, str]] = {}  # user -> (password, its hashed line)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    # --- config -------------------------------------------------------------------------
    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "max_queued_messages 10000",
            "set_tcp_nodelay true",
        ]
        if self.auth:
            self._write_passwords()
            acl = self.dir / "acl"
            prefix = self.topics.prefix
            acl.write_text(
                f"user {OBSERVER_USER}\ntopic read {prefix}/#\n"
                f"topic write {self.topics.command('+')}\n\n"  # it sends the ping commands
                f"pattern readwrite {self.topics.acl_pattern}\n"
            )
            lines += [
                "allow_anonymous false",
                f"password_file {self.dir / 'passwd'}",
                f"acl_file {acl}",
            ]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            lines.append(f"user {self._owner()}")  # as root it would drop to "mosquitto"
        config = self.dir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        self._hand_over()
        return config

    @staticmethod
    def _owner() -> str:
        """The user the broker runs as when started by root: Debian's ``mosquitto``."""
        try:
            pwd.getpwnam("mosquitto")
        except KeyError:
            return "root"
        return "mosquitto"

    def _hand_over(self) -> None:
        """As root, the temp dir and its files belong to the user the broker drops to."""
        if os.geteuid() != 0 or self._owner() == "root":
            return
        for path in [self.dir, *self.dir.iterdir()]:
            shutil.chown(path, "mosquitto", "mosquitto")

    def _write_passwords(self) -> None:
        """The password file. ``mosquitto_passwd -U`` hashes only the entries that changed,
        in one run, so a fleet's thousands of grants cost each one hash, not one per reload.

        Salted SHA-512 (``-H sha512``), not the default PBKDF2: a SIGHUP makes Mosquitto
        check every connected client's password again, and with PBKDF2 that cost about
        0.2 ms a client, a quarter of a second per reload at 1,200 sessions, which left
        the broker busy and heartbeats a second late. The passwords are access tokens
        that expire, in a temp dir only the broker's user can read."""
        entries = {OBSERVER_USER: self.observer_password, **self._passwords}
        fresh = {u: p for u, p in entries.items() if self._hashed.get(u, (None, ""))[0] != p}
        for user, password in fresh.items():
            if not user or ":" in user or "\n" in user or "\n" in password:
                raise HarnessInputError("mqtt", "a user name is empty or has ':' or a newline")
        if fresh:
            tmp = self.dir / "passwd.new"
            tmp.write_text("".join(f"{u}:{p}\n" for u, p in fresh.items()))
            tmp.chmod(0o600)
            assert self.passwd_tool is not None
            done = subprocess.run(
                [self.passwd_tool, "-H", "sha512", "-U", str(tmp)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise HarnessInputError("mosquitto_passwd", done.stderr.strip() or "failed")
            for line in tmp.read_text().splitlines():
                user = line.split(":", 1)[0]
                self._hashed[user] = (fresh[user], line)
            tmp.unlink()
        path = self.dir / "passwd"
        tmp = path.with_suffix(".next")
        tmp.write_text("".join(self._hashed[u][1] + "\n" for u in entries))
        tmp.chmod(0o600)
        tmp.replace(path)
        self._hand_over()

    def set_passwords(self, passwords: Mapping[str, str], revoke: Iterable[str] = ()) -> None:
        """Each user's password from now on (devices: their access tokens), and users that
        may no longer connect (an expired token); the broker reloads the file at once."""
        with self._lock:  # a restart may be writing the file from another thread
            self._passwords.update(passwords)
            for user in revoke:
                self._passwords.pop(user, None)
            proc = self.proc
            if self.auth and proc is not None and proc.poll() is None:
                self._write_passwords()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    # --- life ----------------------------------------------------------------------------
    def start(self) -> Self:
        with self._lock:
            return self._start()

    def _start(self) -> Self:
        if self.running:
            return self
        config = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C is for the soak, not its broker
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(
                    errors="replace"
                )
                raise HarnessInputError("mosquitto", f"exited at start: {err.strip()[-300:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise HarnessInputError("mosquitto", f"not listening on port {self.port} after 10 s")

    def stop(self) -> None:
        """Stop the broker; ``start()`` brings it back on the same port."""
        with self._lock:
            proc = self.proc
            super().stop()
            if proc is not None and proc.stderr is not None:
                proc.stderr.close()

    def kill(self) -> None:
        """The broker dies abruptly (a crash), for broker-loss scenarios."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.stop()

    def close(self) -> None:
        with self._lock:
            super().close()

    def restart(self) -> Self:
        self.stop()
        return self.start()
