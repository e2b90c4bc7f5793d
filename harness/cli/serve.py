"""``harness serve``: the reference v5 claim server in the foreground, and its migration."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from harness.cli.profile_options import profile_options
from harness.cli.secret_values import PREFER_HELP, secret_option_callback
from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.protocol.tokens import ACCESS_TTL, MAX_ACCESS_TTL, MIN_ACCESS_TTL

# A store URL may carry its password (postgresql://user:PASSWORD@host/db).
URL_HELP = (
    "With a password in it, give it as @FILE or env:NAME: command lines are visible to "
    "other users in ps."
)


def _startup_line(config: object, url: str) -> str:
    from harness.server.config import ServerConfig

    assert isinstance(config, ServerConfig)
    parts = [
        f"claim server listening on {url}",
        f"flags on: {config.flags.describe()}",
        config.describe_stores(),
        f"{len(config.seed.devices)} devices, {len(config.seed.children)} children seeded",
    ]
    parts.extend(config.profile_notes())
    return " | ".join(parts)


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port; 0 picks a free one.",
)
@click.option("--seed", "seed_path", default=None, help="Seed JSON (devices and children).")
@click.option(
    "--flag",
    "flag_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a flag from the environment, e.g. --flag ENABLE_IDEMPOTENCY=true.",
)
@click.option(
    "--redis-url",
    default=None,
    metavar="URL|@FILE|env:NAME",
    callback=secret_option_callback,
    help=f"Redis nonce store (default: in memory). {URL_HELP}",
)
@click.option(
    "--database-url",
    default=None,
    metavar="URL|@FILE|env:NAME",
    callback=secret_option_callback,
    help=f"PostgreSQL registry (default: in memory). {URL_HELP}",
)
@click.option(
    "--jwt-secret",
    envvar="JWT_SECRET",
    default=None,
    metavar="@FILE|env:NAME|SECRET",
    callback=secret_option_callback,
    help="HS256 token secret [env JWT_SECRET, which may say @FILE or env:NAME too; default: "
    f"random per start]. {PREFER_HELP}",
)
@click.option(
    "--rate-limit", type=float, default=None, help="Claims/s per device ID (default: off)."
)
@click.option(
    "--log-file",
    default="-",
    show_default=True,
    help="Request log (JSON lines); '-' is stderr, 'none' turns it off.",
)
@click.option(
    "--access-ttl",
    "access_ttl",
    type=click.IntRange(MIN_ACCESS_TTL, MAX_ACCESS_TTL),
    default=None,
    metavar="SECONDS",
    help="Access-token lifetime: exp - iat and expires_in, on claim and refresh "
    f"(default: {ACCESS_TTL}, v5's hour; {MIN_ACCESS_TTL}..{MAX_ACCESS_TTL}).",
)
@click.option("--migrate", is_flag=True, help="Create the PostgreSQL schema if missing.")
@profile_options(use_env=True)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    seed_path: str | None,
    flag_items: tuple[str, ...],
    redis_url: str | None,
    database_url: str | None,
    jwt_secret: str | None,
    rate_limit: float | None,
    log_file: str,
    access_ttl: int | None,
    migrate: bool,
    server_profile: dict[str, Any],
) -> None:
    """Run the reference v5 claim server (the contract, quirks included).

    Flags come from the environment under their v5 names (ENABLE_IDEMPOTENCY,
    DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE, ENABLE_AUTO_REGISTER,
    FAIL_OPEN_ON_REDIS_ERROR, NORMALIZE_IDS_IN_HMAC), production defaults when
    unset; --flag overrides them. With no options it runs on in-memory stores.

    \b
    Also: harness serve migrate --database-url URL
    """
    if ctx.invoked_subcommand is not None:
        return
    from harness.server.config import ServerConfig
    from harness.server.seed import Seed, load_seed

    flags = Flags.from_env().with_overrides(flag_items)
    profile = server_profile
    if profile["redis"] != "up" and redis_url:
        raise HarnessInputError(
            "--redis-state",
            "declares an outage of the in-memory store; with --redis-url, stop that Redis instead",
        )
    options: dict[str, object] = {}
    if jwt_secret is not None:
        options["jwt_secret"] = jwt_secret
    if access_ttl is not None:
        options["access_ttl_s"] = access_ttl
    config = ServerConfig(
        flags=flags,
        seed=load_seed(seed_path) if seed_path else Seed(),
        redis_url=redis_url,
        database_url=database_url,
        profile_name=profile["profile"] or "v5.0",
        atomic_idempotency=profile["atomic_idempotency"],
        environment=profile["environment"] or "production",
        bare_router=profile["bare_router"],
        redis_outage=None if profile["redis"] == "up" else profile["redis"],
        auto_register_secret=profile["auto_register_secret"],
        rate_limit=rate_limit,
        log_file=None if log_file.lower() == "none" else log_file,
        migrate=migrate,
        **options,  # type: ignore[arg-type]
    )
    _run_foreground(config, host, port)


def _run_foreground(config: object, host: str, port: int) -> None:
    from harness.server.embedded import start_error
    from harness.server.runner import Runner, bind_socket, new_loop

    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise HarnessInputError(
            "--port", f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        runner = Runner(config, sock)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise
    loop = new_loop()
    asyncio.set_event_loop(loop)

    def ready() -> None:
        line = _startup_line(config, f"http://{shown}:{real_port}")
        if runner.state.warnings:
            line += " | WARNING: " + "; ".join(runner.state.warnings)
        click.echo(line)
        sys.stdout.flush()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.request_stop)
    try:
        loop.run_until_complete(runner.run(ready))
    except HarnessInputError:
        raise
    except Exception as exc:
        raise start_error(exc) from None
    finally:
        loop.close()


@serve.command("migrate")
@click.option(
    "--database-url",
    required=True,
    metavar="URL|@FILE|env:NAME",
    callback=secret_option_callback,
    help=f"PostgreSQL URL to create the schema in. {URL_HELP}",
)
def migrate_cmd(database_url: str) -> None:
    """Create or update the claim schema (devices, children) in PostgreSQL."""
    from harness.server.config import normalize_database_url
    from harness.server.embedded import start_error
    from harness.server.stores.registry import SCHEMA_VERSION, migrate_url

    url = normalize_database_url(database_url)
    try:
        applied = asyncio.run(migrate_url(url))
    except Exception as exc:
        raise start_error(exc) from None
    if applied:
        click.echo(f"claim schema migrated to version {SCHEMA_VERSION} (applied {applied})")
    else:
        click.echo(f"claim schema already at version {SCHEMA_VERSION}")
