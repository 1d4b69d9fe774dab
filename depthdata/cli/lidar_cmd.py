"""``depthdata lidar presets | preview | run``: beam models, one-image scans, the stage over a store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from depthdata.errors import DepthdataError, SourceError



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lidar", help="synthetic sparse LiDAR", description="Synthetic sparse LiDAR: beam models, "
                       "a one-image preview, and the stage over a store (rewrites only the `sparse` field).")
    lsub = p.add_subparsers(dest="lidar_command", metavar="ACTION", required=True)

    pr = lsub.add_parser("presets", help="list the beam-model presets",
                         description="Table of the beam-model presets (names usable as lidar.beam_model).")
    pr.set_defaults(func=_presets)

    pv = lsub.add_parser("preview", help="scan one depth map",
                         description="Synthesise a sparse scan of one depth map and save it as .npy "
                         "(float32 metres, 0 = no return); prints its stats as JSON.")
    pv.add_argument("depth", help="depth map: .npy of metres (NaN or 0 = invalid), or a 16-bit PNG (see --png-scale)")
    pv.add_argument("--out", required=True, help="output .npy path for the sparse depth")
    pv.add_argument("--png-scale", type=float, default=0.001,
                    help="metres per PNG unit (default 0.001: millimetres; SYNTHIA: 0.01)")
    pv.add_argument("--beam-model", default="hdl64e", help="preset name (see `depthdata lidar presets`)")
    pv.add_argument("--mesher", choices=["grid", "poisson"], default="grid", help="meshing method")
    pv.add_argument("--poisson-depth", type=int, default=8, help="octree depth of the poisson mesher")
    pv.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                    help="camera in pixels of the depth map (0-based principal point); default: sampled by seed")
    pv.add_argument("--seed", type=int, default=0, help="seed of sampled intrinsics, azimuth phase, noise, dropout")
    pv.add_argument("--no-noise", action="store_true", help="turn range noise off")
    pv.set_defaults(func=_preview)

    rn = lsub.add_parser("run", help="run the LiDAR stage over a store",
                         description="Write the `sparse` field of every shard of the store's groups (ingest must "
                         "be complete; the teacher too for groups without ground truth). Shards done with the "
                         "same settings are skipped.")
    rn.add_argument("store", help="store URL (local path or fsspec URL)")
    rn.add_argument("--catalog", help="catalog YAML whose `lidar:` settings to use (default: the catalog "
                    "recorded in the store, else defaults)")
    rn.add_argument("--group", action="append", help="dataset/split to run (repeatable; default: all groups)")
    rn.add_argument("--force", action="store_true", help="redo shards that are already complete")
    rn.add_argument("--threads", type=int, default=0, help="Open3D threads per sample (0 = Open3D's choice)")
    rn.set_defaults(func=_run)


def _presets(args: argparse.Namespace) -> int:
    from depthdata.lidar.beams import PRESETS

    header = ("name", "beams", "elevation °", "min gap °", "azimuth °", "range m", "noise σ m", "description")
    rows = [header]
    for m in PRESETS.values():
        gaps = np.diff(sorted(m.elevations_deg))
        rows.append((m.name, str(m.channels), f"{max(m.elevations_deg):+.2f} .. {min(m.elevations_deg):+.2f}",
                     f"{gaps.min():.3f}" if len(gaps) else "-", f"{m.azimuth_step_deg:.4g}",
                     f"{m.min_range_m:g}-{m.max_range_m:g}", f"{m.range_sigma_m:g}", m.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _read_depth(path: str, png_scale: float) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise SourceError(path, "no such file")
    if p.suffix.lower() == ".npy":
        try:
            depth = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SourceError(path, f"not a readable .npy file: {exc}") from None
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise SourceError(path, f"expected an H×W float array of metres, got {depth.dtype} {depth.shape}")
        return depth.astype(np.float32)
    if p.suffix.lower() == ".png":
        from depthdata.sources.files import read_depth_png

        # a map without valid pixels previews as 0 returns with a reason, as an all-NaN .npy does
        return read_depth_png(path, np.uint16, png_scale, "depth PNG", allow_empty=True)
    raise SourceError(path, "unsupported depth file (use .npy metres or a 16-bit .png)")


def _preview(args: argparse.Namespace) -> int:
    from depthdata.lidar.config import LidarConfig
    from depthdata.lidar.synth import synthesize
    from depthdata.sample import Intrinsics

    try:
        config = LidarConfig(beam_model=args.beam_model, mesher=args.mesher, poisson_depth=args.poisson_depth,
                             range_noise_scale=0.0 if args.no_noise else 1.0, seed=args.seed)
        intrinsics = Intrinsics(*args.intrinsics) if args.intrinsics else None
    except ValueError as exc:
        raise DepthdataError(f"invalid option: {exc}") from None
    depth = _read_depth(args.depth, args.png_scale)
    sparse, stats = synthesize(depth, intrinsics, config, args.seed)
    np.save(args.out, sparse)
    print(json.dumps(stats.row(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from depthdata.catalog import load_catalog
    from depthdata.lidar.config import LidarConfig
    from depthdata.lidar.stage import stage
    from depthdata.pipeline import run_local
    from depthdata.store import Store

    store = Store.open(args.store, mode="r+")
    if args.catalog:
        config = load_catalog(args.catalog, check_roots=False).lidar
    else:
        recorded = (store.meta.get("catalog") or {}).get("lidar")
        config = LidarConfig.model_validate(recorded) if recorded else LidarConfig()
    groups = [store.group(g) for g in (args.group or store.group_paths())]
    totals = run_local(stage, groups, config, force=args.force, threads=args.threads)
    print(f"lidar ({config.beam_model}, {config.mesher}): {totals.written} samples written, {totals.skipped} "
          f"shard(s) already done, {len(totals.quarantined)} quarantined")
    for line in totals.quarantine_lines():
        print(line)
    return 0
