"""The server-profile options, one set for every command that runs or judges a server.

``serve`` runs the profile; ``soak``, ``compat``, ``probe --expect`` and ``hil
run`` declare it (and run it on the embedded server when there is no
``--target``). Written once so the names, help and parsing cannot drift apart.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from harness.cli.option_group import option_group
from harness.cli.secret_values import PREFER_HELP, is_indirect, resolve_secret
from harness.flags import parse_flag_value
from harness.profiles import BUILDS, REDIS_STATES

F = TypeVar("F", bound=Callable[..., Any])


NAMES = (
    "profile_name",
    "environment",
    "bare_router",
    "atomic_idempotency",
    "auto_register_secret",
    "redis_state",
)


def profile_options(use_env: bool = False) -> Callable[[F], F]:
    """Add ``--profile --environment --bare-router --atomic-idempotency
    --auto-register-secret --redis-state`` to a click command, which then gets them
    validated as one ``server_profile`` keyword (``profile_values``)."""
    values = functools.partial(profile_values, use_env=use_env)
    return option_group(_OPTIONS, NAMES, "server_profile", values)


_OPTIONS = [
    click.option(
        "--profile",
        "profile_name",
        default=None,
        metavar="|".join(BUILDS),
        help="Server build: v5.0 (default), v5-head, atomic (v5.0 with the race and the "
        "refresh fixed).",
    ),
    click.option(
        "--environment",
        default=None,
        metavar="NAME",
        help="The server's ENVIRONMENT (default production; v5-head makes up unknown "
        "children elsewhere) [env ENVIRONMENT for serve].",
    ),
    click.option(
        "--bare-router",
        is_flag=True,
        default=False,
        help="The claim router without the deployed app's middleware: correlation IDs "
        "on 200s only, FastAPI {'detail'} error bodies.",
    ),
    click.option(
        "--atomic-idempotency",
        is_flag=True,
        default=None,
        help="Same as --profile atomic [env ATOMIC_IDEMPOTENCY for serve].",
    ),
    click.option(
        "--auto-register-secret",
        default=None,
        metavar="v5|static:HEX",
        help="v5.0 builds: auto-registered devices get the v5 derivation (default) or "
        "one static secret: static:@FILE or static:env:NAME (the file or variable holding "
        f"the hex), or @FILE / env:NAME holding static:HEX. {PREFER_HELP}",
    ),
    click.option(
        "--redis-state",
        default="up",
        show_default=True,
        type=click.Choice(REDIS_STATES),
        help="The server's Redis: up, down since start (no client yet) or down after the "
        "first claim. The embedded server reproduces an outage with its memory store.",
    ),
]


def profile_values(
    profile_name: str | None,
    environment: str | None,
    bare_router: bool,
    atomic_idempotency: bool | None,
    auto_register_secret: str | None,
    redis_state: str,
    *,
    use_env: bool = False,
) -> dict[str, Any]:
    """The options as keyword values (``profile``, ``environment``...), validated once.

    ``profile`` and ``environment`` stay None when not given, so a fleet or bench
    file's own declaration applies. ``use_env``: ``serve`` reads ``ENVIRONMENT``
    and ``ATOMIC_IDEMPOTENCY`` as the server would; commands that only declare a
    profile do not.
    """
    from harness.profiles import make_profile
    from harness.server.config import parse_auto_register_secret

    if environment is None and use_env:
        environment = os.environ.get("ENVIRONMENT", "production")
    if atomic_idempotency is None:
        env = os.environ.get("ATOMIC_IDEMPOTENCY", "").strip() if use_env else ""
        atomic_idempotency = parse_flag_value("ATOMIC_IDEMPOTENCY", env) if env else False
    secret = parse_auto_register_secret(auto_register_value(auto_register_secret))
    profile = make_profile(  # validates every option, one line each
        profile_name or "v5.0",
        environment="production" if environment is None else environment,
        redis=redis_state,
        bare_router=bare_router,
        auto_register_secret=secret,
        atomic_idempotency=atomic_idempotency,
    )
    return {
        "profile": profile_name and profile.name,  # None: the fleet or bench file's
        "atomic_idempotency": atomic_idempotency,
        "environment": environment,
        "bare_router": profile.bare_router,
        "redis": profile.redis,
        "auto_register_secret": secret,
    }


def auto_register_value(value: str | None) -> str | None:
    """``--auto-register-secret`` with its secret read: the whole value as ``@FILE`` /
    ``env:NAME``, or the hex of ``static:@FILE`` / ``static:env:NAME``."""
    option = "--auto-register-secret"
    value = resolve_secret(value, option)
    if value is None:
        return None
    scheme, sep, rest = value.partition(":")
    if sep and scheme.strip().lower() == "static" and is_indirect(rest.strip()):
        return f"static:{resolve_secret(rest.strip(), option)}"
    return value
