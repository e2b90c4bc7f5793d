"""The host CLI: commands agree with the Python core, and bad input is one line and exit 2."""

from __future__ import annotations

import subprocess

import pytest

from harness.protocol import SigningMode, derive_oob_v5, sign_claim
from harness.signer import CSignerBuild

OOB_HEX = "1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090"
NONCE = "00112233445566778899aabbccddeeff"


def run(build: CSignerBuild, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.cli), *args], input=stdin, capture_output=True, text=True, timeout=30
    )


def test_derive_prints_the_contract_secret(c_build: CSignerBuild) -> None:
    proc = run(c_build, "derive", "CCDBA795BAA4")
    assert proc.returncode == 0 and proc.stdout == OOB_HEX + "\n"


@pytest.mark.parametrize("mode", ["legacy", "normalized"])
def test_sign_prints_the_python_hmac(c_build: CSignerBuild, mode: SigningMode) -> None:
    proc = run(c_build, "sign", " CCDBA795BAA4", "Child-1 ", NONCE, OOB_HEX.lower(), mode)
    expected = sign_claim(" CCDBA795BAA4", "Child-1 ", NONCE, bytes.fromhex(OOB_HEX), mode)
    assert proc.returncode == 0 and proc.stdout == expected + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sign", "CCDBA795BAA4", "c", "zz" * 16, OOB_HEX, "legacy"], "nonce is not hexadecimal"),
        (["sign", "CCDBA795BAA4", "c", "abc", OOB_HEX, "legacy"], "odd number of hex"),
        (["sign", "CCDBA795BAA4", "c", "ab" * 33, OOB_HEX, "legacy"], "longer than 64 hex"),
        (["sign", "C" * 129, "c", NONCE, OOB_HEX, "legacy"], "longer than 128 bytes"),
        (["sign", "CCDBA795BAA4", "c", NONCE, OOB_HEX[:-2], "legacy"], "oob_secret"),
        (["sign", "CCDBA795BAA4", "c", NONCE, "g" * 64, "legacy"], "oob_secret"),
        (["sign", "CCDBA795BAA4", "c", NONCE, OOB_HEX, "lower"], "legacy or normalized"),
        (["derive", "D" * 129], "longer than 128 bytes"),
        (["sign", "CCDBA795BAA4"], "usage:"),
        (["frobnicate"], "usage:"),
        ([], "usage:"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    c_build: CSignerBuild, args: list[str], message: str
) -> None:
    proc = run(c_build, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(("claim_signer: ", "usage: claim_signer"))


def test_batch_answers_each_line_in_order(c_build: CSignerBuild) -> None:
    rows = [("CCDBA795BAA4", "child-1", NONCE), (" esp32-a1b2c3 ", "Kid", "abcdef0123456789")]
    stdin = "".join(f"{d}\t{c}\t{n}\t{OOB_HEX}\n" for d, c, n in rows)
    proc = run(c_build, "batch", stdin=stdin.rstrip("\n"))  # last line without newline
    assert proc.returncode == 0, proc.stderr
    oob = bytes.fromhex(OOB_HEX)
    expected = "".join(
        "\t".join(
            [derive_oob_v5(d), sign_claim(d, c, n, oob), sign_claim(d, c, n, oob, "normalized")]
        )
        + "\n"
        for d, c, n in rows
    )
    assert proc.stdout == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"CCDBA795BAA4\tchild-1\t{NONCE}", "line 2: expected 4 tab-separated fields"),
        (f"CCDBA795BAA4\tchild-1\t{NONCE}\t{OOB_HEX}\textra", "line 2: expected 4"),
        (f"CCDBA795BAA4\tchild-1\tnothex!!\t{OOB_HEX}", "line 2: nonce is not hexadecimal"),
        (f"CCDBA795BAA4\tchild-1\t{NONCE}\tabcd", "line 2: oob_secret"),
        ("x" * 2000, "line 2: longer than"),
    ],
)
def test_batch_stops_at_the_first_bad_line(c_build: CSignerBuild, line: str, message: str) -> None:
    good = f"CCDBA795BAA4\tchild-1\t{NONCE}\t{OOB_HEX}\n"
    proc = run(c_build, "batch", stdin=good + line + "\n" + good)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout.count("\n") == 1  # the good line before it was answered
