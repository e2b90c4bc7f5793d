"""What a cohort's devices do on MQTT after their claim (a fleet's ``[session]`` table).

The firmware's own numbers are the defaults: the heartbeat interval comes from
the claim response's ``device_config`` (30 s on both v5 builds), the token is
refreshed 60 s before it expires (``JWT_REFRESH_BUFFER_SEC`` in
``jwt_manager.h``), and a lost connection is retried after ``2^errors`` seconds
capped at 60 s (``state_machine.c``'s recovery back-off) with the claim path's
±25% jitter. ``time_scale`` shrinks the heartbeat interval and the back-off for
soaks; token lifetimes are shortened on the server instead (``access_ttl``),
since a token's expiry is real time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from harness.errors import HarnessInputError

HEARTBEAT_DEFAULT_S = 30.0  # device_config.heartbeat_interval on v5.0 and v5-head
REFRESH_BUFFER_S = 60.0  # jwt_manager.h: refresh this long before the token expires
RECONNECT_BASE_S = 1.0  # state_machine.c: (1 << errors) * 1000 ms ...
RECONNECT_CAP_S = 60.0  # ... capped at 60 s
RECONNECT_JITTER = 0.25  # calculateExponentialBackoff's ±25%
SHARE_KEYS = ("kill_share", "bad_token_share")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A cohort's MQTT habits; ``mqtt = False`` (the default) means no session at all."""

    mqtt: bool = False
    # Multiplies the heartbeat interval and the reconnect back-off (0.01: 30 s -> 0.3 s).
    time_scale: float = 1.0
    # Share of sessions killed once, abruptly (no DISCONNECT): their last will must fire.
    kill_share: float = 0.0
    # Share of devices that first connect with a wrong token: refused at CONNACK.
    bad_token_share: float = 0.0
    refresh: bool = True  # refresh the access token before it expires, then reconnect
    isolation_probe: bool = True  # try once to publish under another device's topics


def session_spec(raw: Any, where: str, base: SessionSpec | None = None) -> SessionSpec:
    """A ``[session]`` table over ``base`` (the defaults'); errors name ``where.key``."""
    spec = base or SessionSpec()
    if raw is None:
        return spec
    if not isinstance(raw, dict):
        raise HarnessInputError(where, "must be a table")
    known = {f.name: f for f in fields(SessionSpec)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise HarnessInputError(
                f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})"
            )
        kind = type(getattr(SessionSpec(), key))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # TOML integers have no size limit in tomllib
                raise HarnessInputError(f"{where}.{key}", "must be a finite number") from None
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise HarnessInputError(f"{where}.{key}", f"must be a {kind.__name__}")
        values[key] = value
    merged = {f.name: getattr(spec, f.name) for f in fields(SessionSpec)} | values
    out = SessionSpec(**merged)
    for key in SHARE_KEYS:
        if not 0.0 <= getattr(out, key) <= 1.0:
            raise HarnessInputError(f"{where}.{key}", "share must be within 0..1")
    if not 0.0 < out.time_scale <= 1000:
        raise HarnessInputError(f"{where}.time_scale", "must be within (0, 1000]")
    return out
