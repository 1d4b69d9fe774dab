"""``depthdata sources list|preview`` and ``depthdata demo-data``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from depthdata.errors import CatalogError, DepthdataError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sources", help="inspect source readers", description="Inspect source formats and datasets.")
    ssub = p.add_subparsers(dest="sources_command", metavar="ACTION", required=True)
    ls = ssub.add_parser("list", help="registered source kinds and their options",
                         description="List every registered source kind with its catalog options and defaults.")
    ls.set_defaults(func=_list)
    pv = ssub.add_parser("preview", help="read the first records of a dataset",
                         description="Read the first records of one catalog dataset at native resolution and "
                         "print their ids, sizes, depth ranges (metres) and pair counts.")
    pv.add_argument("catalog", help="catalog YAML file")
    pv.add_argument("--dataset", required=True, help="dataset name in the catalog")
    pv.add_argument("-n", type=int, default=8, help="number of records to read (default 8)")
    pv.add_argument("--split", help="split to read (default: the first the source finds)")
    pv.set_defaults(func=_preview)

    d = sub.add_parser("demo-data", help="write the demo datasets and their catalog",
                       description="Write small rendered datasets in the real NYU, SYNTHIA and DIW formats plus "
                       "scikit-image photographs, and a catalog.yaml reading them.")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--seed", type=int, default=0, help="random seed of the rendered scenes (default 0)")
    d.add_argument("-n", "--per-dataset", type=int, default=16, help="samples per rendered dataset (default 16)")
    d.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                   help="render size in pixels of the NYU-like data (default 240 320)")
    d.add_argument("--resolution", type=int, nargs=2, default=(120, 160), metavar=("H", "W"),
                   help="stored resolution written into the catalog (default 120 160)")
    d.set_defaults(func=_demo_data)


def _list(args: argparse.Namespace) -> int:
    from depthdata.sources import source_kinds

    for kind, cls in source_kinds().items():
        fields = ", ".join(("rgb",) + cls.fields)
        print(f"{kind}  ({cls.__module__}; fields: {fields})")
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        if doc:
            print(f"    {doc[0]}")
        for name, f in cls.Options.model_fields.items():
            default = f.default if f.default_factory is None else f.default_factory()
            print(f"    options.{name}: {json.dumps(default)}  [{_type_name(f.annotation)}]")
    return 0


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _preview(args: argparse.Namespace) -> int:
    import numpy as np

    from depthdata.catalog import load_catalog

    if args.n < 1:
        raise DepthdataError(f"-n must be at least 1, got {args.n}")
    cat = load_catalog(args.catalog)
    if args.dataset not in cat.datasets:
        raise CatalogError(f"{args.catalog}: no dataset {args.dataset!r}; has {', '.join(cat.datasets)}")
    src = cat.source(args.dataset)
    split = args.split or src.splits()[0]
    items = src.items(split)
    print(f"{args.dataset} ({src.kind}) split {split}: {len(items)} items; showing {min(args.n, len(items))}")
    for item in items[:args.n]:
        try:
            s = src.load(split, item)
        except DepthdataError as exc:
            print(f"  {item.key}: BAD — {exc}")
            continue
        parts = [s.sample_id, f"{s.height}×{s.width}"]
        if s.depth is not None:
            d = s.depth[np.isfinite(s.depth) & (s.depth > 0)]
            rng = f"{d.min():.3f}–{d.max():.3f} m" if d.size else "no valid pixel"
            parts.append(f"depth {rng} ({100 * d.size / s.depth.size:.0f}% valid)")
        if s.pairs is not None:
            parts.append(f"{len(s.pairs)} pair(s)")
        if s.intrinsics is not None:
            i = s.intrinsics
            parts.append(f"f=({i.fx:.1f},{i.fy:.1f}) c=({i.cx:.1f},{i.cy:.1f})")
        print("  " + "  ".join(parts))
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from depthdata.demo import write_demo_catalog, write_demo_data
    from depthdata.teacher.checkpoint import default_weights_present

    log.info("writing demo data (seed %d, %d per dataset) to %s", args.seed, args.per_dataset, args.out)
    paths = write_demo_data(args.out, seed=args.seed, n_per_dataset=args.per_dataset, size=tuple(args.size))
    # offline, the catalog must build as written: without real weights the build falls back to
    # the demo teacher shipped with the package (and says so)
    present, model = default_weights_present()
    cat = write_demo_catalog(args.out, paths, resolution=tuple(args.resolution), demo_teacher=True)
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"catalog: {cat}")
    if not present:
        print(f"note: no weights for {model!r} on this machine: the build uses the DEMO TEACHER shipped with "
              "depthdata (teacher.allow_demo_teacher), a small Depth Anything trained on procedural scenes, not "
              "Depth Anything V2")
    return 0
