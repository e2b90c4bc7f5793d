"""The pytest plugin: bench tests in pytest against virtual boards, JUnit from pytest itself."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import write_bench

pytest_plugins = ("pytester",)

BENCH_TESTS = """
import pytest
from harness.protocol import derive_oob_v5, sign_claim

NONCE = "00112233445566778899aabbccddeeff"


def test_first_board_runs_its_image(board):
    assert board.name == "v0"
    assert board.identity.fw == "5.1.0" and board.identity.hmac_mode == "normalized"


@pytest.mark.parametrize("board", ["v1"], indirect=True)
def test_board_by_name(board):
    assert board.identity.hmac_mode == "legacy"


def test_every_board_signs_like_the_python_core(boards):
    assert [b.name for b in boards] == ["v0", "v1"]
    for b in boards:
        ident = b.identity
        oob = bytes.fromhex(derive_oob_v5(ident.device_id))
        want = sign_claim(ident.device_id, "Child-Two", NONCE, oob, ident.hmac_mode)
        assert b.signer.sign_claim("Child-Two", NONCE).hmac_hex == want


def test_console_expect(board):
    board.board.request("sign", child_id="child-1", nonce=NONCE)
    board.board.expect(r"claim_probe: signed claim", timeout=5)


def test_fails_on_purpose(board):
    board.board.expect("a line the firmware never prints", timeout=0.3)
"""


def test_bench_tests_run_with_board_fixtures_and_junit(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0", "5.0.3"])
    logs = tmp_path / "logs"
    pytester.makepyfile(test_bench=BENCH_TESTS)
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest(
        f"--bench={bench}",
        "--board-reset=function",
        f"--board-log-dir={logs}",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    )
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*board v0 log (state=running*", "*claim probe up*"])
    cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {
        "test_first_board_runs_its_image",
        "test_board_by_name[v1]",
        "test_every_board_signs_like_the_python_core",
        "test_console_expect",
        "test_fails_on_purpose",
    }
    failure = cases["test_fails_on_purpose"].find("failure")
    assert failure is not None
    assert "no log line matching 'a line the firmware never prints'" in (
        failure.get("message") or ""
    )
    assert "board v0 log" in (failure.text or "") and "claim probe up" in (failure.text or "")
    props = {p.get("name"): p.get("value") for p in cases["test_fails_on_purpose"].iter("property")}
    assert props["board_log:v0"] == str(logs / "v0.log")
    assert cases["test_console_expect"].find("failure") is None
    # --board-reset=function: bring-up, then a reboot for each of the four tests using v0.
    assert (logs / "v0.log").read_text().count('"event":"boot"') == 5


def test_plugin_starts_nothing_unless_a_board_fixture_is_used(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0"])
    logs = tmp_path / "logs"
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest(f"--bench={bench}", f"--board-log-dir={logs}")
    result.assert_outcomes(passed=1)
    assert not logs.exists()


def test_board_fixture_without_bench_fails_with_one_clear_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_needs="def test_needs(board):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*this test needs a bench: run pytest with --bench FILE*"])


def test_a_board_that_did_not_come_up_fails_only_its_tests(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    bench = write_bench(tmp_path / "bench.toml", [None, "5.0.3"])  # v0: blank flash
    pytester.makepyfile(
        test_two="""
import pytest

def test_blank(board):
    pass

@pytest.mark.parametrize("board", ["v1"], indirect=True)
def test_good(board):
    assert board.identity.fw == "5.0.3"

@pytest.mark.parametrize("board", ["v9"], indirect=True)
def test_unknown(board):
    pass
"""
    )
    result = pytester.runpytest(
        f"--bench={bench}", f"--board-log-dir={tmp_path / 'logs'}", "-W", "ignore::Warning"
    )
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*bench board did not come up: v0: *image error: invalid magic byte*",
            "*no board named 'v9'*",
        ]
    )
