"""Keep forked DataLoader workers alive in a process that has run a Prefect flow.

Prefect's queue services (log and event workers) register a ``threading`` at-exit drain. After
``fork()`` Prefect resets those services in the child (``_done_event = None``) but leaves the
at-exit entries, so every forked worker dies at shutdown on ``assert self._done_event is not
None`` with exit code 1, and PyTorch reports "DataLoader worker exited unexpectedly"
(Prefect 3.8; see PrefectHQ/prefect#19112). The services' threads do not exist in the child,
so there is nothing to drain there: this drops those entries in the child after a fork.

The problem exists only in a process that ran a Prefect flow, so the hook belongs to the
flows: importing :mod:`flows` calls :func:`install` (a process running a flow of its own
without them calls it itself).
"""

from __future__ import annotations

import os
import sys
import threading


def _drop_inherited_prefect_drains() -> None:
    services = sys.modules.get("prefect._internal.concurrency.services")
    atexits = getattr(threading, "_threading_atexits", None)
    base = getattr(services, "_QueueServiceBase", None)
    if services is None or atexits is None or base is None:
        return
    def is_prefect_drain(entry: object) -> bool:
        fn = getattr(entry, "func", entry)  # threading wraps each entry in functools.partial
        return isinstance(getattr(fn, "__self__", None), base)

    atexits[:] = [entry for entry in atexits if not is_prefect_drain(entry)]


_installed = False


def install() -> None:
    """Register the fork hook, once per process."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_drop_inherited_prefect_drains)
        _installed = True
