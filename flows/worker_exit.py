"""Preloaded into the worker processes of the flows' ``LocalCluster`` (``distributed.worker.preload``):
a worker that has closed normally leaves without the interpreter's teardown.

Why. A worker that ran the stages holds torch, transformers, Open3D, Zarr and Prefect; tearing
that interpreter down (module teardown and garbage collection of every object, C extensions'
destructors) took 2.3 s for the imports and the loaded teacher alone on an idle 2-core machine,
and more than the 4 s the nanny waits under load, so every build ended with
``distributed.nanny: Worker process still alive after 4.0 seconds, killing`` and a SIGKILL.
Nothing of the teardown matters to a worker whose results are sent and whose shard files are
closed (every write is finished and renamed into place before its task returns).

How. ``dask_setup`` registers the exit hook first, so it runs after the ``atexit`` hooks
registered later (Prefect drains its log and event queues to the API that way); it only acts
when ``dask_teardown`` ran, i.e. the worker closed normally: a worker that failed to start or
crashed exits as usual, with its own exit status.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

_closed = False


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload hook's signature
    atexit.register(_exit_without_teardown)


def dask_teardown(worker) -> None:  # noqa: ARG001
    global _closed
    _closed = True


def _exit_without_teardown() -> None:
    if not _closed:
        return
    logging.shutdown()  # registered with atexit before this hook, so it would run after it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to flush
            pass
    os._exit(0)
