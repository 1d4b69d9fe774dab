"""Where shard tasks run: a Dask ``LocalCluster`` sized to this machine, an existing Dask
cluster by scheduler address, or (``workers=0``) this process, one task at a time.

Workers are processes with one thread each: the stages are CPU-bound numpy / Open3D / torch
code, and one thread per process keeps each worker's memory to one shard at a time.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from depthdata.errors import DepthdataError
from flows.local_server import TemporaryServer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def prefect_api(server: TemporaryServer | None = None) -> Iterator[str]:
    """Make sure a Prefect API every worker can reach exists for the duration of a run.

    With ``PREFECT_API_URL`` set (a ``prefect server start`` server, Prefect Cloud, the test
    harness) this does nothing, and stops ``server`` unused. Without it Prefect would start a
    throw-away server inside the flow's process, which Dask workers in other processes cannot
    find (each would try to start its own); so a local server is started here
    (:class:`flows.local_server.TemporaryServer`, or ``server`` when the command launched one
    before its imports) and its URL is handed to every worker through the settings and the
    environment they inherit. It is stopped when the block ends.

    Flow-run heartbeats are off while the temporary server is used. They let a server mark a
    run whose process died as crashed; this server dies with the process, so nothing can act
    on them, and a sync flow run waits up to 1 s at its end for the heartbeat thread (it
    sleeps in whole seconds), which every ``depthdata build`` and ``demo`` paid.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    url = PREFECT_API_URL.value()
    if url:
        if server is not None:
            server.stop()
        yield url
        return
    server = server or TemporaryServer.start()
    try:
        url = server.wait(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        log.info("no PREFECT_API_URL set: using a temporary local Prefect server at %s", url)
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                try:
                    yield url
                finally:
                    _drain_prefect_clients()  # while they still know where the server is
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
    finally:
        server.stop()


def _drain_prefect_clients() -> None:
    """Send what Prefect's background log and event workers of this process still hold, while
    the server can take it: stopped first, each retried its sends for about a minute at exit.
    (What ``prefect.testing.utilities.prefect_test_harness`` does before it stops its server.)"""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # the log worker never started: nothing to send
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


#: what Dask's nanny exports to every worker process it spawns (distributed's default config)
DASK_MALLOC_TRIM = "65536"


def tune_local_workers() -> None:
    """Dask settings for the worker processes this process spawns (the flows' ``LocalCluster``).

    * **glibc malloc stays dynamic.** Dask starts each worker with
      ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory back to the OS). Setting any glibc
      malloc variable also freezes the mmap threshold at 128 KiB, so every array above it is
      mmapped and faulted in afresh on each use: the stages allocate hundreds of MB of
      short-lived arrays per shard, and the LiDAR stage ran 2× slower in a worker than in a
      plain process (``benchmarks/bench_flows.py``). Unset, a worker keeps about its largest
      sample's working set. The nanny also leaves the variable in the environment of the
      process that started it, so a value equal to Dask's is removed there too.
    * **No statistical profiler.** Each worker samples its threads every 10 ms for the
      dashboard's profile page; the flows start their clusters without a dashboard, so that is
      CPU taken from the stages for nothing.
    * **Workers leave without the interpreter's teardown** once closed (:mod:`flows.worker_exit`,
      preloaded): tearing down torch, transformers and Open3D outlasted the nanny's 4 s wait on
      a loaded machine, so builds ended with a SIGKILL and its warning.

    Workers of an external cluster take their own Dask config (see ``docs/operations.md``).
    """
    import dask

    preload = list(dask.config.get("distributed.worker.preload", []))
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                     "distributed.worker.profile.enabled": False,
                     "distributed.worker.preload": preload + [m for m in ["flows.worker_exit"] if m not in preload]})
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") == DASK_MALLOC_TRIM:
        del os.environ["MALLOC_TRIM_THRESHOLD_"]


#: environment variables that choose the task runner of flows loaded from their module (a
#: served deployment runs each flow run in a fresh process that imports ``flows.build``)
ENV_ADDRESS = "DEPTHDATA_DASK_ADDRESS"
ENV_WORKERS = "DEPTHDATA_WORKERS"


def runner_from_env() -> tuple[str | None, int | None]:
    """``(dask_address, workers)`` from ``DEPTHDATA_DASK_ADDRESS`` / ``DEPTHDATA_WORKERS``."""
    workers = os.environ.get(ENV_WORKERS)
    try:
        n = int(workers) if workers else None
    except ValueError:
        raise DepthdataError(f"{ENV_WORKERS}={workers!r} is not an integer") from None
    return os.environ.get(ENV_ADDRESS) or None, n


class TaskRunnerFromEnv(TaskRunner):
    """The flows' own task runner, chosen for each flow run rather than when the flows are
    imported: Prefect starts every run on ``flow.task_runner.duplicate()``, and this one's
    ``duplicate`` is a :class:`RunnerFromParameters` (which reads the environment at once, so a
    bad ``DEPTHDATA_WORKERS`` fails the run before it starts).

    Made at import, the runner changed Dask's config and the environment of every process that
    imported ``flows.build`` (:func:`tune_local_workers`), and a bad ``DEPTHDATA_WORKERS`` made
    the import fail.
    """

    def duplicate(self) -> TaskRunner:
        return RunnerFromParameters(*runner_from_env())

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        # Prefect submits to the runner that duplicate() made; reaching this is a misuse.
        raise TypeError("TaskRunnerFromEnv only chooses a flow run's task runner: enter its duplicate()")


def runner_options(dask_address: str | None, workers: int | None, env: tuple[str | None, int | None] = (None, None)
                   ) -> tuple[str | None, int | None]:
    """The ``(dask_address, workers)`` a run uses: its parameters where given (either one
    replaces both of ``env``, the environment's), else ``env``."""
    if dask_address or workers is not None:
        return dask_address or None, workers
    return env


class RunnerFromParameters(TaskRunner):
    """A flow run's task runner, made by :func:`make_task_runner` when the run submits its first
    task: from the run's parameters ``dask_address`` / ``workers`` (what the UI shows for the
    run and a deployment, and what "custom run" changes), else from the environment
    (:func:`runner_from_env`). Prefect makes a run's runner before the run's parameters are in
    any context, so the choice waits for the first task; a run that submits no task (a build
    with nothing to do) starts no cluster at all."""

    def __init__(self, env_address: str | None = None, env_workers: int | None = None):
        super().__init__()
        self._env = (env_address, env_workers)
        self._runner: TaskRunner | None = None
        self._stack = contextlib.ExitStack()

    def duplicate(self) -> "RunnerFromParameters":
        return type(self)(*self._env)

    def runner(self) -> TaskRunner:
        """The runner this run uses (made and started on first use)."""
        if self._runner is None:
            from prefect.context import FlowRunContext

            ctx = FlowRunContext.get()
            params = ctx.parameters if ctx is not None and ctx.parameters else {}
            address, workers = runner_options(params.get("dask_address"), params.get("workers"), self._env)
            self._runner = self._stack.enter_context(make_task_runner(address, workers))
        return self._runner

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        return self.runner().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            self._stack.__exit__(exc_type, exc_value, traceback)
        finally:
            self._runner = None
            super().__exit__(exc_type, exc_value, traceback)


def check_runner_options(dask_address: str | None, workers: int | None) -> None:
    """Refuse what :func:`make_task_runner` would refuse, without making anything."""
    if dask_address and workers is not None:
        raise DepthdataError("--workers sizes a local cluster; it cannot be combined with --dask-address")
    if workers is not None and workers < 0:
        raise DepthdataError(f"--workers must be >= 0, got {workers}")


def make_task_runner(dask_address: str | None = None, workers: int | None = None) -> TaskRunner:
    """The task runner for a build.

    ``dask_address`` (``tcp://host:8786``) connects to a running ``dask scheduler``; otherwise a
    ``LocalCluster`` of ``workers`` processes (default: one per CPU) is started for the run
    and closed after it. ``workers=0`` runs tasks in this process (debugging, tests).
    """
    from flows.dask_runner import DaskTaskRunner

    check_runner_options(dask_address, workers)
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if workers == 0:
        return ThreadPoolTaskRunner(max_workers=1)
    n = default_workers() if workers is None else workers
    tune_local_workers()
    cluster_kwargs: dict[str, Any] = {
        "n_workers": n,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)
