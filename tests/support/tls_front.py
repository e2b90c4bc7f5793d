"""A real TLS front for tests: a private CA, a server certificate, and a TLS-terminating
forwarder in front of a plain-HTTP reference server.

The reference server speaks plain HTTP only; rather than teach it TLS for the tests'
sake, ``TlsFront`` terminates TLS as a load balancer in front of a staging server
would, and forwards the bytes both ways. Certificates come from ``cryptography``:
a CA the system does not know (so verification fails without ``--ca-bundle``) and a
server certificate for ``127.0.0.1`` (IP SAN) and ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Pki:
    """The files a test needs: the CA to trust, the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """A fresh CA and a server certificate it signed for ``hosts``, written as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("harness test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


class TlsFront:
    """TLS on ``127.0.0.1:<port>`` forwarded to a plain TCP ``upstream``, in its own thread.

    ``with TlsFront(pki.server_context(), "127.0.0.1", server.port) as front:``
    then ``front.url`` is ``https://127.0.0.1:<port>``. ``connections`` counts the
    connections whose handshake completed (a client refusing the certificate is not one).
    """

    def __init__(self, context: ssl.SSLContext, upstream_host: str, upstream_port: int) -> None:
        self.context = context
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._open: set[asyncio.BaseTransport] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"TLS front did not start: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._shutdown)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)

    def _shutdown(self) -> None:
        """Stop accepting and drop every open connection, so none outlives the loop."""
        if self._server is not None:
            self._server.close()
        for transport in list(self._open):
            transport.abort()

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(self._quiet)
        try:
            loop.run_until_complete(self._serve(ready))
            left = asyncio.all_tasks(loop)  # connections _shutdown aborted: let them end
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        except BaseException as exc:  # reported to __enter__, which raises it
            self._error = exc
            ready.set()
        finally:
            loop.close()

    @staticmethod
    def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """A client refusing the certificate aborts the handshake: expected, not logged."""
        if isinstance(context.get("exception"), ssl.SSLError | ConnectionError):
            return
        loop.default_exception_handler(context)

    async def _serve(self, ready: threading.Event) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: its bytes to a new upstream connection and back, until either ends."""
        self.connections += 1
        self._open.add(writer.transport)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._open.discard(writer.transport)
            return
        self._open.add(up_writer.transport)
        to_upstream = asyncio.create_task(self._pipe(reader, up_writer))
        to_client = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            done, _ = await asyncio.wait(
                (to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED
            )
            if to_client not in done and to_upstream.result():
                # The client's EOF goes on to the server, whose answer may still be coming.
                with contextlib.suppress(OSError):
                    up_writer.write_eof()
                await to_client
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            # Closed gracefully (the answer's last bytes still go out) by this loop, which
            # runs on; _shutdown aborts the connections still piping when the front stops.
            for w in (up_writer, writer):
                w.close()
                self._open.discard(w.transport)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Copy until EOF (True) or a failure of either side (False)."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            return False
        return True
