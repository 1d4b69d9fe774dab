"""OpenVINO as an x86 runtime of the exported ONNX files (extra ``openvino``).

Why a second ONNX runtime: onnxruntime's int8 kernels gain little on this project's students,
while OpenVINO's CPU plugin (oneDNN, with AVX-512 VNNI int8 kernels, depthwise ones included) ran
``student_int8.onnx`` 2.0× faster than the best FP32 runtime for ``mnv2-fbnet`` and 3.5× for
``resnet18-unet`` (``benchmarks/bench_export.py``; not for the MobileNetV3 students). It reads the
exported files as they are: no conversion step, no other file to ship.

Precision: on CPUs with bf16 support OpenVINO runs the operators a model leaves in float32 in
bf16 by default; :func:`config` asks for float32, so an FP32 file gives onnxruntime's outputs up
to the kernels' rounding (1e-4 of the [0, 1] output at most in the tests; bf16 was 5e-3 off) and
an INT8 file differs only in its int8 kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from depthdata.errors import DepthdataError


def available() -> bool:
    """Whether OpenVINO (extra ``openvino``) is importable."""
    try:
        import openvino  # noqa: F401 - importable is the question
    except ImportError:
        return False
    return True


def config(threads: int) -> dict[str, object]:
    """Compile options: batch-1 latency on ``threads`` threads, one stream, float32 for the
    operators that are not quantized (module doc)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32"}


class OpenVinoModel:
    """An exported ONNX file compiled for OpenVINO's CPU plugin: ``model(*inputs)`` → the first
    output (``B×1×H×W`` relative depth), for the inputs in the file's order (RGB 0–255, and
    the sparse map for a completion student). The file may be deleted once this is made."""

    def __init__(self, path: str | Path, threads: int = 2):
        if not available():
            raise DepthdataError("the OpenVINO runtime needs the openvino extra: pip install -e '.[openvino]'")
        import openvino

        core = openvino.Core()
        self.path = Path(path)
        self._request = core.compile_model(core.read_model(str(self.path)), "CPU", config(threads)) \
            .create_infer_request()

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        self._request.infer(dict(enumerate(inputs)))
        return self._request.get_output_tensor(0).data.copy()


def runner(path: str | Path, inputs: tuple[np.ndarray, ...], threads: int) -> Callable[[], object]:
    """One batch-1 run of the file on ``inputs`` (what latency measurements time)."""
    model = OpenVinoModel(path, threads)
    return lambda: model(*inputs)
