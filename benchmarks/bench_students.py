"""The student architectures side by side: each one of the registry (:mod:`student.arch`)
trained with the same budget on one store labelled by the learned demo teacher, then measured
on held-out data (issue #18, item 6).

1. Render rooms (NYU format) and streets (SYNTHIA format) with exact depth, a training and an
   evaluation set from seeds the demo teacher never saw (:mod:`benchmarks.bench_distill`'s
   helpers); the evaluation renders also give a DIW test split, ``PAIRS_PER_IMAGE`` ordinal
   pairs per render sampled from the exact depth (DIW's format holds one pair per image, so an
   image repeats once per pair).
2. ``depthdata build`` (the real flows): ingest + teacher (``depthdata/demo-teacher``) + LiDAR
   synthesis (the catalog's default beam model, ``hdl64e``, on the exact depth) for rooms and
   streets; ingest for the DIW split.
3. Every architecture trains ``STEPS`` steps of batch ``BATCH`` at the stored 120×160 on the
   training rooms and streets, AdamW at a constant 1e-3, seed 0, one torch thread. Disparity
   models learn from the teacher only (``ssi`` + 0.5 ``grad``); ``completion`` reads the store's
   synthesized sparse LiDAR as its second input and trains on DMD3C's stage-2 terms (``ssi`` +
   0.5 ``grad`` to the teacher + 0.1 ``sparse`` L1 in metres on the returns).
4. Size of the deployed graph at 480×640 (:func:`student.arch.profile`: parameters, MACs);
   FP32 ONNX latency at 480×640, batch 1, onnxruntime with 2 threads, the models alternating
   (A B C … A B C …) after a warm-up, median over ``REPEATS``; AbsRel / δ1 of the FP32 ONNX
   export (stored size) on the evaluation rooms and streets with the affine-invariant protocol
   (``student.evaluate``, GT in (1e-3, 80] m, mean over images of both groups); WHDR on the DIW
   split (not for ``completion``: DIW images have no LiDAR). The teacher's stored labels and the
   best constant are scored on the same images (:func:`benchmarks.bench_distill._teacher_and_constant`).

``PAPERS`` holds what each architecture's source reports, for the table beside ours
(:func:`table`; ``python -m benchmarks.bench_students --table`` prints it from
``results/students.json``). Run: ``python -m benchmarks.bench_students [--work DIR]`` (about
10 minutes on 2 shared cores; a killed run resumes from ``--work``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import yaml

from benchmarks.bench_distill import (EVAL_SCENES, EVAL_SEED, MAX_DEPTH_M, RENDER, STORED, TRAIN_SEED, _catalog,
                                      _teacher_and_constant, _write_set)
from benchmarks.harness import RESULTS_DIR, alternate, goal, summary, write
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID, DEMO_WEIGHTS_DIR, LINEAGE_FILE

SIZE = (480, 640)
#: training scenes per kind (the first 64 of bench_distill's, same seed): the budget, not the
#: data, limits these runs, and fewer scenes keep the build short
TRAIN_SCENES = 64
STEPS = 240
BATCH = 4
LR = 1e-3
THREADS = 1  # torch while training and evaluating
ORT_THREADS = 2  # onnxruntime while timing
REPEATS = 10
PAIRS_PER_IMAGE = 4
TRAIN_GROUPS = ["rooms/train", "streets/train"]
EVAL_GROUPS = ["eval_rooms/train", "eval_streets/train"]
DIW_GROUP = "eval_diw/test"
LOSSES = {
    "disparity": {"terms": [{"name": "ssi", "weight": 1.0}, {"name": "grad", "weight": 0.5}]},
    "depth": {"terms": [{"name": "ssi", "weight": 1.0}, {"name": "grad", "weight": 0.5},
                        {"name": "sparse", "weight": 0.1}]},
}

#: what each architecture's source reports (``None``: the source gives no such figure); ``data``
#: and ``note`` say on what, so that nobody reads them as comparable to ours
PAPERS: dict[str, dict[str, Any]] = {
    "fpn-mnv3s": {"source": "this project's original student (no paper)", "params_m": None, "whdr": None,
                  "note": "no published figures"},
    "lpcvc-mnv3s": {"source": "LPCVC 2025 Track 3 report", "params_m": None, "whdr": None,
                    "note": "the report's figures are not in the docs or docstrings and were not checked offline"},
    "resnet18-unet": {"source": "LPCVC 2025 Track 3 report (baseline)", "params_m": None, "whdr": None,
                      "note": "as lpcvc-mnv3s"},
    "mnv2-fbnet": {"source": "Yucel et al., CVPRW 2021 (arXiv 2105.12053)", "params_m": 2.6, "whdr": 0.1156,
                   "note": "WHDR on the DIW test set, trained on DIW only (~421k images, one pair each), with "
                           "distillation, intermediate heads and loss rebalancing; 37 FPS on a mobile GPU; "
                           "pruned: 1.0 M parameters, WHDR 0.1208"},
    "completion": {"source": "DMD3C, Liang et al., CVPR 2025 (recipe); network after Jaritz et al. 3DV 2018",
                   "params_m": None, "whdr": None,
                   "note": "DMD3C reports KITTI / NYUv2 depth completion with a BP-Net-sized network (first on "
                           "the KITTI leaderboard); no figure for a network of this size"},
}


def _catalog_with_diw(tmp: Path, train: dict[str, str], evaluation: dict[str, str]) -> Path:
    """bench_distill's catalog plus the DIW split and its own store name."""
    path = _catalog(tmp, train, evaluation)
    doc = yaml.safe_load(path.read_text())
    doc["store"]["url"] = str(tmp / "students.zarr")
    doc["datasets"]["eval_diw"] = {"kind": "diw", "root": evaluation["diw"], "resolution": list(STORED),
                                   "resize": "fit_pad", "splits": ["test"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _build(cat: Path) -> str:
    from flows.build import build
    from flows.runner import prefect_api

    dense = ["rooms", "streets", "eval_rooms", "eval_streets"]
    with prefect_api():
        summary_ = build(str(cat), only=dense, stages=["ingest", "teacher", "lidar"])
        if not summary_.ok:
            raise SystemExit(f"build failed:\n{summary_.to_text()}")
        pairs = build(str(cat), only=["eval_diw"], stages=["ingest"])
        if not pairs.ok:
            raise SystemExit(f"build failed:\n{pairs.to_text()}")
    return summary_.store_url


def _pooled(per_group: dict[str, dict], key: str = "affine_invariant") -> dict[str, float]:
    n = sum(g[key]["images"] for g in per_group.values())
    return {m: sum(g[key][m] * g[key]["images"] for g in per_group.values()) / n for m in ("abs_rel", "delta1")} | \
        {"images": n}


def main(work: str | None = None) -> None:
    from student import evaluate as ev
    from student import export
    from student.arch import StudentConfig, architectures, profile
    from student.losses import LossConfig
    from student.train import TrainConfig, train

    torch.set_num_threads(THREADS)
    tmp = Path(work).resolve() if work else Path(tempfile.mkdtemp(prefix="bench-students-"))
    clock = {"start": time.perf_counter()}
    archs = sorted(architectures())
    rows: dict[str, dict[str, Any]] = {}
    try:
        cat = tmp / "catalog.yaml"
        if not cat.is_file():  # written last, after the data it reads
            tmp.mkdir(parents=True, exist_ok=True)
            cat = _catalog_with_diw(tmp, _write_set(tmp / "train", TRAIN_SEED, TRAIN_SCENES),
                                    _write_set(tmp / "eval", EVAL_SEED, EVAL_SCENES, diw_pairs=PAIRS_PER_IMAGE))
        clock["render"] = time.perf_counter()
        store = _build(cat)
        clock["build"] = time.perf_counter()
        reference = _teacher_and_constant(store, EVAL_GROUPS)
        latency_paths: dict[str, Path] = {}
        for name in archs:
            t0 = time.perf_counter()
            cls = architectures()[name]
            cfg = TrainConfig(store_url=store, out_dir=str(tmp / name), groups=TRAIN_GROUPS, steps=STEPS,
                              batch_size=BATCH, lr=LR, seed=0, checkpoint_every=STEPS // 4, log_every=40,
                              model=StudentConfig(arch=name), loss=LossConfig.from_dict(LOSSES[cls.output]))
            state = Path(cfg.out_dir) / "checkpoint" / "state.pt"
            resumed = int(torch.load(state, weights_only=True)["step"]) if state.is_file() else 0
            trained = train(cfg, progress=False)
            t1 = time.perf_counter()
            model = trained.model.drop_aux_heads().eval()
            stored_onnx = export.export_onnx(model, tmp / f"{name}_stored.onnx", STORED)
            latency_paths[name] = export.export_onnx(model, tmp / f"{name}_480x640.onnx", SIZE)
            predict = ev.onnx_predictor(stored_onnx, THREADS)
            per_group = ev.evaluate(predict, store, EVAL_GROUPS, progress=False, max_depth=MAX_DEPTH_M)
            whdr = None
            if "sparse" not in cls.inputs:
                whdr = ev.evaluate(predict, store, [DIW_GROUP], progress=False)[DIW_GROUP]
            p = profile(cls, StudentConfig(arch=name), SIZE)
            rows[name] = {"params": p.params, "macs": p.macs, "output": cls.output, "inputs": list(cls.inputs),
                          "affine_invariant": _pooled(per_group),
                          "per_group": {g: {m: v["affine_invariant"][m] for m in ("abs_rel", "delta1")}
                                        for g, v in per_group.items()},
                          "whdr": None if whdr is None else whdr["whdr"],
                          "pairs": None if whdr is None else whdr["pairs"],
                          "loss_first": trained.losses[0], "loss_last": trained.losses[-1],
                          "train_seconds": round(t1 - t0, 1), "resumed_at_step": resumed,
                          "eval_seconds": round(time.perf_counter() - t1, 1)}
            print(f"{name}: {rows[name]['affine_invariant']} whdr {rows[name]['whdr']} "
                  f"train {rows[name]['train_seconds']} s", flush=True)
        clock["train_evaluate"] = time.perf_counter()
        sessions = {name: export.session(p, ORT_THREADS) for name, p in latency_paths.items()}
        torch.manual_seed(0)
        feeds = {}
        for name in archs:
            inputs = architectures()[name](StudentConfig(arch=name)).example_inputs(SIZE)
            feeds[name] = (inputs[0].numpy() * 255, inputs[1].numpy() if len(inputs) > 1 else None)
        times = alternate({name: (lambda s=s, f=feeds[name]: export.run(s, *f)) for name, s in sessions.items()},
                          repeats=REPEATS, warmup=1)
        clock["latency"] = time.perf_counter()
    finally:
        if not work:
            shutil.rmtree(tmp, ignore_errors=True)

    results = []
    for name in archs:
        r, lat = rows[name], summary(f"{name} ort_fp32_480x640", [t * 1000 for t in times[name]], "ms/image")
        r["latency_ms"] = lat["median"]
        results += [
            {"case": f"{name} params", "median": r["params"] / 1e6, "min": r["params"] / 1e6,
             "max": r["params"] / 1e6, "unit": "M"},
            {"case": f"{name} macs_480x640", "median": r["macs"] / 1e9, "min": r["macs"] / 1e9,
             "max": r["macs"] / 1e9, "unit": "GMACs"},
            lat,
            *({"case": f"{name} affine_invariant {m}", "median": r["affine_invariant"][m],
               "min": r["affine_invariant"][m], "max": r["affine_invariant"][m], "unit": u}
              for m, u in (("abs_rel", "AbsRel"), ("delta1", "δ1"))),
        ]
        if r["whdr"] is not None:
            results.append({"case": f"{name} whdr", "median": r["whdr"], "min": r["whdr"], "max": r["whdr"],
                            "unit": "WHDR"})
    for model in ("teacher", "constant"):
        for m, u in (("abs_rel", "AbsRel"), ("delta1", "δ1")):
            v = reference[model][m]
            results.append({"case": f"{model} affine_invariant {m}", "median": v, "min": v, "max": v, "unit": u})
    t_abs = reference["teacher"]["abs_rel"]
    goals = [goal("mnv2-fbnet params / paper's 2.6 M", rows["mnv2-fbnet"]["params"] / 2.6e6, "<= 1.05"),
             *(goal(f"{name} AbsRel / teacher AbsRel", rows[name]["affine_invariant"]["abs_rel"] / t_abs, "<= 1.25")
               for name in archs)]
    lineage = json.loads((DEMO_WEIGHTS_DIR / LINEAGE_FILE).read_text())
    marks = list(clock)
    write("students", {
        "scenes": {"train": {"rooms": TRAIN_SCENES, "streets": TRAIN_SCENES},
                   "eval": {"rooms": EVAL_SCENES, "streets": EVAL_SCENES,
                            "diw_pairs": 2 * EVAL_SCENES * PAIRS_PER_IMAGE}},
        "seeds": {"train": TRAIN_SEED, "eval": EVAL_SEED}, "render": list(RENDER), "stored": list(STORED),
        "teacher": {"model": DEMO_TEACHER_ID, "weights_sha256": lineage["weights_sha256"], "tta": True},
        "budget": {"steps": STEPS, "batch": BATCH, "optimizer": "adamw", "lr": LR, "schedule": "constant",
                   "size": list(STORED), "torch_threads": THREADS, "seed": 0},
        "losses": LOSSES, "lidar": "catalog default (hdl64e) on the exact depth",
        "latency": {"height": SIZE[0], "width": SIZE[1], "batch": 1, "ort_threads": ORT_THREADS,
                    "repeats": REPEATS, "precision": "fp32"},
        "protocol": ev.PROTOCOLS["affine_invariant"] + f"; scale kept >= 0; GT in (1e-3, {MAX_DEPTH_M:g}] m; "
                    "mean over the images of both evaluation groups",
        "reference": reference, "architectures": rows, "papers": PAPERS,
        "seconds": {b: round(clock[b] - clock[a], 1) for a, b in zip(marks, marks[1:])},
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
    }, results, goals, onnxruntime=ort.__version__, onnxruntime_threads=str(ORT_THREADS))
    print("\n".join(table()))


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def table(path: Path = RESULTS_DIR / "students.json") -> list[str]:
    """The comparison table (Markdown) of a ``students.json``: ours beside the papers' figures."""
    doc = json.loads(Path(path).read_text())
    p = doc["params"]
    lines = ["| architecture | params | GMACs 480×640 | ORT FP32 ms (2 thr) | AbsRel ↓ | δ1 ↑ | WHDR ↓ | "
             "paper: params · WHDR |", "|---|---|---|---|---|---|---|---|"]
    for name, r in p["architectures"].items():
        paper = p["papers"].get(name, {})
        ref = " · ".join(x for x in (f"{paper['params_m']} M" if paper.get("params_m") else "",
                                     f"{paper['whdr']} (DIW)" if paper.get("whdr") else "") if x) or "—"
        lines.append(f"| `{name}` | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e9:.2f} | {r['latency_ms']:.0f} | "
                     f"{r['affine_invariant']['abs_rel']:.3f} | {r['affine_invariant']['delta1']:.3f} | "
                     f"{_num(r['whdr'], '.3f')} | {ref} |")
    for name in ("teacher", "constant"):
        m = p["reference"][name]
        lines.append(f"| {name} (reference) | | | | {m['abs_rel']:.3f} | {m['delta1']:.3f} | | |")
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="keep the data, store and students here, and resume a killed run from them")
    parser.add_argument("--table", action="store_true", help="only print the table of results/students.json")
    # parse_known_args: run_all runs every script with its own command line (benchmark names)
    args = parser.parse_known_args()[0]
    if args.table:
        print("\n".join(table()))
    else:
        main(args.work)
