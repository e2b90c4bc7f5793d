"""A fleet's ``[session]`` tables: fleet-wide, ``[defaults.session]``, per cohort, and the
server's ``access_ttl``; errors name file:line and the table's key."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import HarnessInputError
from harness.fleet import load_fleet, parse_fleet
from harness.fleet.model import Fleet
from harness.mqtt.spec import SessionSpec
from tests.support import ROOT

HEAD = """\
[fleet]
name = "s"
seed = 3
"""
LAYERED = (
    HEAD
    + """
[session]
mqtt = true
time_scale = 0.5
kill_share = 0.1

[defaults.session]
kill_share = 0.2
bad_token_share = 0.05

[[cohorts]]
name = "plain"
count = 2

[[cohorts]]
name = "own"
count = 2

[cohorts.session]
bad_token_share = 0.5
refresh = false

[[cohorts]]
name = "inline"
count = 1
session = { mqtt = false, isolation_probe = false }
"""
)


def _load(tmp_path: Path, text: str, name: str = "fleet.toml") -> Fleet:
    path = tmp_path / name
    path.write_text(text)
    return load_fleet(path)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(HarnessInputError) as err:
        load_fleet(path)
    message = str(err.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}:")


def test_no_session_table_means_no_session() -> None:
    fleet = parse_fleet(HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n")
    assert fleet.cohorts[0].session == SessionSpec()
    assert fleet.cohorts[0].session.mqtt is False
    assert fleet.access_ttl_s is None


def test_fleet_defaults_and_cohort_tables_override_key_by_key() -> None:
    plain, own, inline = parse_fleet(LAYERED).cohorts
    # [session] under [defaults.session]: the defaults' kill_share wins, the rest stays.
    assert plain.session == SessionSpec(
        mqtt=True, time_scale=0.5, kill_share=0.2, bad_token_share=0.05
    )
    # [cohorts.session] after its [[cohorts]] header: only its own keys change.
    assert own.session == SessionSpec(
        mqtt=True, time_scale=0.5, kill_share=0.2, bad_token_share=0.5, refresh=False
    )
    # an inline table does the same
    assert inline.session == SessionSpec(
        mqtt=False, time_scale=0.5, kill_share=0.2, bad_token_share=0.05, isolation_probe=False
    )


def test_inline_defaults_session_and_int_shares() -> None:
    text = (
        HEAD
        + """
[defaults]
session = { mqtt = true, time_scale = 1, kill_share = 0 }

[[cohorts]]
name = "a"
count = 1
"""
    )
    session = parse_fleet(text).cohorts[0].session
    assert session == SessionSpec(mqtt=True)
    assert isinstance(session.time_scale, float) and isinstance(session.kill_share, float)


@pytest.mark.parametrize(
    ("text", "line", "name", "reason"),
    [
        (HEAD + "[session]\ncolour = 'red'\n[[cohorts]]\nname = 'a'\ncount = 1\n",
         5, "session.colour", "unknown key"),
        (HEAD + "[defaults.session]\nmqt = true\n[[cohorts]]\nname = 'a'\ncount = 1\n",
         5, "defaults.session.mqt", "unknown key"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n[[cohorts]]\nname = 'b'\ncount = 1\n"
         "[cohorts.session]\nmqtt = true\nrefreshh = true\n",
         12, "cohorts[1].session.refreshh", "unknown key"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\nsession = { speed = 2 }\n",
         7, "cohorts[0].session.speed", "unknown key"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\nsession = { kill_share = 1.5 }\n",
         7, "cohorts[0].session.kill_share", "share must be within 0..1"),
        (HEAD + "[session]\nbad_token_share = -0.1\n[[cohorts]]\nname = 'a'\ncount = 1\n",
         5, "session.bad_token_share", "share must be within 0..1"),
        (HEAD + "[defaults.session]\nkill_share = nan\n[[cohorts]]\nname = 'a'\ncount = 1\n",
         5, "defaults.session.kill_share", "share must be within 0..1"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n[cohorts.session]\ntime_scale = 0\n",
         8, "cohorts[0].session.time_scale", "must be within (0, 1000]"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n[cohorts.session]\nmqtt = 'yes'\n",
         8, "cohorts[0].session.mqtt", "must be a bool"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\nsession = true\n",
         7, "cohorts[0].session", "must be a table"),
        ("session = 3\n" + HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n",
         1, "session", "must be a table"),
        (HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n[cohorts.session]\naccess_ttl = 60\n",
         8, "cohorts[0].session.access_ttl", "fleet-wide"),
    ],
)  # fmt: skip
def test_session_errors_name_file_line_table_and_key(
    tmp_path: Path, text: str, line: int, name: str, reason: str
) -> None:
    message = _error(tmp_path, text)
    assert message.startswith(f"{line}: {name}: "), message
    assert reason in message


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, HEAD + "[session]\nmqtt_on = true\n[[cohorts]]\nname='a'\ncount=1\n")
    assert "session.mqtt_on: unknown key (known: bad_token_share, isolation_probe" in message


def test_a_defaulted_cohort_error_points_at_the_defaults(tmp_path: Path) -> None:
    text = HEAD + "[defaults]\nsession = { kill_share = 2 }\n[[cohorts]]\nname = 'a'\ncount = 1\n"
    assert _error(tmp_path, text).startswith("5: defaults.session.kill_share: share must")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90", 90), ("90.0", 90), ('"90s"', 90), ('"10s"', 10), ('"120000ms"', 120), ('" 45 "', 45)],
)
def test_access_ttl_is_a_duration_in_whole_seconds(value: str, seconds: int) -> None:
    text = HEAD + f"[session]\naccess_ttl = {value}\n[[cohorts]]\nname = 'a'\ncount = 1\n"
    fleet = parse_fleet(text)
    assert fleet.access_ttl_s == seconds
    assert type(fleet.access_ttl_s) is int
    assert fleet.cohorts[0].session == SessionSpec()  # access_ttl is the server's, not a habit


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9", "must be within 10..604800 s"),
        ('"9.5s"', "must be whole seconds"),
        ('"500ms"', "must be whole seconds"),
        ('"-30s"', "cannot be negative"),
        ('"soon"', "is not a duration"),
        ("true", "must be a duration"),
        ("[60]", "must be a duration"),
        ("604801", "must be within 10..604800 s"),
        ("inf", "is not a duration"),
    ],
)
def test_bad_access_ttl_names_its_line_and_key(tmp_path: Path, value: str, reason: str) -> None:
    text = HEAD + f"[session]\nmqtt = true\naccess_ttl = {value}\n[[cohorts]]\nname='a'\ncount=1\n"
    message = _error(tmp_path, text)
    assert message.startswith("6: session.access_ttl: "), message
    assert reason in message


def test_fleet_and_cohort_pickle_with_their_sessions(tmp_path: Path) -> None:
    """Workers get the fleet pickled; the session and access_ttl must survive it."""
    fleet = _load(tmp_path, LAYERED.replace("[session]\n", "[session]\naccess_ttl = '30s'\n"))
    again = pickle.loads(pickle.dumps(fleet))
    assert again == fleet
    assert again.access_ttl_s == 30
    assert [c.session for c in again.cohorts] == [c.session for c in fleet.cohorts]
    assert pickle.loads(pickle.dumps(fleet.cohorts[1])) == fleet.cohorts[1]
    # derived fleets keep them too
    assert fleet.with_seed(9).access_ttl_s == 30
    assert fleet.scaled(3).cohorts[1].session == fleet.cohorts[1].session


def test_positional_fleet_still_builds() -> None:
    fleet = load_fleet(ROOT / "fleets" / "soak.toml")
    rebuilt = Fleet(fleet.name, fleet.seed, fleet.cohorts, fleet.children)
    assert rebuilt.access_ttl_s is None and rebuilt.faults == ()
    assert replace(fleet, access_ttl_s=60).access_ttl_s == 60


def test_cohort_keys_include_session_for_cohorts_and_defaults() -> None:
    from harness.fleet.loader import COHORT_KEYS, DEFAULT_KEYS, TOP_KEYS

    assert "session" in COHORT_KEYS and "session" in DEFAULT_KEYS and "session" in TOP_KEYS


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ("session = { kill_share = " + "9" * 400 + " }", "cohorts[0].session.kill_share"),
        ("loss = " + "9" * 400, "cohorts[0].loss"),
    ],
)
def test_an_integer_too_big_for_a_float_is_one_error(tmp_path: Path, extra: str, name: str) -> None:
    """tomllib reads integers of any size; float() of one overflows."""
    text = HEAD + "[[cohorts]]\nname = 'a'\ncount = 1\n" + extra + "\n"
    assert _error(tmp_path, text) == f"7: {name}: must be a finite number"


def test_a_huge_access_ttl_is_one_error(tmp_path: Path) -> None:
    text = HEAD + "[session]\naccess_ttl = " + "9" * 400 + "\n[[cohorts]]\nname='a'\ncount=1\n"
    assert _error(tmp_path, text).startswith("5: session.access_ttl: ")
