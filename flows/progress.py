"""Progress events from a running flow to whoever shows them, and the terminal's progress bars
that show them (``depthdata build`` and ``demo``).

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


@contextlib.contextmanager
def show_bars(enabled: bool) -> Iterator[None]:
    """Rich progress bars, one per stage, fed by the flow's progress events."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if not enabled:
        yield
        return
    bars: dict[str, int] = {}
    failed: dict[str, int] = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as prog:
        def on_event(ev: Event) -> None:
            if ev.kind == "stage_start":
                unit = "report" if ev.stage == "eda" else "shards"
                bars[ev.stage] = prog.add_task(f"{ev.stage} ({unit})", total=ev.total)
                failed[ev.stage] = 0
            elif ev.kind == "shard_done" and ev.stage in bars:
                if ev.outcome == "failed":
                    failed[ev.stage] += 1
                    prog.update(bars[ev.stage], description=f"{ev.stage} ({failed[ev.stage]} failed)")
                prog.advance(bars[ev.stage])

        with listening(on_event):
            yield
