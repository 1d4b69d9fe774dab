"""INT8 quantization paths of an exported student besides static PTQ, and how far each drifts.

* **Dynamic** (onnxruntime ``quantize_dynamic``, the LPCVC report's call): weights int8 ahead of
  time, activations quantized at run time per tensor from their observed range
  (``DynamicQuantizeLinear``). onnxruntime's integer-op registry covers ``MatMul``/``Gemm``
  (``MatMulInteger``), ``Conv`` (``ConvInteger``), ``Attention``, ``LSTM``, ``Gather``… With
  ``convs=False`` (the default, what the report's MatMul-only use amounts to) only MatMul/Gemm are
  quantized — and these students are all convolutions, so the file comes out **unchanged** in
  compute (only FP32 kernels). With ``convs=True`` every conv becomes ``ConvInteger`` with a
  quantize step before and a float rescale after, which onnxruntime's CPU provider runs with a
  generic kernel: measured about 9× *slower* than FP32 at 480×640 (lpcvc-mnv3s, 2 threads,
  ``benchmarks/NOTES.md``). Neither is a speed path for conv nets; static QDQ is.
* **Static** post-training quantization: :func:`student.export.quantize_int8` (per-channel int8
  weights, uint8 activations calibrated on store images, QDQ).
* **Quantization-aware fine-tuning**: :mod:`student.qat` (PyTorch PT2E, exported as QDQ ONNX).

:func:`drift` runs two exports on the same images and reports AbsRel/δ1 of one against the
other (:func:`student.export.agreement`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from student import export

#: op types onnxruntime's dynamic quantization touches with ``convs=False`` / ``True``
DYNAMIC_OPS = ("MatMul", "Gemm")
DYNAMIC_OPS_WITH_CONV = ("MatMul", "Gemm", "Conv")
#: integer op types whose presence shows that quantization took effect
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
               "QuantizeLinear", "DequantizeLinear")


def quantize_dynamic_onnx(fp32_path: str | Path, out_path: str | Path, convs: bool = False) -> Path:
    """onnxruntime dynamic quantization of an exported model (module doc): int8 weights of
    MatMul/Gemm — and of Conv when ``convs`` — activations quantized at run time."""
    out_path = Path(out_path)
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(DYNAMIC_OPS_WITH_CONV if convs else DYNAMIC_OPS))
    return out_path


def op_counts(path: str | Path) -> dict[str, int]:
    """Node count per op type of an ONNX file."""
    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def coverage(path: str | Path) -> dict:
    """What quantization did to a file: the count of each integer/QDQ op, the float convs left,
    and ``quantized`` (whether any integer op is present)."""
    ops = op_counts(path)
    integer = {k: ops[k] for k in INTEGER_OPS if k in ops}
    return {"integer_ops": integer, "float_convs": ops.get("Conv", 0), "quantized": bool(integer)}


def drift(reference_path: str | Path, other_path: str | Path, images: Sequence[np.ndarray],
          sparse: Sequence[np.ndarray] | None = None, threads: int | None = None) -> dict[str, float]:
    """AbsRel / δ1 of ``other_path``'s outputs against ``reference_path``'s on ``images`` (uint8
    ``H×W×3``, resized to the model's input), median-aligned (:func:`student.export.agreement`)."""
    ref_s, other_s = export.session(reference_path, threads), export.session(other_path, threads)
    size = export.input_size(ref_s)
    maps = sparse if sparse is not None else [None] * len(images)
    feeds = [export.feed(im, size, sp) for im, sp in zip(images, maps, strict=True)]
    ref = [ref_s.run([export.OUTPUT_NAME], f)[0][0, 0] for f in feeds]
    out = [other_s.run([export.OUTPUT_NAME], f)[0][0, 0] for f in feeds]
    return export.agreement(ref, out)


METHODS = ("dynamic", "dynamic-conv", "static", "qat")


def quantize_model(model, out_dir: str | Path, method: str, store_url: str, groups: Sequence[str] | None,
                   held_out: Sequence[str] | None, size: tuple[int, int], calibration: int = 32, limit: int = 16,
                   eps: float | None = None, qat_steps: int = 50, qat_size: tuple[int, int] | None = None,
                   batch_size: int = 4, lr: float = 1e-4, version: int | None = None,
                   calibration_method: str | None = None) -> dict:
    """Export ``model`` FP32 and INT8 by ``method`` (:data:`METHODS`) into ``out_dir``; measure the
    INT8 file against the FP32 one on up to ``limit`` samples of the ``held_out`` groups (not the
    calibration / fine-tuning ``groups``) and evaluate both on them (:mod:`student.evaluate`).
    Returns paths, sizes, :func:`coverage` and the metrics. For ``qat`` the FP32 file is the model
    before quantization-aware fine-tuning, so ``int8_vs_fp32`` includes what fine-tuning changed."""
    from depthdata.errors import DepthdataError
    from student import evaluate as ev
    from student.model import DEFAULT_EPS

    if method not in METHODS:
        raise DepthdataError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    eps = DEFAULT_EPS if eps is None else eps
    out = Path(out_dir)
    completion = "sparse" in model.inputs  # its calibration and drift feed the sparse maps too
    fp32 = export.export_onnx(model, out / "student_fp32.onnx", size, eps)
    int8 = out / f"student_int8_{method}.onnx"
    extra: dict = {}
    if method in ("dynamic", "dynamic-conv"):
        quantize_dynamic_onnx(fp32, int8, convs=method == "dynamic-conv")
    elif method == "static":
        cal = list(export.store_inputs(store_url, groups, calibration, version, sparse=completion))
        export.quantize_int8(fp32, int8, [x["rgb"] for x in cal], sparse=[x["sparse"] for x in cal] if completion else None,
                             calibration=calibration_method)
        extra = {"calibration_images": len(cal), "calibration_groups": list(groups) if groups else "all",
                 "calibration_method": export.calibration_of(int8)}
    else:
        from student import qat
        from depthdata.store import Store, select_groups

        chosen = select_groups(Store.open(store_url), groups)
        result = qat.quantization_aware(model, int8, store_url, chosen, qat_steps, qat_size or size, size,
                                        batch_size, lr, eps, version=version)
        extra = {k: result[k] for k in ("losses", "steps", "lr", "batch_size", "train_size", "quantizer")}
    samples = list(export.store_inputs(store_url, held_out, limit, version, sparse=completion))
    return {"method": method, "onnx_fp32": str(fp32), "onnx_int8": str(int8),
            "bytes_fp32": export.model_bytes(fp32), "bytes_int8": export.model_bytes(int8),
            "coverage": coverage(int8), "held_out_groups": list(held_out) if held_out else "all",
            "int8_vs_fp32": drift(fp32, int8, [x["rgb"] for x in samples],
                                  [x["sparse"] for x in samples] if completion else None),
            "eval": {"fp32": ev.evaluate(ev.onnx_predictor(fp32), store_url, held_out, limit, eps, False, version),
                     "int8": ev.evaluate(ev.onnx_predictor(int8), store_url, held_out, limit, eps, False, version)},
            **extra}
