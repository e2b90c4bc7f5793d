"""``harness.tls``: the contexts a run's connections use, and every bad ``--ca-bundle``.

Real TLS throughout: a CA and a server certificate made with ``cryptography``, a
TLS front (``tests.support.tls_front``) before the reference server, and the
project's own transport connecting through it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli.tls_options import tls_values
from harness.errors import HarnessInputError
from harness.server import EmbeddedServer
from harness.tls import INSECURE_WARNING, check_certificate, client_context
from harness.transport import TransportConnectionError, make_transport
from tests.support import free_port, run_harness
from tests.support.tls_front import Pki, TlsFront, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def front(pki: Pki) -> Iterator[TlsFront]:
    """https://127.0.0.1:PORT, certificate from the test CA, the reference server behind."""
    with EmbeddedServer() as server, TlsFront(pki.server_context(), "127.0.0.1", server.port) as f:
        yield f


def _health(url: str, context: ssl.SSLContext | None) -> int:
    """``GET /health`` through the project's transport with ``context``: the status."""

    async def go() -> int:
        transport = make_transport(url, timeout=5, ssl_context=context)
        try:
            return (await transport.get("/health")).status
        finally:
            await transport.aclose()

    return asyncio.run(go())


# --- the contexts ---------------------------------------------------------------------------


def test_the_default_is_the_systems_verified_context_and_refuses_an_unknown_ca(
    front: TlsFront,
) -> None:
    assert client_context() is None  # the transport's own ssl.create_default_context()
    with pytest.raises(TransportConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        _health(front.url, client_context())


def test_a_ca_bundle_is_trusted_and_still_verified(front: TlsFront, pki: Pki) -> None:
    ctx = client_context(ca_bundle=str(pki.ca))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "harness test CA"),),)]
    assert _health(front.url, ctx) == 200
    assert _health(f"https://localhost:{front.port}", ctx) == 200  # the DNS SAN


def test_a_ca_bundle_does_not_excuse_a_certificate_for_another_host(tmp_path: Path) -> None:
    """The CA is right but the certificate names localhost only: 127.0.0.1 is refused."""
    other = make_pki(tmp_path, hosts=("localhost",))
    ctx = client_context(ca_bundle=str(other.ca))
    with (
        EmbeddedServer() as server,
        TlsFront(other.server_context(), "127.0.0.1", server.port) as f,
    ):
        assert _health(f"https://localhost:{f.port}", ctx) == 200
        with pytest.raises(TransportConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            _health(f.url, ctx)
        with pytest.raises(HarnessInputError, match="IP address mismatch"):
            asyncio.run(check_certificate(f.url, ctx))


def test_another_ca_is_refused(front: TlsFront, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path)  # a CA of its own: not the front's
    with pytest.raises(TransportConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        _health(front.url, client_context(ca_bundle=str(stranger.ca)))


def test_insecure_verifies_nothing(front: TlsFront) -> None:
    ctx = client_context(insecure=True)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert _health(front.url, ctx) == 200


def test_insecure_and_a_ca_bundle_together_are_refused(pki: Pki) -> None:
    with pytest.raises(HarnessInputError) as err:
        client_context(insecure=True, ca_bundle=str(pki.ca))
    assert err.value.field == "--insecure" and "not both" in str(err.value)


# --- bad bundles ----------------------------------------------------------------------------


def _bad(path: Path) -> str:
    with pytest.raises(HarnessInputError) as err:
        client_context(ca_bundle=str(path))
    assert err.value.field == "--ca-bundle"
    assert str(err.value).endswith(f": {path}") and "\n" not in str(err.value)
    return err.value.reason


def test_a_missing_bundle(tmp_path: Path) -> None:
    assert _bad(tmp_path / "nope.pem").startswith("no such file")


def test_a_directory_as_bundle(tmp_path: Path) -> None:
    assert _bad(tmp_path).startswith("is a directory")


def test_a_device_as_bundle() -> None:
    assert _bad(Path(os.devnull)).startswith("not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway")
def test_an_unreadable_bundle(pki: Pki, tmp_path: Path) -> None:
    locked = tmp_path / "locked.pem"
    locked.write_bytes(pki.ca.read_bytes())
    locked.chmod(0)
    assert _bad(locked).startswith("cannot read")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "no PEM certificate"),
        (b"\x00\xff garbage \x80" * 50, "no PEM certificate"),
        (b"just some text\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
         "not a valid PEM bundle"),
        ("-----BEGIN CERTIFICATE-----\nMIIé\n-----END CERTIFICATE-----\n".encode(),
         "not a valid PEM bundle"),
    ],
    ids=["empty", "binary", "text", "bad-base64", "non-ascii"],
)  # fmt: skip
def test_a_bundle_that_is_not_pem(tmp_path: Path, content: bytes, says: str) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    assert _bad(bad).startswith(says)


def test_a_private_key_is_not_a_bundle(pki: Pki) -> None:
    assert _bad(pki.key).startswith("no PEM certificate")


def test_a_der_certificate_is_not_a_bundle(pki: Pki, tmp_path: Path) -> None:
    der = tmp_path / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(pki.ca.read_text()))
    assert _bad(der).startswith("no PEM certificate")


def test_a_bundle_with_text_around_its_certificates_loads(pki: Pki, tmp_path: Path) -> None:
    """What `openssl x509 -text` and the system bundles look like: comments between certs."""
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# company CA\n" + pki.ca.read_bytes() + b"\n# old CA\n"
                       + other.ca.read_bytes())  # fmt: skip
    ctx = client_context(ca_bundle=str(bundle))
    assert ctx is not None and len(ctx.get_ca_certs()) == 2


# --- check_certificate: a wrong certificate said as such ---------------------------------


def test_check_certificate_names_the_failure_and_the_way_out(front: TlsFront) -> None:
    with pytest.raises(HarnessInputError) as err:
        asyncio.run(check_certificate(front.url, None))
    line = str(err.value)
    assert err.value.field == "--target" and "\n" not in line
    assert "TLS certificate verification failed" in line and "unable to get local" in line
    assert "--ca-bundle" in line and "--insecure" in line


def test_check_certificate_leaves_everything_else_to_the_caller(front: TlsFront, pki: Pki) -> None:
    asyncio.run(check_certificate(front.url, client_context(ca_bundle=str(pki.ca))))
    asyncio.run(check_certificate(front.url, client_context(insecure=True)))
    asyncio.run(check_certificate(f"http://127.0.0.1:{front.port}", None))  # not https
    asyncio.run(check_certificate(f"https://127.0.0.1:{free_port()}", None))  # refused
    asyncio.run(check_certificate("https://127.0.0.1:99999", None))  # the transport's to name


# --- the CLI options ------------------------------------------------------------------------


def test_tls_values_check_warn_and_make_the_path_absolute(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(pki.ca.parent)
    assert tls_values(False, "ca.pem") == {"insecure": False, "ca_bundle": str(pki.ca)}
    assert capsys.readouterr().err == ""
    assert tls_values(True, None) == {"insecure": True, "ca_bundle": None}
    assert capsys.readouterr().err == INSECURE_WARNING + "\n"
    with pytest.raises(HarnessInputError):
        tls_values(True, "ca.pem")


@pytest.mark.parametrize("command", [["soak"], ["compat"], ["probe"], ["hil", "run"]])
def test_every_command_with_a_target_has_the_options(command: list[str]) -> None:
    proc = run_harness(*command, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--target" in text and "--ca-bundle FILE" in text
    assert "--insecure Disable TLS certificate verification" in text
