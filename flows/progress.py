"""Progress events from a running flow to whoever shows them (the CLI's progress bars).

Flow parameters must be plain data (Prefect records them), so the display is not passed in:
it registers a listener here for the duration of the run. Events arrive in the process that
runs the flow, as each shard task finishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    #: "stage_start" (total = shards planned), "shard_done", "stage_end"
    kind: str
    stage: str
    total: int = 0
    #: for "shard_done": "written", "skipped" or "failed"
    outcome: str = ""


Listener = Callable[[Event], None]
_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def emit(event: Event) -> None:
    for listener in _listeners:
        listener(event)
