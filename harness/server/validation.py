"""Claim-body validation with FastAPI/pydantic-shaped 422 errors (contract step 1).

Written by hand rather than as a pydantic model because it is on the hot path
(the rules are pydantic ``Field`` patterns and lengths checked on the *raw*
values, as the v5 model does: an ID with surrounding spaces is a 422). The
nonce is lower-cased after validation, as the v5 validator does. The error
entries copy pydantic v2's ``type``/``loc``/``msg``/``input``/``ctx`` shape so a
client that parses FastAPI errors parses these.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from harness.protocol.identity import (
    CHILD_ID_LEN,
    DEVICE_ID_LEN,
    FIRMWARE_VERSION_MAX,
    FIRMWARE_VERSION_PATTERN,
    FIRMWARE_VERSION_PATTERN_TEXT,
    ID_PATTERN_TEXT,
)
from harness.protocol.identity import ID_PATTERN as ID_RE

HEX_RE = re.compile(r"[0-9a-fA-F]+")
ID_PATTERN = ID_PATTERN_TEXT

ErrorList = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ClaimFields:
    """A valid claim body; IDs and HMAC exactly as received, the nonce lower-cased."""

    device_id: str
    child_id: str
    nonce: str
    hmac_hex: str
    firmware_version: str | None
    timestamp: int | None


def _err(kind: str, loc: list[Any], msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry


def is_json_content_type(value: str | None) -> bool:
    """FastAPI parses the body as JSON only without a Content-Type or with ``application/*json``."""
    if not value:
        return True
    mime = value.split(";", 1)[0].strip().lower()
    main, _, sub = mime.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def parse_json_object(
    raw: bytes, json_content: bool = True
) -> tuple[dict[str, Any] | None, ErrorList]:
    """The body as a JSON object, or FastAPI's error for an empty, non-JSON or non-object body.

    With a non-JSON Content-Type FastAPI validates the raw bytes against the
    model, which fails as "not a dictionary"; so does this.
    """
    if not raw.strip():
        return None, [_err("missing", ["body"], "Field required", None)]
    if not json_content:
        return None, [
            _err(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                raw.decode("utf-8", "replace"),
            )
        ]
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        return None, [_err("json_invalid", ["body", pos], "JSON decode error", {}, error=reason)]
    if not isinstance(data, dict):
        return None, [
            _err(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                data,
            )
        ]
    return data, []


def _check_str(data: dict[str, Any], name: str, errors: ErrorList) -> str | None:
    if name not in data:
        errors.append(_err("missing", ["body", name], "Field required", data))
        return None
    value = data[name]
    if not isinstance(value, str):
        errors.append(_err("string_type", ["body", name], "Input should be a valid string", value))
        return None
    return value


def _check_len(value: str, core: str, name: str, lo: int, hi: int, errors: ErrorList) -> bool:
    loc = ["body", name]
    if len(core) < lo:
        unit = "character" if lo == 1 else "characters"
        errors.append(
            _err(
                "string_too_short",
                loc,
                f"String should have at least {lo} {unit}",
                value,
                min_length=lo,
            )
        )
        return False
    if len(core) > hi:
        errors.append(
            _err(
                "string_too_long",
                loc,
                f"String should have at most {hi} characters",
                value,
                max_length=hi,
            )
        )
        return False
    return True


def _check_id(
    data: dict[str, Any], name: str, bounds: tuple[int, int], errors: ErrorList
) -> str | None:
    value = _check_str(data, name, errors)
    if value is None:
        return None
    if not _check_len(value, value, name, bounds[0], bounds[1], errors):
        return None
    if not ID_RE.fullmatch(value):
        errors.append(
            _err(
                "string_pattern_mismatch",
                ["body", name],
                f"String should match pattern '{ID_PATTERN}'",
                value,
                pattern=ID_PATTERN,
            )
        )
        return None
    return value


def _check_hex(data: dict[str, Any], name: str, lo: int, hi: int, errors: ErrorList) -> str | None:
    value = _check_str(data, name, errors)
    if value is None or not _check_len(value, value, name, lo, hi, errors):
        return None
    pattern = f"^[0-9a-fA-F]{{{lo},{hi}}}$" if lo != hi else f"^[0-9a-fA-F]{{{lo}}}$"
    if not HEX_RE.fullmatch(value):
        errors.append(
            _err(
                "string_pattern_mismatch",
                ["body", name],
                f"String should match pattern '{pattern}'",
                value,
                pattern=pattern,
            )
        )
        return None
    if len(value) % 2:
        errors.append(
            _err(
                "value_error",
                ["body", name],
                "Value error, must be an even number of hex characters (whole bytes)",
                value,
                error="odd length",
            )
        )
        return None
    return value


def _firmware_version(data: dict[str, Any], errors: ErrorList) -> str | None:
    value = _optional(data, "firmware_version", str, errors)
    if value is None:
        return None
    loc = ["body", "firmware_version"]
    if len(value) > FIRMWARE_VERSION_MAX:
        errors.append(
            _err(
                "string_too_long",
                loc,
                f"String should have at most {FIRMWARE_VERSION_MAX} characters",
                value,
                max_length=FIRMWARE_VERSION_MAX,
            )
        )
        return None
    if not FIRMWARE_VERSION_PATTERN.fullmatch(value):
        errors.append(
            _err(
                "string_pattern_mismatch",
                loc,
                f"String should match pattern '{FIRMWARE_VERSION_PATTERN_TEXT}'",
                value,
                pattern=FIRMWARE_VERSION_PATTERN_TEXT,
            )
        )
        return None
    return value


def _timestamp(data: dict[str, Any], errors: ErrorList) -> int | None:
    """pydantic's lax ``int``: ints, bools, integral floats and integer strings pass."""
    value = data.get("timestamp")
    loc = ["body", "timestamp"]
    if value is None or isinstance(value, int):  # bool is an int, as pydantic lax mode has it
        return None if value is None else int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        errors.append(_err("int_from_float", loc,
                           "Input should be a valid integer, got a number with a fractional part",
                           value))  # fmt: skip
        return None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            errors.append(_err("int_parsing", loc,
                               "Input should be a valid integer, unable to parse string as an "
                               "integer", value))  # fmt: skip
            return None
    errors.append(_err("int_type", loc, "Input should be a valid integer", value))
    return None


def _optional(data: dict[str, Any], name: str, kind: type, errors: ErrorList) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is int:
        errors.append(_err("int_type", ["body", name], "Input should be a valid integer", value))
    else:
        errors.append(_err("string_type", ["body", name], "Input should be a valid string", value))
    return None


def validate_claim(raw: bytes, json_content: bool = True) -> tuple[ClaimFields | None, ErrorList]:
    """Parse and validate a claim body; unknown extra fields are ignored, as pydantic does."""
    data, errors = parse_json_object(raw, json_content)
    if data is None:
        return None, errors
    device_id = _check_id(data, "device_id", DEVICE_ID_LEN, errors)
    child_id = _check_id(data, "child_id", CHILD_ID_LEN, errors)
    nonce = _check_hex(data, "nonce", 16, 64, errors)
    hmac_hex = _check_hex(data, "hmac_hex", 64, 64, errors)
    firmware_version = _firmware_version(data, errors)
    timestamp = _timestamp(data, errors)
    if errors:
        return None, errors
    assert device_id is not None and child_id is not None
    assert nonce is not None and hmac_hex is not None
    fields = ClaimFields(device_id, child_id, nonce.lower(), hmac_hex, firmware_version, timestamp)
    return fields, []


def validate_refresh(raw: bytes, json_content: bool = True) -> tuple[str | None, ErrorList]:
    """``{"refresh_token": str}``."""
    data, errors = parse_json_object(raw, json_content)
    if data is None:
        return None, errors
    token = _check_str(data, "refresh_token", errors)
    return token, errors


def json_body(content: Any) -> bytes:
    """Response bytes as Starlette's JSONResponse renders them (compact, UTF-8 kept)."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def error_body(errors: ErrorList) -> bytes:
    return json_body({"detail": errors})
