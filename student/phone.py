"""Phone-runtime export: ExecuTorch with the XNNPACK backend (extra ``phone``), FP32 and INT8.

ExecuTorch is PyTorch's on-device runtime (Android/iOS); XNNPACK is its CPU backend on ARM and
x86. The exported graph is the same contest graph as the ONNX file
(:func:`student.model.export_wrapper`: RGB 0–255 in, relative depth out), traced with
``torch.export`` at a fixed ``1 × 3 × H × W`` and lowered with ``XnnpackPartitioner``: the
operators XNNPACK supports (convs, hard-swish, adds, …) run as one delegate, the rest (the
per-image min–max of the depth mapping) on ExecuTorch's portable kernels.

INT8 (:func:`export_pte` with ``calibration``): PT2E post-training quantization with
ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8, per-channel weights, the scheme XNNPACK's
integer kernels take), calibrated on store images, then lowered the same way.

:func:`run_pte` runs a ``.pte`` file with ExecuTorch's Python runtime (the same C++ runtime and
kernels a phone app links, built for this CPU), so outputs are checked against PyTorch here
(:func:`max_abs_diff`). Latency measured here says nothing about a phone's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from depthdata.errors import DepthdataError
from student.arch.base import StudentNet
from student.model import DEFAULT_EPS, export_wrapper


def available() -> bool:
    """Whether ExecuTorch (extra ``phone``) is importable."""
    try:
        import executorch.exir  # noqa: F401
        from executorch.runtime import Runtime  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not available():
        raise DepthdataError("the phone-runtime export needs ExecuTorch: pip install -e '.[phone]'")


def _example(model: StudentNet, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    example = list(model.example_inputs(tuple(size)))
    example[0] = example[0] * 255
    return tuple(example)


def export_pte(model: StudentNet, path: str | Path, size: tuple[int, int], eps: float = DEFAULT_EPS,
               calibration: Sequence[np.ndarray] | None = None, sparse: Sequence[np.ndarray] | None = None) -> Path:
    """Write the exported graph of ``model`` at ``size`` as an ExecuTorch program lowered to
    XNNPACK: FP32, or INT8 when ``calibration`` images (uint8 ``H×W×3``, resized to ``size``) are
    given — for a completion student with their ``sparse`` LiDAR maps (``H×W`` metres, 0 = no
    return), one per image."""
    _require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = export_wrapper(model.drop_aux_heads().eval(), eps).eval()
    if calibration is not None and len(calibration) == 0:
        raise DepthdataError("INT8 calibration needs at least one image")
    feeds = None if calibration is None else _calibration_inputs(model, calibration, sparse, size)
    example = _example(model, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(wrapper, example)
        if feeds is not None:
            program = torch.export.export(_quantize_ptq(program.module(), feeds), example)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(lowered.buffer)
    return path


def _calibration_inputs(model: StudentNet, images: Sequence[np.ndarray], sparse: Sequence[np.ndarray] | None,
                        size: tuple[int, int]) -> list[tuple[torch.Tensor, ...]]:
    """The exported graph's inputs for each calibration sample (the ONNX feeds, as tensors)."""
    from student import export

    completion = "sparse" in model.inputs
    if completion and (sparse is None or len(sparse) != len(images)):
        raise DepthdataError(f"INT8 calibration of a completion student needs one sparse map per image "
                             f"({len(images)} images, {'no' if sparse is None else len(sparse)} sparse maps)")
    maps = sparse if completion else [None] * len(images)
    return [tuple(torch.from_numpy(a) for a in export.feed(rgb, tuple(size), sp).values())
            for rgb, sp in zip(images, maps)]


def _quantize_ptq(graph: torch.nn.Module, feeds: Sequence[tuple[torch.Tensor, ...]]) -> torch.nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    for inputs in feeds:
        prepared(*inputs)
    return convert_pt2e(prepared)


def set_threads(threads: int) -> None:
    """Size ExecuTorch's (process-wide) XNNPACK thread pool."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class PteModel:
    """A loaded ``.pte`` program: ``model(*inputs)`` → the first output as a numpy array."""

    def __init__(self, path: str | Path):
        _require()
        from executorch.runtime import Runtime

        path = Path(path)
        if not path.is_file():
            raise DepthdataError(f"{path}: ExecuTorch program not found")
        self.path = path
        self.method = Runtime.get().load_program(str(path)).load_method("forward")

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        return self.method.execute([torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in inputs])[0].numpy()


def run_pte(path: str | Path, *inputs: np.ndarray) -> np.ndarray:
    """Output of a ``.pte`` file for numpy inputs (contest I/O: ``1×3×H×W`` RGB 0–255)."""
    return PteModel(path)(*inputs)


def max_abs_diff(model: StudentNet, pte: PteModel, inputs: Sequence[np.ndarray | tuple[np.ndarray, ...]],
                 eps: float = DEFAULT_EPS) -> float:
    """Largest absolute difference between the ``.pte`` output and PyTorch's exported graph over
    ``inputs``: each a ``1×3×H×W`` RGB 0–255 array, or for a completion student the tuple
    (RGB, ``1×1×H×W`` sparse metres)."""
    wrapper = export_wrapper(model.eval(), eps).eval()
    worst = 0.0
    for x in inputs:
        xs = x if isinstance(x, tuple) else (x,)
        with torch.no_grad():
            ref = wrapper(*(torch.from_numpy(a) for a in xs)).numpy()
        worst = max(worst, float(np.abs(pte(*xs) - ref).max()))
    return worst
