"""``depthdata verify``, ``inspect``, ``history`` and ``compact``: a store's health, contents and versions."""

from __future__ import annotations

import argparse
import json


def _storage_options(value: str | None) -> dict:
    return json.loads(value) if value else {}


def register(sub: argparse._SubParsersAction) -> None:
    so_help = "fsspec storage options as JSON, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\"}'"
    v = sub.add_parser("verify", help="re-hash a store against its manifest",
                       description="Re-read every written shard and compare per-sample checksums with the "
                       "manifest. Exits 1 naming each shard with a mismatch, unreadable part, or missing "
                       "manifest part (an interrupted build); 0 when every shard is complete and intact.")
    v.add_argument("store", help="store URL (local path, s3://..., memory://...)")
    v.add_argument("--group", action="append", help="only this dataset/split (repeatable)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--storage-options", help=so_help)
    v.set_defaults(func=_verify)
    i = sub.add_parser("inspect", help="summarise a store",
                       description="Groups, sample counts, fields and their completeness per shard, "
                       "quarantined samples, sizes on disk, schema version.")
    i.add_argument("store", help="store URL")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.add_argument("--storage-options", help=so_help)
    i.add_argument("--version", default=None, metavar="N",
                   help="show committed version N, or 'working' for everything on disk (default: the newest version)")
    i.set_defaults(func=_inspect)
    h = sub.add_parser("history", help="list a store's committed versions",
                       description="Every committed version, oldest first: when, what committed it, samples "
                       "added and removed, samples in total, the catalog's hash and the depthdata version. "
                       "Readers see the newest; pin another with `version=N` (ShardDataset, inspect, eda).")
    h.add_argument("store", help="store URL")
    h.add_argument("--json", action="store_true", help="print JSON instead of a table")
    h.add_argument("--storage-options", help=so_help)
    h.set_defaults(func=_history)
    c = sub.add_parser("compact", help="consolidate a store's manifest parts",
                       description="Write one consolidated manifest per group and stage from its parts, so "
                       "readers open the store with a few requests per group and stage instead of one or more "
                       "per shard. Builds do this when a stage finishes; run it after a build that was "
                       "killed or after writing shards by other means. Safe while a build runs.")
    c.add_argument("store", help="store URL")
    c.add_argument("--group", action="append", help="only this dataset/split (repeatable)")
    c.add_argument("--storage-options", help=so_help)
    c.add_argument("--drop-removed", action="store_true",
                   help="also rewrite shards holding samples later builds removed or replaced: their live samples "
                   "move to new shards, the old shards are deleted, and the result is a new version (older "
                   "versions expire). Not while a build runs.")
    c.set_defaults(func=_compact)


def _verify(args: argparse.Namespace) -> int:
    from depthdata.store.verify import verify_store

    report = verify_store(args.store, _storage_options(args.storage_options), groups=args.group,
                          progress=not args.json)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for p in report.problems:
            print(f"PROBLEM {p}")
        for p in report.incomplete:
            print(f"INCOMPLETE {p}")
        verdict = "OK" if report.ok else "FAILED"
        print(f"{verdict}: {report.shards_checked} shard(s), {report.samples_checked} sample-stage(s) checked; "
              f"{len(report.problems)} problem(s), {len(report.incomplete)} incomplete shard(s)")
    return 0 if report.ok else 1


def _compact(args: argparse.Namespace) -> int:
    from depthdata.store import Store, select_groups

    options = _storage_options(args.storage_options)
    groups = select_groups(args.store, args.group, options)
    store = Store.open(args.store, mode="r+", storage_options=options)
    written = store.consolidate(groups)
    for path, stage, name in written:
        print(f"{path} ({stage}): {name}")
    print(f"compacted {len(written)} manifest(s) of {len(groups)} group(s); the others were already consolidated")
    if args.drop_removed:
        from depthdata.store.compact import drop_removed
        from depthdata.store.lock import BuildLock

        # a build appending meanwhile would race the plan segment: take the build lock
        with BuildLock(store.fs, store.fs_root, args.store):
            done, version = drop_removed(store, groups)
        for c in done:
            print(f"{c.group}: deleted shard(s) {c.deleted_shards}, moved {c.moved} live sample(s) to new shards; "
                  f"{c.bytes_before / 2**20:.1f} → {c.bytes_after / 2**20:.1f} MiB")
        if version is None:
            print("no removed sample to drop")
        else:
            print(f"committed version {version.number} (older versions expired)")
    return 0


def _history(args: argparse.Namespace) -> int:
    from depthdata.store import Store

    versions = Store.open(args.store, storage_options=_storage_options(args.storage_options), version="working").history()
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2))
        return 0
    if not versions:
        print(f"{args.store}: no version committed yet (a build commits one when every shard succeeded)")
        return 0
    print(f"{'version':>7}  {'committed':25}  {'kind':7}  {'added':>7}  {'removed':>7}  {'samples':>8}  "
          f"{'catalog':16}  depthdata")
    for v in versions:
        print(f"{v.number:>7}  {v.committed:25}  {v.kind:7}  {v.added:>7}  {v.removed:>7}  {v.samples:>8}  "
              f"{v.catalog_hash or '-':16}  {v.package_version}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from depthdata.store.verify import inspect_store

    version = args.version if args.version in (None, "working") else _version_number(args.version)
    info = inspect_store(args.store, _storage_options(args.storage_options), version=version)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    shown = f"version {info['version']}" if info["version"] is not None else "working state (uncommitted work included)"
    print(f"{info['url']}  {shown}, newest {info['latest_version']}  schema v{info['schema_version']}  "
          f"(depthdata {info['package_version']}, created {info['created']})")
    for path, g in info["groups"].items():
        h, w = g["resolution"]
        status = ", ".join(f"{k} {v}" for k, v in sorted(g["status"].items())) or "no samples written"
        print(f"\n{path}: {g['samples']} samples ({status}), {g['shards']} shard(s) of {g['shard_size']}, "
              f"{h}×{w}, {g['bytes'] / 2**20:.1f} MiB")
        print(f"  fields: {', '.join(g['fields']) or 'none'}")
        for stage, s in g["stages"].items():
            todo = f"  missing: {s['incomplete_shards']}" if s["incomplete_shards"] else ""
            print(f"  {stage:8s} {s['complete']}/{s['of']} shards complete{todo}")
    return 0


def _version_number(text: str) -> int:
    from depthdata.errors import DepthdataError

    try:
        return int(text)
    except ValueError:
        raise DepthdataError(f"--version: expected a version number or 'working', got {text!r}") from None
