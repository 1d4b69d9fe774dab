"""The flows' Dask task runner: prefect-dask's, with the run's Prefect settings shipped once
per task as objects instead of being dumped and re-validated for every task, and a Dask key
given to each task instead of one derived by hashing the call.

Why. With every task it submits, Prefect sends the flow's whole settings model along (so a
worker talks to the same API with the same credentials). Stock, the flow process dumps that
model to a dict for each task, and each worker validates the dict back into a ``Settings``
model, which makes pydantic-settings re-read the environment, ``.env`` and the profile and
TOML files once for each of the model's ~30 sections. The flows run one task per shard, and
with two busy workers on two cores the flow process's share is taken from them. What this
runner saves per task is measured by ``benchmarks/bench_flows.py`` (stock vs this runner,
no-op tasks) and given in ``benchmarks/NOTES.md`` ("Per-task orchestration").

How. While the runner is open, the current settings context serializes to the ``Profile`` and
``Settings`` objects themselves; they pickle as plain model state, and a worker rebuilds its
``SettingsContext`` around them without validating again. The values are exactly those the
stock path sends (secrets included, as there). Settings changed inside a flow
(``prefect.settings.temporary_settings``) open a stock context on top and travel the stock way.
Upstream cached settings the same way for its ``ProcessPoolTaskRunner`` (PrefectHQ/prefect#20853).

Keys. prefect-dask submits every task as a "pure" Dask call without a key, so Dask derives one
by hashing the call: it cloudpickles the wrapper closure and walks every argument, the
serialized settings included, only to get a key that is unique anyway (each submission carries
a fresh task-run id). Keys here are ``<task name>-<uuid>`` (``shard-3f2a...``; the dashboard
groups by the same prefix as before).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from prefect.context import SettingsContext
from prefect_dask import DaskTaskRunner as _PrefectDaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture


class _SettingsAsObjects(SettingsContext):
    """The current settings, serialized (for a task run on another process) as the models."""

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        # ``include_secrets`` is True on the task-submission path (prefect.context.serialize_context);
        # the objects always carry them, as the stock dump does there.
        return {"profile": self.profile, "settings": self.settings}


class DaskTaskRunner(_PrefectDaskTaskRunner):
    """prefect-dask's ``DaskTaskRunner`` (same arguments), shipping settings as objects and
    giving each task a Dask key instead of hashing the call for one."""

    def __enter__(self):
        super().__enter__()
        current = SettingsContext.get()
        if current is not None:
            # Entered on the runner's exit stack, so it is left when the runner closes.
            self._exit_stack.enter_context(_SettingsAsObjects(profile=current.profile, settings=current.settings))
        return self

    def submit(self, task, parameters: dict[str, Any], wait_for: Iterable[PrefectDaskFuture] | None = None,
               dependencies: dict[str, Any] | None = None) -> PrefectDaskFuture:
        # prefect-dask's submit, plus the key (see the module docstring)
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        future = self.client.submit(
            task,
            key=f"{task.name}-{uuid.uuid4().hex}",
            parameters=self._optimize_futures(parameters),
            wait_for=self._optimize_futures(wait_for) if wait_for else None,
            dependencies=dependencies,
            return_type="state",
        )
        return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)
