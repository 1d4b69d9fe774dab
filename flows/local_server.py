"""A throw-away Prefect API server for one command, started before the command's own imports.

Why not Prefect's own (``prefect.server.api.server.SubprocessASGIServer``, what its ephemeral
mode uses): importing that module takes 2–3 s of the build process's CPU (the server's models,
routes and database layer), only to spawn a child that imports them all again; and it is
started when the flow is about to run, so the build then waits 3–5 s for the child. Here the
child is spawned with the same command line and environment while the command imports its own
modules (``depthdata build`` spends about 3 s on Prefect, Dask and the stages), so the two
overlap on a machine with two cores or more, and this module imports nothing but the standard
library (``benchmarks/NOTES.md``, "incremental").

Whether a server is needed at all is known only once Prefect's settings are loaded (an API URL
can come from a profile or ``prefect.toml``, not only the environment): a server launched
speculatively when ``PREFECT_API_URL`` is not in the environment is stopped unused when the
settings name one (:func:`flows.runner.prefect_api`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

#: what Prefect's temporary server runs with (prefect.server.api.server.SubprocessASGIServer):
#: no UI, marked ephemeral (services it does not need stay off)
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
#: seconds between health checks while the server starts
POLL_S = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prefect_parent() -> str:
    """The folder holding the ``prefect`` package (uvicorn's ``--app-dir``, as Prefect passes it),
    found without importing it."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("prefect is not installed")
    return os.path.dirname(next(iter(spec.submodule_search_locations)))


class TemporaryServer:
    """A Prefect API server in a child process on 127.0.0.1, for as long as this object is used.

    ``start()`` spawns it and returns at once; ``wait()`` blocks until it answers and returns its
    API URL; ``stop()`` ends it. The server keeps its runs in Prefect's database under
    ``PREFECT_HOME`` (``~/.prefect/prefect.db``), as Prefect's own temporary server does, so a
    later ``prefect server start`` shows them.

    The server's own output goes to a file (:attr:`log_path`), not the command's terminal: it is
    Prefect's, not the command's, and the one thing it printed in practice was a traceback from
    its task-run recorder, cancelled mid-write by the stop (``Error flushing 1 events``), after
    a build that had completed. A server that fails to start raises with the file's last lines;
    a file left non-empty at the stop is kept and named in the log, an empty one is removed.
    """

    #: characters of the server's log quoted in the error when it fails to start
    LOG_TAIL = 3000

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(cls) -> TemporaryServer:
        """Spawn a server and return at once (:meth:`wait` for it)."""
        server = cls()
        server._spawn()
        return server

    def _spawn(self) -> None:
        self.port = free_port()
        # the throw-away server must not phone home (and logs an error where it cannot)
        env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **os.environ, **SERVER_ENV}
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="depthdata-prefect-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        with open(self.log_path, "ab") as out:  # appended: a relaunch keeps the first try's output
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", _prefect_parent(), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return text[-self.LOG_TAIL:]

    def wait(self, timeout_s: float) -> str:
        """Block until the server answers its health check; its API URL. Raises ``RuntimeError``
        after ``timeout_s`` seconds or when the child exits (it is relaunched once on another
        port: a port taken between choosing it and binding it is the one race here)."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        relaunched = False
        while True:
            code = self.process.poll()
            if code is not None:
                if relaunched:
                    raise RuntimeError(f"the temporary Prefect server exited with code {code} before it answered; "
                                       f"the end of its log ({self.log_path}):\n{self._log_tail()}")
                log.info("the temporary Prefect server exited with code %s; trying another port", code)
                relaunched = True
                self._spawn()
                continue
            with contextlib.suppress(OSError):  # not listening yet (connection refused), or still starting up
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if response.status == 200:
                        return self.api_url
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s "
                                   "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the limit); the end "
                                   f"of its log ({self.log_path}):\n{self._log_tail()}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 5 s); keep its log only if it wrote one."""
        if self.process is None:
            return
        terminate(self.process, 5)
        self.process = None
        if self.log_path is None:
            return
        with contextlib.suppress(OSError):  # removed by someone else: nothing to keep
            if self.log_path.stat().st_size == 0:
                self.log_path.unlink()
            else:
                log.info("the temporary Prefect server's own messages are in %s", self.log_path)


def terminate(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM ``process``, then SIGKILL if it is still running after ``timeout_s`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_early() -> TemporaryServer | None:
    """What a command calls first: a server started speculatively, or ``None`` when
    ``PREFECT_API_URL`` is in the environment (a server the user runs). Hand the result to
    :func:`flows.runner.prefect_api`, which waits for it, or stops it when the settings name a
    server after all; stop it yourself if the command ends before that."""
    return None if os.environ.get("PREFECT_API_URL") else TemporaryServer.start()
