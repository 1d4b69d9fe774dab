"""An export folder with its model card: ONNX FP32/INT8, optionally ExecuTorch FP32/INT8,
optionally measured latency and held-out metrics, and ``model_card.{json,md}`` (:mod:`student.card`).

Folder layout (``depthdata student export``)::

    model.safetensors                  the exported weights (a copy of --model)
    student_fp32.onnx, student_int8.onnx   contest I/O, onnxruntime (static INT8, export.INT8_SCHEMES)
    student_fp32.pte, student_int8.pte     with --phone: ExecuTorch + XNNPACK (PT2E INT8)
    model_card.json, model_card.md
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from depthdata.errors import DepthdataError
from student import card as cards
from student import export
from student.latency import Clock, alternate_ms

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
    """One batch-1 run of an artefact on its runtime: ``.onnx`` (onnxruntime), ``.pte``
    (ExecuTorch) or ``.safetensors`` (PyTorch eager, the contest graph), with ``threads`` threads,
    fed every input the artefact takes (a completion student's sparse map too)."""
    if path.suffix == ".pte":
        from student import phone

        phone.set_threads(threads)
        pte = phone.PteModel(path)
        xs = export.random_inputs(size, pte.method.metadata.num_inputs() > 1)
        return lambda: pte(*xs)
    if path.suffix == ".safetensors":
        import torch

        from student.checkpoint import load_model
        from student.model import export_wrapper

        model = load_model(path).eval()
        wrapper = export_wrapper(model).eval()
        xt = [torch.from_numpy(a) for a in export.random_inputs(size, "sparse" in model.inputs)]

        def run() -> object:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return wrapper(*xt)
            finally:
                torch.set_num_threads(previous)

        return run
    sess = export.session(path, threads)
    xs = export.random_inputs(size, export.takes_sparse(sess))
    return lambda: export.run(sess, *xs)


#: how a latency row names an ONNX file run by OpenVINO instead of onnxruntime
OPENVINO_SUFFIX = " (openvino)"


def measure_latency(paths: Sequence[Path], size: tuple[int, int], threads: int = 2, repeats: int = 10,
                    warmup: int = 2, clock: Clock = time.perf_counter, torch_too: bool = False,
                    openvino: bool = False) -> dict:
    """Median ms per file (``.onnx``, ``.pte``; and ``.safetensors`` with ``torch_too``; with
    ``openvino`` also each ``.onnx`` file in OpenVINO, named ``<file> (openvino)``), batch 1;
    the runs alternate (:func:`student.latency.alternate_ms`)."""
    from student import openvino_runtime

    if openvino and not openvino_runtime.available():
        raise DepthdataError("--openvino needs the openvino extra: pip install -e '.[openvino]'")
    kinds = (".onnx", ".pte", ".safetensors") if torch_too else (".onnx", ".pte")
    runs = {p.name: _runner(p, size, threads) for p in paths if p.suffix in kinds}
    if openvino:
        for p in paths:
            if p.suffix == ".onnx":
                xs = export.random_inputs(size, export.takes_sparse(export.session(p)))
                runs[p.name + OPENVINO_SUFFIX] = openvino_runtime.runner(p, xs, threads)
    return {"median_ms": alternate_ms(runs, repeats, warmup, clock), "threads": threads, "repeats": repeats,
            "batch": 1, "input_size": list(size), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}


def bench_folder(out_dir: str | Path, size: tuple[int, int] | None = None, threads: int = 2, repeats: int = 10,
                 warmup: int = 2, clock: Clock = time.perf_counter, openvino: bool = False) -> dict:
    """Latency of every artefact of an export folder (:data:`FILES`: PyTorch, onnxruntime,
    ExecuTorch; FP32 and INT8; with ``openvino`` also the ONNX files in OpenVINO), alternating,
    with the ratios that compare them: ``fp32_over_int8`` per runtime (> 1: INT8 is faster) and
    ``speedup_vs_reference`` of each run against ``student_fp32.onnx`` in onnxruntime (the
    contest's reference runtime and precision). A row's ``run`` names the file and, when it is
    not the file's usual runtime, the runtime."""
    out = Path(out_dir)
    present = [out / name for name in FILES if (out / name).is_file()]
    if not any(p.suffix in (".onnx", ".pte") for p in present):
        raise DepthdataError(f"{out}: no exported model (student_*.onnx / student_*.pte) to time")
    if size is None:
        onnx_files = [p for p in present if p.suffix == ".onnx"]
        if not onnx_files:
            raise DepthdataError(f"{out}: give the input size (no ONNX file to read it from)")
        size = export.input_size(export.session(onnx_files[0]))
    lat = measure_latency(present, size, threads, repeats, warmup, clock, torch_too=True, openvino=openvino)
    med = lat["median_ms"]
    rows = []
    for run, ms in med.items():
        name = run.removesuffix(OPENVINO_SUFFIX)
        runtime = "openvino" if run != name else FILES[name][0]
        rows.append({"run": run, "file": name, "runtime": runtime, "precision": FILES[name][1], "ms": ms})
    by = {(r["runtime"], r["precision"]): r["ms"] for r in rows}
    ratios = {rt: by[(rt, "fp32")] / by[(rt, "int8")] for rt, prec in by if prec == "int8" and (rt, "fp32") in by}
    ref = med.get("student_fp32.onnx")
    for r in rows:
        r["speedup_vs_reference"] = ref / r["ms"] if ref else None
    fp32s = [r for r in rows if r["precision"] == "fp32"]
    int8s = [r for r in rows if r["precision"] == "int8"]
    best = None
    if fp32s and int8s:
        b32, b8 = min(fp32s, key=lambda r: r["ms"]), min(int8s, key=lambda r: r["ms"])
        best = {"fp32": b32["run"], "int8": b8["run"], "fp32_over_int8": b32["ms"] / b8["ms"]}
    return {"rows": rows, "fp32_over_int8": ratios, "best": best, "reference": "student_fp32.onnx" if ref else None,
            **{k: v for k, v in lat.items() if k != "median_ms"}}


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
                  threads: int = 2, repeats: int = 10, openvino: bool = False,
                  calibration_method: str | None = None) -> dict:
    """Write the folder (module doc) and its card; returns the card."""
    from student.checkpoint import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    weights = out / "model.safetensors"
    if Path(model_path).resolve() != weights.resolve():
        shutil.copyfile(model_path, weights)
    result = export.export_fp32_int8(model, out, size, eps, store_url, groups, calibration,
                                     calibration_method=calibration_method)
    scheme = export.scheme_for(result["onnx_fp32"])
    quant = [{"file": "student_int8.onnx", "method": f"onnxruntime static {scheme.quant_format.upper()}",
              "weights": f"{scheme.weight_type} {'per-channel' if scheme.per_channel else 'per-tensor'}",
              "activations": f"uint8 per-tensor, {export.calibration_of(result['onnx_int8'])} calibration", "calibration_images": calibration,
              "calibration_groups": list(groups) if groups else "all", "float_tail": "prediction conv onwards",
              "int8_vs_fp32_on_calibration": result["int8_vs_fp32"]}]
    if phone:
        from student import phone as ph

        ph.export_pte(model, out / "student_fp32.pte", size, eps)
        completion = "sparse" in model.inputs
        samples = list(export.store_inputs(store_url, groups, calibration, sparse=completion))
        images = [x["rgb"] for x in samples]
        ph.export_pte(model, out / "student_int8.pte", size, eps, calibration=images,
                      sparse=[x["sparse"] for x in samples] if completion else None)
        x = [tuple(export.feed(samples[0]["rgb"], size, samples[0].get("sparse")).values())]
        quant.append({"file": "student_int8.pte", "method": "PT2E XNNPACKQuantizer (post-training)",
                      "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor",
                      "calibration_images": len(images)})
        diffs = {"student_fp32.pte": ph.max_abs_diff(model, ph.PteModel(out / "student_fp32.pte"), x, eps),
                 "student_int8.pte": ph.max_abs_diff(model, ph.PteModel(out / "student_int8.pte"), x, eps)}
    return write_card_for(model_path, out, size, eps, store_url, held_out, limit, latency, threads, repeats, quant,
                          extra={"phone_max_abs_diff_vs_pytorch": diffs} if phone else None, openvino=openvino)


def write_card_for(model_path: str | Path, out_dir: str | Path, size: tuple[int, int], eps: float,
                   store_url: str | None, held_out: Sequence[str] | None = None, limit: int | None = None,
                   latency: bool = False, threads: int = 2, repeats: int = 10, quantization: Sequence[dict] = (),
                   extra: dict | None = None, openvino: bool = False) -> dict:
    """The card of the files of :data:`FILES` present in ``out_dir`` (measuring latency — with
    ``openvino`` also the ONNX files in OpenVINO — and held-out metrics when asked), written to
    ``out_dir``."""
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
    lat = measure_latency(present, size, threads, repeats, openvino=openvino) if latency else None
    mets = evaluate_files(present, size, store_url, held_out, limit, eps) if held_out and store_url else None
    card = cards.build_card(model_path, out, entries, size, eps, store_url, held_out, mets, limit, lat,
                            quantization, extra)
    cards.write_card(card, out)
    return card
