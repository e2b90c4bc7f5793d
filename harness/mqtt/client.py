"""aiomqtt's client, made to hold thousands of sessions in one process honestly.

``DeviceClient`` keeps each PUBACK's reason code (aiomqtt drops it, and an MQTT 5
broker refuses an ACL-denied publish only there), connects on the event loop
instead of aiomqtt's thread pool, and shares one keepalive ticker among all
clients instead of a timer task each; ``settle`` marks a finished client's
futures retrieved; ``collector_for_sessions`` keeps full garbage collections
from stopping the loop. Each was measured in ``benchmarks/mqtt_sessions.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Iterator
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttError, MqttReentrantError
from paho.mqtt.client import MQTT_ERR_SUCCESS
from paho.mqtt.reasoncodes import ReasonCode

CONNECT_TIMEOUT_S = 10.0
# aiomqtt warns per client on a forced disconnect: with thousands of devices losing their
# broker at once that is thousands of lines; the report counts the losses instead.
CLIENT_LOG = logging.getLogger("harness.mqtt.client")
CLIENT_LOG.setLevel(logging.CRITICAL)  # paho logs each lost socket at ERROR


def reason_name(code: Any) -> str:
    """A CONNACK/PUBACK reason as the report counts it: ``"Success"``, ``"Not authorized"``."""
    if isinstance(code, ReasonCode):
        return str(code.getName())
    if isinstance(code, int):
        return f"code {code}"
    return str(code)


async def until_lost(client: aiomqtt.Client, call: Any) -> Any:
    """``call`` (a subscribe or publish), or MqttError as soon as the connection is lost:
    aiomqtt would wait out its whole timeout for an answer that cannot come."""
    lost = client._disconnected
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise MqttError("connection lost")


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return False
    return True


# Sessions are about 140 tracked objects each: at 10,000 the default thresholds made full
# collections of 1.4 million objects stop the loop 0.5-1.3 s at a time, 4.5 s of a 10 s
# connect phase (benchmarks/mqtt_sessions.py). Younger collections stay; full ones rarer.
GC_THRESHOLD = (100_000, 50, 1000)


@contextlib.contextmanager
def collector_for_sessions() -> Iterator[None]:
    """The garbage collector's thresholds for thousands of sessions, restored after."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


_MISC: dict[asyncio.AbstractEventLoop, set[Any]] = {}


def _misc_clients(loop: asyncio.AbstractEventLoop) -> set[Any]:
    """The paho clients of ``loop`` whose ``loop_misc`` one shared task calls each second."""
    clients = _MISC.get(loop)
    if clients is None:
        clients = _MISC[loop] = set()
        loop.create_task(_misc_loop(loop, clients))
    return clients


async def _misc_loop(loop: asyncio.AbstractEventLoop, clients: set[Any]) -> None:
    try:
        while not loop.is_closed():
            await asyncio.sleep(1.0)
            for client in list(clients):
                try:
                    alive = client.loop_misc() == MQTT_ERR_SUCCESS
                except Exception:  # a client paho gave up on: its session sees the loss
                    alive = False
                if not alive:
                    clients.discard(client)
    finally:
        _MISC.pop(loop, None)


def settle(client: aiomqtt.Client) -> None:
    """Mark aiomqtt's connection futures retrieved once a client is done with: a lost
    connection's error is counted by its session, while an unretrieved one would reach the
    loop's exception handler at collection, which stops a run as a harness bug."""
    for name in ("_connected", "_disconnected"):
        fut = getattr(client, name, None)
        if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
            fut.exception()


class DeviceClient(aiomqtt.Client):
    """aiomqtt's client, keeping each PUBACK's reason code: aiomqtt drops it, and an MQTT 5
    broker says "Not authorized" to an ACL-denied QoS 1 publish only there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puback_failures: list[ReasonCode] = []

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self.puback_failures.append(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        """aiomqtt's, guarded: paho asks for a writer from its thread and the socket may be
        closed by the time the loop registers it (a cut or lost session), which asyncio
        then reports as an EBADF error in a callback for every such device."""

        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # the connection broke: the session sees it
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            if sock.fileno() >= 0:
                with contextlib.suppress(OSError, ValueError):
                    self._loop.add_writer(sock.fileno(), write)

        self._loop.call_soon_threadsafe(register)

    async def __aenter__(self) -> DeviceClient:
        """aiomqtt's connect, with the TCP connect on the event loop instead of its thread
        pool: 6 threads doing blocking connects beside the loop cost about 1 ms of CPU a
        connect (``benchmarks/mqtt_sessions.py``). A host that is not an IPv4 address
        takes aiomqtt's own path."""
        if not _is_ipv4(self._hostname):
            await super().__aenter__()
            return self
        if self._lock.locked():
            raise MqttReentrantError("The client context manager is reusable, not reentrant")
        await self._lock.acquire()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            connect = loop.sock_connect(sock, (self._hostname, self._port))
            await asyncio.wait_for(connect, self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # paho 2.2's one hook for the socket it connects with: ours, connected already.
            self._client._create_socket_connection = lambda: sock  # type: ignore[method-assign]
            self._client.connect(
                self._hostname,
                self._port,
                self._keepalive,
                self._bind_address,
                self._bind_port,
                self._clean_start,
                self._properties,
            )
        except (OSError, TimeoutError) as exc:
            sock.close()
            self._lock.release()
            raise MqttError(str(exc) or type(exc).__name__) from None
        except BaseException:
            sock.close()
            self._lock.release()
            raise
        try:
            await self._wait_for(self._connected, timeout=None)
        except MqttError:
            self._lock.release()
            self._connected = asyncio.Future()
            raise
        if self._disconnected.done():  # a fresh client: it died between CONNACK and here
            settle(self)
            self._lock.release()
            raise MqttError("connection lost right after its CONNACK")
        return self

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """aiomqtt's reader, without its timer task per client: one task for every session
        calls ``loop_misc`` once a second (keepalive pings), about 2 KiB less a session."""

        def read() -> None:
            try:
                while True:
                    client.loop_read()
                    pending = getattr(client._sock, "pending", None)
                    if pending is None or pending() <= 0:
                        break
            except Exception as exc:  # the connection broke: the session sees it
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            if sock.fileno() >= 0:
                self._loop.add_reader(sock.fileno(), read)
                _misc_clients(self._loop).add(client)

        self._loop.call_soon_threadsafe(register)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        fileno = sock.fileno()
        if fileno > -1:
            self._loop.remove_reader(fileno)
        _misc_clients(self._loop).discard(client)

    def cut(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a device losing power does."""
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
