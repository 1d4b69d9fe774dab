"""``depthdata teacher make-tiny | train-demo | info | run``."""

from __future__ import annotations

import argparse

from depthdata.teacher.config import DEFAULT_MODEL, TeacherConfig

NON_COMMERCIAL = ("Depth-Anything-V2-Base", "Depth-Anything-V2-Large")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="teacher pseudo-labels (Depth Anything V2)",
                       description="Make, inspect and run the Depth Anything V2 teacher.")
    tsub = p.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    t = tsub.add_parser("make-tiny", help="write a tiny randomly initialised teacher",
                        description="Write a tiny randomly initialised Depth Anything model of the real class "
                        "(safetensors + processor config) to DIR, loadable with 'teacher.model: DIR'. For tests "
                        "and offline demos: its outputs are meaningless as depth.")
    t.add_argument("directory", metavar="DIR", help="output directory (created if missing)")
    t.add_argument("--seed", type=int, default=0, help="initialisation seed (same seed, same bytes; default 0)")
    t.add_argument("--size", type=int, default=56,
                   help="processor input size in pixels, rounded to a multiple of 14 (default 56)")
    t.set_defaults(func=_make_tiny)

    d = tsub.add_parser("train-demo", help="train the demo teacher on rendered scenes",
                        description="Train the demo teacher (a small Depth Anything of the real class) from "
                        "scratch (or from --init) on procedurally rendered rooms and streets with exact depth, with "
                        "Depth Anything's loss (scale-and-shift-invariant L1 + gradient matching, on disparity), and write "
                        "model.safetensors, its configs and lineage.json (recipe, seed, scene counts, "
                        "held-out metrics, weights SHA-256) to OUT. Seeded: the same options and thread count give "
                        "the same weights. The defaults are the recipe of the weights shipped with depthdata.")
    d.add_argument("--out", default=None,
                   help="output directory (default: the package's demo_weights folder, replacing the shipped weights)")
    d.add_argument("--seed", type=int, default=0, help="seed of scenes, initialisation and batches (default 0)")
    d.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped recipe's)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's, 1)")
    d.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    d.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: the recipe's)")
    d.add_argument("--input-size", type=int, default=None,
                   help="the model's input size (short side, pixels, a multiple of 14; default: the recipe's)")
    d.add_argument("--crop-min", type=float, default=None,
                   help="random zoom: half of the images cropped to this share (0-1) of each side or more, "
                   "resized back (default: the recipe's, 1 = off)")
    d.add_argument("--bf16", action="store_true", default=None,
                   help="train under bfloat16 autocast (1.7x a step on a CPU with AVX-512 BF16; the weights and the "
                   "optimizer stay float32; default: the recipe's, off)")
    d.add_argument("--render-workers", type=int, default=1,
                   help="processes that render the scenes (the same scenes for any count; default 1)")
    d.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model trains (default cpu; held-out metrics are measured on the CPU)")
    d.add_argument("--scene-cache", metavar="DIR", default=None,
                   help="read rendered scenes from DIR when there, else render and write them there "
                   "(lossless, ~34 KB a scene; lets a machine without Open3D train)")
    d.add_argument("--train-scenes", type=int, nargs=2, metavar=("ROOMS", "STREETS"), default=None,
                   help="training scenes of each kind (default: the recipe's)")
    d.add_argument("--heldout-scenes", type=int, nargs=2, metavar=("ROOMS", "STREETS"), default=None,
                   help="held-out scenes of each kind the lineage's metrics are measured on (default: the recipe's)")
    d.add_argument("--init", metavar="DIR", default=None,
                   help="go on training from the checkpoint in DIR (it needs its lineage.json, which the new "
                   "lineage keeps under 'parent'; DIR may be --out) instead of a fresh model (default)")
    d.add_argument("--max-minutes", type=float, default=None,
                   help="a time budget for training (rendering and the held-out measurement not counted): the "
                   "learning rate's cosine decay reaches its floor when it is spent, if --steps have not got "
                   "there first; training stops after the step that spends it, writes the weights and says so "
                   "in the lineage (default: no limit). With it, --steps is an upper bound")
    d.add_argument("--eval-every", type=int, default=0,
                   help="log held-out metrics every N steps (does not change the weights; default off)")
    d.set_defaults(func=_train_demo)

    i = tsub.add_parser("info", help="load a teacher and print its lineage",
                        description="Load a teacher (Hugging Face id resolved in the local cache, or a directory) "
                        "and print its id, revision, weights SHA-256, parameter count, input size and device.")
    i.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help=f"Hugging Face id or checkpoint directory (default {DEFAULT_MODEL})")
    i.add_argument("--revision", help="Hub revision (branch, tag or commit); ignored for a directory")
    i.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"],
                   help="device to load onto (default cpu)")
    i.add_argument("--allow-download", action="store_true", help="fetch from the Hub when not cached (needs network)")
    i.set_defaults(func=_info)

    r = tsub.add_parser("run", help="pseudo-label the groups of a store",
                        description="Run the teacher stage on every shard of the given groups (all groups by "
                        "default): writes 'teacher' and 'teacher_conf' and the manifest rows. Settings come "
                        "from the catalog embedded in the store ('teacher:'), overridden by these options. "
                        "Complete shards with the same settings and weights are skipped.")
    r.add_argument("store", metavar="STORE", help="store URL or path")
    r.add_argument("--group", action="append", metavar="DATASET/SPLIT",
                   help="group to label (repeatable; default every group)")
    r.add_argument("--model", help="Hugging Face id or checkpoint directory (overrides the catalog)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="device (overrides the catalog)")
    r.add_argument("--batch-size", type=int, help="images per forward pass (overrides the catalog)")
    r.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="compute teacher_conf from flip + second-scale agreement (overrides the catalog)")
    r.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                   help="store the mean of the prediction and its mirror's as the label: one more forward pass, "
                   "a more accurate label (overrides the catalog)")
    r.add_argument("--allow-random-init", action="store_true",
                   help="use a tiny random model when no weights are found (demo only)")
    r.add_argument("--force", action="store_true", help="redo shards that are already complete")
    r.set_defaults(func=_run)


def _make_tiny(args: argparse.Namespace) -> int:
    from depthdata.teacher.model import weights_sha256
    from depthdata.teacher.tiny import save_tiny_teacher

    path = save_tiny_teacher(args.directory, seed=args.seed, size=args.size)
    print(f"{path}: tiny random Depth Anything teacher (seed {args.seed}, input size {args.size} px), "
          f"weights sha256 {weights_sha256(path)}")
    return 0


def _train_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from depthdata.teacher.checkpoint import DEMO_WEIGHTS_DIR
    from depthdata.teacher.train_demo import Recipe, train_demo

    changes = {k: v for k, v in (("seed", args.seed), ("steps", args.steps), ("threads", args.threads),
                                 ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("input_size", args.input_size), ("crop_min", args.crop_min),
                                 ("bf16", args.bf16)) if v is not None}
    if args.train_scenes:
        changes.update(train_rooms=args.train_scenes[0], train_streets=args.train_scenes[1])
    if args.heldout_scenes:
        changes.update(heldout_rooms=args.heldout_scenes[0], heldout_streets=args.heldout_scenes[1])
    recipe = dataclasses.replace(Recipe(), **changes)
    out = args.out or str(DEMO_WEIGHTS_DIR)
    lineage = train_demo(recipe, out, eval_every=args.eval_every, device=args.device, scene_cache=args.scene_cache,
                         init=args.init, render_workers=args.render_workers, max_minutes=args.max_minutes)
    s = lineage["heldout"]["summary"]["all"]
    print(f"{out}: demo teacher, {lineage['parameters']:,} parameters, {lineage['training']['steps']} steps in "
          f"{lineage['training']['seconds_train']:.0f} s; held-out AbsRel {s['abs_rel']:.4f}, delta1 {s['delta1']:.4f} "
          f"({s['scenes']} scenes); weights sha256 {lineage['weights_sha256']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from depthdata.teacher.model import load_teacher

    cfg = TeacherConfig(model=args.model, revision=args.revision, device=args.device,
                        allow_download=args.allow_download)
    t = load_teacher(cfg)
    print(f"model:        {t.model_id}")
    print(f"directory:    {t.directory}")
    print(f"revision:     {t.revision}")
    print(f"weights:      sha256 {t.weights_sha256}")
    print(f"class:        {type(t.model).__name__} ({t.model.config.depth_estimation_type} disparity)")
    print(f"parameters:   {t.num_parameters:,}")
    print(f"input size:   {t.input_size} px (keep aspect, multiple of 14)")
    print(f"device:       {t.device} ({str(t.dtype).removeprefix('torch.')})")
    if any(name in t.model_id for name in NON_COMMERCIAL):
        print("licence:      CC-BY-NC-4.0 (non-commercial use only)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from depthdata.pipeline import run_local
    from depthdata.store import Store
    from depthdata.teacher.checkpoint import DEMO_TEACHER_ID
    from depthdata.teacher.stage import loaded_teacher, stage

    store = Store.open(args.store, mode="r+")
    catalog = store.meta.get("catalog") or {}
    settings = dict(catalog.get("teacher") or {})
    overrides = {"model": args.model, "device": args.device, "batch_size": args.batch_size, "tta": args.tta,
                 "flip_average": args.flip_average}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if args.allow_random_init:
        settings["allow_random_init"] = True
    config = TeacherConfig(**settings)
    teacher = loaded_teacher(config)  # loaded once here; the stage's shards reuse it
    groups = [store.group(g) for g in (args.group or store.group_paths())]
    totals = run_local(stage, groups, config, force=args.force)
    print(f"teacher {teacher.model_id} ({teacher.revision}, sha256 {teacher.weights_sha256[:12]}…): "
          f"{totals.written} sample(s) labelled, {totals.skipped} complete shard(s) skipped, "
          f"{len(totals.quarantined)} quarantined")
    for line in totals.quarantine_lines():
        print(line)
    if teacher.random_init:
        print("WARNING: labels come from a RANDOMLY INITIALISED teacher and are meaningless as depth")
    elif teacher.model_id == DEMO_TEACHER_ID:
        print("note: labels come from the DEMO TEACHER (trained on procedural scenes, not Depth Anything V2)")
    return 0
