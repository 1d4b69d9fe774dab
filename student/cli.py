"""``depthdata student train|prune|export|evaluate|run`` — the student stage (package ``student``).

A plug-in of the ``depthdata`` command (entry point group ``depthdata.commands`` in
pyproject.toml); torch and the student modules are imported inside the commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from depthdata.errors import DepthdataError


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
    p.add_argument("--loss", default=None, metavar="TERM=WEIGHT,...",
                   help="loss terms and weights, e.g. ssi=1,grad=0.5,rank=0.5 (default: ssi=1,grad=0.5,sparse=0.5,"
                   "rank=0.5); terms: l1, silog, distill, ssi, grad, rank, sparse (docs: Student, Losses)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a checkpoint")


ARCH_HELP = ("student architecture: fpn-mnv3s (default), lpcvc-mnv3s, resnet18-unet, mnv2-fbnet, completion "
             "(docs: Student, Architectures)")


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

    pr = ssub.add_parser("prune", help="structured channel pruning + fine-tune",
                         description="Prune a trained student's channels (torch-pruning, L2 magnitude), then "
                         "fine-tune it on the store.")
    _common(pr, "output folder (fine-tuned checkpoint under OUT/checkpoint)")
    pr.add_argument("--model", required=True, help="trained student (model.safetensors)")
    pr.add_argument("--ratio", type=float, default=0.3, help="fraction of channels to remove per layer (default 0.3)")
    _train_options(pr)
    pr.set_defaults(func=_prune)

    e = ssub.add_parser("export", help="ONNX FP32 + INT8 export with the contest I/O",
                        description="Export OUT/student_fp32.onnx and OUT/student_int8.onnx: input float RGB "
                        "0-255 (B,3,H,W), output relative depth in (0,1], near small (B,1,H,W).")
    _common(e, "output folder for the ONNX files")
    e.add_argument("--model", required=True, help="student (model.safetensors)")
    e.add_argument("--size", action=_Given, type=_size, default=(480, 640), help="input HEIGHTxWIDTH (default 480x640, the contest's)")
    e.add_argument("--calibration", type=int, default=32, help="store images to calibrate INT8 on (default 32)")
    e.add_argument("--eps", type=float, default=0.1, help="depth = 1/(disparity + eps) (default 0.1)")
    e.set_defaults(func=_export)

    v = ssub.add_parser("evaluate", help="metrics of a student on store groups",
                        description="Evaluate a torch (.safetensors) or ONNX student against depth under two named "
                        "protocols (affine_invariant: least-squares scale and shift in disparity; contest: the "
                        "exported relative depth median-scaled), against the teacher, and WHDR on ordinal pairs; "
                        "prints JSON.")
    v.add_argument("--store", required=True, help="store URL")
    v.add_argument("--groups", nargs="+", default=None, metavar="DATASET/SPLIT", help="groups (default: all)")
    v.add_argument("--model", required=True, help="model.safetensors or an exported .onnx")
    v.add_argument("--limit", type=int, default=None, help="evaluate at most this many samples per group")
    v.add_argument("--eps", type=float, default=0.1, help="disparity-to-depth eps for torch models and the teacher")
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
              "encoder_weights": "encoder_weights"}


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
    from depthdata.store import Store
    from student.checkpoint import load_model, save_model
    from student.prune import prune
    from student.train import train

    cfg = _train_config(args, args.out)
    size = args.size
    if size is None:
        g = Store.open(args.store).group(args.groups[0] if args.groups else Store.open(args.store).group_paths()[0])
        size = (g.height, g.width)
    model, report = prune(load_model(args.model), args.ratio, input_size=size,
                          fine_tune=lambda m: train(cfg, model=m, resume=not args.no_resume).model)
    path = save_model(model, Path(args.out) / "checkpoint" / "model.safetensors")
    print(json.dumps(report.as_dict() | {"model": str(path)}, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from student import export
    from student.checkpoint import load_model

    result = export.export_fp32_int8(load_model(args.model), args.out, args.size, args.eps, args.store, args.groups,
                                     args.calibration)
    print(json.dumps(result, indent=2, default=str))
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
                 export_size=args.export_size, **{"steps": args.steps, "batch_size": args.batch_size,
                                                  "seed": args.seed, **kwargs})
    print(json.dumps({"paths": result["paths"], "int8_vs_fp32": result["int8_vs_fp32"], "prune": result["prune"]},
                     indent=2))
    return 0
