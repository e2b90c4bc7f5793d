"""Secret-carrying option values from a file or the environment, never only the command line.

A command line is visible to every user of the machine (``ps``, ``/proc/*/cmdline``)
and lands in shell history and CI logs, so every option that carries a secret
(``--jwt-secret``, ``--oob``, ``--auto-register-secret static:...``) also takes
``@FILE`` (the file's text, trailing whitespace and newline stripped) or
``env:NAME`` (that environment variable). One resolver, so every such option
refuses a bad file or variable with the same one line (exit 2), and never with
the secret's content in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from harness.errors import HarnessInputError

FILE_PREFIX = "@"
ENV_PREFIX = "env:"
MAX_SECRET_FILE_BYTES = 64 * 1024  # a secret, not a data file: refuse anything bigger
# The sentence every secret option's help ends with.
PREFER_HELP = (
    "Give it as @FILE or env:NAME rather than the value itself: command lines are "
    "visible to other users in ps."
)


def is_indirect(value: str) -> bool:
    """True when ``value`` names a file (``@FILE``) or a variable (``env:NAME``)."""
    return value.startswith(FILE_PREFIX) or value.startswith(ENV_PREFIX)


def resolve_secret(value: str | None, option: str) -> str | None:
    """The secret ``value`` stands for: ``@FILE``'s text, ``env:NAME``'s value, else itself.

    None stays None (the option was not given). A missing, unreadable, non-UTF-8,
    oversized or empty file, a directory, or an unset or empty variable is one
    ``HarnessInputError(option, reason)``.
    """
    if value is None:
        return None
    if value.startswith(FILE_PREFIX):
        return _from_file(value[len(FILE_PREFIX) :], option)
    if value.startswith(ENV_PREFIX):
        return _from_env(value[len(ENV_PREFIX) :], option)
    return value


def _from_file(name: str, option: str) -> str:
    if not name:
        raise HarnessInputError(option, "@ needs a file name: @FILE")
    path = Path(name).expanduser()
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise HarnessInputError(option, f"{name}: no such file") from None
    except IsADirectoryError:
        raise HarnessInputError(option, f"{name}: is a directory, not a file") from None
    except PermissionError:
        raise HarnessInputError(option, f"{name}: cannot read (permission denied)") from None
    except OSError as exc:
        raise HarnessInputError(option, f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise HarnessInputError(
            option, f"{name}: larger than {MAX_SECRET_FILE_BYTES // 1024} KiB, not a secret file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessInputError(option, f"{name}: not UTF-8 text (at offset {exc.start})") from None
    text = text.rstrip()  # the newline an editor or `echo` adds, and stray spaces
    if not text:
        raise HarnessInputError(option, f"{name}: is empty")
    return text


def _from_env(name: str, option: str) -> str:
    if not name:
        raise HarnessInputError(option, "env: needs a variable name: env:NAME")
    value = os.environ.get(name)
    if value is None:
        raise HarnessInputError(option, f"environment variable {name} is not set")
    if not value.strip():
        raise HarnessInputError(option, f"environment variable {name} is empty")
    return value


def secret_option_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: resolve the option's ``@FILE`` / ``env:NAME`` before the command runs."""
    if value is None:
        return None
    option = param.opts[0] if param.opts else str(param.name)
    return resolve_secret(str(value), option)
