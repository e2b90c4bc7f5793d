"""The ``harness`` command: a thin click layer over the Python API.

Sub-commands live in their own modules and are imported only when used, so
``harness --help`` stays fast and one broken optional dependency cannot take
down every command. Every input error becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from harness.errors import HarnessInputError

# name -> "module:attribute"; the order is the order `harness --help` lists them in.
COMMANDS: dict[str, str] = {
    "soak": "harness.cli.soak:soak",
    "compat": "harness.cli.compat:compat",
    "probe": "harness.cli.probe:probe",
    "serve": "harness.cli.serve:serve",
    "provision": "harness.cli.provision:provision",
    "report": "harness.cli.report:report",
    "hil": "harness.cli.hil:hil",
    "sign": "harness.cli.sign:sign",
    "selfcheck": "harness.cli.selfcheck:selfcheck",
    "fault-proxy": "harness.cli.fault_proxy:fault_proxy",
}

SHORT_HELP: dict[str, str] = {
    "soak": "Run a fleet of virtual devices against a server and check every answer.",
    "compat": "Which cohorts break if NORMALIZE_IDS_IN_HMAC (or idempotency) is turned on.",
    "probe": "Work out which flags a claim server actually runs.",
    "serve": "Run the reference v5 claim server.",
    "provision": "Export the rows a server needs for a fleet (JSON, SQL, CSV).",
    "report": "Work with run reports (merge shard reports, rebuild one from a journal).",
    "hil": "Hardware-in-the-loop: flash, drive and check real or virtual ESP32 boards.",
    "sign": "Print the claim body a device would send, to check one claim by hand.",
    "selfcheck": "Check the protocol core against the contract's known values.",
    "fault-proxy": "A TCP proxy in front of a service that drops, resets, delays or cuts.",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SHORT_HELP.get(n, "")) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teddy-claim-harness", prog_name="harness")
def cli() -> None:
    """ESP32 claim simulator and device-fleet harness.

    Plays thousands of ESP32 devices (or drives real boards) against a claim
    server, judges every answer against the server configuration you declare,
    and reports the result as a summary, JSON/JUnit, an exit code and
    Prometheus metrics.

    \b
    Start here:
      harness soak                      fleet run against the embedded server
      harness compat --fleet fleets/teddy-v5.toml
      harness serve --port 8000         the reference server on its own
      harness sign --device-id CCDBA795BAA4 --child-id child-1 \\
          --nonce 00112233445566778899aabbccddeeff --oob <64 hex>

    Exit codes: 0 all checks and thresholds pass, 1 a check or threshold
    failed, 2 bad usage or configuration.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning bad input into one line and exit code 2."""
    prog = "harness"
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else f"{prog}: "
        click.echo(f"{where}error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except HarnessInputError as exc:
        click.echo(f"{prog}: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(130)
    if isinstance(rv, int):
        sys.exit(rv)
    sys.exit(0)
