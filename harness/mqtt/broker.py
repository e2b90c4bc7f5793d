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

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
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
            acl.write_text(
                f"user {OBSERVER_USER}\ntopic read {self.topics.prefix}/#\n\n"
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
        """The password file, hashed by ``mosquitto_passwd -U`` in one run (not one per user)."""
        entries = {OBSERVER_USER: self.observer_password, **self._passwords}
        for user, password in entries.items():
            if ":" in user or "\n" in user or "\n" in password:
                raise HarnessInputError("mqtt", "a user name has ':' or a newline")
        path = self.dir / "passwd"
        tmp = path.with_suffix(".new")
        tmp.write_text("".join(f"{u}:{p}\n" for u, p in entries.items()))
        tmp.chmod(0o600)
        assert self.passwd_tool is not None
        done = subprocess.run(
            [self.passwd_tool, "-U", str(tmp)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise HarnessInputError("mosquitto_passwd", done.stderr.strip() or "failed")
        tmp.replace(path)
        self._hand_over()

    def set_passwords(self, passwords: Mapping[str, str]) -> None:
        """Each user's password from now on (devices: their access tokens); reloaded live."""
        self._passwords.update(passwords)
        if self.auth and self.running:
            self._write_passwords()
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)

    # --- life ----------------------------------------------------------------------------
    def start(self) -> Self:
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
        proc = self.proc
        super().stop()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """The broker dies abruptly (a crash), for broker-loss scenarios."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stop()

    def restart(self) -> Self:
        self.stop()
        return self.start()
