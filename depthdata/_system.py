"""Facts about the machine this process runs on, and timing on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (a container or
    ``taskset`` limit), not the machine's count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def alternate(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds (by ``clock``) of each call of each of ``runs``, timed **alternating** (A B C …
    A B C …) for ``repeats`` rounds after ``warmup`` untimed ones: on a shared machine, drift
    then hits every run alike, so only ratios of their times mean something."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
    return times
