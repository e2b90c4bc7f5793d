"""Pure pieces: the flag model, the seed format, the 422 validation rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import HarnessInputError
from harness.flags import Flags, parse_flag_value
from harness.server.config import ServerConfig, parse_auto_register_secret
from harness.server.seed import Seed, SeedChild, SeedDevice, load_seed
from harness.server.validation import validate_claim

# -- flags -------------------------------------------------------------------


def test_production_defaults_match_the_checklist() -> None:
    assert Flags.from_env({}) == Flags()
    assert Flags().to_env() == {
        "ENABLE_IDEMPOTENCY": "false",
        "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE": "true",
        "ENABLE_AUTO_REGISTER": "false",
        "FAIL_OPEN_ON_REDIS_ERROR": "false",
        "NORMALIZE_IDS_IN_HMAC": "false",
    }
    assert Flags().describe() == "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE"


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "On", " on "])
def test_true_spellings(word: str) -> None:
    assert parse_flag_value("X", word) is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "OFF"])
def test_false_spellings(word: str) -> None:
    assert parse_flag_value("X", word) is False


@pytest.mark.parametrize("word", ["", "2", "tru", "enabled", "none"])
def test_anything_else_names_the_flag(word: str) -> None:
    with pytest.raises(HarnessInputError) as err:
        parse_flag_value("ENABLE_AUTO_REGISTER", word)
    assert err.value.field == "ENABLE_AUTO_REGISTER"


def test_env_then_overrides() -> None:
    env = {"ENABLE_IDEMPOTENCY": "yes", "NORMALIZE_IDS_IN_HMAC": "1", "UNRELATED": "x"}
    flags = Flags.from_env(env)
    assert flags.enable_idempotency and flags.normalize_ids_in_hmac
    flags = flags.with_overrides(["enable_idempotency=off", "FAIL_OPEN_ON_REDIS_ERROR=true"])
    assert not flags.enable_idempotency and flags.fail_open_on_redis_error
    assert Flags.from_env(flags.to_env()) == flags
    with pytest.raises(HarnessInputError, match="ENABLE_MAGIC"):
        flags.with_overrides(["ENABLE_MAGIC=true"])
    with pytest.raises(HarnessInputError, match="NAME=VALUE"):
        flags.with_overrides(["ENABLE_IDEMPOTENCY"])
    with pytest.raises(HarnessInputError, match="FAIL_OPEN_ON_REDIS_ERROR"):
        Flags.from_env({"FAIL_OPEN_ON_REDIS_ERROR": "perhaps"})
    with pytest.raises(HarnessInputError, match="ENABLE_IDEMPOTENCY"):
        Flags.from_env({"ENABLE_IDEMPOTENCY": ""})  # set but empty is not "false"


def test_all_32_combinations_are_distinct_with_distinct_keys() -> None:
    combos = Flags.all_combinations()
    assert len(combos) == 32 == len(set(combos)) == len({f.key() for f in combos})
    assert combos[0].key() == "I0D0A0F0N0"


# -- seed --------------------------------------------------------------------


def test_seed_round_trip(tmp_path: Path) -> None:
    seed = Seed(
        (SeedDevice("CCDBA795BAA4", "ab" * 32), SeedDevice("esp32-a1b2c3", "CD" * 32, False)),
        (SeedChild("child-1"), SeedChild("Child-2", is_active=False)),
    )
    path = tmp_path / "seed.json"
    seed.dump(path)
    loaded = load_seed(path)
    assert loaded.devices[0].oob_secret == bytes.fromhex("ab" * 32)
    assert loaded.devices[1].is_active is False and loaded.children[1].is_active is False
    assert loaded.devices[0].device_id == "CCDBA795BAA4"


def test_children_default_active(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"children": [{"child_id": "c1"}]}))
    assert load_seed(path).children == (SeedChild("c1", True),)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"devices": [{"device_id": "s", "oob_secret_hex": "00" * 32}]}, "devices[0].device_id"),
        ({"devices": [{"device_id": "teddy-esp32-1"}]}, "devices[0].oob_secret_hex"),
        (
            {"devices": [{"device_id": "teddy-esp32-1", "oob_secret_hex": "00" * 32,
                          "is_active": "yes"}]},
            "devices[0].is_active",
        ),
        (
            {"devices": [{"device_id": "teddy-esp32-1", "oob_secret_hex": "00" * 32},
                         {"device_id": "TEDDY-ESP32-1", "oob_secret_hex": "11" * 32}]},
            "devices[1]",
        ),
        ({"children": [{"child_id": "bad child"}]}, "children[0].child_id"),
        ({"children": "c1"}, "children"),
        ({"kids": []}, "unknown keys"),
        ([], "top level"),
    ],
)  # fmt: skip
def test_bad_seed_entries_are_named(tmp_path: Path, doc: object, where: str) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(HarnessInputError) as err:
        load_seed(path)
    assert where in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_or_non_json_seed(tmp_path: Path) -> None:
    with pytest.raises(HarnessInputError, match="cannot read"):
        load_seed(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(HarnessInputError, match="not JSON"):
        load_seed(bad)


def test_config_options() -> None:
    assert parse_auto_register_secret(None) is None
    assert parse_auto_register_secret("v5") is None
    assert parse_auto_register_secret("static:" + "Ab" * 32) == bytes.fromhex("ab" * 32)
    with pytest.raises(HarnessInputError):
        parse_auto_register_secret("random")
    cfg = ServerConfig(database_url="postgresql+asyncpg://u:p@h:5432/db")
    assert cfg.database_url == "postgresql://u:p@h:5432/db"
    assert ServerConfig().jwt_secret != ServerConfig().jwt_secret
    with pytest.raises(HarnessInputError):
        ServerConfig(database_url="mysql://x")


# -- validation (step 1) -------------------------------------------------------

GOOD = {"device_id": "teddy-esp32-0001", "child_id": "c", "nonce": "00" * 8, "hmac_hex": "a" * 64}


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "a" * 64},
        {"device_id": "a" * 8},
        {"child_id": "C" * 64},
        {"nonce": "AB" * 32},
        {"hmac_hex": "F" * 64},
        {"firmware_version": None, "timestamp": None},
        {"firmware_version": "5.0.1", "timestamp": 1700000000, "extra": [1]},
        {"firmware_version": "a" * 32},
        {"firmware_version": "v5.1.0-rc_2"},
        {"timestamp": "12"},  # pydantic's lax int, as the v5 model has it
        {"timestamp": True},
        {"timestamp": 3.0},
    ],
)
def test_valid_bodies(change: dict[str, object]) -> None:
    fields, errors = validate_claim(json.dumps({**GOOD, **change}).encode())
    assert errors == [] and fields is not None
    if "device_id" in change:
        assert fields.device_id == change["device_id"]
    assert fields.nonce == str(change.get("nonce", GOOD["nonce"])).lower()  # lower-cased


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"device_id": "a" * 7}, "string_too_short"),
        ({"device_id": "a" * 65}, "string_too_long"),
        ({"device_id": "   abc   "}, "string_pattern_mismatch"),  # raw: 9 chars, spaces
        ({"device_id": "  teddy-esp32-0001  "}, "string_pattern_mismatch"),
        ({"child_id": " c "}, "string_pattern_mismatch"),
        ({"firmware_version": "5" * 33}, "string_too_long"),
        ({"firmware_version": "5.0 beta"}, "string_pattern_mismatch"),
        ({"firmware_version": ""}, "string_pattern_mismatch"),
        ({"device_id": "teddy esp32"}, "string_pattern_mismatch"),
        ({"device_id": "téddy-esp32"}, "string_pattern_mismatch"),
        ({"child_id": ""}, "string_too_short"),
        ({"nonce": "0" * 17}, "value_error"),
        ({"nonce": "0" * 66}, "string_too_long"),
        ({"hmac_hex": "a" * 65}, "string_too_long"),
        ({"hmac_hex": None}, "string_type"),
        ({"timestamp": 1.5}, "int_from_float"),
        ({"timestamp": "now"}, "int_parsing"),
        ({"timestamp": [1]}, "int_type"),
    ],
)
def test_invalid_fields_fastapi_shape(change: dict[str, object], kind: str) -> None:
    body = {**GOOD, **change}
    fields, errors = validate_claim(json.dumps(body).encode())
    assert fields is None and len(errors) == 1
    (err,) = errors
    assert err["type"] == kind and err["loc"] == ["body", next(iter(change))]
    assert set(err) >= {"type", "loc", "msg", "input"}


def test_missing_and_non_json() -> None:
    _, errors = validate_claim(b'{"device_id": "teddy-esp32-0001"}')
    assert [e["loc"] for e in errors] == [
        ["body", "child_id"],
        ["body", "nonce"],
        ["body", "hmac_hex"],
    ]
    assert all(e["type"] == "missing" and e["msg"] == "Field required" for e in errors)
    _, errors = validate_claim(b"{nope")
    assert errors[0]["type"] == "json_invalid" and errors[0]["loc"][0] == "body"
    _, errors = validate_claim(b"\xff\xfe")
    assert errors[0]["type"] == "json_invalid"
