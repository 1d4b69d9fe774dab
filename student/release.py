"""An export folder with its model card: ONNX FP32/INT8, optionally ExecuTorch FP32/INT8,
optionally measured latency and held-out metrics, and ``model_card.{json,md}`` (:mod:`student.card`).

Folder layout (``depthdata student export``)::

    model.safetensors                  the exported weights (a copy of --model)
    student_fp32.onnx, student_int8.onnx   contest I/O, onnxruntime (static QDQ INT8)
    student_fp32.pte, student_int8.pte     with --phone: ExecuTorch + XNNPACK (PT2E INT8)
    model_card.json, model_card.md
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from student import card as cards
from student import export

#: file name → (runtime, precision) of what :func:`export_folder` writes
FILES = {"model.safetensors": ("pytorch", "fp32"), "student_fp32.onnx": ("onnxruntime", "fp32"),
         "student_int8.onnx": ("onnxruntime", "int8"), "student_fp32.pte": ("executorch-xnnpack", "fp32"),
         "student_int8.pte": ("executorch-xnnpack", "int8")}


def _pte_predictor(path: Path, size: tuple[int, int]):
    from student import evaluate as ev
    from student import phone

    pte = phone.PteModel(path)

    def predict(rgb: np.ndarray) -> np.ndarray:
        return ev._resize(pte(export.to_input(rgb, size))[0, 0], rgb.shape[:2])

    return predict


def _runner(path: Path, size: tuple[int, int], threads: int) -> Callable[[], object]:
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, *size)).astype(np.float32)
    if path.suffix == ".pte":
        from student import phone

        phone.set_threads(threads)
        pte = phone.PteModel(path)
        return lambda: pte(x)
    sess = export.session(path, threads)
    return lambda: export.run(sess, x)


def measure_latency(paths: Sequence[Path], size: tuple[int, int], threads: int = 2, repeats: int = 10,
                    warmup: int = 2) -> dict:
    """Median ms per file, batch 1; the files alternate run by run (drift hits all alike)."""
    import time

    runs = {p.name: _runner(p, size, threads) for p in paths if p.suffix in (".onnx", ".pte")}
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {"median_ms": {k: float(np.median(v)) for k, v in times.items()}, "threads": threads, "repeats": repeats,
            "batch": 1, "input_size": list(size), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}


def evaluate_files(paths: Sequence[Path], size: tuple[int, int], store_url: str, groups: Sequence[str] | None,
                   limit: int | None, eps: float) -> dict:
    """:func:`student.evaluate.evaluate` of each ONNX / ExecuTorch file on ``groups``."""
    from student import evaluate as ev

    out = {}
    for p in paths:
        if p.suffix == ".onnx":
            out[p.name] = ev.evaluate(ev.onnx_predictor(p), store_url, groups, limit, eps, False)
        elif p.suffix == ".pte":
            out[p.name] = ev.evaluate(_pte_predictor(p, size), store_url, groups, limit, eps, False)
    return out


def export_folder(model_path: str | Path, out_dir: str | Path, size: tuple[int, int], eps: float, store_url: str,
                  groups: Sequence[str] | None, calibration: int, phone: bool = False,
                  held_out: Sequence[str] | None = None, limit: int | None = None, latency: bool = False,
                  threads: int = 2, repeats: int = 10) -> dict:
    """Write the folder (module doc) and its card; returns the card."""
    from student.checkpoint import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    weights = out / "model.safetensors"
    if Path(model_path).resolve() != weights.resolve():
        shutil.copyfile(model_path, weights)
    result = export.export_fp32_int8(model, out, size, eps, store_url, groups, calibration)
    quant = [{"file": "student_int8.onnx", "method": "onnxruntime static QDQ", "weights": "int8 per-channel",
              "activations": "uint8 per-tensor, MinMax", "calibration_images": calibration,
              "calibration_groups": list(groups) if groups else "all", "float_tail": "prediction conv onwards",
              "int8_vs_fp32_on_calibration": result["int8_vs_fp32"]}]
    if phone:
        from student import phone as ph

        ph.export_pte(model, out / "student_fp32.pte", size, eps)
        images = [x["rgb"] for x in export.store_inputs(store_url, groups, calibration)]
        ph.export_pte(model, out / "student_int8.pte", size, eps, calibration=images)
        x = [export.to_input(images[0], size)]
        quant.append({"file": "student_int8.pte", "method": "PT2E XNNPACKQuantizer (post-training)",
                      "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor",
                      "calibration_images": len(images)})
        diffs = {"student_fp32.pte": ph.max_abs_diff(model, ph.PteModel(out / "student_fp32.pte"), x, eps),
                 "student_int8.pte": ph.max_abs_diff(model, ph.PteModel(out / "student_int8.pte"), x, eps)}
    return write_card_for(model_path, out, size, eps, store_url, held_out, limit, latency, threads, repeats, quant,
                          extra={"phone_max_abs_diff_vs_pytorch": diffs} if phone else None)


def write_card_for(model_path: str | Path, out_dir: str | Path, size: tuple[int, int], eps: float,
                   store_url: str | None, held_out: Sequence[str] | None = None, limit: int | None = None,
                   latency: bool = False, threads: int = 2, repeats: int = 10, quantization: Sequence[dict] = (),
                   extra: dict | None = None) -> dict:
    """The card of the files of :data:`FILES` present in ``out_dir`` (measuring latency and
    held-out metrics when asked), written to ``out_dir``."""
    out = Path(out_dir)
    previous = out / cards.CARD_JSON
    if not quantization and previous.is_file():  # a rebuilt card keeps what the export recorded
        import json

        old = json.loads(previous.read_text())
        quantization = [{k: v for k, v in s.items() if k != "kind"} for s in old.get("steps", [])
                        if s.get("kind") == "quantization"]
        if extra is None and "phone_max_abs_diff_vs_pytorch" in old:
            extra = {"phone_max_abs_diff_vs_pytorch": old["phone_max_abs_diff_vs_pytorch"]}
    present = [out / name for name in FILES if (out / name).is_file()]
    entries = [cards.artefact(p, out, *FILES[p.name]) for p in present]
    lat = measure_latency(present, size, threads, repeats) if latency else None
    mets = evaluate_files(present, size, store_url, held_out, limit, eps) if held_out and store_url else None
    card = cards.build_card(model_path, out, entries, size, eps, store_url, held_out, mets, limit, lat,
                            quantization, extra)
    cards.write_card(card, out)
    return card
