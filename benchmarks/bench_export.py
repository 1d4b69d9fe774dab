"""Student compression and export, side by side: latency, size and held-out accuracy per runtime.

Data: rendered rooms with exact depth (``depthdata.demo``, 120×160): a training store whose
``teacher`` field is the exact disparity, min–max normalised (an oracle teacher: this benchmark
measures compression, not distillation), and a held-out set of other seeds. The student
(``lpcvc-mnv3s`` by default) is trained on it, then pruned **to a MAC target** (a third of the
unpruned MACs, NetAdapt-style steps, ``student.prune_target``) and fine-tuned. Everything is
exported at the contest size 480×640 (the 120×160 images are upsampled to it, as a phone camera
frame would be downsampled).

Cases per model (unpruned, pruned): PyTorch eager FP32; onnxruntime FP32; onnxruntime INT8
static QDQ (calibrated on training images); onnxruntime INT8 after PT2E quantization-aware
fine-tuning (unpruned only, ``--qat-steps``); ExecuTorch + XNNPACK FP32 and INT8 (extra
``phone``; left out when not installed). All run batch 1 with 2 threads, **alternating**
(A B C … A B C …) after a warm-up; medians compared. Accuracy: AbsRel and δ1 on the held-out
renders under the ``affine_invariant`` protocol (``student.evaluate``), per case.

Goals (issue #19): for each model, best INT8 path ≥ 1.5× faster than its best FP32 path at
≤ 2 % relative AbsRel loss; some pruned + INT8 case ≥ 3× faster than unpruned FP32 (the ORT
FP32 case of the unpruned ``lpcvc-mnv3s``) at AbsRel ≤ 1.1× its AbsRel.

Run: ``python -m benchmarks.bench_export [--repeats 15] [--train-steps 200]`` (about 4 minutes
on a quiet 2-core machine; 21 under a load average of 6).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.harness import alternate, goal, summary, write
from depthdata.demo.data import _rooms
from depthdata.store import Store
from student import evaluate as ev
from student import export, phone, qat
from student.arch import count_macs, count_params
from student.checkpoint import save_model
from student.prune_target import Target, prune_to_target
from student.train import TrainConfig, train

SIZE = (480, 640)
RENDER = (120, 160)
THREADS = 2


def _store(url: str, renders, shard: int = 8) -> str:
    store = Store.create(url)
    n = len(renders)
    g = store.create_group("rooms", "train", [f"rooms/train/{i:03d}" for i in range(n)],
                           [f"/render/{i}" for i in range(n)], *RENDER, shard)
    g.ensure_fields(["rgb", "depth", "teacher", "teacher_conf"])
    for k in range(g.num_shards):
        idx = list(g.shard_range(k))
        depth = np.stack([renders[i].depth for i in idx])
        disp = np.where(np.isfinite(depth), 1 / np.nan_to_num(depth, nan=np.inf), 0)
        lo, hi = disp.min(axis=(1, 2), keepdims=True), disp.max(axis=(1, 2), keepdims=True)
        ok = [{"status": "ok"} for _ in idx]
        g.write_shard(k, "ingest", {"rgb": np.stack([renders[i].rgb for i in idx]), "depth": depth}, ok)
        g.write_shard(k, "teacher", {"teacher": ((disp - lo) / (hi - lo)).astype(np.float32),
                                     "teacher_conf": np.ones_like(depth, dtype=np.float32)}, ok)
    return url


def _accuracy(predict, held_out) -> dict[str, float]:
    rows = []
    for r in held_out:
        pred = predict(r.rgb)
        # as student.evaluate's affine_invariant protocol: the output (relative depth) back to disparity
        rows.append(ev.metrics.evaluate(1.0 / pred, r.depth, align="scale_shift_disparity", max_depth=80.0,
                                        positive_scale=True, on_empty="nan"))
    return {"abs_rel": float(np.nanmean([m["abs_rel"] for m in rows])),
            "delta1": float(np.nanmean([m["delta1"] for m in rows]))}


def _onnx_case(path: Path):
    sess = export.session(path, THREADS)
    return sess, (lambda rgb: ev._resize(export.run(sess, export.to_input(rgb, SIZE))[0, 0], rgb.shape[:2]))


def _pte_case(path: Path):
    model = phone.PteModel(path)
    return model, (lambda rgb: ev._resize(model(export.to_input(rgb, SIZE))[0, 0], rgb.shape[:2]))


def _torch_case(model):
    from student.model import export_wrapper

    wrapper = export_wrapper(model.eval()).eval()

    def predict(rgb):
        with torch.inference_mode():
            return ev._resize(wrapper(torch.from_numpy(export.to_input(rgb, SIZE)))[0, 0].numpy(), rgb.shape[:2])
    return wrapper, predict


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="lpcvc-mnv3s", help="student architecture (default lpcvc-mnv3s)")
    p.add_argument("--repeats", type=int, default=15, help="alternating timed rounds (default 15)")
    p.add_argument("--train-steps", type=int, default=200, help="training steps at 120x160 (default 200)")
    p.add_argument("--finetune-steps", type=int, default=100, help="fine-tune steps after pruning (default 100)")
    p.add_argument("--qat-steps", type=int, default=40, help="quantization-aware fine-tuning steps (default 40)")
    p.add_argument("--mac-fraction", type=float, default=1 / 3, help="pruning MAC target / unpruned MACs")
    p.add_argument("--no-phone", action="store_true", help="leave out the ExecuTorch cases")
    # known args only: `benchmarks/run_all.py` runs this module with its own command line in sys.argv
    args, unknown = p.parse_known_args(argv)
    if unknown:
        print(f"bench_export: ignoring arguments {unknown}")
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    clock = {"start": time.perf_counter()}
    rng = np.random.default_rng(1901)
    train_renders = _rooms(rng, 48, RENDER, "train renders")
    held_out = _rooms(np.random.default_rng(1902), 16, RENDER, "held-out renders")
    calibration = [r.rgb for r in train_renders[:8]]
    use_phone = phone.available() and not args.no_phone
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        url = _store(str(d / "s.zarr"), train_renders)
        base = {"store_url": url, "groups": ["rooms/train"], "batch_size": 8, "streams": 1, "size": list(RENDER),
                "lr": 2e-3, "schedule": "cosine", "model": {"arch": args.arch},
                "loss": {"terms": [{"name": "ssi", "weight": 1.0}, {"name": "grad", "weight": 0.5}]}}
        trained = train(TrainConfig.from_dict(base | {"out_dir": str(d / "train"), "steps": args.train_steps},
                                              source="bench_export"), progress=False).model
        clock["train"] = time.perf_counter()
        unpruned = trained
        macs0 = count_macs(unpruned, SIZE)
        ft_cfg = TrainConfig.from_dict(base | {"out_dir": str(d / "ft"), "steps": args.finetune_steps,
                                               "lr": 1e-3}, source="bench_export")
        pruned, prune_report = prune_to_target(save_and_reload(unpruned, d / "u.safetensors"),
                                               Target("macs", macs0 * args.mac_fraction), input_size=SIZE, step=0.15,
                                               bisections=4)
        pruned = train(ft_cfg, model=pruned, resume=False, progress=False).model.eval()
        clock["prune_finetune"] = time.perf_counter()
        models = {"unpruned": unpruned.eval(), "pruned": pruned}
        cases, predictors, sizes, export_info = {}, {}, {}, {}
        for tag, model in models.items():
            fp32 = export.export_onnx(model, d / f"{tag}_fp32.onnx", SIZE)
            int8 = export.quantize_int8(fp32, d / f"{tag}_int8.onnx", calibration)
            wrapper, predictors[f"{tag}/torch_fp32"] = _torch_case(model)
            x = torch.from_numpy(export.to_input(calibration[0], SIZE))
            cases[f"{tag}/torch_fp32"] = (lambda w=wrapper, x=x: _no_grad(w, x))
            for name, path in ((f"{tag}/ort_fp32", fp32), (f"{tag}/ort_int8", int8)):
                sess, predictors[name] = _onnx_case(path)
                xi = export.to_input(calibration[0], SIZE)
                cases[name] = (lambda s=sess, xi=xi: export.run(s, xi))
                sizes[name] = export.model_bytes(path)
            if tag == "unpruned" and args.qat_steps > 0:
                r = qat.quantization_aware(model, d / "unpruned_qat.onnx", url, ["rooms/train"], args.qat_steps,
                                           RENDER, SIZE, batch_size=8, lr=1e-4)
                sess, predictors[f"{tag}/ort_int8_qat"] = _onnx_case(r["onnx"])
                xi = export.to_input(calibration[0], SIZE)
                cases[f"{tag}/ort_int8_qat"] = (lambda s=sess, xi=xi: export.run(s, xi))
                sizes[f"{tag}/ort_int8_qat"] = export.model_bytes(r["onnx"])
                export_info["qat_losses"] = [round(r["losses"][0], 4), round(r["losses"][-1], 4)]
            if use_phone:
                phone.set_threads(THREADS)
                for prec, cal in (("fp32", None), ("int8", calibration)):
                    path = phone.export_pte(model, d / f"{tag}_{prec}.pte", SIZE, calibration=cal)
                    pte, predictors[f"{tag}/xnnpack_{prec}"] = _pte_case(path)
                    xi = export.to_input(calibration[0], SIZE)
                    cases[f"{tag}/xnnpack_{prec}"] = (lambda m=pte, xi=xi: m(xi))
                    sizes[f"{tag}/xnnpack_{prec}"] = path.stat().st_size
                    export_info[f"{tag}/xnnpack_{prec}_max_abs_diff_vs_torch"] = phone.max_abs_diff(
                        model, pte, [xi]) if prec == "fp32" else None
        clock["export"] = time.perf_counter()
        accuracy = {name: _accuracy(pred, held_out) for name, pred in predictors.items()}
        clock["accuracy"] = time.perf_counter()
        times = alternate(cases, repeats=args.repeats, warmup=2)
        clock["latency"] = time.perf_counter()
    results = [summary(name, [t * 1000 for t in ts], "ms/image") for name, ts in times.items()]
    med = {r["case"]: r["median"] for r in results}
    goals = []
    for tag in models:
        fp32s = [c for c in med if c.startswith(f"{tag}/") and "fp32" in c]
        int8s = [c for c in med if c.startswith(f"{tag}/") and "int8" in c]
        best32 = min(fp32s, key=med.get)
        best8 = min(int8s, key=med.get)
        goals.append(goal(f"{tag}: best FP32 ({best32}) / best INT8 ({best8}) latency", med[best32] / med[best8],
                          ">= 1.5"))
        goals.append(goal(f"{tag}: AbsRel of {best8} / AbsRel of {best32} (≤ 2 % loss)",
                          accuracy[best8]["abs_rel"] / accuracy[best32]["abs_rel"], "<= 1.02"))
    ref = "unpruned/ort_fp32"
    pareto = [{"case": c, "ms": round(med[c], 3), "speed-up vs unpruned/ort_fp32": round(med[ref] / med[c], 3),
               "abs_rel": round(accuracy[c]["abs_rel"], 4),
               "abs_rel / unpruned": round(accuracy[c]["abs_rel"] / accuracy[ref]["abs_rel"], 4),
               "delta1": round(accuracy[c]["delta1"], 4), "bytes": sizes.get(c)} for c in sorted(med, key=med.get)]
    ok = [r for r in pareto if r["case"].startswith("pruned/") and "int8" in r["case"] and r["abs_rel / unpruned"] <= 1.1]
    best = max(ok, key=lambda r: r["speed-up vs unpruned/ort_fp32"]) if ok else max(
        (r for r in pareto if r["case"].startswith("pruned/") and "int8" in r["case"]),
        key=lambda r: r["speed-up vs unpruned/ort_fp32"])
    goals.append(goal(f"unpruned/ort_fp32 / {best['case']} latency (AbsRel ratio {best['abs_rel / unpruned']}, "
                      "target ≤ 1.1)", best["speed-up vs unpruned/ort_fp32"], ">= 3"))
    goals.append(goal(f"AbsRel of {best['case']} / AbsRel of unpruned/ort_fp32", best["abs_rel / unpruned"], "<= 1.1"))
    marks = list(clock)
    params = {"arch": args.arch, "height": SIZE[0], "width": SIZE[1], "batch": 1, "threads": THREADS,
              "repeats": args.repeats, "render": list(RENDER), "train_images": len(train_renders),
              "held_out_images": len(held_out), "train_steps": args.train_steps, "finetune_steps": args.finetune_steps,
              "qat_steps": args.qat_steps, "teacher": "oracle (exact disparity of the renders)",
              "protocol": "affine_invariant (scale >= 0 and shift in disparity, GT in (1e-3, 80] m)",
              "prune": {"target_macs": int(macs0 * args.mac_fraction), "macs": [macs0, prune_report.final.macs],
                        "params": [count_params(unpruned), count_params(pruned)], "steps": len(prune_report.steps)},
              "accuracy": accuracy, "bytes": sizes, "pareto": pareto, **export_info,
              "seconds": {b: round(clock[b] - clock[a], 1) for a, b in zip(marks, marks[1:])}}
    write("export", params, results, goals, onnxruntime=ort.__version__,
          executorch=_version("executorch") if use_phone else "not installed", torchao=_version("torchao"))


def _no_grad(module, x):
    with torch.inference_mode():
        return module(x)


def save_and_reload(model, path):
    from student.checkpoint import load_model

    return load_model(save_model(model, path))


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
