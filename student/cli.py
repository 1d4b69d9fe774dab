"""``depthdata student train|prune|quantize|export|bench|card|evaluate|run`` — the student stage (package ``student``).

A plug-in of the ``depthdata`` command (entry point group ``depthdata.commands`` in
pyproject.toml); torch and the student modules are imported inside the commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from depthdata.errors import DepthdataError
from student.shift_methods import SHIFT_METHODS, defaults_help, shift_method, shift_steps


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 480x640, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32 pixels, got {text!r}")
    return h, w


class _Given(argparse.Action):
    """Store the value and note that the flag was given, so that only given flags override a
    ``--config`` file (a default cannot be told apart from the same value typed out)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--store", required=True, help="store URL (local path or fsspec URL)")
    p.add_argument("--groups", nargs="+", default=None, metavar="DATASET/SPLIT", action=_Given,
                   help="store groups to use (default: all)")
    p.add_argument("--out", required=True, help=out_help)


def _train_options(p: argparse.ArgumentParser) -> None:
    # Defaults are None so that only the flags given override a --config file; the values in the
    # help are TrainConfig's defaults (not imported here: --help must not load torch).
    p.add_argument("--config", default=None, metavar="YAML",
                   help="training settings file (keys of TrainConfig, docs: Student, Recipes); flags given override it")
    p.add_argument("--steps", action=_Given, type=int, default=None, help="optimizer steps in total (default 200)")
    p.add_argument("--batch-size", action=_Given, type=int, default=None, help="samples per step and process (default 4)")
    p.add_argument("--lr", action=_Given, type=float, default=None, help="(peak) learning rate (default 1e-3)")
    p.add_argument("--optimizer", action=_Given, choices=["adamw", "sgd"], default=None, help="optimizer (default adamw)")
    p.add_argument("--schedule", action=_Given, choices=["constant", "cosine", "onecycle"], default=None,
                   help="learning-rate schedule (default constant)")
    p.add_argument("--clip-grad-norm", action=_Given, type=float, default=None, help="clip the gradients' global norm (default: off)")
    p.add_argument("--ema-decay", action=_Given, type=float, default=None, help="average the weights, e.g. 0.999 (default: off)")
    p.add_argument("--rebalance-every", action=_Given, type=int, default=None,
                   help="rebalance the loss-term weights every N steps (default 0: off)")
    p.add_argument("--seed", action=_Given, type=int, default=None, help="seed of model init, data order and augmentation (default 0)")
    p.add_argument("--size", action=_Given, type=_size, default=None, help="train at HEIGHTxWIDTH (default: the store's size)")
    p.add_argument("--streams", action=_Given, type=int, default=None, help="interleaved shard streams (default 2)")
    p.add_argument("--zoom-min", action=_Given, type=float, default=None,
                   help="random zoom: crop each side to a fraction in [ZOOM_MIN, 1], resampled back (default 1: off)")
    p.add_argument("--color-jitter", action=_Given, type=float, default=None,
                   help="brightness, contrast and saturation jitter of ± this fraction (default 0: off)")
    p.add_argument("--blur", action=_Given, type=float, default=None,
                   help="probability of a Gaussian blur (σ 0.1–2 px) of the input (default 0: off)")
    p.add_argument("--loss", default=None, metavar="TERM=WEIGHT,...",
                   help="loss terms and weights, e.g. ssi=1,grad=0.5,rank=0.5 (default: ssi=1,grad=0.5,sparse=0.5,"
                   "rank=0.5); terms: l1, silog, distill, ssi, grad, rank, sparse (docs: Student, Losses)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a checkpoint")


ARCH_HELP = ("student architecture: fpn-mnv3s (default), lpcvc-mnv3s, resnet18-unet, mnv2-fbnet, completion "
             "(docs: Student, Architectures)")


def _card_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--held-out", nargs="+", default=None, metavar="DATASET/SPLIT",
                   help="evaluate every exported file on these store groups for the card (default: not evaluated)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most this many samples per held-out group")
    p.add_argument("--latency", action="store_true",
                   help="measure each file's median batch-1 latency for the card (alternating runs)")
    p.add_argument("--threads", type=int, default=2, help="threads of the latency measurement (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per file for --latency (default 10)")
    p.add_argument("--openvino", action="store_true",
                   help="with --latency, also time the ONNX files in OpenVINO (extra openvino)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("student", help="distil, prune, quantize, export and evaluate the student",
                       description="Train a compact MobileNet student from a store's teacher labels, prune it, "
                       "export a quantized ONNX model with the LPCVC 2025 I/O and evaluate it.")
    ssub = p.add_subparsers(dest="student_command", metavar="ACTION", required=True)

    t = ssub.add_parser("train", help="distillation training (resumable)",
                        description="Train a student; OUT/checkpoint holds model.safetensors and state.pt and a "
                        "re-run continues from them.")
    _common(t, "output folder (checkpoint under OUT/checkpoint)")
    _train_options(t)
    t.add_argument("--arch", action=_Given, default=None, help=ARCH_HELP)
    t.add_argument("--encoder", action=_Given, default=None,
                   choices=["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2"],
                   help="MobileNet encoder of fpn-mnv3s")
    t.add_argument("--encoder-weights", action=_Given, default=None, help="local torchvision state dict (.pth or .safetensors)")
    t.set_defaults(func=_train)

    pr = ssub.add_parser("prune", help="structured channel pruning (by ratio or to a target) + fine-tune",
                         description="Prune a trained student's channels (torch-pruning, L2 magnitude) by a ratio, "
                         "or step by step until a parameter, MAC or latency target is met (NetAdapt-style, a short "
                         "fine-tune after each step), or zero its smallest weights (--sparsity, unstructured); then "
                         "fine-tune it on the store. Writes OUT/checkpoint/model.safetensors and OUT/prune.json.")
    _common(pr, "output folder (fine-tuned checkpoint under OUT/checkpoint, report OUT/prune.json)")
    pr.add_argument("--model", required=True, help="trained student (model.safetensors)")
    how = pr.add_mutually_exclusive_group()
    how.add_argument("--ratio", type=float, default=None,
                     help="fraction of channels to remove per layer, in one pass (default 0.3 when no target is given)")
    how.add_argument("--target-params", type=int, default=None, metavar="N",
                     help="prune step by step until the model has at most N parameters")
    how.add_argument("--target-macs", type=float, default=None, metavar="N",
                     help="prune step by step until at most N multiply-accumulates per image at --count-size "
                     "(e.g. 2e8)")
    how.add_argument("--target-latency-ms", type=float, default=None, metavar="MS",
                     help="prune step by step until the median batch-1 latency at --count-size on "
                     "--latency-runtime is at most MS milliseconds (measured on this machine)")
    how.add_argument("--sparsity", type=float, default=None, metavar="FRACTION",
                     help="unstructured: zero this fraction of the smallest conv weights (no speed-up on dense "
                     "runtimes; the report gives the compressed size and measured latency)")
    pr.add_argument("--step", type=float, default=0.1,
                    help="with a target: fraction of each layer's channels removed per step (default 0.1)")
    pr.add_argument("--step-finetune-steps", type=int, default=0,
                    help="with a target: optimizer steps of the short fine-tune after each pruning step "
                    "(default 0: only the final fine-tune of --steps)")
    pr.add_argument("--count-size", type=_size, default=(480, 640),
                    help="HEIGHTxWIDTH at which MACs and latency are counted and the graph is traced "
                    "(default 480x640, the contest's)")
    pr.add_argument("--latency-runtime", choices=["onnxruntime", "openvino", "torch"], default="onnxruntime",
                    help="runtime whose latency --target-latency-ms (and --sparsity) measures: the FP32 ONNX "
                    "export in onnxruntime or OpenVINO (extra openvino), or PyTorch eager (default onnxruntime)")
    pr.add_argument("--threads", type=int, default=2, help="intra-op threads of the latency measurement (default 2)")
    pr.add_argument("--repeats", type=int, default=5,
                    help="timed runs per latency measurement; the median counts (default 5)")
    _train_options(pr)
    pr.set_defaults(func=_prune)

    e = ssub.add_parser("export", help="ONNX FP32 + INT8 export with the contest I/O",
                        description="Export OUT/student_fp32.onnx and OUT/student_int8.onnx: input float RGB "
                        "0-255 (B,3,H,W), output relative depth in (0,1], near small (B,1,H,W).")
    _common(e, "output folder for the ONNX files")
    e.add_argument("--model", required=True, help="student (model.safetensors)")
    e.add_argument("--size", action=_Given, type=_size, default=(480, 640), help="input HEIGHTxWIDTH (default 480x640, the contest's)")
    e.add_argument("--calibration", type=int, default=32, help="store images to calibrate INT8 on (default 32)")
    _calibration_method(e)
    e.add_argument("--eps", type=float, default=0.1, help="depth = 1/(disparity + eps) (default 0.1; a model with a fitted shift head predicts its own)")
    _card_options(e)
    e.add_argument("--phone", action="store_true",
                   help="also write student_fp32.pte and student_int8.pte (ExecuTorch + XNNPACK; extra 'phone') and "
                   "record their max abs difference from PyTorch in the card")
    e.set_defaults(func=_export)

    c = ssub.add_parser("card", help="write or check the model card of an export folder",
                        description="Write DIR/model_card.json and DIR/model_card.md for the files in an export "
                        "folder (architecture, params, MACs, sizes, latency, held-out metrics, data lineage, "
                        "training config, pruning/quantization steps), or --check that a card's numbers match its "
                        "files.")
    c.add_argument("--dir", required=True, help="export folder (written by 'depthdata student export')")
    c.add_argument("--model", default=None, help="student weights (default DIR/model.safetensors)")
    c.add_argument("--store", default=None, help="store URL for held-out metrics (default: the one the model was "
                   "trained on, from its metadata)")
    c.add_argument("--size", type=_size, default=None, help="input HEIGHTxWIDTH (default: the ONNX file's)")
    c.add_argument("--eps", type=float, default=0.1, help="depth = 1/(disparity + eps) the export used (default 0.1; a model with a fitted shift head predicts its own)")
    _card_options(c)
    c.add_argument("--check", action="store_true",
                   help="only check DIR/model_card.json against its files (params, MACs, bytes, SHA-256); exit 1 "
                   "on any difference")
    c.set_defaults(func=_card)

    sh = ssub.add_parser("shift", help="fit the per-image disparity → depth shift of the export on ground truth",
                         description="Make the exported depth = 1/(disparity + eps) proportional to depth for rooms "
                         "and streets alike (the contest's median scaling corrects scale only), on store groups with "
                         "ground-truth depth. --method head: train a small head that predicts eps per image, the "
                         "student frozen. --method tune: fine-tune the student itself on the contest's AbsRel so that "
                         "its disparity keeps its zero, and take eps from it (better on rendered rooms and streets; "
                         "the disparity changes). Writes OUT/model.safetensors and prints the contest AbsRel before "
                         "and after.")
    _common(sh, "output folder for model.safetensors (and the fine-tune's checkpoint, OUT/tune)")
    sh.add_argument("--model", required=True, help="student (model.safetensors)")
    sh.add_argument("--method", choices=tuple(SHIFT_METHODS), default="head",
                    help="; ".join(f"{name}: {m.help}" for name, m in SHIFT_METHODS.items()) + " (default head)")
    sh.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {defaults_help('steps')})")
    sh.add_argument("--size", type=_size, default=None, help="fit at HEIGHTxWIDTH (default: the first group's size)")
    sh.add_argument("--batch-size", type=int, default=None, help=f"images per step (default {defaults_help('batch_size')})")
    sh.add_argument("--lr", type=float, default=None,
                    help=f"learning rate (default {defaults_help('lr')}; head: Adam, decayed to 0 on a cosine over "
                    "the last fifth of the steps; tune: AdamW, cosine to 0)")
    sh.add_argument("--teacher-weight", type=float, default=0.0,
                    help="tune: weight of the scale-and-shift-invariant loss to the teacher beside the contest's "
                    "(default 0)")
    sh.add_argument("--limit", type=int, default=512,
                    help="ground-truth images to fit the head on (tune: to score before and after), spread evenly "
                    "(default 512)")
    sh.add_argument("--max-depth", type=float, default=80.0,
                    help="ground truth farther than this many metres is not used (default 80)")
    sh.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    sh.set_defaults(func=_shift)

    b = ssub.add_parser("bench", help="latency of an export folder's files per runtime and precision, side by side",
                        description="Time every file of an export folder (model.safetensors on PyTorch, "
                        "student_*.onnx on onnxruntime, student_*.pte on ExecuTorch), batch 1, the files "
                        "alternating run by run after a warm-up, and print the median ms of each with the ratios "
                        "that compare them: FP32/INT8 per runtime and each file's speed-up over "
                        "student_fp32.onnx. On a shared machine only these ratios mean something, not the ms.")
    b.add_argument("--dir", required=True, help="export folder (written by 'depthdata student export')")
    b.add_argument("--size", type=_size, default=None, help="input HEIGHTxWIDTH (default: the ONNX file's)")
    b.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    b.add_argument("--repeats", type=int, default=10, help="timed rounds, each running every file once (default 10)")
    b.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing (default 2)")
    b.add_argument("--openvino", action="store_true",
                   help="also time the ONNX files in OpenVINO (extra openvino): the x86 runtime whose int8 "
                        "kernels pay off where onnxruntime's do not (docs/student.md)")
    b.add_argument("--json", default=None, metavar="PATH", help="also write the table and ratios as JSON to PATH")
    b.set_defaults(func=_bench)

    q = ssub.add_parser("quantize", help="INT8 by dynamic, static or quantization-aware quantization",
                        description="Export OUT/student_fp32.onnx and OUT/student_int8_METHOD.onnx and write "
                        "OUT/quantize.json: which ops were quantized, sizes, INT8-vs-FP32 drift and metrics of both "
                        "on held-out store samples.")
    _common(q, "output folder for the ONNX files and quantize.json")
    q.add_argument("--model", required=True, help="student (model.safetensors)")
    q.add_argument("--method", choices=["dynamic", "dynamic-conv", "static", "qat"], default="static",
                   help="dynamic: onnxruntime quantize_dynamic on MatMul/Gemm (these conv nets have none: no "
                   "change); dynamic-conv: also Conv (ConvInteger, slow on CPU); static: calibrated QDQ, per-channel "
                   "weights (default); qat: PT2E quantization-aware fine-tuning on --groups, exported as QDQ")
    q.add_argument("--held-out", nargs="+", default=None, metavar="DATASET/SPLIT",
                   help="groups to measure INT8 against FP32 on (default: all; use groups not in --groups)")
    q.add_argument("--limit", type=int, default=16, help="held-out samples to measure on (default 16)")
    q.add_argument("--size", type=_size, default=(480, 640), help="input HEIGHTxWIDTH (default 480x640)")
    q.add_argument("--calibration", type=int, default=32, help="static: store images to calibrate on (default 32)")
    _calibration_method(q)
    q.add_argument("--eps", type=float, default=0.1, help="depth = 1/(disparity + eps) (default 0.1; a model with a fitted shift head predicts its own)")
    q.add_argument("--qat-steps", type=int, default=50, help="qat: fine-tuning steps (default 50)")
    q.add_argument("--qat-size", type=_size, default=None,
                   help="qat: fine-tune at HEIGHTxWIDTH (default: --size)")
    q.add_argument("--batch-size", type=int, default=4, help="qat: samples per step (default 4)")
    q.add_argument("--lr", type=float, default=1e-4, help="qat: AdamW learning rate (default 1e-4)")
    q.set_defaults(func=_quantize)

    v = ssub.add_parser("evaluate", help="metrics of a student on store groups",
                        description="Evaluate a torch (.safetensors) or ONNX student against depth under two named "
                        "protocols (affine_invariant: least-squares scale and shift in disparity; contest: the "
                        "exported relative depth median-scaled), against the teacher, and WHDR on ordinal pairs; "
                        "prints JSON.")
    v.add_argument("--store", required=True, help="store URL")
    v.add_argument("--groups", nargs="+", default=None, metavar="DATASET/SPLIT", help="groups (default: all)")
    v.add_argument("--model", required=True, help="model.safetensors or an exported .onnx")
    v.add_argument("--limit", type=int, default=None, help="evaluate at most this many samples per group")
    v.add_argument("--eps", type=float, default=0.1, help="disparity-to-depth eps for the teacher and for torch models without a fitted shift head (default 0.1)")
    v.add_argument("--max-depth", type=float, default=10.0,
                   help="ground truth farther than this many metres is not evaluated (default 10, as NYU)")
    v.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    v.set_defaults(func=_evaluate)

    r = ssub.add_parser("run", help="train → prune → fine-tune → export INT8 → evaluate",
                        description="The whole student stage; writes OUT/report.json.")
    _common(r, "output folder")
    r.add_argument("--steps", action=_Given, type=int, default=40, help="training steps (default 40)")
    r.add_argument("--finetune-steps", type=int, default=None, help="fine-tune steps after pruning (default steps/2)")
    r.add_argument("--ratio", type=float, default=0.3, help="pruning ratio (default 0.3)")
    r.add_argument("--shift-steps", type=int, default=None,
                   help="steps fitting the per-image disparity → depth shift on groups with ground-truth depth "
                   f"(default {defaults_help('steps')}; 0: the constant eps 0.1)")
    r.add_argument("--shift-method", choices=tuple(SHIFT_METHODS), default="head",
                   help="how the shift is fitted, as for `student shift --method` (default head)")
    r.add_argument("--batch-size", action=_Given, type=int, default=4, help="samples per step (default 4)")
    r.add_argument("--size", action=_Given, type=_size, default=None, help="train at HEIGHTxWIDTH (default: the store's size)")
    r.add_argument("--export-size", type=_size, default=None, help="ONNX input HEIGHTxWIDTH (default: training size)")
    r.add_argument("--seed", action=_Given, type=int, default=0, help="seed (default 0)")
    r.add_argument("--arch", action=_Given, default=None, help=ARCH_HELP)
    r.add_argument("--loss", default=None, metavar="TERM=WEIGHT,...", help="loss terms and weights (as for train)")
    r.add_argument("--config", default=None, metavar="YAML",
                   help="training settings file (as for train; store and output come from the flags)")
    r.set_defaults(func=_run)


# flag → TrainConfig key, for the flags a --config file may also set
_OVERRIDES = {"groups": "groups", "steps": "steps", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
              "schedule": "schedule", "clip_grad_norm": "clip_grad_norm", "ema_decay": "ema_decay",
              "rebalance_every": "rebalance_every", "seed": "seed", "size": "size", "streams": "streams",
              "encoder_weights": "encoder_weights", "zoom_min": "zoom_min", "color_jitter": "color_jitter",
              "blur": "blur"}


def _settings(args: argparse.Namespace) -> dict:
    """The run's settings: the --config file, then every flag that was given on top."""
    from student.train import load_config

    d = load_config(args.config) if getattr(args, "config", None) else {}
    given = getattr(args, "given", set())
    for flag, key in _OVERRIDES.items():
        if flag in given:
            value = getattr(args, flag)
            d[key] = list(value) if key == "size" else value
    if {"arch", "encoder"} & given:
        model = dict(d.get("model") or {})
        model.update({k: getattr(args, k) for k in ("arch", "encoder") if k in given})
        d["model"] = model
    if getattr(args, "loss", None):
        from student.losses import LossConfig

        d["loss"] = {**(d.get("loss") or {}), "terms": LossConfig.from_spec(args.loss).to_dict()["terms"]}
    return d


def _train_config(args: argparse.Namespace, out: str):
    from student.train import TrainConfig

    settings = _settings(args) | {"store_url": args.store, "out_dir": out}
    return TrainConfig.from_dict(settings, source=args.config or "student command line")


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from student.train import train

    result = train(_train_config(args, args.out), resume=not args.no_resume)
    if dist.is_available() and dist.is_initialized():  # torchrun: train() joined the process group
        dist.destroy_process_group()
    print(f"trained {result.steps} steps; last loss {result.losses[-1] if result.losses else float('nan'):.5f}; "
          f"model {result.checkpoint}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from student.checkpoint import load_model, save_model
    from student.latency import LatencyMeter
    from student.train import train

    cfg = _train_config(args, args.out)
    out = Path(args.out)
    meter = LatencyMeter(args.latency_runtime, args.count_size, args.threads, args.repeats)
    targets = {"params": args.target_params, "macs": args.target_macs, "latency_ms": args.target_latency_ms}
    model = load_model(args.model)
    if args.sparsity is not None:
        from student.sparsity import magnitude_prune

        model, sparse_report = magnitude_prune(model, args.sparsity, measure=meter)
        report = {"method": "unstructured_magnitude", **sparse_report.as_dict(), "latency": meter.describe()}
    elif any(v is not None for v in targets.values()):
        from student.prune_target import Target, prune_to_target

        metric, value = next((k, v) for k, v in targets.items() if v is not None)
        counter = iter(range(1, 10_000))

        def short_fine_tune(m):
            if args.step_finetune_steps <= 0:
                return m
            step_cfg = replace(cfg, out_dir=str(out / "steps" / f"{next(counter):02d}"), steps=args.step_finetune_steps)
            return train(step_cfg, model=m, resume=False).model

        model, target_report = prune_to_target(model, Target(metric, value), input_size=args.count_size,
                                               step=args.step, fine_tune=short_fine_tune,
                                               measure=meter if metric == "latency_ms" else None)
        report = {"method": "structured_to_target", **target_report.as_dict()}
    else:
        from student.prune import prune

        model, ratio_report = prune(model, 0.3 if args.ratio is None else args.ratio, input_size=args.count_size)
        report = {"method": "structured_ratio", **ratio_report.as_dict()}
    # The unstructured zeros would be re-grown by dense fine-tuning: keep them as they are.
    if args.sparsity is None:
        model = train(cfg, model=model, resume=not args.no_resume).model
    path = save_model(model, out / "checkpoint" / "model.safetensors")
    report["model"] = str(path)
    report["source_model"] = str(args.model)
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _calibration_method(p: argparse.ArgumentParser) -> None:
    # the choices restate student.export.CALIBRATIONS: importing it (onnxruntime) would slow --help
    p.add_argument("--calibration-method", choices=["percentile", "minmax"], default=None,
                   help="INT8 activation ranges: percentile clips each at the 99.99th percentile of its magnitude "
                   "(default; better INT8, but holds every calibration image's activations in memory: ~5 GB for 32 "
                   "images at 480x640), minmax spans each range's minimum to maximum (~1.3 GB)")


def _export(args: argparse.Namespace) -> int:
    from student.release import export_folder

    card = export_folder(args.model, args.out, args.size, args.eps, args.store, args.groups, args.calibration,
                         phone=args.phone, held_out=args.held_out, limit=args.limit, latency=args.latency,
                         threads=args.threads, repeats=args.repeats, openvino=args.openvino,
                         calibration_method=args.calibration_method)
    print(json.dumps({"artefacts": card["artefacts"], "params": card["params"], "macs": card["macs"],
                      "card": str(Path(args.out) / "model_card.json")}, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from student.release import bench_folder

    result = bench_folder(args.dir, args.size, args.threads, args.repeats, args.warmup, openvino=args.openvino)
    print(format_bench(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def format_bench(result: dict) -> str:
    """The text table of :func:`student.release.bench_folder`'s result."""
    lines = [f"batch 1, {result['input_size'][0]}x{result['input_size'][1]}, {result['threads']} threads, "
             f"{result['repeats']} alternating rounds (median ms; only the ratios compare)",
             f"{'file':<20} {'runtime':<20} {'precision':<9} {'ms':>9} {'vs ' + (result['reference'] or '-'):>26}"]
    for r in sorted(result["rows"], key=lambda r: r["ms"]):
        vs = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else "-"
        lines.append(f"{r['file']:<20} {r['runtime']:<20} {r['precision']:<9} {r['ms']:>9.2f} {vs:>26}")
    for runtime, ratio in result["fp32_over_int8"].items():
        lines.append(f"{runtime}: FP32 / INT8 = {ratio:.2f}x")
    if result["best"]:
        b = result["best"]
        lines.append(f"best FP32 ({b['fp32']}) / best INT8 ({b['int8']}) = {b['fp32_over_int8']:.2f}x")
    return "\n".join(lines)


def _card(args: argparse.Namespace) -> int:
    from student import card as cards

    folder = Path(args.dir)
    if args.check:
        problems = cards.check(folder / cards.CARD_JSON)
        for p in problems:
            print(p)
        print("model card matches its files" if not problems else f"{len(problems)} difference(s)")
        return 1 if problems else 0
    from student import export
    from student.release import write_card_for

    size = args.size
    if size is None:
        onnx_file = folder / "student_fp32.onnx"
        if not onnx_file.is_file():
            raise DepthdataError(f"{folder}: no student_fp32.onnx to read the input size from; pass --size")
        size = export.input_size(export.session(onnx_file))
    model = args.model or folder / "model.safetensors"
    store = args.store or (cards.model_info(model)["trained_on"] or {}).get("store")
    if args.held_out and not store:
        raise DepthdataError(f"{model}: no store recorded in the weights; pass --store for the held-out metrics")
    card = write_card_for(model, folder, size, args.eps, store, args.held_out, args.limit, args.latency,
                          args.threads, args.repeats, openvino=args.openvino)
    print(json.dumps({"params": card["params"], "macs": card["macs"], "card": str(folder / cards.CARD_JSON)}, indent=2))
    return 0


def _shift(args: argparse.Namespace) -> int:
    from student.card import model_info
    from student.checkpoint import load_model, save_model
    from student.shift import fit_shift
    from student.tune import tune_zero

    model = load_model(args.model)
    method = shift_method(args.method)
    steps, lr = shift_steps(args.method, args.steps), args.lr or method.lr
    batch_size = args.batch_size or method.batch_size
    if args.method == "tune":
        model, fitted = tune_zero(model, args.store, Path(args.out) / "tune", args.groups, steps, lr, batch_size,
                                  args.teacher_weight, args.size, args.limit, args.seed, max_depth=args.max_depth)
    else:
        fitted = fit_shift(model, args.store, args.groups, steps, args.size, batch_size, lr, args.limit, args.seed,
                           max_depth=args.max_depth)
    path = save_model(model, Path(args.out) / "model.safetensors", trained_on=model_info(args.model)["trained_on"])
    print(json.dumps({"model": str(path), "contest_abs_rel": fitted}, indent=2))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from student.checkpoint import load_model
    from student.quantize import quantize_model

    result = quantize_model(load_model(args.model), args.out, args.method, args.store, args.groups, args.held_out,
                            args.size, args.calibration, args.limit, args.eps, args.qat_steps, args.qat_size,
                            args.batch_size, args.lr, calibration_method=args.calibration_method)
    text = json.dumps(result, indent=2, default=str)
    (Path(args.out) / "quantize.json").write_text(text + "\n")
    print(text)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from student import evaluate as ev
    from student.checkpoint import load_model

    if args.model.endswith(".onnx"):
        predict = ev.onnx_predictor(args.model)
    elif args.model.endswith(".safetensors"):
        predict = ev.torch_predictor(load_model(args.model), args.eps)
    else:
        raise DepthdataError(f"{args.model}: expected a .safetensors student or an .onnx export")
    result = ev.evaluate(predict, args.store, args.groups, args.limit, args.eps, max_depth=args.max_depth)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _run(args: argparse.Namespace) -> int:
    from student.pipeline import run
    from student.train import TrainConfig

    # The file's settings go to the trainer (validated as a TrainConfig); run's own flags win.
    settings = _settings(args)
    cfg = TrainConfig.from_dict(settings | {"store_url": args.store, "out_dir": args.out},
                                source=args.config or "student command line")
    # Given flags and the file's settings; run's own defaults (the parser's) fill in the rest.
    kwargs = {k: getattr(cfg, k) for k in settings if k not in ("store_url", "out_dir")}
    result = run(args.store, args.out, finetune_steps=args.finetune_steps, prune_ratio=args.ratio,
                 export_size=args.export_size, shift_steps=args.shift_steps, shift_method=args.shift_method, **{"steps": args.steps, "batch_size": args.batch_size,
                                                  "seed": args.seed, **kwargs})
    print(json.dumps({"paths": result["paths"], "int8_vs_fp32": result["int8_vs_fp32"], "prune": result["prune"]},
                     indent=2))
    return 0
