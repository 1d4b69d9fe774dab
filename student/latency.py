"""Latency of a model, measured through a pluggable clock and runner.

A :class:`LatencyMeter` is a ``measure(model) -> milliseconds`` callable: it asks its ``runner``
for a zero-argument function that runs the model once on a fixed input (``torch`` eager, or the
FP32 export in an ``onnxruntime`` session or compiled by ``openvino``), calls it ``warmup`` times, then times ``repeats``
calls with ``clock`` (seconds, default :func:`time.perf_counter`) and returns the median in
milliseconds. Tests pass a fake clock whose time advances only when the fake runner runs, so
the pruning loop is checked against a latency table without timing anything.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from depthdata._system import alternate
from depthdata.errors import DepthdataError
from student.arch.base import StudentNet

#: seconds since an arbitrary origin
Clock = Callable[[], float]
#: ``runner(model, size, threads) -> run`` where ``run()`` executes one batch-1 forward pass
Runner = Callable[[StudentNet, tuple[int, int], int], Callable[[], object]]

RUNTIMES = ("torch", "onnxruntime", "openvino")


def torch_runner(model: StudentNet, size: tuple[int, int], threads: int) -> Callable[[], object]:
    """Eager PyTorch, ``threads`` intra-op threads, batch 1 at ``size`` (no autograd)."""
    example = model.example_inputs(tuple(size))

    def run() -> object:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return model(*example)
        finally:
            torch.set_num_threads(previous)

    return run


def onnx_runner(model: StudentNet, size: tuple[int, int], threads: int) -> Callable[[], object]:
    """The FP32 ONNX export (contest I/O) in an onnxruntime CPU session with ``threads`` threads."""
    from student import export

    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_onnx(model, Path(tmp) / "m.onnx", tuple(size))
        sess = export.session(path, threads)  # the session holds the model in memory: the file may go
    xs = export.random_inputs(tuple(size), export.takes_sparse(sess))
    return lambda: export.run(sess, *xs)


def openvino_runner(model: StudentNet, size: tuple[int, int], threads: int) -> Callable[[], object]:
    """The FP32 ONNX export (contest I/O) compiled by OpenVINO (:mod:`student.openvino_runtime`,
    extra ``openvino``) with ``threads`` threads."""
    from student import export
    from student.openvino_runtime import OpenVinoModel

    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_onnx(model, Path(tmp) / "m.onnx", tuple(size))
        ov = OpenVinoModel(path, threads)  # compiled into memory: the file may go
    xs = export.random_inputs(tuple(size), "sparse" in model.inputs)
    return lambda: ov(*xs)


RUNNERS: dict[str, Runner] = {"torch": torch_runner, "onnxruntime": onnx_runner, "openvino": openvino_runner}


def median_ms(run: Callable[[], object], repeats: int = 5, warmup: int = 1, clock: Clock = time.perf_counter) -> float:
    """Median milliseconds of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    return alternate_ms({"run": run}, repeats, warmup, clock)["run"]


def alternate_ms(runs: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2,
                 clock: Clock = time.perf_counter) -> dict[str, float]:
    """Median milliseconds of each of ``runs``, timed **alternating** (A B C … A B C …) for
    ``repeats`` rounds after ``warmup`` untimed ones (:func:`depthdata._system.alternate`), so
    drift on a shared machine hits every run alike and only their ratios are meaningful."""
    if repeats < 1:
        raise DepthdataError(f"latency needs at least one timed repeat, got {repeats}")
    times = alternate(runs, repeats, warmup, clock)
    return {name: float(statistics.median(v)) * 1000.0 for name, v in times.items()}


class LatencyMeter:
    """``meter(model)`` → median batch-1 latency in ms at ``size`` on ``runtime`` (module doc)."""

    def __init__(self, runtime: str = "onnxruntime", size: tuple[int, int] = (480, 640), threads: int = 2,
                 repeats: int = 5, warmup: int = 1, clock: Clock = time.perf_counter, runner: Runner | None = None):
        if runner is None and runtime not in RUNNERS:
            raise DepthdataError(f"unknown latency runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.size = tuple(size)
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup
        self.clock = clock
        self.runner = runner or RUNNERS[runtime]

    def __call__(self, model: StudentNet) -> float:
        return median_ms(self.runner(model.eval(), self.size, self.threads), self.repeats, self.warmup, self.clock)

    def describe(self) -> dict:
        return {"runtime": self.runtime, "size": list(self.size), "threads": self.threads, "repeats": self.repeats,
                "warmup": self.warmup, "statistic": "median", "unit": "ms"}
