"""``EmbeddedServer``: the reference server in a background thread or a child process.

The fleet commands (``soak``/``compat``/``probe`` without ``--target``) and the
tests run against it over real HTTP, exactly as against a remote server.
Thread mode starts in well under a second; process mode puts the server on its
own core (useful for throughput on a 2-core machine) and stops with its parent.

    with EmbeddedServer(ServerConfig(flags=..., seed=...)) as srv:
        post(srv.url + CLAIM_PATH, ...)
        check_token(token, ..., secret=srv.jwt_secret)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import threading
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.profiles import ServerProfile
from harness.server.config import ServerConfig
from harness.server.seed import Seed
from harness.server.stores import StoreUnavailable

Mode = Literal["thread", "process"]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class ServerStartError(HarnessInputError):
    """The server could not start (store unreachable, schema missing, port taken)."""


def start_error(exc: BaseException) -> HarnessInputError:
    """Any start-up failure as one ``HarnessInputError``, so the CLI prints one line, exit 2."""
    if isinstance(exc, HarnessInputError):
        return exc
    if isinstance(exc, StoreUnavailable):
        return ServerStartError(exc.store, exc.reason)
    if isinstance(exc, OSError):
        return ServerStartError("listen", exc.strerror or str(exc))
    return ServerStartError("server", f"{type(exc).__name__}: {exc}")


class EmbeddedServer:
    """A running reference server: ``.url``, ``.port``, ``.config``, ``.jwt_secret``, ``.stop()``.

    Process mode uses ``spawn``: a script that starts one needs the usual
    ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: Mode = "thread",
    ) -> None:
        if mode not in ("thread", "process"):
            raise HarnessInputError("mode", f"must be thread or process, got {mode!r}")
        self.config = config or ServerConfig()
        self.host = host
        self.port = port
        self.mode = mode
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._process: Any = None
        self._pipe: Any = None
        self._error: BaseException | None = None
        self.running = False

    @property
    def jwt_secret(self) -> str:
        return self.config.jwt_secret

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> Any:
        """The live ``ServerState`` (thread mode only): stores, metrics, service."""
        if self._runner is None:
            raise RuntimeError("state is only reachable in thread mode while running")
        return self._runner.state

    # -- start ---------------------------------------------------------------

    def start(self) -> EmbeddedServer:
        if self.running:
            return self
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_process()
        self.running = True
        return self

    def _start_thread(self) -> None:
        # Here, not at the top: uvicorn and FastAPI cost 0.35 s and 23 MiB to import (0.52 s
        # against 0.17 s, measured), which a process-mode parent (the soak's) never needs.
        from harness.server.runner import Runner, bind_socket, new_loop

        try:
            sock = bind_socket(self.host, self.port)
        except OSError as exc:
            raise start_error(exc) from None
        self.port = int(sock.getsockname()[1])
        try:
            self._runner = Runner(self.config, sock)
        except Exception as exc:
            sock.close()
            raise start_error(exc) from None
        ready = threading.Event()
        self._error = None

        def main() -> None:
            loop = new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._runner.run(ready.set))
            except BaseException as exc:
                self._error = exc
            finally:
                ready.set()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"claim-server:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise ServerStartError("server", f"not ready after {START_TIMEOUT_S:g} s")
        if self._error is not None or not self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)
            err = self._error or RuntimeError("server thread ended at start")
            raise start_error(err) from err

    def _start_process(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_process_main,
            args=(self.config, self.host, self.port, child),
            name="claim-server",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._pipe = parent
        if not parent.poll(START_TIMEOUT_S):
            self._kill_process()
            raise ServerStartError("server", f"not ready after {START_TIMEOUT_S:g} s")
        try:
            msg = parent.recv()
        except EOFError:
            self._kill_process()
            raise ServerStartError("server", "child process ended at start") from None
        if msg[0] != "ready":
            self._kill_process()
            raise ServerStartError(msg[1], msg[2])
        self.port = int(msg[1])

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving and close the stores; safe to call twice."""
        if not self.running:
            return
        self.running = False
        if self.mode == "thread":
            loop, runner, thread = self._loop, self._runner, self._thread
            if loop is not None and runner is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(runner.request_stop)
            if thread is not None:
                thread.join(STOP_TIMEOUT_S)
            self._runner = None
        else:
            with contextlib.suppress(OSError):
                self._pipe.send("stop")
            self._process.join(STOP_TIMEOUT_S)
            self._kill_process()

    def _kill_process(self) -> None:
        proc = self._process
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(STOP_TIMEOUT_S)
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    # -- context managers ----------------------------------------------------

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedServer({self.url}, {self.mode}, {state})"


def _process_main(config: ServerConfig, host: str, port: int, pipe: Any) -> None:
    """Child process: serve until the parent says stop or goes away (pipe readable/EOF).

    Ctrl-C reaches every process of the terminal's group: the server ignores it, so
    that the soak it serves can stop gracefully and answer its claims in flight first."""
    from harness.server.runner import Runner, bind_socket, new_loop  # see _start_thread

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)

    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        err = start_error(exc)
        pipe.send(("error", err.field, err.reason))
        return
    try:
        runner = Runner(config, sock)
    except Exception as exc:
        err = start_error(exc)
        pipe.send(("error", err.field, err.reason))
        sock.close()
        return
    loop = new_loop()
    asyncio.set_event_loop(loop)

    def ready() -> None:
        pipe.send(("ready", sock.getsockname()[1]))
        loop.add_reader(pipe.fileno(), _on_pipe)

    def _on_pipe() -> None:
        loop.remove_reader(pipe.fileno())
        runner.request_stop()

    try:
        loop.run_until_complete(runner.run(ready))
    except BaseException as exc:  # report once, then leave
        err = start_error(exc)
        with contextlib.suppress(OSError):
            pipe.send(("error", err.field, err.reason))
    finally:
        loop.close()


def embedded_server(
    profile: ServerProfile,
    seed: Seed | None = None,
    mode: Mode = "thread",
    *,
    access_ttl_s: int | None = None,
) -> EmbeddedServer:
    """The reference server running ``profile`` with ``seed``'s rows (not started yet):
    the one way soak, compat, probe and ``hil run`` start theirs. ``access_ttl_s``: its
    access tokens' lifetime (None: v5's hour), for runs whose sessions refresh them."""
    options: dict[str, object] = {}
    if access_ttl_s is not None:
        options["access_ttl_s"] = access_ttl_s
    return EmbeddedServer(ServerConfig.running(profile, seed or Seed(), **options), mode=mode)
