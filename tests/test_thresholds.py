"""Threshold grammar and evaluation against real RunResults."""

from __future__ import annotations

import pytest

from harness.errors import HarnessInputError
from harness.results import RunResults
from harness.thresholds import evaluate, parse_threshold, parse_thresholds


def _results(fast: int, slow: int, fast_s: float = 0.1, slow_s: float = 1.0) -> RunResults:
    res = RunResults(duration_s=2.0)
    for _ in range(fast):
        res.record_claim("first_claim", "200", fast_s, fast_s + 0.3)
    for _ in range(slow):
        res.record_claim("idempotent_retry", "409", slow_s, slow_s + 0.3)
    return res


@pytest.mark.parametrize(
    ("expr", "metric", "op", "limit"),
    [
        ("p95<0.5", "p95", "<", 0.5),
        (" p99 <= 1.0 ", "p99", "<=", 1.0),
        ("p(95)<500ms", "p95", "<", 0.5),
        ("p99.9<2s", "p99.9", "<", 2.0),
        ("sched_p99<1", "sched_p99", "<", 1.0),
        ("max<2", "max", "<", 2.0),
        ("error_rate<0.01", "error_rate", "<", 0.01),
        ("rate>100", "rate", ">", 100.0),
        ("checks>=1.0", "checks", ">=", 1.0),
        ("status_409_rate<0.05", "status_409_rate", "<", 0.05),
        ("status_connection_error_rate==0", "status_connection_error_rate", "==", 0.0),
        ("status_timeout<1", "status_timeout", "<", 1.0),
        ("late_starts<=10", "late_starts", "<=", 10.0),
    ],
)
def test_grammar(expr: str, metric: str, op: str, limit: float) -> None:
    th = parse_threshold(expr)
    assert (th.metric, th.op) == (metric, op)
    assert th.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("", "empty"),
        ("p95", "no comparison operator"),
        ("p95 < fast", "METRIC OP NUMBER"),
        ("p95 =< 1", "METRIC OP NUMBER"),
        ("latency<1", "unknown metric 'latency'"),
        ("p120<1", "outside (0, 100]"),
        ("error_rate<5", "share between 0 and 1"),
        ("rate<100ms", "only applies to latency"),
        ("sched_rate>1", "sched_ only applies"),
    ],
)
def test_bad_expressions_name_the_expression_and_the_problem(expr: str, says: str) -> None:
    with pytest.raises(HarnessInputError) as err:
        parse_threshold(expr)
    assert says in str(err.value)
    if expr:
        assert repr(expr) in str(err.value)
    assert "\n" not in str(err.value)


def test_latency_gates_follow_the_distribution() -> None:
    res = _results(fast=90, slow=10)  # 10 % of claims take 1 s (HDR: 3 significant digits)
    got = {
        r.name: r
        for r in evaluate(parse_thresholds(["p50<0.5", "p95<0.5", "p99<=1.01", "max<2"]), res)
    }
    assert got["p50<0.5"].passed and got["p50<0.5"].observed == pytest.approx(0.1, rel=1e-3)
    assert not got["p95<0.5"].passed
    assert got["p95<0.5"].observed == pytest.approx(1.0, rel=1e-3)
    assert got["p99<=1.01"].passed
    assert got["max<2"].passed


def test_scheduled_latency_is_its_own_metric() -> None:
    res = _results(fast=100, slow=0)  # 0.1 s from send, 0.4 s from schedule
    by = {r.name: r for r in evaluate(parse_thresholds(["p99<0.2", "sched_p99<0.2"]), res)}
    assert by["p99<0.2"].passed
    assert not by["sched_p99<0.2"].passed
    assert by["sched_p99<0.2"].observed == pytest.approx(0.4, rel=1e-3)


def test_rates_and_shares() -> None:
    res = _results(fast=80, slow=20)
    res.record_claim("first_claim", "timeout", 10.0)
    res.record_claim("first_claim", "503", 0.01)
    res.check("first_claim").record(True)
    res.check("first_claim").record(False, {"device_id": "CCDB***"})
    exprs = ["error_rate<0.01", "rate>40", "status_409_rate<0.25", "checks>=1.0", "violations<1"]
    by = {r.name: r for r in evaluate(parse_thresholds(exprs), res)}
    assert by["error_rate<0.01"].observed == pytest.approx(2 / 102)
    assert not by["error_rate<0.01"].passed
    assert by["rate>40"].observed == pytest.approx(102 / 2.0) and by["rate>40"].passed
    assert by["status_409_rate<0.25"].observed == pytest.approx(20 / 102)
    assert by["checks>=1.0"].observed == pytest.approx(0.5) and not by["checks>=1.0"].passed
    assert not by["violations<1"].passed


def test_a_gate_with_nothing_to_measure_fails_with_a_reason() -> None:
    (result,) = evaluate([parse_threshold("p95<0.5")], RunResults())
    assert result.observed is None and not result.passed
    assert "no latency" in result.note
    assert result.to_dict()["name"] == "p95<0.5"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("foo<1", "unknown metric 'foo'"),
        ("p95<", "METRIC OP NUMBER"),
        ("<1", "METRIC OP NUMBER"),
        ("status_timout<1", "unknown status key"),  # a typo would measure nothing, forever
        ("status_rate<0.1", "unknown status key"),
        ("status_999<1", "unknown status key"),
        ("sched_foo<1", "sched_ only applies"),
        ("p95<1e999", "finite"),
    ],
)
def test_unknown_names_and_missing_limits_are_refused(expr: str, says: str) -> None:
    """A gate that names nothing real must not pass silently: one line, naming it."""
    with pytest.raises(HarnessInputError) as err:
        parse_threshold(expr)
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("expr", "metric"),
    [
        ("p97<1", "p97"),  # any percentile is a metric, not only the listed ones
        ("p(99.5)<1", "p99.5"),
        ("status_599<1", "status_599"),
        ("status_100_rate<0.5", "status_100_rate"),
        ("status_connection_error<1", "status_connection_error"),
    ],
)
def test_any_percentile_and_real_status_keys_are_accepted(expr: str, metric: str) -> None:
    assert parse_threshold(expr).metric == metric


def test_cli_refuses_an_unknown_threshold_in_one_line_exit_2() -> None:
    """Through the real entry point: refused before any claim is made."""
    from tests.support import run_harness

    for expr in ("foo<1", "p95<"):
        proc = run_harness("report", "merge", "--threshold", expr, "missing.json", timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and "--threshold" in proc.stderr, proc.stderr


def test_mqtt_gates_read_the_sessions_figures_and_fail_without_them() -> None:
    from harness.mqtt.stats import MqttStats

    gates = [parse_threshold(e) for e in ("mqtt_p99<50ms", "refresh_max<1", "mqtt_reconnect_s<5")]
    bare = evaluate(gates, RunResults())
    assert [g.passed for g in bare] == [False, False, False]
    assert all(g.note == "the run had no MQTT sessions" for g in bare)
    res = RunResults()
    res.mqtt = MqttStats()
    for x in (0.001, 0.002, 0.003, 0.2):
        res.mqtt.heartbeat_latency.record(x)
    res.mqtt.refresh_latency.record(0.3)
    res.mqtt.reconnects = [
        {"window": "a", "back_after_s": 1.5},
        {"window": "b", "back_after_s": 4.0},
    ]
    got = evaluate(gates, res)
    assert [g.passed for g in got] == [False, True, True]  # p99 is the 0.2 s heartbeat
    assert got[2].observed == 4.0  # the slowest loss
    res.mqtt.reconnects.append({"window": "c", "back_after_s": None})
    never = evaluate([gates[2]], res)[0]
    assert not never.passed and never.note == "some devices never came back"
