"""TLS for ``https://`` targets: verified by default, a private CA on request, or not at all.

A staging claim server often sits behind a certificate from a company CA the
system does not know. ``--ca-bundle FILE`` trusts that CA (and only it, as
``curl --cacert`` does); ``--insecure`` switches verification off and is
announced on every run, because a soak that "passed" against a man in the
middle measured the wrong server. Neither is the default: a target's
certificate is checked like any client checks it.

An ``ssl.SSLContext`` does not pickle, so run options carry the two settings
(``insecure``, ``ca_bundle``) and every process (a ``--workers`` worker too)
builds its own context with :func:`client_context`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
from urllib.parse import urlsplit

from harness.errors import HarnessInputError

INSECURE_WARNING = "warning: --insecure: the target's TLS certificate is NOT verified"
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def client_context(insecure: bool = False, ca_bundle: str | None = None) -> ssl.SSLContext | None:
    """The context for a run's connections to its target.

    None means the system's default, verified context (what ``harness.transport`` and
    ``urllib`` build themselves when given none): nothing to load for an ``http://``
    run. With ``ca_bundle`` the bundle's CAs are the ones trusted, hostname checked;
    with ``insecure`` nothing is checked. A bad bundle, or both options, is a
    ``HarnessInputError`` (one line, exit 2).
    """
    if insecure and ca_bundle is not None:
        raise HarnessInputError("--insecure", "give --insecure or --ca-bundle, not both")
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_bundle is None:
        return None
    return _bundle_context(ca_bundle)


def _bundle_context(path: str) -> ssl.SSLContext:
    """A verified context trusting the PEM certificates in ``path``; why not, in one line."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise HarnessInputError("--ca-bundle", f"no such file: {path}") from None
    except OSError as exc:
        raise HarnessInputError("--ca-bundle", f"cannot read ({exc.strerror}): {path}") from None
    if stat.S_ISDIR(mode):
        raise HarnessInputError("--ca-bundle", f"is a directory: {path}")
    if not stat.S_ISREG(mode):
        raise HarnessInputError("--ca-bundle", f"not a regular file: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise HarnessInputError("--ca-bundle", f"cannot read ({exc.strerror}): {path}") from None
    if _PEM_CERT not in data:
        raise HarnessInputError("--ca-bundle", f"no PEM certificate: {path}")
    try:
        # Loaded from what was read: the file checked is the file loaded. Given cadata,
        # create_default_context loads no system CAs: the bundle's are the only ones.
        context = ssl.create_default_context(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise HarnessInputError(
            "--ca-bundle", f"not a valid PEM bundle ({reason}): {path}"
        ) from None
    return context


async def check_certificate(
    base_url: str, context: ssl.SSLContext | None, timeout: float = 10.0
) -> None:
    """Raise a one-line ``HarnessInputError`` when ``base_url``'s TLS certificate fails
    verification with ``context``; any other outcome (plain http, no answer, a good
    certificate) returns quietly and is the caller's to judge.

    A wrong certificate is bad configuration, not a server verdict: without this a run
    would judge every claim a connection error and fail (exit 1) instead of saying so.
    """
    try:
        parts = urlsplit(base_url)
        host, port = parts.hostname, parts.port or 443
    except ValueError:  # a bad URL is the transport's to name
        return
    if parts.scheme != "https" or not host:
        return
    ctx = context or ssl.create_default_context()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or exc.reason or "certificate verify failed"
        raise HarnessInputError(
            "--target",
            f"{base_url}: TLS certificate verification failed ({why}): give its CA with "
            "--ca-bundle FILE (or --insecure to skip verification)",
        ) from None
    except (OSError, TimeoutError, ValueError):
        return
    # The handshake was all we wanted: drop the connection now, no TLS shutdown to wait
    # for (a graceful close can outlive a short event loop and leak its socket).
    writer.transport.abort()
    await asyncio.sleep(0)  # let the transport's connection_lost run and close the socket
