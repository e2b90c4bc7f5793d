"""Secrets from a file (``@FILE``) or the environment (``env:NAME``), never only argv.

The resolver on its own, then every secret-carrying option of a real ``harness``
subprocess using a secret it read from a file and from the environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jwt
import pytest

from harness.cli.secret_values import MAX_SECRET_FILE_BYTES, resolve_secret
from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.protocol import derive_oob_v5
from harness.server import EmbeddedServer, ServerConfig
from harness.server.seed import Seed, SeedChild, SeedDevice
from tests.cli.test_serve import serving
from tests.support import HARNESS, ROOT, free_port
from tests.support.httpclient import Client
from tests.support.world import World, claim_body, random_oob

OPTION = "--oob"
NONCE = "00112233445566778899aabbccddeeff"
DEVICE = "CCDBA795BAA4"
CHILD = "child-1"


def _harness(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` as a user runs it, with ``env`` added to the environment."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [*HARNESS, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=full
    )


# --- the resolver ---------------------------------------------------------------------


def test_literal_and_none_pass_through() -> None:
    assert resolve_secret(None, OPTION) is None
    assert resolve_secret("AB" * 32, OPTION) == "AB" * 32


def test_file_value_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "oob"
    secret.write_text("AB" * 32 + "\n")
    assert resolve_secret(f"@{secret}", OPTION) == "AB" * 32
    secret.write_text("  two words  \r\n")  # leading spaces are the secret's own
    assert resolve_secret(f"@{secret}", OPTION) == "  two words"


def test_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEDDY_TEST_SECRET", "s3cr3t value")
    assert resolve_secret("env:TEDDY_TEST_SECRET", OPTION) == "s3cr3t value"


def _bad_files(tmp: Path) -> dict[str, str]:
    (tmp / "latin1").write_bytes(b"caf\xe9-SECRETBYTES")
    (tmp / "empty").write_bytes(b"")
    (tmp / "blank").write_text(" \n\n")
    (tmp / "big").write_bytes(b"a" * (MAX_SECRET_FILE_BYTES + 1))
    (tmp / "a_file").write_text("x")
    return {
        "missing": f"@{tmp / 'missing'}",
        "directory": f"@{tmp}",
        "latin1": f"@{tmp / 'latin1'}",
        "empty": f"@{tmp / 'empty'}",
        "blank": f"@{tmp / 'blank'}",
        "big": f"@{tmp / 'big'}",
        "under a file": f"@{tmp / 'a_file' / 'x'}",
        "unreadable": "@/proc/self/mem",  # open() works, read() fails, even for root
        "no name": "@",
    }


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("latin1", "not UTF-8 text"),
        ("empty", "is empty"),
        ("blank", "is empty"),
        ("big", "larger than 64 KiB"),
        ("under a file", "cannot read"),
        ("unreadable", "cannot read"),
        ("no name", "needs a file name"),
    ],
)
def test_bad_file_is_one_input_error(tmp_path: Path, case: str, says: str) -> None:
    with pytest.raises(HarnessInputError) as err:
        resolve_secret(_bad_files(tmp_path)[case], OPTION)
    assert err.value.field == OPTION and says in err.value.reason
    assert "\n" not in str(err.value) and "SECRETBYTES" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "env", "says"),
    [
        ("env:TEDDY_TEST_UNSET", {}, "TEDDY_TEST_UNSET is not set"),
        ("env:TEDDY_TEST_EMPTY", {"TEDDY_TEST_EMPTY": ""}, "TEDDY_TEST_EMPTY is empty"),
        ("env:TEDDY_TEST_EMPTY", {"TEDDY_TEST_EMPTY": "  "}, "TEDDY_TEST_EMPTY is empty"),
        ("env:", {}, "needs a variable name"),
    ],
)
def test_bad_variable_is_one_input_error(
    monkeypatch: pytest.MonkeyPatch, value: str, env: dict[str, str], says: str
) -> None:
    monkeypatch.delenv("TEDDY_TEST_UNSET", raising=False)
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    with pytest.raises(HarnessInputError) as err:
        resolve_secret(value, OPTION)
    assert err.value.field == OPTION and says in err.value.reason


# --- every command, for real ----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["sign"], "--oob"),
        (["probe"], "--oob"),
        (["serve"], "--jwt-secret"),
        (["serve"], "--auto-register-secret"),
        (["soak"], "--auto-register-secret"),
    ],
)
def test_help_says_to_prefer_a_file_or_the_environment(command: list[str], option: str) -> None:
    proc = _harness(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split()).split("Options:", 1)[1]  # click wraps the help
    at = text.index(f"{option} ")
    help_text = text[at : at + 500]
    assert "@FILE" in help_text and "env:NAME" in help_text and " ps" in help_text, help_text


def test_sign_reads_the_oob_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    oob = derive_oob_v5(DEVICE)
    (tmp_path / "oob").write_text(oob + "\n")
    base = ["sign", "--device-id", DEVICE, "--child-id", CHILD, "--nonce", NONCE, "--oob"]
    literal = _harness(*base, oob)
    from_file = _harness(*base, f"@{tmp_path / 'oob'}")
    from_env = _harness(*base, "env:TEDDY_OOB", TEDDY_OOB=oob)
    assert literal.returncode == 0, literal.stderr
    assert '"hmac_hex"' in literal.stdout
    assert from_file.returncode == 0 and from_file.stdout == literal.stdout, from_file.stderr
    assert from_env.returncode == 0 and from_env.stdout == literal.stdout, from_env.stderr
    wrong = _harness(*base, "env:TEDDY_OOB", TEDDY_OOB=random_oob())
    assert wrong.returncode == 0 and wrong.stdout != literal.stdout  # the value really counts


@pytest.mark.parametrize("value", ["@{dir}/nope", "env:TEDDY_TEST_UNSET", "@{dir}"])
def test_sign_with_a_bad_secret_source_is_one_line_exit_2(tmp_path: Path, value: str) -> None:
    base = ["sign", "--device-id", DEVICE, "--child-id", CHILD, "--nonce", NONCE, "--oob"]
    proc = _harness(*base, value.format(dir=tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--oob" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_probe_reads_the_oob_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    device = "teddy-esp32-secretprobe"
    oob = random_oob()
    (tmp_path / "oob").write_text(oob + "\n")
    seed = Seed((SeedDevice(device, oob),), (SeedChild(CHILD),))
    with EmbeddedServer(ServerConfig(flags=Flags(), seed=seed)) as server:
        base = ["probe", "--target", server.url, "--device-id", device, "--child-id", CHILD]
        runs = {
            "file": _harness(*base, "--oob", f"@{tmp_path / 'oob'}"),
            "env": _harness(*base, "--oob", "env:TEDDY_OOB", TEDDY_OOB=oob),
            "wrong": _harness(*base, "--oob", "env:TEDDY_OOB", TEDDY_OOB=random_oob()),
        }
    for name in ("file", "env"):
        proc = runs[name]
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        assert "ENABLE_IDEMPOTENCY=false" in proc.stdout, proc.stdout
    assert runs["wrong"].returncode == 1 and "wrong OOB secret" in runs["wrong"].stdout


def _claim_token(port: int, world: World) -> str:
    with Client(f"http://127.0.0.1:{port}") as client:
        reply = client.claim(claim_body(world.lower, world.child, world.lower_oob))
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


def _verify(token: str, secret: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token, secret, algorithms=["HS256"], options={"verify_aud": False, "verify_iss": False}
    )
    return claims


@pytest.mark.parametrize("how", ["--jwt-secret @FILE", "JWT_SECRET=env:NAME", "JWT_SECRET=@FILE"])
def test_serve_signs_tokens_with_the_secret_from_a_file_or_the_environment(
    tmp_path: Path, how: str
) -> None:
    secret = "serve-secret-" + os.urandom(16).hex()
    (tmp_path / "jwt").write_text(secret + "\n")
    world = World.make("secret-src")
    (seed := tmp_path / "seed.json").write_text(world.seed().to_json())
    args: list[str] = ["--seed", str(seed), "--log-file", "none"]
    env: dict[str, str] = {}
    if how == "--jwt-secret @FILE":
        args += ["--jwt-secret", f"@{tmp_path / 'jwt'}"]
    elif how == "JWT_SECRET=env:NAME":
        env = {"JWT_SECRET": "env:TEDDY_JWT", "TEDDY_JWT": secret}
    else:
        env = {"JWT_SECRET": f"@{tmp_path / 'jwt'}"}
    with serving(*args, **env) as (port, _, _):
        token = _claim_token(port, world)
    assert _verify(token, secret)["type"]  # signed with exactly that secret
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(token, f"@{tmp_path / 'jwt'}")  # not with the reference to it


def test_serve_with_a_missing_secret_file_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _harness("serve", "--port", "0", "--jwt-secret", f"@{tmp_path / 'nope'}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--jwt-secret" in proc.stderr, proc.stderr


@pytest.mark.parametrize("form", ["static:@FILE", "static:env:NAME", "@FILE"])
def test_serve_auto_register_secret_from_a_file_or_the_environment(
    tmp_path: Path, form: str
) -> None:
    static = random_oob()
    (tmp_path / "hex").write_text(static + "\n")
    (tmp_path / "whole").write_text(f"static:{static}\n")
    value = {
        "static:@FILE": f"static:@{tmp_path / 'hex'}",
        "static:env:NAME": "static:env:TEDDY_STATIC",
        "@FILE": f"@{tmp_path / 'whole'}",
    }[form]
    with serving(
        "--auto-register-secret", value, "--flag", "ENABLE_AUTO_REGISTER=true",
        "--log-file", "none", TEDDY_STATIC=static,
    ) as (port, line, _):  # fmt: skip
        assert "static auto-register secret" in line
        with Client(f"http://127.0.0.1:{port}") as client:
            new = "esp32-secret-src-1"
            assert client.claim(claim_body(new, "child-x", static)).status != 401
            other = "esp32-secret-src-2"
            assert client.claim(claim_body(other, "child-x", derive_oob_v5(other))).status == 401


def test_serve_reads_store_urls_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    """Store URLs may carry a password: resolved before they are parsed or connected to.
    A dead Redis is a warning at start, a dead PostgreSQL a one-line exit 2 naming it."""
    dead = free_port()
    (tmp_path / "redis").write_text(f"redis://:hunter2@127.0.0.1:{dead}/0\n")
    with serving("--redis-url", f"@{tmp_path / 'redis'}", "--log-file", "none") as (_, line, _):
        assert "nonce store redis" in line and "redis unreachable at start" in line
        assert "hunter2" not in line
    url = f"postgresql://teddy:hunter2@127.0.0.1:{dead}/claims"
    for command in (["serve", "--port", "0"], ["serve", "migrate"]):
        proc = _harness(*command, "--database-url", "env:TEDDY_DB", TEDDY_DB=url)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "postgresql" in proc.stderr and "cannot connect" in proc.stderr, proc.stderr
        assert "hunter2" not in proc.stderr
