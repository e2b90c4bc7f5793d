"""Claimed devices online on a real Mosquitto: the run's MQTT side end to end.

Each test runs a soak against the embedded reference server with sessions on an
embedded broker. What the report counts is compared with an independent paho
subscriber attached to the same broker (``MqttOptions.on_broker``), never with
the harness's own observer alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest

from harness.faults.windows import parse_fault
from harness.fleet.loader import parse_fleet
from harness.mqtt.broker import OBSERVER_USER, MosquittoBroker
from harness.mqtt.fleet import MqttOptions
from harness.run.options import SoakOptions, SoakOutcome
from harness.run.runner import run_soak
from tests.support import require_binary

PREFIX = "teddy/devices"


def fleet_text(devices: int, session: str, ttl: str = "") -> str:
    return f"""
[fleet]
name = "online"
seed = 1515
[children]
count = 5
[session]
mqtt = true
{session}
{ttl}
[[cohorts]]
name = "mac"
count = {devices}
[[cohorts]]
name = "prefixed"
count = {devices}
id_style = "mixed-case"
prefix = "Teddy-ESP32-"
"""


class Listener:
    """An independent subscriber (paho, its own thread) on every device topic."""

    def __init__(self) -> None:
        self.births: set[tuple[str, str]] = set()
        self.heartbeats: set[tuple[str, int]] = set()
        self.probes = 0
        self.subscribed = threading.Event()
        self.client: paho.Client | None = None
        self.lock = threading.Lock()

    def attach(self, broker: MosquittoBroker) -> None:
        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="test-listener", protocol=paho.MQTTv5
        )
        c.username_pw_set(OBSERVER_USER, broker.observer_password)
        c.on_connect = lambda cl, *_: cl.subscribe(f"{PREFIX}/+/+", qos=1)
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10), "the test's subscriber never got its SUBACK"

    def _message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            return
        d, _, kind = msg.topic[len(PREFIX) + 1 :].partition("/")
        data = json.loads(msg.payload)
        with self.lock:
            if data.get("probe"):
                self.probes += 1
            elif kind == "status" and data.get("state") == "online":
                self.births.add((d, data["session_id"]))
            elif kind == "heartbeat":
                self.heartbeats.add((d, data["seq"]))

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()


@pytest.fixture
def listener() -> Iterator[Listener]:
    require_binary("mosquitto", "mosquitto")
    one = Listener()
    yield one
    one.close()


def soak(text: str, listener: Listener | None, **kw: Any) -> SoakOutcome:
    hold = kw.pop("hold", 3.0)
    mqtt = MqttOptions(hold_s=hold, on_broker=listener.attach if listener else None)
    kw.setdefault("server_mode", "process")  # as the CLI runs it: the server off this GIL
    options = SoakOptions(fleet=parse_fleet(text, "online.toml"), mqtt=mqtt, **kw)
    return asyncio.run(run_soak(options))


def checks(outcome: SoakOutcome) -> dict[str, Any]:
    return {c.name: c for c in outcome.results.checks.values()}


def test_2000_devices_go_online_heartbeat_and_every_check_holds(listener: Listener) -> None:
    session = "time_scale = 0.05\nkill_share = 0.1\nbad_token_share = 0.05"
    outcome = soak(fleet_text(1000, session), listener, claims=4000, concurrency=100, hold=4.0)
    m = outcome.results.mqtt.to_dict()
    tallies = checks(outcome)
    for name in (
        "mqtt_birth",
        "mqtt_heartbeat_gaps",
        "mqtt_last_will",
        "mqtt_ping",
        "mqtt_isolation",
        "mqtt_auth",
    ):
        tally = tallies[name]
        assert tally.evaluated > 0 and tally.violations == 0, (name, tally.examples[:3])
    assert outcome.results.passed
    # Most of the 2,000 devices claimed and went online (the plan picks devices by weight).
    assert m["sessions_connected"] > 1500
    assert m["births"] >= m["sessions_connected"]
    # Killed sessions: every will seen; isolation: every probe refused by reason code.
    assert m["wills_expected"] > 50 and m["wills_seen"] == m["wills_expected"]
    # (a session cut or lost before its probe's PUBACK never reports the probe)
    assert m["isolation_refused"] == m["isolation_probes"] >= 0.95 * m["sessions_connected"]
    assert m["connacks"].get("Not authorized", 0) >= tallies["mqtt_auth"].evaluated
    # The independent subscriber saw exactly what the report counts.
    with listener.lock:
        assert len(listener.births) == m["births"]
        assert len(listener.heartbeats) == m["heartbeats_seen"]
        assert listener.probes == 0  # the ACL let no cross-device publish through
    assert m["heartbeats_sent"] <= m["heartbeats_seen"]
    assert m["heartbeat_latency_seconds"]["count"] == m["heartbeats_seen"]


def test_a_broker_restart_in_the_middle_of_the_claim_storm_is_judged_honestly() -> None:
    """Killed while hundreds of devices connect and publish: what was acknowledged but
    in flight when it died is not observable (counted, not judged), and every check
    still holds; the hold waits for the devices to come back (no --mqtt-hold needed)."""
    require_binary("mosquitto", "mosquitto")
    outcome = soak(
        fleet_text(400, "time_scale = 0.05"),
        None,
        claims=3200,
        concurrency=100,
        hold=0.0,
        faults=(parse_fault("mqtt:restart@1s+1s"),),
    )
    m = outcome.results.mqtt.to_dict()
    failed = {c.name: c.examples[:2] for c in outcome.results.checks.values() if not c.passed}
    assert not failed, failed
    [loss] = m["reconnects"]
    assert loss["not_back"] == 0 and loss["back_after_s"] is not None
    assert loss["connects"] >= loss["devices"] > 0


def test_a_broker_restart_is_survived_and_the_reconnect_time_reported(
    listener: Listener,
) -> None:
    session = "time_scale = 0.05"
    outcome = soak(
        fleet_text(150, session),
        None,
        claims=600,
        concurrency=50,
        hold=3.0,
        faults=(parse_fault("mqtt:restart@2s+1s"),),
    )
    m = outcome.results.mqtt.to_dict()
    [loss] = m["reconnects"]
    assert loss["window"] == "mqtt:restart@2s+1s"
    assert loss["devices"] > 100 and loss["not_back"] == 0
    assert loss["back_after_s"] is not None and 0 <= loss["back_after_s"] < 3.0
    assert loss["connects"] >= loss["devices"]  # each came back with at least one connect
    assert m["connection_losses"] >= loss["devices"]
    tally = checks(outcome)["mqtt_reconnect"]
    assert tally.evaluated == 1 and tally.violations == 0
    assert outcome.results.passed, [c for c in outcome.results.checks.values() if not c.passed]


def test_tokens_are_refreshed_before_they_expire_and_sessions_reconnect_with_them() -> None:
    """On the fixed build (atomic): v5's refresh endpoint refuses every genuine token."""
    require_binary("mosquitto", "mosquitto")
    session = "time_scale = 0.1"
    outcome = soak(
        fleet_text(20, session, 'access_ttl = "12s"'),
        None,
        claims=40,
        concurrency=10,
        hold=8.0,
        profile="atomic",
    )
    m = outcome.results.mqtt.to_dict()
    assert outcome.info["access_ttl_s"] == 12
    assert m["refreshes"] >= m["sessions_connected"] > 20
    assert m["refresh_failures"] == 0 and m["refresh_outcomes"] == {"200": m["refreshes"]}
    assert m["refresh_latency_seconds"]["count"] == m["refreshes"]
    assert m["sessions"] >= m["sessions_connected"] + m["refreshes"]  # reconnected each time
    tally = checks(outcome)["token_refresh"]
    assert tally.evaluated == m["refreshes"] and tally.violations == 0
    assert outcome.results.passed


def test_on_v5_every_refresh_is_refused_and_devices_lose_the_broker_at_expiry() -> None:
    """v5.0 as coded: the refresh is a 401 (the check passes: that is what v5 does), the
    token expires, the harness revokes it, Mosquitto's reload drops the session, and the
    device's reconnects with its expired token are refused at CONNACK."""
    require_binary("mosquitto", "mosquitto")
    outcome = soak(
        fleet_text(10, "time_scale = 0.1", 'access_ttl = "10s"'),
        None,
        claims=20,
        concurrency=10,
        hold=14.0,
    )
    m = outcome.results.mqtt.to_dict()
    assert m["refresh_expected"] == "401"
    assert m["refreshes"] >= m["sessions_connected"] > 10
    assert m["refresh_failures"] == m["refreshes"]
    assert set(m["refresh_outcomes"]) == {"401"}
    tally = checks(outcome)["token_refresh"]
    assert tally.evaluated == m["refreshes"] and tally.violations == 0
    assert m["connection_losses"] >= m["sessions_connected"]  # dropped at revocation
    assert m["connacks"].get("Not authorized", 0) >= m["sessions_connected"]


def test_a_run_where_no_device_got_online_fails(listener: Listener) -> None:
    """A broker of the user's that checks passwords the harness did not write: every
    connect is refused, and mqtt_connect fails the run instead of everything passing on
    zero evaluations."""
    with MosquittoBroker(auth=True) as broker:
        broker.start()
        url = f"mqtt://{OBSERVER_USER}:{broker.observer_password}@{broker.host}:{broker.port}"
        mqtt = MqttOptions(url=url, hold_s=3.0, every_cohort=True)
        options = SoakOptions(
            fleet=parse_fleet(fleet_text(5, "time_scale = 0.05"), "x.toml"),
            mqtt=mqtt,
            claims=10,
            concurrency=5,
        )
        outcome = asyncio.run(run_soak(options))
    tally = checks(outcome)["mqtt_connect"]
    assert outcome.results.mqtt.counts["sessions_connected"] == 0
    assert tally.violations == tally.evaluated > 0 and not outcome.results.passed
    assert tally.examples[0]["got"] == "Not authorized"
    assert broker.observer_password not in json.dumps(outcome.info)


def test_kills_asked_for_but_never_made_fail_their_check(monkeypatch: Any) -> None:
    """kill_share with kills due long after the run: mqtt_last_will must not pass on 0."""
    require_binary("mosquitto", "mosquitto")
    import harness.run.runner as runner

    monkeypatch.setattr(runner, "RECOVERY_LIMIT_S", 0.5)  # the hold gives up waiting at once
    outcome = soak(
        fleet_text(5, "time_scale = 1.0\nkill_share = 1.0"),
        None,
        claims=10,
        concurrency=5,
        hold=0.5,
    )
    tally = checks(outcome)["mqtt_last_will"]
    assert tally.evaluated == tally.violations == 1  # the one "never exercised"
    assert "kill_share exercised" in tally.examples[0]["expected"]
    assert not outcome.results.passed


def test_a_session_with_no_broker_acl_fails_isolation(listener: Listener) -> None:
    """Against a broker with no ACL (ours, anonymous) a cross-device publish goes
    through: mqtt_isolation must fail, not pass by omission."""
    with MosquittoBroker(auth=False) as broker:
        broker.start()
        mqtt = MqttOptions(url=broker.url, hold_s=2.0, acl=True, every_cohort=True)
        text = fleet_text(10, "time_scale = 0.1")
        options = SoakOptions(
            fleet=parse_fleet(text, "open.toml"), mqtt=mqtt, claims=20, concurrency=5
        )
        outcome = asyncio.run(run_soak(options))
    tally = checks(outcome)["mqtt_isolation"]
    assert tally.violations == tally.evaluated > 0
    assert not outcome.results.passed
    assert "device_id" in tally.examples[0] and "***" in tally.examples[0]["device_id"]


def test_a_broker_that_dies_outside_any_declared_window_fails_the_run() -> None:
    """Killed 2 s in and never back, with no mqtt: window declared: every device that had
    been online is stranded with no CONNACK since, and the run must not pass on having
    nothing left to judge."""
    import threading

    require_binary("mosquitto", "mosquitto")

    def kill_later(broker: Any) -> None:
        threading.Timer(2.0, broker.kill).start()

    mqtt = MqttOptions(hold_s=3.0, on_broker=kill_later)
    options = SoakOptions(
        fleet=parse_fleet(fleet_text(50, "time_scale = 0.05"), "online.toml"),
        mqtt=mqtt,
        claims=400,
        concurrency=20,
        server_mode="process",
    )
    outcome = asyncio.run(run_soak(options))
    tally = checks(outcome)["mqtt_reconnect"]
    assert tally.violations >= 50, tally
    got = {ex["got"] for ex in tally.examples}
    assert any("no CONNACK since" in g for g in got), got
    assert not outcome.results.passed
    # ...and each is in the figures over time, as the claims' violations are.
    points = outcome.results.series.to_dict()["points"]
    assert sum(p["violations"].get("mqtt_reconnect", 0) for p in points) == tally.violations
