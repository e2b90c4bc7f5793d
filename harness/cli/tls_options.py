"""``--insecure`` and ``--ca-bundle``, one set for every command that takes ``--target``.

``soak``, ``compat``, ``probe`` and ``hil run`` get them from here, so the names,
help, checks and the ``--insecure`` warning cannot drift apart. The command
receives a ``tls_settings`` keyword (``insecure``, ``ca_bundle``): plain values,
which worker processes can be given, unlike an ``ssl.SSLContext``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from harness.cli.option_group import option_group
from harness.tls import INSECURE_WARNING, client_context

F = TypeVar("F", bound=Callable[..., Any])


def tls_options() -> Callable[[F], F]:
    """Add ``--insecure --ca-bundle`` to a click command, which then gets them checked
    as one ``tls_settings`` keyword (``tls_values``)."""
    return option_group(_OPTIONS, ("insecure", "ca_bundle"), "tls_settings", tls_values)


_OPTIONS = [
    click.option(
        "--insecure",
        is_flag=True,
        default=False,
        help="Disable TLS certificate verification of an https:// --target (a warning "
        "is printed on every run). Default: verified against the system's CAs.",
    ),
    click.option(
        "--ca-bundle",
        default=None,
        metavar="FILE",
        help="Verify an https:// --target against the CA certificates in this PEM file "
        "(instead of the system's).",
    ),
]


def tls_values(insecure: bool, ca_bundle: str | None) -> dict[str, Any]:
    """The options as keyword values (``insecure``, ``ca_bundle``), checked once.

    A bad bundle or both options is one line and exit 2 before anything runs; the
    bundle's path is made absolute so a process started elsewhere finds the same
    file. ``--insecure`` prints its warning here: once per run, whatever runs after.
    """
    client_context(insecure, ca_bundle)  # raises the one-line error
    if insecure:
        click.echo(INSECURE_WARNING, err=True)
    return {
        "insecure": insecure,
        "ca_bundle": os.path.abspath(ca_bundle) if ca_bundle is not None else None,
    }
