"""``depthdata eda STORE --out DIR``: statistics table and HTML report of a built store."""

from __future__ import annotations

import argparse
import json

from depthdata.eda.rules import OutlierRules


def register(sub: argparse._SubParsersAction) -> None:
    defaults = OutlierRules()
    p = sub.add_parser(
        "eda", help="write stats.parquet and report.html for a store",
        description="Scan every group of a store shard by shard and write stats.parquet (one row per "
        "sample: depth/teacher/sparse statistics, brightness/contrast, outlier flags with reasons) and "
        "a self-contained report.html (counts, quarantined samples, distributions, outliers, sample grids).")
    p.add_argument("store", help="store URL (local path or any fsspec URL, e.g. s3://bucket/build.zarr)")
    p.add_argument("--out", required=True,
                   help="output folder or fsspec URL (e.g. s3://bucket/reports/x) for stats.parquet and "
                        "report.html (created if needed)")
    p.add_argument("--samples-per-grid", type=int, default=8, help="random samples per group in the sample grids (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed that picks the grid samples (default 0)")
    p.add_argument("--storage-options", type=json.loads, default=None, metavar="JSON",
                   help='fsspec options for the store as JSON, e.g. \'{"anon": false}\'')
    p.add_argument("--out-storage-options", type=json.loads, default=None, metavar="JSON",
                   help="fsspec options for --out as JSON (default: the store's --storage-options when --out "
                        "is on the same kind of file system as the store, e.g. both s3://)")
    p.add_argument("--z-threshold", type=float, default=defaults.z_threshold,
                   help=f"flag |robust z-score| above this within a group (default {defaults.z_threshold})")
    p.add_argument("--min-valid-fraction", type=float, default=defaults.min_valid_fraction,
                   help=f"flag samples with a smaller fraction of valid depth pixels (default {defaults.min_valid_fraction})")
    p.add_argument("--min-contrast", type=float, default=defaults.min_contrast,
                   help=f"flag images whose luma standard deviation (0-255) is below this (default {defaults.min_contrast})")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.add_argument("--version", type=int, default=None, metavar="N",
                   help="report on committed store version N (default: the newest; `depthdata history` lists them)")
    p.set_defaults(func=_eda)


def _eda(args: argparse.Namespace) -> int:
    from depthdata.eda import write_report

    rules = OutlierRules(z_threshold=args.z_threshold, min_valid_fraction=args.min_valid_fraction,
                         min_contrast=args.min_contrast)
    paths = write_report(args.store, args.out, samples_per_grid=args.samples_per_grid, seed=args.seed,
                         storage_options=args.storage_options, rules=rules, progress=not args.no_progress,
                         out_storage_options=args.out_storage_options, version=args.version)
    print(f"wrote {paths['stats']}\nwrote {paths['report']}")
    return 0
