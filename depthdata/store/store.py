"""A depthdata store: one Zarr v3 hierarchy per build, one group per ``dataset/split``.

Layout under the store URL::

    zarr.json                              root; attributes["depthdata"] = schema version, catalog, ...
    <dataset>/<split>/zarr.json            group; attributes = plan (num_samples, shard_size, H, W, ...)
    <dataset>/<split>/<field>/...          one array per field, chunk = 1 sample, shard = S samples
    _manifest/<dataset>/<split>/_plan.parquet                 index → sample_id, source_uri, locator
    _manifest/<dataset>/<split>/<stage>/shard-000000.parquet  completion record + per-sample rows

Write rules that keep parallel writers correct (Zarr has no locking): a task owns whole shards
and writes each shard of each field once, in one call; the manifest part is written after the
data; fields are created once, before shard tasks start (:meth:`Group.ensure_fields`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import zarr
import zarr.errors
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.buffer.cpu import NDBuffer

import depthdata
from depthdata.errors import StoreError
from depthdata.store import consolidated as cons
from depthdata.store import manifest as mf
from depthdata.store.fields import FIELDS, STAGES, field_spec

SCHEMA_VERSION = 1

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def compressors_for(codec: str, level: int) -> Any:
    """Zarr v3 compressor list for a catalog ``store.compressor`` setting."""
    if codec == "zstd":
        return [ZstdCodec(level=level)]
    if codec == "blosc-lz4":
        return [BloscCodec(cname="lz4", clevel=max(1, min(level, 9)), shuffle="shuffle")]
    if codec == "none":
        return None
    raise StoreError(f"unknown compressor codec {codec!r} (zstd, blosc-lz4, none)")


def sealed(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with a ``checksum`` of the rest, so ``verify`` can tell the store's own metadata
    (the catalog it was built from, its versions) was altered after it was written."""
    rest = {k: v for k, v in meta.items() if k != "checksum"}
    return {**rest, "checksum": mf.config_hash(rest)}


def seal_broken(meta: dict[str, Any]) -> bool:
    """Whether ``meta`` carries a checksum that no longer matches (stores from before the seal
    carry none)."""
    return "checksum" in meta and sealed(meta)["checksum"] != meta["checksum"]


def is_remote(url: str) -> bool:
    """Whether ``url`` names an fsspec location other than the local disk (``file://`` and plain
    paths are local)."""
    return "://" in url and not url.startswith("file://")


@dataclass(frozen=True)
class ShardStatus:
    group: str
    stage: str
    shard: int
    complete: bool
    reason: str = ""


class Store:
    """Handle on a store. Open with :meth:`open`; make with :meth:`create`."""

    def __init__(self, url: str, root: zarr.Group, fs: fsspec.AbstractFileSystem, fs_root: str,
                 storage_options: dict[str, Any]):
        self.url = url
        self.root = root
        self.fs = fs
        self.fs_root = fs_root.rstrip("/")
        self.storage_options = storage_options

    # -- opening ---------------------------------------------------------------------------
    @staticmethod
    def _zarr_store(url: str, storage_options: dict[str, Any], read_only: bool):
        if is_remote(url):
            return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or None, read_only=read_only)
        path = url[len("file://"):] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path, read_only=read_only)

    @classmethod
    def create(cls, url: str, catalog: dict[str, Any] | None = None,
               storage_options: dict[str, Any] | None = None) -> "Store":
        """Open the store at ``url`` for writing, making it when it does not exist yet.

        An existing store must be a depthdata store of this schema version; a path that holds
        anything else is refused rather than written into.
        """
        storage_options = storage_options or {}
        fs, fs_root = fsspec.core.url_to_fs(url, **storage_options)
        if fs.exists(f"{fs_root}/zarr.json"):
            store = cls.open(url, mode="r+", storage_options=storage_options)
            attrs = dict(store.root.attrs["depthdata"])
            if catalog is not None and attrs.get("catalog") != catalog:  # a re-run writes nothing
                attrs["catalog"] = catalog
                store.root.attrs["depthdata"] = sealed(attrs)
            return store
        # a build takes its lock (lock.LOCK_FILE) before it creates the store
        if fs.exists(fs_root) and fs.isdir(fs_root) and \
                [p for p in fs.ls(fs_root, detail=False) if not p.rstrip("/").endswith("/_build.lock")]:
            raise StoreError(f"{url}: exists and is not empty, but is not a depthdata store (no zarr.json)")
        if fs.exists(fs_root) and not fs.isdir(fs_root):
            raise StoreError(f"{url}: exists and is a file, not a store folder")
        zstore = cls._zarr_store(url, storage_options, read_only=False)
        # "a", not "w-": the folder may already hold the build's lock file (checked empty above)
        root = zarr.open_group(store=zstore, mode="a", zarr_format=3)
        root.attrs["depthdata"] = sealed({
            "schema_version": SCHEMA_VERSION,
            "package_version": depthdata.__version__,
            "created": _now(),
            "catalog": catalog,
        })
        return cls(url, root, fs, fs_root, storage_options)

    @classmethod
    def open(cls, url: str, mode: str = "r", storage_options: dict[str, Any] | None = None) -> "Store":
        """Open an existing store (``mode`` ``"r"`` or ``"r+"``); refuse foreign or newer ones."""
        storage_options = storage_options or {}
        fs, fs_root = fsspec.core.url_to_fs(url, **storage_options)
        try:
            found = fs.exists(fs_root)
        except Exception as exc:  # noqa: BLE001 - a client's own error types (botocore, ...)
            if type(exc).__name__ == "NoCredentialsError":
                raise StoreError(f"{url}: no credentials for this object store: pass them in storage options "
                                 "(--storage-options '{\"key\": ..., \"secret\": ...}', or store.storage_options "
                                 "in the catalog) or the client's environment variables") from None
            raise
        if not found:
            raise StoreError(f"{url}: no such store")
        if not fs.exists(f"{fs_root}/zarr.json"):
            raise StoreError(f"{url}: not a depthdata store (no zarr.json at its root)")
        zstore = cls._zarr_store(url, storage_options, read_only=(mode == "r"))
        try:
            root = zarr.open_group(store=zstore, mode="r" if mode == "r" else "r+", zarr_format=3)
        except (zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:  # JSON and Unicode errors too
            raise StoreError(f"{url}: cannot open as a Zarr v3 group: corrupt or foreign zarr.json "
                             f"({url.rstrip('/')}/zarr.json: {exc})") from None
        meta = root.attrs.get("depthdata")
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise StoreError(f"{url}: a Zarr store, but not a depthdata store (no 'depthdata' attributes)")
        version = meta["schema_version"]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{url}: store schema version {version} is not supported by depthdata "
                f"{depthdata.__version__} (which reads version {SCHEMA_VERSION}); "
                "use the depthdata release that wrote it, or rebuild the store"
            )
        return cls(url, root, fs, fs_root, storage_options)

    # -- metadata --------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.root.attrs["depthdata"])

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    def group_paths(self) -> list[str]:
        """``dataset/split`` paths of every group, sorted.

        Read from two levels of folder listings, not from Zarr's members: Zarr would fetch and
        parse every node's ``zarr.json`` (two requests each on object stores), and one corrupt
        node would hide every group behind it. Opening a group (:meth:`group`) checks it."""
        def folders(path: str) -> list[str]:
            try:
                entries = self.fs.ls(path, detail=True, refresh=True)
            except FileNotFoundError:
                return []
            return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")

        # dataset names never start with "_" (the catalog refuses them): "_manifest" is not one
        return [f"{ds}/{split}" for ds in folders(self.fs_root) if not ds.startswith(("_", "."))
                for split in folders(f"{self.fs_root}/{ds}")]

    def group(self, path: str) -> "Group":
        try:
            zg = self.root[path]
        except KeyError:
            known = ", ".join(self.group_paths()) or "none"
            raise StoreError(f"{self.url}: no group {path!r} (groups: {known})") from None
        if not isinstance(zg, zarr.Group) or "plan" not in zg.attrs:
            raise StoreError(f"{self.url}: {path!r} is not a depthdata group")
        return Group(self, path, zg)

    def create_group(self, dataset: str, split: str, sample_ids: Sequence[str], source_uris: Sequence[str],
                     height: int, width: int, shard_size: int, max_pairs: int = 0,
                     compressor: tuple[str, int] = ("blosc-lz4", 5), locators: Sequence[str] | None = None) -> "Group":
        """Plan a group: its samples in order and its geometry. Idempotent for the same plan.

        Re-creating a group with the same plan returns it unchanged (this is how a re-run
        resumes); a different plan (samples added or removed at the source, another resolution
        or shard size) is refused, because shards already written would no longer line up.
        """
        if len(sample_ids) != len(source_uris) or (locators is not None and len(locators) != len(sample_ids)):
            raise ValueError("sample_ids, source_uris and locators differ in length")
        if len(set(sample_ids)) != len(sample_ids):
            dup = next(s for s in sample_ids if list(sample_ids).count(s) > 1)
            raise StoreError(f"{dataset}/{split}: duplicate sample id {dup!r} in the plan")
        path = f"{dataset}/{split}"
        plan = {
            "num_samples": len(sample_ids),
            "shard_size": int(shard_size),
            "height": int(height),
            "width": int(width),
            "max_pairs": int(max_pairs),
            "compressor": list(compressor),
            "ids_checksum": mf.config_hash(list(sample_ids)),
        }
        try:
            existing = self.root[path]
        except KeyError:
            existing = None
        if existing is not None:
            old = dict(existing.attrs.get("plan", {}))
            if old != plan:
                diff = {k: (old.get(k), plan[k]) for k in plan if old.get(k) != plan[k]}
                raise StoreError(
                    f"{self.url}: group {path} exists with a different plan {diff} (old, new); "
                    "build into a new store or delete the group to rebuild it"
                )
            return self.group(path)
        # The plan also keeps each item's locator (JSON), so a shard task on any worker finds
        # its items without listing the source again.
        rows = [{"index": i, "sample_id": s, "source_uri": u, "locator": locators[i] if locators else None}
                for i, (s, u) in enumerate(zip(sample_ids, source_uris))]
        mf.atomic_write(self.fs, f"{self.fs_root}/{mf.plan_path(path)}",
                        mf.table_bytes(rows, {"group": path, **plan}))
        zg = self.root.require_group(dataset).require_group(split)
        zg.attrs["plan"] = plan
        zg.attrs["created"] = _now()
        return self.group(path)

    def consolidate(self, groups: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
        """Consolidate the manifest of every stage of ``groups`` (default all): ``(group, stage,
        file)`` for each consolidated file written (stages already consolidated are left alone)."""
        written = []
        for path in groups or self.group_paths():
            group = self.group(path)
            for stage in group.stages():
                name = group.consolidate(stage)
                if name:
                    written.append((path, stage, name))
        return written

    def sizes(self) -> dict[str, int]:
        """Bytes on disk per group (data and manifest)."""
        out = {}
        for path in self.group_paths():
            total = 0
            for prefix in (path, f"{mf.MANIFEST_DIR}/{path}"):
                total += _tree_bytes(self.fs, f"{self.fs_root}/{prefix}")
            out[path] = int(total)
        return out


def _tree_bytes(fs: fsspec.AbstractFileSystem, path: str) -> int:
    """Bytes of every file under ``path`` (0 when it does not exist)."""
    if mf.is_local(fs):
        # os.walk, not fs.du: fsspec's local walk costs ~0.1 ms of Python per entry, and a
        # group's Zarr shards sit three folders deep (c/<shard>/0/0): 1.5 s for a million samples
        total = 0
        for folder, _, files in os.walk(path):
            total += sum(os.stat(os.path.join(folder, f)).st_size for f in files)
        return total
    return int(fs.du(path, total=True)) if fs.exists(path) else 0


def select_groups(store: Store | str, groups: Iterable[str] | None = None,
                  storage_options: dict[str, Any] | None = None) -> list[str]:
    """``groups`` (``dataset/split`` paths) checked against ``store`` (an open store, or a URL
    opened with ``storage_options``), or every group of the store when none are named; a store
    without groups is refused (nothing to read)."""
    if isinstance(store, str):
        store = Store.open(store, storage_options=storage_options)
    url, known = store.url, store.group_paths()
    chosen = list(groups) if groups else known
    for path in chosen:
        if path not in known:
            raise StoreError(f"{url}: no group {path!r} (groups: {', '.join(known) or 'none'})")
    if not chosen:
        raise StoreError(f"{url}: the store has no groups")
    return chosen


class Group:
    """One ``dataset/split``: writing whole shards, reading samples, shards and the manifest."""

    def __init__(self, store: Store, path: str, zgroup: zarr.Group):
        self.store = store
        self.path = path
        self.zgroup = zgroup
        self.plan: dict[str, Any] = dict(zgroup.attrs["plan"])
        self._plan_table: pa.Table | None = None
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._stage_index: dict[str, cons.StageIndex] = {}
        self._fields: list[str] | None = None

    def __repr__(self) -> str:
        return f"Group({self.store.url!r}, {self.path!r}, samples={len(self)}, shards={self.num_shards})"

    def __len__(self) -> int:
        return int(self.plan["num_samples"])

    @property
    def height(self) -> int:
        return int(self.plan["height"])

    @property
    def width(self) -> int:
        return int(self.plan["width"])

    @property
    def shard_size(self) -> int:
        return int(self.plan["shard_size"])

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self) / self.shard_size) if len(self) else 0

    def shard_range(self, shard: int) -> range:
        """Sample indices (0-based) of ``shard``."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"{self.path}: shard {shard} out of range 0..{self.num_shards - 1}")
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, len(self)))

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    # -- plan ------------------------------------------------------------------------------
    def plan_table(self) -> pa.Table:
        """The plan: one row per sample in index order (``index``, ``sample_id``, ``source_uri``,
        ``locator``). Read once per Group object: a group's plan never changes after
        :meth:`Store.create_group` (a different plan is refused there)."""
        if self._plan_table is None:
            self._plan_table, _ = mf.read_table(self.store.fs, f"{self.store.fs_root}/{mf.plan_path(self.path)}")
        return self._plan_table

    @property
    def sample_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self.plan_table().column("sample_id").to_pylist()
        return self._ids

    def source_uris(self, shard: int | None = None) -> list[str]:
        """Source URIs from the plan in index order: every sample's, or ``shard``'s. Known for
        samples whose shard is not built yet."""
        column = self.plan_table().column("source_uri")
        if shard is None:
            return column.to_pylist()
        idx = self.shard_range(shard)
        return column.slice(idx.start, len(idx)).to_pylist()

    def plan_rows(self, shard: int) -> list[dict[str, Any]]:
        """The plan's rows (index, sample_id, source_uri, locator) of ``shard``."""
        idx = self.shard_range(shard)
        return self.plan_table().slice(idx.start, len(idx)).to_pylist()

    def index_of(self, sample_id: str) -> int:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.sample_ids)}
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f"{self.path}: no sample {sample_id!r}") from None

    # -- fields ----------------------------------------------------------------------------
    def fields(self) -> list[str]:
        """Fields that have an array in this group (some shards may not be written yet). Read
        once per Group object (on object stores, a listing and one request per array) and kept
        current by :meth:`ensure_fields`; arrays are only ever added, before shard tasks run."""
        if self._fields is None:
            recorded = self.zgroup.attrs.get("fields")
            # stores written before the group recorded its fields: list the arrays
            self._fields = sorted(recorded) if recorded is not None else self.array_names()
        return list(self._fields)

    def array_names(self) -> list[str]:
        """The fields that have an array, from Zarr's members (what :meth:`fields` records)."""
        return sorted(name for name, _ in self.zgroup.arrays() if name in FIELDS)

    def ensure_fields(self, names: Iterable[str]) -> None:
        """Create the arrays of ``names`` if missing, and record the group's fields in its
        attributes (readers take them from there: no request per array). Call once, before
        parallel shard writes."""
        existing = set(self.array_names())  # the arrays themselves: the writer's truth
        codec, level = self.plan["compressor"]
        for name in names:
            if name in existing:
                continue
            spec = field_spec(name)
            sample_shape = spec.shape(self.height, self.width, int(self.plan["max_pairs"]))
            self.zgroup.create_array(
                name,
                shape=(len(self), *sample_shape),
                chunks=(1, *sample_shape),
                shards=(self.shard_size, *sample_shape),
                dtype=spec.dtype,
                fill_value=spec.fill,
                compressors=compressors_for(codec, int(level)),
                dimension_names=("sample", *("y", "x", "c")[: len(sample_shape)]) if spec.sample_shape != "pairs"
                else ("sample", "pair", "column"),
                attributes={"doc": spec.doc, "stage": spec.stage},
            )
            existing.add(name)
        if self.zgroup.attrs.get("fields") != sorted(existing):
            self.zgroup.attrs["fields"] = sorted(existing)
        self._fields = sorted(existing)

    def array(self, name: str) -> zarr.Array:
        if name in self._arrays:
            return self._arrays[name]
        try:
            arr = self.zgroup[name]
        except KeyError:
            raise StoreError(f"{self.store.url}: group {self.path} has no field {name!r} "
                             f"(fields: {', '.join(self.fields()) or 'none'})") from None
        self._arrays[name] = arr  # opening reads zarr.json; a group's arrays never change shape
        return arr

    # -- writing ---------------------------------------------------------------------------
    def write_shard(self, shard: int, stage: str, data: dict[str, np.ndarray], rows: list[dict[str, Any]],
                    config: dict[str, Any] | None = None) -> None:
        """Write ``stage``'s fields of one whole shard, then its manifest part.

        ``data[field]`` holds every sample of the shard (sample axis first). ``rows`` are the
        per-sample manifest rows (stats, lineage, status); this adds ``index``, ``sample_id``,
        ``shard`` and one ``checksum_<field>`` column per field. ``config`` (the stage's settings)
        is hashed into the part so that a re-run with other settings redoes the shard.
        """
        idx = self.shard_range(shard)
        expected = set(STAGES.get(stage, ()))
        unknown = set(data) - expected
        if unknown:
            raise ValueError(f"fields {sorted(unknown)} do not belong to stage {stage!r} (its fields: {sorted(expected)})")
        if len(rows) != len(idx):
            raise ValueError(f"{self.path} shard {shard}: {len(rows)} manifest rows for {len(idx)} samples")
        ids = self.sample_ids
        full_rows = []
        for name, arr in data.items():
            target = self.array(name)
            want = (len(idx), *target.shape[1:])
            if arr.shape != want:
                raise ValueError(f"{self.path} shard {shard} field {name}: shape {arr.shape}, expected {want}")
        for j, i in enumerate(idx):
            row = {"index": i, "sample_id": ids[i], "shard": shard, **rows[j]}
            if row["sample_id"] != ids[i]:
                raise ValueError(f"{self.path}: row {j} of shard {shard} is for {rows[j].get('sample_id')!r}, "
                                 f"the plan says {ids[i]!r}")
            for name, arr in data.items():
                row[f"checksum_{name}"] = mf.checksum(arr[j].astype(field_spec(name).dtype, copy=False))
            full_rows.append(row)
        # Data first, in one call per field (a whole shard: no read-modify-write) ...
        for name, arr in data.items():
            self.array(name)[idx.start: idx.stop] = arr.astype(field_spec(name).dtype, copy=False)
        # ... then the completion record.
        meta = {
            "group": self.path, "stage": stage, "shard": shard, "fields": sorted(data),
            "config_hash": mf.config_hash(config or {}), "config": config or {},
            "written": _now(), "package_version": depthdata.__version__,
        }
        mf.atomic_write(self.store.fs, self.part_path(stage, shard), mf.table_bytes(full_rows, meta))

    def part_path(self, stage: str, shard: int) -> str:
        """Filesystem path (in ``store.fs``) of ``stage``'s manifest part for ``shard``; the part
        exists once :meth:`write_shard` has completed that shard."""
        return f"{self.store.fs_root}/{mf.part_path(self.path, stage, shard)}"

    # -- completion ------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> str:
        """Filesystem path of ``stage``'s manifest folder (its parts and consolidated files)."""
        return f"{self.store.fs_root}/{mf.MANIFEST_DIR}/{self.path}/{stage}"

    def stage_index(self, stage: str) -> cons.StageIndex:
        """What the manifest says of ``stage`` now: one listing, the newest consolidated file and
        any parts newer than it (:mod:`depthdata.store.consolidated`). Files read by an earlier
        call on this Group are not read again unless the listing shows them changed."""
        index = cons.load(self.store.fs, self.stage_dir(stage), stage, self._stage_index.get(stage))
        self._stage_index[stage] = index
        return index

    def shard_status(self, shard: int, stage: str, config: dict[str, Any] | None = None) -> ShardStatus:
        """Whether ``stage`` is complete for ``shard``: its part exists, parses, has one row per
        sample, names this shard, and (when ``config`` is given) was written with those settings.

        This is the cheap check a shard task makes (one part read); for every shard at once use
        :meth:`shard_statuses`. :func:`depthdata.store.verify.verify_store` re-hashes the data.
        """
        path = self.part_path(stage, shard)
        if not self.store.fs.exists(path):
            return ShardStatus(self.path, stage, shard, False, "no manifest part")
        try:
            table, meta = mf.read_table(self.store.fs, path)
        except (OSError, pa.ArrowInvalid) as exc:
            return ShardStatus(self.path, stage, shard, False, f"manifest part unreadable: {exc}")
        return self._status(shard, stage, table.num_rows, meta, config, set(self.fields()))

    def shard_statuses(self, stage: str, config: dict[str, Any] | None = None,
                       index: cons.StageIndex | None = None) -> list[ShardStatus]:
        """:meth:`shard_status` of every shard, from the stage's index (a handful of requests
        whatever the number of shards); ``index``: one already loaded by :meth:`stage_index`."""
        index, present = index or self.stage_index(stage), set(self.fields())
        return [self._status_from_index(k, index, config, present) for k in range(self.num_shards)]

    def _status_from_index(self, shard: int, index: cons.StageIndex, config: dict[str, Any] | None,
                           present: set[str]) -> ShardStatus:
        if shard in index.unreadable:
            return ShardStatus(self.path, index.stage, shard, False, index.unreadable[shard])
        rec = index.parts.get(shard)
        if rec is None:
            return ShardStatus(self.path, index.stage, shard, False, "no manifest part")
        return self._status(shard, index.stage, rec.rows, rec.meta, config, present)

    def _status(self, shard: int, stage: str, rows: int, meta: dict[str, Any],
                config: dict[str, Any] | None, present: set[str]) -> ShardStatus:
        def status(ok: bool, reason: str = "") -> ShardStatus:
            return ShardStatus(self.path, stage, shard, ok, reason)

        if rows != len(self.shard_range(shard)) or meta.get("shard") != shard:
            return status(False, "manifest part does not match the shard")
        missing = [f for f in meta.get("fields", []) if f not in present]
        if missing:
            return status(False, f"manifest part names fields without data: {missing}")
        if config is not None and meta.get("config_hash") != mf.config_hash(config):
            return status(False, "written with other settings")
        return status(True)

    def is_complete(self, shard: int, stage: str, config: dict[str, Any] | None = None) -> bool:
        return self.shard_status(shard, stage, config).complete

    def shard_rows(self, shard: int, stage: str, needed_by: str = "this stage") -> list[dict[str, Any]]:
        """Manifest rows of ``stage`` for ``shard`` in index order; the stage must be complete."""
        if not self.is_complete(shard, stage):
            raise StoreError(f"{self.store.url}: group {self.path} shard {shard}: {stage} is not complete "
                             f"(run {stage} before {needed_by})")
        table, _ = mf.read_table(self.store.fs, self.part_path(stage, shard))
        return table.sort_by("index").to_pylist()

    def stages(self) -> list[str]:
        """Stages that have at least one manifest part in this group."""
        base = f"{self.store.fs_root}/{mf.MANIFEST_DIR}/{self.path}"
        if not self.store.fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.store.fs.ls(base, detail=False)
                      if self.store.fs.isdir(p))

    def complete_shards(self, stage: str) -> list[int]:
        return [s.shard for s in self.shard_statuses(stage) if s.complete]

    def consolidate(self, stage: str) -> str | None:
        """Write ``stage``'s consolidated manifest from its parts as they are now; returns the
        file written (``None`` when there are no parts, or the newest consolidated file already
        says everything). Safe while shards are still being written: a part written after the
        listing is simply newer than the file."""
        index = self.stage_index(stage)
        extra = {"group": self.path, "num_shards": self.num_shards, "written": _now(),
                 "package_version": depthdata.__version__}
        name = cons.write(self.store.fs, self.stage_dir(stage), index, extra)
        if name:
            log.info("%s: consolidated %d %s part(s) into %s", self.path, len(index.parts), stage, name)
            # older files say less; a reader that listed one just before falls back to the parts
            cons.prune(self.store.fs, self.stage_dir(stage), keep=name)
        return name

    # -- reading ---------------------------------------------------------------------------
    def read_shard(self, shard: int, fields: Sequence[str],
                   out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every sample of ``shard`` for ``fields``: one request per field, fields in parallel.

        Fields are fetched and decoded concurrently: the codecs release the GIL, so I/O of one
        field overlaps decompression of another (benchmarks/bench_store.py measures it).
        ``out`` (field → array with at least the shard's length on the sample axis, the field's
        dtype and sample shape) receives the data instead of new arrays: a streaming reader
        recycles a few shard buffers instead of faulting fresh memory in for every shard.
        """
        idx = self.shard_range(shard)
        arrays = [self.array(name) for name in fields]

        def read(name: str, arr: zarr.Array) -> np.ndarray:
            if out is None:
                return arr[idx.start: idx.stop]
            dest = out[name][: len(idx)]
            if dest.shape != (len(idx), *arr.shape[1:]) or dest.dtype != arr.dtype:
                raise ValueError(f"{self.path}/{name}: buffer {dest.shape} {dest.dtype} does not fit shard {shard} "
                                 f"({(len(idx), *arr.shape[1:])} {arr.dtype})")
            arr.get_basic_selection(slice(idx.start, idx.stop), out=NDBuffer.from_numpy_array(dest))
            return dest

        if len(arrays) < 2:
            return {name: read(name, arr) for name, arr in zip(fields, arrays)}
        with ThreadPoolExecutor(max_workers=len(arrays)) as pool:
            data = list(pool.map(read, fields, arrays))
        return dict(zip(fields, data))

    def read(self, key: int | str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """One sample by 0-based index or sample id, as ``{"sample_id": ..., field: array}``."""
        index = self.index_of(key) if isinstance(key, str) else int(key)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range 0..{len(self) - 1}")
        out: dict[str, Any] = {"sample_id": self.sample_ids[index], "index": index}
        for name in fields or self.fields():
            out[name] = self.array(name)[index]
        return out

    def manifest(self, stage: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """The manifest rows of complete shards: one stage's, or every stage joined on index.

        ``columns`` reads only those (plus ``index``; missing ones are left out): planning a
        million-sample stream needs three columns, not all of them."""
        stages = [stage] if stage else self.stages()
        wanted = None if columns is None else tuple(dict.fromkeys(["index", *columns]))
        merged: pa.Table | None = None
        for st in stages:
            index = self.stage_index(st)
            table = index.rows([s.shard for s in self.shard_statuses(st, index=index) if s.complete], wanted)
            if table is None:
                continue
            table = table.sort_by("index")
            if merged is None:
                merged = table
            else:
                drop = [c for c in ("sample_id", "shard") if c in table.column_names]
                table = table.drop_columns(drop)
                rename = {c: f"{st}.{c}" for c in table.column_names if c != "index" and c in merged.column_names}
                table = table.rename_columns([rename.get(c, c) for c in table.column_names])
                merged = merged.join(table, "index", join_type="left outer").sort_by("index")
        if merged is None:
            return pa.table({"index": pa.array([], pa.int64()), "sample_id": pa.array([], pa.string())})
        return merged
