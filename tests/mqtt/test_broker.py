"""The embedded Mosquitto: a real broker on a free port, its password file and ACL.

Clients are aiomqtt (the harness's own) and, for what the broker lets through, an
independent subscriber: ``mosquitto_sub``, not the harness.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import aiomqtt
import pytest

from harness.errors import HarnessInputError
from harness.mqtt.broker import OBSERVER_USER, MosquittoBroker
from harness.mqtt.topics import Topics, check_prefix
from tests.support import require_binary

V5 = aiomqtt.ProtocolVersion.V5
TOPICS = Topics()


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    require_binary("mosquitto", "mosquitto")
    with MosquittoBroker(auth=True) as b:
        b.set_passwords({"CCDBA795BAA4": "token-a", "CCDBA795BAB0": "token-b"})
        yield b


def _client(b: MosquittoBroker, d: str, user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        b.host, b.port, identifier=d, username=user, password=password, protocol=V5
    )


async def _seen(b: MosquittoBroker, publish: list[tuple[str, str, str, str]]) -> list[str]:
    """What the harness's observer sees of ``(d, user, password, topic)`` publishes."""
    seen: list[str] = []
    async with _client(b, "observer", OBSERVER_USER, b.observer_password) as obs:
        await obs.subscribe(TOPICS.every_device, qos=1)

        async def listen() -> None:
            async for message in obs.messages:
                seen.append(str(message.topic))

        task = asyncio.create_task(listen())
        for d, user, password, topic in publish:
            async with _client(b, d, user, password) as dev:
                await dev.publish(topic, b"{}", qos=1)
        await asyncio.sleep(0.5)
        task.cancel()
    return seen


def test_a_device_writes_under_its_own_topics_only(broker: MosquittoBroker) -> None:
    own = TOPICS.heartbeat("ccdba795baa4")
    other = TOPICS.heartbeat("ccdba795bab0")
    seen = asyncio.run(
        _seen(
            broker,
            [
                ("ccdba795baa4", "CCDBA795BAA4", "token-a", own),
                ("ccdba795baa4", "CCDBA795BAA4", "token-a", other),  # under another device: refused
            ],
        )
    )
    assert seen == [own]


def test_a_wrong_token_is_refused_at_connack_with_its_reason_code(
    broker: MosquittoBroker,
) -> None:
    async def connect() -> None:
        async with _client(broker, "ccdba795baa4", "CCDBA795BAA4", "expired-token"):
            pass

    with pytest.raises(aiomqtt.MqttCodeError) as err:
        asyncio.run(connect())
    rc = err.value.rc
    code = getattr(rc, "value", rc)  # paho's ReasonCode under MQTT 5
    assert code in (0x86, 0x87), err.value  # bad user name or password / not authorised


def test_new_tokens_are_read_live_and_the_broker_restarts_on_its_port(
    broker: MosquittoBroker,
) -> None:
    broker.set_passwords({"CCDBA795BAA4": "token-refreshed"})  # SIGHUP: no restart needed
    topic = TOPICS.status("ccdba795baa4")

    async def publish_once() -> list[str]:
        await asyncio.sleep(0.3)  # the reload is asynchronous in the broker
        return await _seen(broker, [("ccdba795baa4", "CCDBA795BAA4", "token-refreshed", topic)])

    assert asyncio.run(publish_once()) == [topic]
    port = broker.port
    broker.restart()
    assert broker.port == port and asyncio.run(publish_once()) == [topic]


def test_an_independent_subscriber_sees_what_the_broker_lets_through(
    broker: MosquittoBroker,
) -> None:
    sub_bin = require_binary("mosquitto_sub", "mosquitto-clients")
    topic = TOPICS.heartbeat("ccdba795bab0")
    sub = subprocess.Popen(
        [
            sub_bin,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-u",
            OBSERVER_USER,
            "-P",
            broker.observer_password,
            "-t",
            TOPICS.every_device,
            "-v",
            "-C",
            "1",
            "-W",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )

    async def publish() -> None:
        await asyncio.sleep(0.5)  # mosquitto_sub subscribed
        async with _client(broker, "ccdba795bab0", "CCDBA795BAB0", "token-b") as dev:
            await dev.publish(topic, b'{"seq": 1}', qos=1)

    asyncio.run(publish())
    out, _ = sub.communicate(timeout=15)
    assert out.strip() == f'{topic} {{"seq": 1}}'


@pytest.mark.parametrize("prefix", ["", "/teddy", "teddy/", "a//b", "teddy/+", "teddy/#"])
def test_a_bad_topic_prefix_is_one_line(prefix: str) -> None:
    with pytest.raises(HarnessInputError, match="--mqtt-prefix"):
        check_prefix(prefix)


def test_topics_live_in_one_place() -> None:
    t = Topics("fleet/x")
    assert (t.status("d1"), t.heartbeat("d1"), t.command("d1"), t.reply("d1")) == (
        "fleet/x/d1/status",
        "fleet/x/d1/heartbeat",
        "fleet/x/d1/cmd",
        "fleet/x/d1/reply",
    )
    assert t.acl_pattern == "fleet/x/%c/#" and t.every_device == "fleet/x/+/+"
