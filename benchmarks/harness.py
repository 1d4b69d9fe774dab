"""Side-by-side measurement: cases alternate (A B A B ...) after a warm-up, medians compared.

The machines are shared and noisy, so a goal is always a ratio of two cases measured in the
same run, never an absolute time (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from depthdata import _system
from depthdata._system import usable_cpus

RESULTS_DIR = Path(__file__).parent / "results"


def alternate(cases: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each case, interleaved so drift hits every case alike."""
    return _system.alternate(cases, repeats, warmup)


def summary(case: str, values: list[float], unit: str) -> dict[str, Any]:
    return {"case": case, "median": statistics.median(values), "min": min(values), "max": max(values), "unit": unit}


def rate(case: str, seconds: list[float], count: int, unit: str = "samples/s") -> dict[str, Any]:
    """Throughput summary from per-repeat seconds for ``count`` items."""
    return summary(case, [count / s for s in seconds], unit)


def goal(what: str, ratio: float, target: str) -> dict[str, Any]:
    """A ratio goal; ``target`` like ``">= 1.5"`` or ``"<= 1.1"``."""
    op, value = target.split()
    met = ratio >= float(value) if op == ">=" else ratio <= float(value)
    return {"what": what, "ratio": round(ratio, 4), "target": target, "met": bool(met)}


def machine(**extra: str) -> dict[str, Any]:
    import torch

    # the CPUs the benchmark may use (its affinity), which is what the timings depend on
    info: dict[str, Any] = {"cpus": usable_cpus(), "python": platform.python_version(), "torch": torch.__version__}
    if extra:
        info["extra"] = ", ".join(f"{k} {v}" for k, v in extra.items())
    return info


def write(name: str, params: dict[str, Any], results: list[dict[str, Any]], goals: list[dict[str, Any]],
          **machine_extra: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(**machine_extra),
        "params": params,
        "results": results,
        "goals": goals,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    for g in goals:
        print(f"  goal {g['what']}: {g['ratio']} (target {g['target']}) {'met' if g['met'] else 'NOT MET'}")
    return path
