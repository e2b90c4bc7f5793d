"""A set of click options a command receives as one checked keyword.

``--insecure --ca-bundle``, the server-profile options and the MQTT options are
each shared by several commands; each command gets them validated once, as one
value (``tls_settings``, ``server_profile``, ``mqtt_settings``), so names, help
and checks cannot drift apart between commands.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def option_group(
    options: Sequence[Callable[[Any], Any]],
    names: Sequence[str],
    keyword: str,
    values: Callable[..., Any],
) -> Callable[[F], F]:
    """Add ``options`` to a command; it gets ``keyword=values(*given)`` instead, with
    ``given`` the parameters ``names`` in order."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = [kwargs.pop(name) for name in names]
            return func(*args, **{keyword: values(*given)}, **kwargs)

        wrapped: Any = command
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


HTML_HELP = (
    "Write the HTML report to FILE: one self-contained page that opens offline (verdict, "
    "checks, figures over time, cohorts)."
)


def html_option() -> Callable[[F], F]:
    """``--html FILE``, the same on every command that writes a report (one option, but
    shared as the groups above are, so its name and help cannot drift)."""
    return click.option("--html", "html_path", metavar="FILE", help=HTML_HELP)
