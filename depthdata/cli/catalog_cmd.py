"""``depthdata catalog validate FILE``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("catalog", help="check catalog files", description="Check catalog files.")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    v = csub.add_parser("validate", help="validate a catalog.yaml",
                        description="Validate a catalog: schema, known source kinds and their options, "
                        "and that every dataset root exists. Exits 2 listing every problem with its YAML path.")
    v.add_argument("file", help="catalog YAML file")
    v.add_argument("--no-check-roots", action="store_true", help="do not check that dataset roots exist")
    v.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from depthdata.catalog import load_catalog

    cat = load_catalog(args.file, check_roots=not args.no_check_roots)
    print(f"{args.file}: valid — {len(cat.datasets)} dataset(s): "
          + ", ".join(f"{n} ({d.kind})" for n, d in cat.datasets.items())
          + f"; store {cat.store_url}")
    return 0
