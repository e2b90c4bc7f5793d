"""``harness fault-proxy``: a TCP fault proxy in front of a service, switched over HTTP."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from harness.errors import HarnessInputError
from harness.faults.modes import Mode, Schedule, format_schedule, parse_mode, parse_schedule


def parse_address(text: str, field: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare port (on 127.0.0.1), checked before any bind."""
    value = text.strip()
    if value.isdigit():
        host, port_text = "127.0.0.1", value
    elif value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise HarnessInputError(field, f"{text!r} is not [host]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon or ":" in host:
            raise HarnessInputError(field, f"{text!r} is not host:port (e.g. 127.0.0.1:6380)")
    if not host:
        raise HarnessInputError(field, f"{text!r} has no host (e.g. 127.0.0.1:6380)")
    lowest = 0 if allow_port_zero else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise HarnessInputError(
            field, f"{text!r}: port {port_text!r} must be a number from {lowest} to 65535"
        )
    return host, int(port_text)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@click.command("fault-proxy")
@click.option("--listen", required=True, metavar="HOST:PORT", help="Where clients connect.")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The service behind it.")
@click.option(
    "--control",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="The HTTP control API (GET/PUT /mode, GET /health); port 0 picks a free one.",
)
@click.option(
    "--mode",
    "mode_text",
    default="pass",
    show_default=True,
    help="Start mode: pass, delay:200ms, drop, reset, blackhole, cut:100, slowclose:2s, "
    "each with an optional share of new connections, e.g. reset@0.5.",
)
@click.option(
    "--schedule",
    "schedule_text",
    default=None,
    metavar="OFFSET=MODE,...",
    help='Mode changes from the start, e.g. "0s=pass,5s=drop,10s=pass".',
)
@click.option("--seed", type=int, default=None, help="Seed for the share draws (repeatable runs).")
def fault_proxy(
    listen: str,
    upstream: str,
    control: str,
    mode_text: str,
    schedule_text: str | None,
    seed: int | None,
) -> None:
    """Forward TCP to a service and misbehave on command (drop, reset, delay, cut...).

    Prints one line with the listen address and the control URL, then runs
    until SIGINT or SIGTERM. Switch the fault from anywhere:

    \b
      curl -X PUT -d '{"mode": "reset@0.5"}' http://127.0.0.1:PORT/mode
    """
    listen_at = parse_address(listen, "--listen", allow_port_zero=True)
    upstream_at = parse_address(upstream, "--upstream", allow_port_zero=False)
    control_at = parse_address(control, "--control", allow_port_zero=True)
    mode = parse_mode(mode_text, "--mode")
    schedule = parse_schedule(schedule_text, "--schedule") if schedule_text is not None else []
    notes = f" | schedule {format_schedule(schedule)}" if schedule else ""
    asyncio.run(_run(listen_at, upstream_at, control_at, mode, schedule, seed, notes))


async def _run(
    listen_at: tuple[str, int],
    upstream_at: tuple[str, int],
    control_at: tuple[str, int],
    mode: Mode,
    schedule: Schedule,
    seed: int | None,
    notes: str,
) -> None:
    from harness.faults.control import ControlServer
    from harness.faults.proxy import FaultProxy

    proxy = FaultProxy(*upstream_at, host=listen_at[0], port=listen_at[1], seed=seed)
    proxy.set_mode(mode)
    try:
        await proxy.start()
    except HarnessInputError as exc:
        raise HarnessInputError("--listen", exc.reason) from None
    control = ControlServer(proxy, *control_at)
    try:
        try:
            await control.start()
        except HarnessInputError as exc:
            raise HarnessInputError("--control", exc.reason) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(
            f"fault proxy listening on {_show(proxy.host, proxy.port)}"
            f" -> {_show(*upstream_at)} | mode {proxy.mode.text}"
            f" | control {control.url}{notes}"
        )
        sys.stdout.flush()
        runner = asyncio.create_task(proxy.run_schedule(schedule)) if schedule else None
        await stop.wait()
        if runner is not None:
            runner.cancel()
    finally:
        await control.stop()
        await proxy.stop()
