"""Student export latency on CPU at the contest size (480×640, batch 1), side by side:

* INT8 ONNX vs FP32 ONNX of the same (unpruned) student — goal: INT8 ≥ 1.5× faster;
* pruned FP32 (30% of channels removed, the pipeline default) vs unpruned FP32 — goal ≥ 1.5×
  (30% fewer channels per layer leaves about half the MACs);
* the same pair for the ``int8_friendly`` encoder (ReLU, no squeeze-excitation);
* the pipeline's actual artefact, pruned INT8, for reference.

Weights are random (latency does not depend on their values); INT8 is calibrated on smooth
synthetic images. onnxruntime runs with 2 intra-op threads. Run: ``python -m benchmarks.bench_student``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch_pruning as tp

from benchmarks.harness import alternate, goal, summary, write
from student import export
from student.checkpoint import param_count
from student.model import Student, StudentConfig
from student.prune import prune

SIZE = (480, 640)
THREADS = 2
REPEATS = 40
PRUNE_RATIO = 0.3


def _calibration_images(n: int = 8) -> list[np.ndarray]:
    """Smooth gradients plus noise: activation ranges like a photo's, not like white noise's."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]] / np.array(SIZE).reshape(2, 1, 1)
    out = []
    for _ in range(n):
        base = rng.uniform(0, 1, 3)[None, None] * (yy[..., None] * rng.uniform(0.5, 1) + xx[..., None] * rng.uniform(0, 0.5))
        out.append(np.clip(base * 255 + rng.normal(0, 12, (*SIZE, 3)), 0, 255).astype(np.uint8))
    return out


def _variant(d: Path, tag: str, model: Student, images: list[np.ndarray]) -> dict[str, Path]:
    fp32 = export.export_onnx(model, d / f"{tag}fp32.onnx", SIZE)
    return {f"{tag}fp32": fp32, f"{tag}int8": export.quantize_int8(fp32, d / f"{tag}int8.onnx", images)}


def main() -> None:
    torch.manual_seed(0)
    images = _calibration_images()
    example = torch.rand(1, 3, *SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = Student().eval()
        params_full = param_count(model)
        macs_full, _ = tp.utils.count_ops_and_params(model, example)
        minimal = Student(StudentConfig(int8_friendly=True)).eval()
        macs_min, params_min = tp.utils.count_ops_and_params(minimal, example)
        paths = _variant(d, "", model, images) | _variant(d, "minimal_", minimal, images)
        pruned, report = prune(model, PRUNE_RATIO, input_size=SIZE)
        paths |= _variant(d, "pruned_", pruned, images)
        sizes = {name: export.model_bytes(p) for name, p in paths.items()}
        sessions = {name: export.session(p, THREADS) for name, p in paths.items()}
        x = export.to_input(images[0], SIZE)
        agree = {tag: export.agreement([export.run(sessions[f"{tag}fp32"], x)[0, 0]],
                                       [export.run(sessions[f"{tag}int8"], x)[0, 0]])["abs_rel"]
                 for tag in ("", "minimal_", "pruned_")}
        times = alternate({name: (lambda s=s: export.run(s, x)) for name, s in sessions.items()},
                          repeats=REPEATS, warmup=2)
    results = [summary(name, [t * 1000 for t in ts], "ms/image") for name, ts in times.items()]
    med = {r["case"]: r["median"] for r in results}
    goals = [
        goal("fp32 / int8 latency (mobilenet_v3_small)", med["fp32"] / med["int8"], ">= 1.5"),
        goal("minimal_fp32 / minimal_int8 latency (int8_friendly encoder)", med["minimal_fp32"] / med["minimal_int8"],
             ">= 1.5"),
        goal("fp32 / pruned_fp32 latency", med["fp32"] / med["pruned_fp32"], ">= 1.5"),
    ]
    params = {"height": SIZE[0], "width": SIZE[1], "batch": 1, "threads": THREADS, "repeats": REPEATS,
              "encoder": "mobilenet_v3_small", "decoder_channels": 32, "prune_ratio": PRUNE_RATIO,
              "params": {"unpruned": params_full, "pruned": report.params_after, "minimal": int(params_min)},
              "macs": {"unpruned": int(macs_full), "pruned": report.macs_after, "minimal": int(macs_min)},
              "bytes": sizes, "int8_vs_fp32_abs_rel_random_weights": agree,
              "fp32_over_pruned_int8": round(med["fp32"] / med["pruned_int8"], 4)}
    write("student", params, results, goals, onnxruntime=ort.__version__, quantization=f"static QDQ, per-channel, {export.DEFAULT_SCHEME.calibration} calibration")


if __name__ == "__main__":
    main()
