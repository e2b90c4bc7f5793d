"""``--mqtt``, ``--mqtt-prefix``, ``--mqtt-hold`` and ``--mqtt-acl``: a run's MQTT side.

The command receives one ``mqtt_settings`` keyword: ``harness.mqtt.fleet.MqttOptions``
(a frozen dataclass, which worker processes can be given) or None when ``--mqtt`` was
not given (a fleet's ``[session] mqtt = true`` then still starts an embedded broker,
with the prefix and hold given here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from harness.cli.option_group import option_group
from harness.faults.modes import parse_duration
from harness.mqtt.fleet import MqttOptions, parse_broker_url
from harness.mqtt.topics import DEFAULT_PREFIX, check_prefix

F = TypeVar("F", bound=Callable[..., Any])


def mqtt_options() -> Callable[[F], F]:
    """Add the MQTT options to a click command, checked into one ``mqtt_settings``."""
    names = ("mqtt", "mqtt_prefix", "mqtt_hold", "mqtt_acl")
    return option_group(_OPTIONS, names, "mqtt_settings", mqtt_values)


_OPTIONS = [
    click.option(
        "--mqtt",
        metavar="URL|embedded",
        help="Claimed devices go online over MQTT: 'embedded' starts Mosquitto on a free "
        "port (password file and per-device ACL written by the harness); mqtt://host:port "
        "uses a broker of yours (user:password@ in the URL is the observer's login). "
        "Every cohort goes online, unless the fleet's [session] tables name some.",
    ),
    click.option(
        "--mqtt-prefix",
        default=None,
        metavar="TOPIC",
        help=f"Root of the device topics (default {DEFAULT_PREFIX}).",
    ),
    click.option(
        "--mqtt-hold",
        default=None,
        metavar="DURATION",
        help="Keep the sessions up this long after the claims end (e.g. 10s; default 0).",
    ),
    click.option(
        "--mqtt-acl/--no-mqtt-acl",
        default=None,
        help="Judge the cross-device publish probe (mqtt_isolation): on by default for "
        "the embedded broker, off for a broker of yours unless it enforces a per-device ACL.",
    ),
]


def mqtt_values(
    url: str | None, prefix: str | None, hold: str | None, acl: bool | None
) -> MqttOptions | None:
    """The options checked once; None when nothing MQTT was asked for."""
    if url is None and prefix is None and hold is None and acl is None:
        return None
    base = MqttOptions()
    if url is not None and url != "embedded":
        parse_broker_url(url)  # one clear line for a bad URL, before anything starts
    held = parse_duration(hold, "--mqtt-hold") if hold is not None else 0.0
    return MqttOptions(
        url=url or base.url,
        prefix=check_prefix(prefix) if prefix is not None else base.prefix,
        hold_s=held,
        acl=acl,
        every_cohort=url is not None,
    )
