"""Property-based fuzzing of everything a user hands the harness: fleet, bench and seed files,
and command-line values. Whatever they hold, the outcome is a loaded file or a success, or one
``HarnessInputError`` / exit 2 with one line: never a traceback, never another exception.

Files are valid examples mutated (wrong types, TOML ``nan``/``inf``, negative and huge
numbers, unknown keys, deep nesting, random bytes, truncated UTF-8, empty). Command lines
run in-process through the real entry point ``harness.cli.main`` (what turns a
``HarnessInputError`` into exit 2), with a last option that is always refused after every
other value was checked (an unwritable ``--report``, a missing seed), so no run starts;
``sign`` and ``provision export`` run for real on the values that are valid.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import HarnessInputError
from harness.fleet import Fleet
from harness.fleet.loader import COHORT_KEYS, load_fleet
from harness.hil.bench import load_bench
from harness.server.seed import load_seed
from tests.support import ROOT

# HARNESS_FUZZ_SCALE=20 fuzzes twenty times as long (a nightly job, a bug hunt).
SCALE = max(1, int(os.environ.get("HARNESS_FUZZ_SCALE", "1")))
FILES = settings(
    max_examples=500 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CLI = settings(
    max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
IMAGE = ROOT / "firmware_fixtures" / "images" / "claim_probe-5.1.0.bin"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the whole module (hypothesis reruns a test many times)."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "a_file").write_text("not a directory\n")
    return base


# --- values as TOML and JSON literals --------------------------------------------------


class Raw(str):
    """A TOML literal written as is (``nan``, ``[[[]]]``, ``{ a = 1 }``)."""


def _toml(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string


def render_toml(doc: dict[str, Any]) -> str:
    """A document of tables and arrays of tables as TOML text."""
    out: list[str] = []
    for name, table in doc.items():
        if isinstance(table, list) and all(isinstance(t, dict) for t in table):
            for item in table:
                out.append(f"[[{name}]]")
                out += [f"{k} = {_toml(v)}" for k, v in item.items()]
        elif isinstance(table, dict):
            out.append(f"[{name}]")
            out += [f"{k} = {_toml(v)}" for k, v in table.items()]
        else:
            out.insert(0, f"{name} = {_toml(table)}")
    return "\n".join(out) + "\n"


DEEP = st.integers(2, 400).map(lambda n: Raw("[" * n + "]" * n))
TOML_LITERALS = st.one_of(
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "+nan",
            "-0.0",
            "1e308",
            "-1e308",
            "5e-324",
            "0",
            "-1",
            "1",
            "9223372036854775807",
            "-9223372036854775808",
            "0x7fffffffffffffff",
            "true",
            "false",
            "100000000",
            "4294967296",
            "4611686018427387904",
            '""',
            '" "',
            '"\\u0000"',
            "[]",
            '[1, "a"]',
            "{ a = 1 }",
            "{}",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            '"x\\ny"',
            "'''multi\nline'''",
        ]
    ).map(Raw),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: Raw(str(i))),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Raw(repr(f))),
    st.text(max_size=80).map(lambda s: Raw(json.dumps(s))),
    DEEP,
)

FLEET: dict[str, Any] = {
    "fleet": {"name": "fuzz", "seed": 7, "profile": "v5.0", "environment": "production"},
    "children": {"count": 3, "prefix": "child-", "inactive": 1},
    "defaults": {"firmware_version": "5.0.3", "signing": "legacy", "loss": 0.1,
                 "retry_delay": 0.02},
    "cohorts": [
        {"name": "upper", "count": 4, "id_style": "mac-upper"},
        {"name": "numbered", "count": 3, "id_style": "prefixed", "prefix": "Teddy-ESP32-",
         "suffix": "number", "oob": "provisioned"},
        {"name": "live", "count": 2, "firmware": "live", "time_scale": 0.01},
        {"name": "static", "count": 1, "id_style": "prefixed", "prefix": "teddy-esp32-s",
         "oob": "static", "static_secret": "AB" * 32, "child": "inactive"},
    ],
}  # fmt: skip
FLEET_KEYS: dict[str, tuple[str, ...]] = {
    "fleet": ("name", "seed", "profile", "environment"),
    "children": ("count", "prefix", "inactive"),
    "defaults": tuple(k for k in COHORT_KEYS if k not in ("name", "count")),
    "cohorts": COHORT_KEYS,
}

BENCH: dict[str, Any] = {
    "bench": {"name": "fuzz", "children": ["child-1", "Child-Two"], "claims_per_board": 2,
              "board_claims": False, "image": str(IMAGE), "offset": 0x10000, "timeout_s": 5,
              "profile": "v5.0", "environment": "production"},
    "flags": {"NORMALIZE_IDS_IN_HMAC": False, "ENABLE_IDEMPOTENCY": True},
    "board": [
        {"name": "virt-a", "virtual": True, "mac": "CC:DB:A7:95:BA:A4"},
        {"name": "real", "port": "/dev/ttyUSB9", "firmware": "5.0.3", "offset": 0x20000},
    ],
}  # fmt: skip
BENCH_KEYS: dict[str, tuple[str, ...]] = {
    "bench": ("name", "target", "children", "claims_per_board", "board_claims", "image",
              "offset", "timeout_s", "log_dir", "profile", "environment"),
    "flags": ("NORMALIZE_IDS_IN_HMAC", "ENABLE_IDEMPOTENCY", "ENABLE_AUTO_REGISTER",
              "FAIL_OPEN_ON_REDIS_ERROR", "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE"),
    "board": ("name", "virtual", "mac", "port", "serial_number", "usb_location", "image",
              "offset", "firmware"),
}  # fmt: skip


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: [dict(t) for t in v] if isinstance(v, list) else dict(v) for k, v in doc.items()}


@st.composite
def mutated_toml(draw: st.DrawFn, base: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> bytes:
    """A valid document with one to four mutations, as bytes (sometimes broken ones)."""
    doc = _copy(base)
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2, 2, 3, 4]))):  # one bug at a time
        name = draw(st.sampled_from(list(keys)))
        section = doc.get(name)
        if isinstance(section, list):
            table = section[draw(st.integers(0, len(section) - 1))] if section else {}
        else:
            table = section if isinstance(section, dict) else {}
        op = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "drop", "retype"]))
        if op == "set":
            table[draw(st.sampled_from(keys[name]))] = draw(TOML_LITERALS)
        elif op == "delete" and table:
            table.pop(draw(st.sampled_from(sorted(table))))
        elif op == "unknown":
            table[draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))] = draw(TOML_LITERALS)
        elif op == "drop":
            doc.pop(name, None)
        elif op == "retype":  # a table where a value belongs, or the other way round
            doc[name] = draw(TOML_LITERALS)
        if isinstance(section, list) and draw(st.booleans()):
            section.extend(dict(t) for t in section[: draw(st.integers(0, 2))])  # duplicates
    data = render_toml(doc).encode()
    return draw(_broken(data))


@st.composite
def _broken(draw: st.DrawFn, data: bytes) -> bytes:
    """Mostly the text as it is; sometimes cut (inside a UTF-8 sequence, too), with bytes
    thrown in, replaced by random bytes, or empty."""
    how = draw(st.sampled_from(["as is"] * 12 + ["cut", "bytes", "random", "empty", "utf8"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if how == "bytes":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "random":
        return draw(st.binary(max_size=200))
    if how == "empty":
        return b""
    if how == "utf8":  # a multi-byte character cut in half
        return data + "é".encode()[:1] + b"\n"
    return data


def _outcome(load: Any, path: Path) -> object:
    """What loading gives: the loaded value or the one-line input error, nothing else."""
    try:
        return load(path)
    except HarnessInputError as exc:
        assert "\n" not in str(exc), str(exc)
        return exc


@pytest.mark.parametrize("key", ["count", "inactive"])
def test_children_counts_are_bounded(work: Path, key: str) -> None:
    """Every child is made at load: a count of 10**8 used to hang the loader (found by the
    fuzz); the bound is one line naming the key."""
    from harness.fleet.loader import MAX_CHILDREN

    (work / "kids.toml").write_text(render_toml({**FLEET, "children": {key: MAX_CHILDREN + 1}}))
    with pytest.raises(HarnessInputError, match=f"children.{key}: must be within"):
        load_fleet(work / "kids.toml")
    (work / "kids.toml").write_text(render_toml({**FLEET, "children": {key: MAX_CHILDREN}}))
    assert len(load_fleet(work / "kids.toml").children) > MAX_CHILDREN - 1


@FILES
@given(data=mutated_toml(FLEET, FLEET_KEYS))
def test_fleet_files_load_or_are_one_input_error(work: Path, data: bytes) -> None:
    """What every fleet command reads: a fleet whose rows can be made, or one line."""
    path = work / "fleet.toml"
    path.write_bytes(data)
    fleet = _outcome(load_fleet, path)
    if isinstance(fleet, Fleet) and len(fleet) <= 5000:  # one that loads makes its rows too
        _outcome(lambda _: fleet.seed_export(), path)


def test_the_unmutated_fleet_and_bench_load(work: Path) -> None:
    """The fuzz starts from files that are valid: its errors come from the mutations."""
    (work / "valid.toml").write_text(render_toml(FLEET))
    assert len(load_fleet(work / "valid.toml")) == 10
    (work / "valid-bench.toml").write_text(render_toml(BENCH))
    assert [b.name for b in load_bench(work / "valid-bench.toml").boards] == ["virt-a", "real"]


@FILES
@given(data=mutated_toml(BENCH, BENCH_KEYS))
def test_bench_files_load_or_are_one_input_error(work: Path, data: bytes) -> None:
    """What `harness hil run --bench` reads: a bench (with a usable timeout) or one line."""
    path = work / "bench.toml"
    path.write_bytes(data)
    bench = _outcome(load_bench, path)
    if not isinstance(bench, HarnessInputError):
        assert 0 < bench.timeout_s < math.inf  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_a_bench_timeout_that_no_board_can_meet_is_refused(work: Path, value: str) -> None:
    """TOML has nan and inf: a bench used to take them as its per-request timeout."""
    doc = _copy(BENCH)
    doc["bench"]["timeout_s"] = Raw(value)
    (work / "timeout-bench.toml").write_text(render_toml(doc))
    with pytest.raises(HarnessInputError, match="timeout_s"):
        load_bench(work / "timeout-bench.toml")


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.text(max_size=70),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
SEED: dict[str, Any] = {
    "devices": [
        {"device_id": "CCDBA795BAA4", "oob_secret_hex": "AB" * 32, "is_active": True},
        {"device_id": "teddy-esp32-0002", "oob_secret_hex": "cd" * 32},
    ],
    "children": [{"child_id": "child-1"}, {"child_id": "child-2", "is_active": False}],
}


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    """A valid seed file with rows retyped, duplicated or replaced (or deep nesting)."""
    doc: Any = json.loads(json.dumps(SEED))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["devices", "children", "top"]))
        if kind == "top":
            doc = doc if draw(st.booleans()) else draw(JSON_VALUES)
            if isinstance(doc, dict) and draw(st.booleans()):
                doc[draw(st.sampled_from(["devices", "children", "extra"]))] = draw(JSON_VALUES)
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get(kind), list) or not doc[kind]:
            continue
        rows = doc[kind]
        row = rows[draw(st.integers(0, len(rows) - 1))]
        if isinstance(row, dict):
            key = draw(st.sampled_from(["device_id", "oob_secret_hex", "is_active", "child_id"]))
            row[key] = draw(JSON_VALUES)
        if draw(st.booleans()):
            rows.append(json.loads(json.dumps(rows[0])))  # a duplicate ID
    text = json.dumps(doc) if draw(st.integers(0, 9)) else "[" * draw(st.integers(1, 5000))
    return draw(_broken(text.encode()))


@FILES
@given(data=mutated_seed())
def test_seed_files_load_or_are_one_input_error(work: Path, data: bytes) -> None:
    """What `harness serve --seed` reads: a seed or one line, whatever the file holds."""
    path = work / "seed.json"
    path.write_bytes(data)
    _outcome(load_seed, path)


# --- command-line values ---------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``harness ARGS`` in-process through ``main``, as the installed command runs it."""
    runner = CliRunner()
    with runner.isolation(env={"JOB_COMPLETION_INDEX": None, "JWT_SECRET": None}) as streams:
        out, err, _ = streams
        try:
            main(args)
            code: Any = 0
        except SystemExit as done:
            code = done.code
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    code = 0 if code is None else code
    return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")


def assert_clean(code: object, out: str, err: str) -> None:
    """Exit 0, 1 or 2; never a traceback; bad input is one line on stderr."""
    assert code in (0, 1, 2), (code, out, err)
    assert "Traceback" not in out + err, out + err
    if code == 2:
        assert err.count("\n") == 1, err


EDGES = st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "+inf", "1e309", "-0", "0", "0.0", "1", "-1", "1e-300", "3.5",
     " 2", "2 ", "1_000", "0x10", "\u0663", "", " ", "1/2", "65535", "65536",
     "9223372036854775807", "9223372036854775808", "-9223372036854775809", str(10**40),
     str(-(10**40))]
)  # fmt: skip
NUMBERS = st.one_of(
    EDGES,
    EDGES,  # twice: the edges are where the bugs are
    st.integers().map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),
    st.text(max_size=12),
)
TEXT = st.one_of(
    st.text(max_size=30).filter(lambda s: "\x00" not in s),
    st.sampled_from(["\udcff", "caf\udce9", "-", "--", "../../x", "a" * 300]),
)
THRESHOLDS = st.one_of(
    st.builds(
        lambda metric, op, number, unit: f"{metric}{op}{number}{unit}",
        st.sampled_from(["p50", "p95", "p97", "p(99.9)", "p0", "p100", "p101", "pnan", "max",
                         "mean", "sched_p99", "sched_rate", "error_rate", "rate", "claims",
                         "late_starts", "violations", "checks", "status_409_rate",
                         "status_timeout", "status_foo", "foo", "", "p", "P95"]),
        st.sampled_from(["<", "<=", ">", ">=", "==", "=<", "=", "!=", "", " < "]),
        NUMBERS,
        st.sampled_from(["", "ms", "s", "us", " ms"]),
    ),
    TEXT,
)  # fmt: skip
SHARDS = st.one_of(
    st.builds(lambda i, n: f"{i}/{n}", NUMBERS, NUMBERS),
    TEXT,
)
FLAG_NAMES = [
    "ENABLE_IDEMPOTENCY", "NORMALIZE_IDS_IN_HMAC", "ENABLE_AUTO_REGISTER",
    "FAIL_OPEN_ON_REDIS_ERROR", "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE", "enable_x", "",
]  # fmt: skip
FLAGS = st.one_of(
    st.builds(
        lambda n, sep, v: f"{n}{sep}{v}",
        st.sampled_from(FLAG_NAMES),
        st.sampled_from(["=", "", "==", ":"]),
        st.sampled_from(["true", "false", "on", "OFF", "1", "0", "yes", "maybe", "", " true"]),
    ),
    TEXT,
)
SOAK_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--claims": NUMBERS,
    "--duration": NUMBERS,
    "--rate": NUMBERS,
    "--concurrency": NUMBERS,
    "--timeout": NUMBERS,
    "--devices": NUMBERS,
    "--seed": NUMBERS,
    "--threshold": THRESHOLDS,
    "--shard": SHARDS,
    "--flag": FLAGS,
    "--metrics-port": NUMBERS,
    "--workers": NUMBERS,
    "--run-id": TEXT,
    "--claim-path": TEXT,
    "--profile": st.one_of(st.sampled_from(["v5.0", "v5-head", "atomic", "V5.0"]), TEXT),
    "--environment": TEXT,
    "--auto-register-secret": st.one_of(
        st.sampled_from(["v5", "static:" + "ab" * 32, "static:", "static:zz", "@", "env:"]), TEXT
    ),
}


def _options(values: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """One to four of the options with fuzzed values, as an argument list."""
    pair = st.sampled_from(sorted(values)).flatmap(
        lambda name: values[name].map(lambda value: [name, value])
    )
    return st.lists(pair, min_size=1, max_size=4).map(lambda ps: [a for p in ps for a in p])


@CLI
@given(args=_options(SOAK_VALUES))
def test_soak_values(work: Path, args: list[str]) -> None:
    """Everything soak checks runs before it writes its outputs: a last, unwritable
    --report is refused after every fuzzed value was looked at, so no run starts."""
    code, out, err = run_cli(["soak", *args, "--report", str(work / "a_file" / "r.json")])
    assert_clean(code, out, err)
    assert code == 2


@CLI
@given(args=_options({k: SOAK_VALUES[k] for k in ("--threshold", "--flag", "--profile")}
                     | {"--claims-per-board": NUMBERS, "--claims": NUMBERS}))  # fmt: skip
def test_hil_run_values(work: Path, args: list[str]) -> None:
    """hil run with a --log-dir that is a file: refused after the values, before any board."""
    bench = str(ROOT / "hil" / "bench.example.toml")
    log_dir = str(work / "a_file")
    code, out, err = run_cli(["hil", "run", "--bench", bench, *args, "--log-dir", log_dir])
    assert_clean(code, out, err)
    assert code == 2


@CLI
@given(thresholds=st.lists(THRESHOLDS, min_size=1, max_size=3))
def test_report_merge_thresholds(work: Path, thresholds: list[str]) -> None:
    """Thresholds are parsed before any report is read (the one given is missing)."""
    args = [a for t in thresholds for a in ("--threshold", t)]
    code, out, err = run_cli(["report", "merge", *args, str(work / "missing.json")])
    assert_clean(code, out, err)
    assert code == 2


@CLI
@given(port=NUMBERS, rate=st.one_of(st.none(), NUMBERS), flags=st.lists(FLAGS, max_size=2))
def test_serve_values(work: Path, port: str, rate: str | None, flags: list[str]) -> None:
    """serve refuses a bad port, rate limit or flag before it listens; a valid set meets
    the port guard (a port already taken), so nothing keeps serving."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = str(held.getsockname()[1])
        args = ["serve", "--log-file", "none", "--port", port]
        args += ["--rate-limit", rate] if rate is not None else []
        args += [a for f in flags for a in ("--flag", f)]
        code, out, err = run_cli([*args, "--port", taken])  # the last --port wins
        assert_clean(code, out, err)
        assert code == 2
    code, out, err = run_cli(
        ["serve", "--port", port, "--seed", str(work / "missing.json"), "--log-file", "none"]
    )
    assert_clean(code, out, err)
    assert code == 2


@CLI
@given(timeout=NUMBERS, expect=st.one_of(st.none(), TEXT))
def test_probe_values(work: Path, timeout: str, expect: str | None) -> None:
    """probe checks --timeout and --expect before its --report, and that before a claim."""
    args = ["probe", "--timeout", timeout, *(["--expect", expect] if expect is not None else [])]
    code, out, err = run_cli([*args, "--report", str(work / "a_file" / "p.json")])
    assert_clean(code, out, err)
    assert code == 2


@CLI
@given(
    claims=NUMBERS,
    timeout=NUMBERS,
    devices=st.one_of(st.none(), NUMBERS),
    concurrency=st.one_of(st.none(), NUMBERS),
)
def test_compat_values(
    work: Path, claims: str, timeout: str, devices: str | None, concurrency: str | None
) -> None:
    """compat: its own checks, then the unwritable --report, before any server starts."""
    args = ["compat", "--fleet", str(ROOT / "fleets" / "compat.toml")]
    args += ["--claims-per-cohort", claims, "--timeout", timeout]
    args += ["--devices", devices] if devices is not None else []
    args += ["--concurrency", concurrency] if concurrency is not None else []
    code, out, err = run_cli([*args, "--report", str(work / "a_file" / "c.json")])
    assert_clean(code, out, err)
    assert code == 2


def _small(text: str) -> bool:
    """A --devices value provision export may really write (it writes every device)."""
    try:
        return int(text.strip()) < 64
    except ValueError:
        return True


@CLI
@example(devices=None, seed=str(2**63), fmt="json")  # was an OverflowError traceback
@example(devices="3", seed=str(-(2**63)), fmt="csv")
@given(
    devices=st.one_of(st.none(), st.integers(1, 40).map(str), NUMBERS.filter(_small)),
    seed=st.one_of(st.none(), NUMBERS),
    fmt=st.one_of(st.sampled_from(["json", "sql", "csv"] * 3), TEXT),
)
def test_provision_export_values(devices: str | None, seed: str | None, fmt: str) -> None:
    """The export makes every row, so a value that passes the checks is really used."""
    args = ["provision", "export", "--fleet", str(ROOT / "fleets" / "soak.toml"), "--format", fmt]
    args += ["--devices", devices] if devices is not None else []
    args += ["--seed", seed] if seed is not None else []
    code, out, err = run_cli(args)
    assert_clean(code, out, err)
    assert code in (0, 2)
    if code == 0:
        assert out.strip(), "an export that succeeds writes rows"


HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=70)
SIGN_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--device-id": st.one_of(st.just("CCDBA795BAA4"), st.just(" teddy-esp32-01 "), TEXT),
    "--child-id": st.one_of(st.just("child-1"), TEXT),
    "--nonce": st.one_of(st.just("00112233445566778899aabbccddeeff"), HEX, TEXT),
    "--oob": st.one_of(st.just("AB" * 32), HEX, TEXT),
    "--firmware-version": st.one_of(st.just("5.0.3"), TEXT),
    "--firmware": st.sampled_from(["live", "claim-device", "", "LIVE", "other"]),
}


@CLI
@example(overrides=["--firmware-version", "\udcff"], headers=True, normalize=False)  # traceback
@given(overrides=_options(SIGN_VALUES), headers=st.booleans(), normalize=st.booleans())
def test_sign_values(overrides: list[str], headers: bool, normalize: bool) -> None:
    """sign runs for real: a valid set prints a body, anything else is one line, exit 2."""
    base = {
        "--device-id": "CCDBA795BAA4",
        "--child-id": "child-1",
        "--nonce": "00112233445566778899aabbccddeeff",
        "--oob": "AB" * 32,
    }
    args = [a for pair in base.items() for a in pair] + overrides  # a later option wins
    args += ["--headers"] * headers + ["--normalize"] * normalize
    code, out, err = run_cli(["sign", *args])
    assert_clean(code, out, err)
    assert code in (0, 2)
    if code == 0:
        body = json.loads(out.strip().split("\n\n")[-1])
        assert len(body["hmac_hex"]) == 64


def _taken_port() -> tuple[socket.socket, str]:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held, str(held.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["probe", "--timeout", "nan"], "--timeout"),
        (["probe", "--timeout", "inf"], "--timeout"),
        (["serve", "--rate-limit", "nan"], "--rate-limit"),
        (["serve", "--rate-limit", "inf"], "--rate-limit"),
        (["soak", "--seed", str(2**63)], "--seed"),
        (["soak", "--seed", str(-(2**63) - 1)], "--seed"),
        (["soak", "--threshold", "status_timout<1"], "--threshold"),
    ],
)
def test_values_once_accepted_without_a_word_are_refused(
    work: Path, args: list[str], names: str
) -> None:
    """Values that passed the checks and only failed (or were silently used) later: now
    refused before the guard that ends the run, so the error names them."""
    held, taken = _taken_port()
    with held:
        guard = (
            ["--port", taken] if args[0] == "serve" else ["--report", str(work / "a_file" / "r")]
        )
        code, out, err = run_cli([*args, *guard])
    assert_clean(code, out, err)
    assert code == 2 and names in err, err


def test_the_checks_can_fail() -> None:
    """The CLI checks see what they are for: a traceback, another exit code, two lines."""
    code, _, err = run_cli(["sign", "--device-id", "x"])  # a usage error, through main
    assert code == 2 and err.count("\n") == 1
    for bad in ((2, "", "Traceback (most recent call last):\n"), (3, "", ""), (2, "", "a\nb\n")):
        with pytest.raises(AssertionError):
            assert_clean(*bad)
