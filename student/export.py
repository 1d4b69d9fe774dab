"""ONNX export of the contest model and INT8 static quantization with onnxruntime.

The exported graph of a disparity student (every architecture but ``completion``) is
:class:`student.model.ContestWrapper`: input ``input`` float32 ``B×3×H×W`` RGB in 0–255 (default
``H×W = 480×640``, LPCVC 2025 Track 3), output ``depth`` float32 ``B×1×H×W`` relative depth in
(0, 1], near = small, far = 1. A completion student exports :class:`student.model.CompletionWrapper`:
inputs ``input`` (as above) and ``sparse`` float32 ``B×1×H×W`` LiDAR metres (0 = no return), output
``depth`` in metres. The batch axis is dynamic. Only :meth:`~student.arch.base.StudentNet.forward`
is traced, so intermediate (training-only) heads are not in the file.

Low-resolution tail: for the architectures that expose their prediction before upsampling
(:meth:`~student.arch.base.StudentNet.logits`), the sigmoid and the depth mapping run on the
prediction conv's stride-2/4 map and only the depth is upsampled to ``H×W`` (then divided by its
maximum), see :class:`student.model.ContestWrapper`.

Input: the exported copy of the student has its input normalisation folded into one subtraction
and its first conv (:func:`student.arch.base.fold_input_normalisation`; same outputs).

INT8: :func:`quantize_int8` calibrates activation ranges on real store images (resized to the
export size) and writes a model (weights int8 per output channel, activations uint8) that
onnxruntime runs with integer kernels, in the format measured fastest for the file's
architecture (:data:`INT8_SCHEMES`; the architecture is recorded in the file's metadata).
:func:`agreement` measures how far INT8 drifts from FP32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, replace
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from depthdata import metrics
from depthdata.errors import DepthdataError
from depthdata.stream import ShardMapDataset
from student.model import DEFAULT_EPS, StudentNet, export_wrapper

log = logging.getLogger(__name__)

CONTEST_SIZE = (480, 640)
INPUT_NAME = "input"
SPARSE_NAME = "sparse"
OUTPUT_NAME = "depth"


def export_onnx(model: StudentNet, path: str | Path, size: tuple[int, int] = CONTEST_SIZE, eps: float = DEFAULT_EPS,
                opset: int = 17) -> Path:
    """Write the FP32 exported model (module doc) for input ``size = (height, width)`` pixels to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = export_wrapper(model.eval(), eps).eval()
    example = list(model.example_inputs(tuple(size)))
    example[0] = example[0] * 255
    names = [INPUT_NAME, SPARSE_NAME][:len(example)]
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False) needs no onnxscript; torch warns that it is legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Decoders compare feature-map sizes in Python (odd input sizes); the exported file has a
        # fixed H×W, so the constants the tracer records are the right ones.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper, tuple(example), str(path), dynamo=False, opset_version=opset,
                          input_names=names, output_names=[OUTPUT_NAME],
                          dynamic_axes={n: {0: "batch"} for n in [*names, OUTPUT_NAME]})
    # The TorchScript exporter leaves the output's non-batch dims symbolic; state them so the
    # file itself declares the contest shape (B, 1, H, W).
    graph = onnx.load(str(path))
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (1, *size)):
        dim.dim_value = int(value)
    # The architecture travels in the file, so quantize_int8 picks its measured scheme (INT8_SCHEMES).
    arch = getattr(model, "name", "")
    if arch:
        onnx.helper.set_model_props(graph, {ARCH_KEY: arch})
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU onnxruntime session (``threads`` intra-op threads; default: onnxruntime's)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:
        raise DepthdataError(f"{path}: cannot load ONNX model ({exc})") from None


def input_size(sess: ort.InferenceSession) -> tuple[int, int]:
    """``(height, width)`` the exported model expects."""
    shape = sess.get_inputs()[0].shape
    return int(shape[2]), int(shape[3])


def takes_sparse(sess: ort.InferenceSession) -> bool:
    """Whether the exported model takes a sparse LiDAR map besides the RGB (a completion student)."""
    return SPARSE_NAME in [i.name for i in sess.get_inputs()]


def random_inputs(size: tuple[int, int], sparse: bool) -> tuple[np.ndarray, ...]:
    """A fixed batch-1 input at ``size`` for latency runs: RGB 0–255 and, with ``sparse``, a map
    of 0–10 m."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, 3, *size)).astype(np.float32)
    return (x, rng.uniform(0, 10, (1, 1, *size)).astype(np.float32)) if sparse else (x,)


def to_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``H×W×3`` RGB → float32 ``1×3×h×w`` in 0–255 at ``size = (h, w)`` (bilinear)."""
    if rgb.shape[:2] != tuple(size):
        # INTER_AREA when shrinking avoids aliasing; bilinear when enlarging.
        shrink = rgb.shape[0] > size[0]
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None].astype(np.float32))


def sparse_input(sparse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``H×W`` LiDAR metres (0 = no return) → float32 ``1×1×h×w`` at ``size``: nearest
    neighbour, so no return is blended with the holes around it."""
    if sparse.shape[:2] != tuple(size):
        sparse = cv2.resize(sparse, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(sparse[None, None].astype(np.float32))


def store_inputs(store_url: str, groups: Sequence[str] | None, limit: int, version: int | None = None,
                 sparse: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Up to ``limit`` model inputs from the store's servable samples (at ``version``, default
    the newest), spread evenly: ``{"rgb": uint8 H×W×3}``, plus ``"sparse"`` (``H×W`` metres)
    when ``sparse``."""
    fields = ("rgb", "sparse") if sparse else ("rgb",)
    ds = ShardMapDataset(store_url, groups=groups, fields=fields, version=version)
    if len(ds) == 0:
        raise DepthdataError(f"{store_url}: no servable sample with {' and '.join(fields)} for calibration")
    for k in np.unique(np.linspace(0, len(ds) - 1, min(limit, len(ds))).round().astype(int)):
        s = ds[int(k)]
        out = {"rgb": s["rgb"].numpy().transpose(1, 2, 0)}
        if sparse:
            out["sparse"] = s["sparse"][0].numpy()
        yield out


def store_images(store_url: str, groups: Sequence[str] | None, limit: int,
                 version: int | None = None) -> Iterator[np.ndarray]:
    """Up to ``limit`` uint8 ``H×W×3`` images from the store's servable samples (at ``version``,
    default the newest), spread evenly."""
    for s in store_inputs(store_url, groups, limit, version):
        yield s["rgb"]


def feed(rgb: np.ndarray, size: tuple[int, int], sparse: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The onnxruntime inputs of one sample at ``size``: ``input`` (and ``sparse`` when given)."""
    out = {INPUT_NAME: to_input(rgb, size)}
    if sparse is not None:
        out[SPARSE_NAME] = sparse_input(sparse, size)
    return out


class _Calibration(CalibrationDataReader):
    def __init__(self, images: Sequence[np.ndarray], size: tuple[int, int], sparse: Sequence[np.ndarray] | None):
        maps = sparse if sparse is not None else [None] * len(images)
        self._batches = iter([feed(im, size, sp) for im, sp in zip(images, maps, strict=True)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _output_tail(path: Path) -> list[str]:
    """Names of the student's last conv (the 1-channel prediction), every node after it, and the
    nodes of a fitted shift head (:mod:`student.shift`, named ``/shift/...``; it runs after the
    prediction, on the normalised disparity, except in heads fitted before it saw it).

    Kept in float: an 8-bit disparity map has 256 levels over the sigmoid's whole [0, 1], and
    the per-image min–max stretch of the depth mapping would magnify that step when a scene's
    disparities span only part of the range; the shift's ``eps`` sets the whole output's far/near
    ratio. These nodes are a negligible share of the compute.
    """
    nodes = list(onnx.load(str(path)).graph.node)
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type == "Conv" and not n.name.startswith("/shift/"))
    return [n.name for n in nodes[:last_conv] if n.name.startswith("/shift/")] + [n.name for n in nodes[last_conv:]]


@dataclass(frozen=True)
class Int8Scheme:
    """How :func:`quantize_int8` quantizes: onnxruntime's ``QuantFormat`` (``"qdq"``: float ops
    wrapped in QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels
    when it loads the file; ``"qoperator"``: integer operators written into the file), the weight
    type (``"int8"`` or ``"uint8"``; activations are always uint8), per-channel weights, and how
    the activations' ranges are calibrated (:data:`CALIBRATIONS`)."""

    quant_format: str = "qdq"
    weight_type: str = "int8"
    per_channel: bool = True
    calibration: str = "percentile"

    def __post_init__(self):
        if self.quant_format not in _FORMATS or self.weight_type not in _WEIGHT_TYPES \
                or self.calibration not in CALIBRATIONS:
            raise DepthdataError(f"unknown INT8 scheme {self}: quant_format one of {', '.join(_FORMATS)}, "
                                 f"weight_type one of {', '.join(_WEIGHT_TYPES)}, "
                                 f"calibration one of {', '.join(CALIBRATIONS)}")


_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
_WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
#: activation range calibration: onnxruntime's method and its options. ``"minmax"``: each
#: activation's range over the calibration images; ``"percentile"`` (the default): that range
#: clipped at the 99.99th percentile of the activation's magnitude (onnxruntime's histogram of
#: ``|x|``, 2048 bins; ``CalibPercentile`` 99.99), so that a few outlying values do not stretch
#: the 256 levels over a range the rest never uses. Measured on bench_distill's trained
#: students (384 held-out scenes, INT8 / FP32 AbsRel; benchmarks/NOTES.md "distill"):
#: percentile on 32 images 1.0006, 1.0005 and 0.998 for the plain, shift-head and tuned
#: student, MinMax 1.0055, 1.0055 and 1.013 (on 16 images 1.021, 1.021 and 1.004); percentile
#: was better at 16, 32 and 64 images alike.
CALIBRATIONS: dict[str, tuple[CalibrationMethod, dict]] = {
    "minmax": (CalibrationMethod.MinMax, {}),
    "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
}
#: the ONNX metadata key naming the student architecture of an exported file
ARCH_KEY = "student_arch"
#: the ONNX metadata key naming the calibration method of an INT8 file (it may differ from the
#: scheme's: :func:`quantize_int8` falls back to ``"minmax"``)
CALIBRATION_KEY = "int8_calibration"
DEFAULT_SCHEME = Int8Scheme()
#: INT8 scheme per architecture, chosen by alternating latency runs at 480×640, batch 1,
#: 2 threads, onnxruntime 1.32 on AVX-512 VNNI (``benchmarks/NOTES.md``, export section). Ratios
#: are FP32 ms / INT8 ms of the same model in one run (median of 11–30 rounds; load average 2–8
#: on the shared machine), on weights with trained-scale activations (BatchNorm statistics from
#: real images; purely random weights decay into subnormal floats that slow FP32 down 2–4× and
#: overstate INT8's gain):
#:
#: * ``resnet18-unet``: QDQ 2.07×, QOperator 4.19× by median but 2.63× against QDQ's 2.60× by
#:   minimum (one noisy run). The dense 3×3 convs dominate and VNNI int8 runs them 2–2.6× faster
#:   in either format; QDQ kept (the format every other architecture uses, and what QAT writes).
#: * ``mnv2-fbnet``: QDQ 1.41×, QOperator 1.24×.
#: * ``fpn-mnv3s``: QDQ 0.93×, QOperator 0.84× (random weights had suggested QOperator, 1.5×).
#: * ``lpcvc-mnv3s``: QDQ 0.88–1.02×, QOperator 0.42–0.95× (three runs); uint8 weights 0.59×,
#:   per-tensor weights 0.97×, convs only 0.84×, depthwise convs kept float 0.50× (each float
#:   depthwise conv then needs its own quantize/dequantize pair); ``int8_friendly`` encoder
#:   0.98–1.32× (seven runs). No onnxruntime scheme reaches 1.5× on MobileNetV3: its int8 depthwise convs save
#:   little over float NCHWc ones.
#:
#: So QDQ with int8 per-channel weights (:data:`DEFAULT_SCHEME`) is the measured best, or tied, for
#: every architecture. Files without the ``student_arch`` metadata also get it.
INT8_SCHEMES: dict[str, Int8Scheme] = {name: DEFAULT_SCHEME for name in
                                       ("fpn-mnv3s", "lpcvc-mnv3s", "mnv2-fbnet", "resnet18-unet")}


def scheme_for(path: str | Path) -> Int8Scheme:
    """The measured :data:`INT8_SCHEMES` entry of the architecture recorded in an exported file."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return INT8_SCHEMES.get(props.get(ARCH_KEY, ""), DEFAULT_SCHEME)


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, images: Sequence[np.ndarray],
                  per_channel: bool | None = None, sparse: Sequence[np.ndarray] | None = None,
                  scheme: Int8Scheme | None = None, calibration: str | None = None) -> Path:
    """Static INT8 quantization of an exported model, calibrated on ``images`` (uint8 H×W×3 RGB,
    resized to the model's input size) and, for a completion model, their ``sparse`` maps.
    ``scheme`` defaults to the architecture's measured one (:func:`scheme_for`);
    ``per_channel`` overrides its weight granularity, ``calibration`` its calibration method
    (:data:`CALIBRATIONS`); the method used is recorded in the file (:func:`calibration_of`). Every operator onnxruntime can quantize
    runs in int8 (convs, adds, muls, resizes): quantizing convs alone measured slower, because
    each conv then needs its own quantize/dequantize pair. The prediction conv and everything
    after it (sigmoid, depth mapping, final upsampling) stay float (see :func:`_output_tail`)."""
    if not images:
        raise DepthdataError("INT8 calibration needs at least one image")
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    scheme = scheme or scheme_for(fp32_path)
    if per_channel is not None:
        scheme = replace(scheme, per_channel=per_channel)
    if calibration is not None:
        scheme = replace(scheme, calibration=calibration)
    size = input_size(session(fp32_path))
    prepped = int8_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)

    def quantize(calibration: str) -> None:
        method, options = CALIBRATIONS[calibration]
        # onnxruntime's histogram calibrators print their progress: keep stdout for our output
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            quantize_static(str(prepped), str(int8_path), _Calibration(images, size, sparse),
                            quant_format=_FORMATS[scheme.quant_format], activation_type=QuantType.QUInt8,
                            weight_type=_WEIGHT_TYPES[scheme.weight_type], per_channel=scheme.per_channel,
                            calibrate_method=method, extra_options=options, nodes_to_exclude=_output_tail(prepped))
        log.debug("onnxruntime calibration: %s", printed.getvalue().strip())

    used = scheme.calibration
    try:
        try:
            quantize(used)
        except ValueError as exc:
            if used == "minmax":
                raise
            # onnxruntime's histograms (numpy, 2048 bins) cannot span an activation whose values
            # all but coincide, e.g. the subnormal floats an untrained model decays into:
            # "Too many bins for data range". The min-max range needs no histogram.
            log.warning("%s: %s calibration failed (%s); calibrating with minmax instead", fp32_path, used, exc)
            used = "minmax"
            quantize(used)
    finally:
        prepped.unlink(missing_ok=True)
    quantized = onnx.load(str(int8_path))
    onnx.helper.set_model_props(quantized, {**{p.key: p.value for p in quantized.metadata_props},
                                            CALIBRATION_KEY: used})
    onnx.save(quantized, str(int8_path))
    return int8_path


def calibration_of(path: str | Path) -> str | None:
    """The calibration method an INT8 file of :func:`quantize_int8` was calibrated with."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get(CALIBRATION_KEY)


def run(sess: ort.InferenceSession, batch: np.ndarray, sparse: np.ndarray | None = None) -> np.ndarray:
    """Output ``B×1×H×W`` of an exported model for an input batch ``B×3×H×W`` (0–255) and, for a
    completion model, ``sparse`` ``B×1×H×W`` metres."""
    inputs = {INPUT_NAME: batch.astype(np.float32, copy=False)}
    if sparse is not None:
        inputs[SPARSE_NAME] = sparse.astype(np.float32, copy=False)
    return sess.run([OUTPUT_NAME], inputs)[0]


def agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean AbsRel and δ<1.25 of ``other`` against ``reference`` depth maps (``H×W``; relative in
    (0, 1] or metres), after median scaling as in the contest's scoring."""
    abs_rel, delta1 = [], []
    for ref, out in zip(reference, other, strict=True):
        # Relative maps are unitless in (0, 1], completion maps metres: widen the metres-oriented
        # default range to cover the whole reference either way.
        m = metrics.evaluate(out, ref, align="median", min_depth=1e-6, max_depth=max(2.0, 2.0 * float(np.max(ref))))
        abs_rel.append(m["abs_rel"])
        delta1.append(m["delta1"])
    return {"abs_rel": float(np.mean(abs_rel)), "delta1": float(np.mean(delta1)), "images": len(abs_rel)}


def model_bytes(path: str | Path) -> int:
    return Path(path).stat().st_size


def export_fp32_int8(model: StudentNet, out_dir: str | Path, size: tuple[int, int], eps: float, store_url: str,
                     groups: Sequence[str] | None, calibration: int, version: int | None = None,
                     calibration_method: str | None = None) -> dict:
    """``out_dir/student_fp32.onnx`` and ``out_dir/student_int8.onnx`` of ``model`` at ``size``, INT8
    calibrated on ``calibration`` store samples (with their sparse LiDAR for completion models)
    by ``calibration_method`` (default: the architecture's scheme's).
    Returns the paths (``onnx_fp32``, ``onnx_int8``), their sizes (``bytes_fp32``, ``bytes_int8``)
    and ``int8_vs_fp32`` (:func:`agreement` on the calibration samples)."""
    out = Path(out_dir)
    size = tuple(size)
    fp32 = export_onnx(model, out / "student_fp32.onnx", size, eps)
    completion = "sparse" in model.inputs
    samples = list(store_inputs(store_url, groups, calibration, version, sparse=completion))
    int8 = quantize_int8(fp32, out / "student_int8.onnx", [x["rgb"] for x in samples],
                         sparse=[x["sparse"] for x in samples] if completion else None,
                         calibration=calibration_method)
    s32, s8 = session(fp32), session(int8)
    feeds = [feed(x["rgb"], size, x.get("sparse")) for x in samples]
    ref = [s32.run([OUTPUT_NAME], f)[0][0, 0] for f in feeds]
    q = [s8.run([OUTPUT_NAME], f)[0][0, 0] for f in feeds]
    return {"onnx_fp32": fp32, "onnx_int8": int8, "bytes_fp32": model_bytes(fp32), "bytes_int8": model_bytes(int8),
            "int8_vs_fp32": agreement(ref, q)}
