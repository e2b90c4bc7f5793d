"""The C signer (ctypes and CLI batch) against the Python core, byte for byte, in bulk."""

from __future__ import annotations

import string
import subprocess
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import ProtocolError
from harness.protocol import derive_oob_v5, sign_claim
from harness.signer import CSigner, CSignerBuild, PythonSigner, Signer

GENERATED_CASES = 10_000
CASES_PER_EXAMPLE = 20  # amortises hypothesis's per-example cost; see the test's docstring
# 64 symbols, so ``byte % 64`` maps random bytes onto the ID pattern uniformly.
ID_ALPHABET = string.ascii_letters + string.digits + "_-"
assert len(ID_ALPHABET) == 64
# Tab and newline separate the batch format's fields; they are covered below through ctypes.
PADS = ("", "", " ", "  ", "\r", "\v", "\f", " \f\v\r ")
PAD_PAIRS = tuple((left, right) for left in PADS for right in PADS)
OOB = bytes.fromhex("1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090")


class Case(NamedTuple):
    device_id: str
    child_id: str
    nonce: str
    oob: bytes


def _padded_id(min_size: int) -> st.SearchStrategy[str]:
    """An ID of ``[A-Za-z0-9_-]`` (min_size..64) with optional ASCII whitespace around it."""

    def build(pads: tuple[str, str], raw: bytes) -> str:
        return pads[0] + "".join(ID_ALPHABET[b % 64] for b in raw) + pads[1]

    core = st.binary(min_size=min_size, max_size=64)
    return st.builds(build, st.sampled_from(PAD_PAIRS), core)


def _nonce() -> st.SearchStrategy[str]:
    """16..64 hex characters, even length, in either case."""
    raw = st.binary(min_size=8, max_size=32)
    return st.builds(lambda b, upper: b.hex().upper() if upper else b.hex(), raw, st.booleans())


CASE = st.builds(Case, _padded_id(8), _padded_id(1), _nonce(), st.binary(min_size=32, max_size=32))


def _python(case: Case) -> tuple[str, str, str]:
    args = (case.device_id, case.child_id, case.nonce, case.oob)
    return (
        derive_oob_v5(case.device_id),
        sign_claim(*args, "legacy"),
        sign_claim(*args, "normalized"),
    )


def test_generated_cases_agree_via_ctypes_and_one_batch_call(
    c_signer: CSigner, c_build: CSignerBuild
) -> None:
    """≥10,000 hypothesis cases through ctypes, then all of them again through one CLI process.

    Each example draws a fixed-size list of cases: hypothesis has a fixed cost
    per example on top of its cost per draw, so twenty cases an example take
    about two thirds of the time of 10,000 single-case examples, while every
    case is still drawn (and on failure shrunk) by hypothesis. The cases are
    collected and replayed through ``batch`` in a single process once the
    property has passed.
    """
    seen: list[Case] = []

    @settings(
        max_examples=GENERATED_CASES // CASES_PER_EXAMPLE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(CASE, min_size=CASES_PER_EXAMPLE, max_size=CASES_PER_EXAMPLE))
    def check(cases: list[Case]) -> None:
        seen.extend(cases)
        for case in cases:
            args = (case.device_id, case.child_id, case.nonce, case.oob)
            got = (
                c_signer.derive(case.device_id),
                c_signer.sign(*args, "legacy"),
                c_signer.sign(*args, "normalized"),
            )
            assert got == _python(case)

    check()
    assert len(seen) >= GENERATED_CASES

    stdin = "".join(f"{c.device_id}\t{c.child_id}\t{c.nonce}\t{c.oob.hex()}\n" for c in seen)
    proc = subprocess.run(
        [str(c_build.cli), "batch"],
        input=stdin.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(seen)
    for case, line in zip(seen, lines, strict=True):
        assert tuple(line.split("\t")) == _python(case), case


@pytest.mark.parametrize("ws", [" ", "\t", "\n", "\r", "\v", "\f"])
def test_every_ascii_whitespace_is_stripped_when_normalised(c_signer: CSigner, ws: str) -> None:
    device, child = f"{ws}CCDBA795BAA4{ws * 2}", f"{ws * 2}Child-1{ws}"
    nonce = "00112233445566778899aabbccddeeff"
    c = c_signer.sign(device, child, nonce, OOB, "normalized")
    assert c == sign_claim(device, child, nonce, OOB, "normalized")
    assert c == sign_claim("ccdba795baa4", "child-1", nonce, OOB, "legacy")
    assert c_signer.sign(device, child, nonce, OOB, "legacy") == sign_claim(
        device, child, nonce, OOB, "legacy"
    )
    assert c_signer.derive(device) == derive_oob_v5(device)


@pytest.mark.parametrize(
    ("device_id", "child_id", "nonce"),
    [
        ("A" * 128, "c" * 128, "ab" * 32),  # the largest inputs the C buffers take
        ("   ", "", ""),  # all padding, empty child, empty nonce: still well defined
        ("esp32-a1b2c3", "k", "0123456789abcdef"),
        ("Teddy-ESP32-0001", "Child_ID-9", "ABCDEF0123456789"),
    ],
)
def test_boundary_inputs_agree(
    c_signer: CSigner, device_id: str, child_id: str, nonce: str
) -> None:
    for mode in ("legacy", "normalized"):
        assert c_signer.sign(device_id, child_id, nonce, OOB, mode) == sign_claim(
            device_id, child_id, nonce, OOB, mode
        )
    assert c_signer.derive(device_id) == derive_oob_v5(device_id)


def test_nonce_hex_case_does_not_change_the_hmac(c_signer: CSigner) -> None:
    lower = c_signer.sign("CCDBA795BAA4", "child-1", "deadbeefcafef00d", OOB, "legacy")
    assert c_signer.sign("CCDBA795BAA4", "child-1", "DEADBEEFCAFEF00D", OOB, "legacy") == lower


SIGNERS = ["python", "c"]


@pytest.fixture(params=SIGNERS)
def signer(request: pytest.FixtureRequest) -> Signer:
    if request.param == "python":
        return PythonSigner()
    return request.getfixturevalue("c_signer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nonce_hex": "zz" * 8}, "nonce: is not hexadecimal"),
        ({"nonce_hex": "aa bb cc dd "}, "nonce: is not hexadecimal"),
        ({"nonce_hex": "00\x0011"}, "nonce: is not hexadecimal"),
        ({"nonce_hex": "é" * 32}, "nonce: is not hexadecimal"),
        ({"nonce_hex": "abc"}, "nonce: odd length; must be whole bytes"),
        ({"nonce_hex": "ab" * 33}, "nonce: longer than 64 hex characters"),
        ({"device_id": "D" * 129}, "device_id: longer than 128 bytes"),
        ({"child_id": "c" * 129}, "child_id: longer than 128 bytes"),
        ({"device_id": "CCDB\x00A795"}, "device_id: contains a NUL character"),
        ({"oob": b"\x01" * 31}, "oob_secret: must be 32 bytes, got 31"),
        ({"mode": "lower"}, "mode: must be legacy or normalized"),
    ],
)
def test_every_signer_refuses_the_same_inputs_alike(
    signer: Signer, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "device_id": "CCDBA795BAA4",
        "child_id": "child-1",
        "nonce_hex": "00112233445566778899aabbccddeeff",
        "oob": OOB,
        "mode": "legacy",
    } | kwargs
    with pytest.raises(ProtocolError) as exc:
        signer.sign(**args)  # type: ignore[arg-type]
    assert str(exc.value) == message


def test_derive_refuses_an_overlong_id(signer: Signer) -> None:
    with pytest.raises(ProtocolError, match=r"^device_id: longer than 128 bytes$"):
        signer.derive("x" * 129)
    assert signer.derive("x" * 128) == derive_oob_v5("x" * 128)
