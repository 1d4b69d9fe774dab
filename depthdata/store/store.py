"""A depthdata store: one Zarr v3 hierarchy per build, one group per ``dataset/split``.

Layout under the store URL::

    zarr.json                              root; attributes["depthdata"] = schema version, catalog, ...
    <dataset>/<split>/zarr.json            group; attributes = plan (shard_size, H, W, resize, ...)
    <dataset>/<split>/<field>/...          one array per field, chunk = 1 sample, shard = S samples
    _manifest/<dataset>/<split>/_plan-000000.parquet          slot → sample_id, source_uri, ... (plan.py)
    _manifest/<dataset>/<split>/_plan-upto-000002.parquet     segments 0-1 in one file, named by a version
    _manifest/<dataset>/<split>/<stage>/shard-000000.parquet  completion record + per-sample rows
    _manifest/<dataset>/<split>/<stage>/consolidated-*.parquet  every part's rows in one file
    _versions/v000001.json                 a committed version (versions.py)

Write rules that keep parallel writers correct (Zarr has no locking): a task owns whole shards
and writes each shard of each field once, in one call; the manifest part is written after the
data; fields are created once, before shard tasks start (:meth:`Group.ensure_fields`).

A store opened for reading shows its newest committed version (or a pinned one); a store opened
for writing (``mode="r+"``) shows the *working* state: every plan segment and manifest part on
disk, committed or not.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
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
from depthdata.store import plan as pl
from depthdata.store import versions as vs
from depthdata.store.fields import FIELDS, STAGES, field_spec

#: 2: plans in append-only segments, committed versions
SCHEMA_VERSION = 2
#: ``Store.open(..., version=WORKING)``: every segment and part on disk, committed or not
WORKING = "working"

log = logging.getLogger(__name__)


def _now(timespec: str = "seconds") -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


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
                 storage_options: dict[str, Any], version: vs.Version | None = None):
        self.url = url
        self.root = root
        self.fs = fs
        self.fs_root = fs_root.rstrip("/")
        self.storage_options = storage_options
        #: the committed version this handle reads; ``None``: the working state
        self.version = version
        self._pinned_files: dict[tuple[str, str], frozenset[str]] | None = None

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
    def open(cls, url: str, mode: str = "r", storage_options: dict[str, Any] | None = None,
             version: int | str | None = None) -> "Store":
        """Open an existing store (``mode`` ``"r"`` or ``"r+"``); refuse foreign or newer ones.

        ``version`` (reading only): ``None`` for the newest committed version (the working state
        when none is committed yet, with a log line saying so), a version number to pin one, or
        :data:`WORKING` for everything on disk. ``mode="r+"`` always works on the working state.
        """
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
        except (zarr.errors.GroupNotFoundError, ValueError, KeyError, TypeError) as exc:  # JSON, Unicode, bad keys
            raise StoreError(f"{url}: cannot open as a Zarr v3 group: corrupt or foreign zarr.json "
                             f"({url.rstrip('/')}/zarr.json: {exc})") from None
        meta = root.attrs.get("depthdata")
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise StoreError(f"{url}: a Zarr store, but not a depthdata store (no 'depthdata' attributes)")
        schema = meta["schema_version"]
        if schema != SCHEMA_VERSION:
            raise StoreError(
                f"{url}: store schema version {schema} is not supported by depthdata "
                f"{depthdata.__version__} (which reads version {SCHEMA_VERSION}); "
                "use the depthdata release that wrote it, or rebuild the store"
            )
        store = cls(url, root, fs, fs_root, storage_options)
        if mode != "r":
            if version not in (None, WORKING):
                raise StoreError(f"{url}: a version can only be pinned for reading (mode='r')")
            return store
        if version == WORKING:
            return store
        have_latest = None
        if version is None:
            have = vs.numbers(fs, store.fs_root)
            if not have:
                log.info("%s: no version committed yet: reading the working state", url)
                return store
            version = have_latest = have[-1]
        if isinstance(version, bool) or not isinstance(version, int):
            raise StoreError(f"{url}: version must be a number or {WORKING!r}, got {version!r}")
        store.version = vs.read(fs, store.fs_root, version, url)
        latest = store.latest_version() if version != have_latest else store.version
        if latest is not None and latest.expires_before and version < latest.expires_before:
            raise StoreError(f"{url}: version {version} has expired: `depthdata compact --drop-removed` (version "
                             f"{latest.expires_before}) rewrote shards it names; read version "
                             f"{latest.expires_before} or later")
        return store

    # -- versions --------------------------------------------------------------------------
    def history(self) -> list[vs.Version]:
        """Every committed version, oldest first."""
        return vs.history(self.fs, self.fs_root, self.url)

    def latest_version(self) -> vs.Version | None:
        have = vs.numbers(self.fs, self.fs_root)
        return vs.read(self.fs, self.fs_root, have[-1], self.url) if have else None

    def pinned_manifests(self, group: str, stage: str) -> frozenset[str]:
        """Consolidated files of ``group``/``stage`` that some committed version names (never pruned)."""
        if self._pinned_files is None:
            pinned: dict[tuple[str, str], set[str]] = {}
            for v in self.history():
                for path, g in v.groups.items():
                    for st, name in g.stages.items():
                        pinned.setdefault((path, st), set()).add(name)
            self._pinned_files = {k: frozenset(v) for k, v in pinned.items()}
        return self._pinned_files.get((group, stage), frozenset())

    def commit(self, kind: str = "build", catalog_hash: str | None = None,
               groups: Iterable[str] | None = None, expire_older: bool = False) -> vs.Version | None:
        """Consolidate every group's stages and commit what is on disk as the next version.

        Call after every shard of a build finished (a reader of the new version serves exactly
        the consolidated rows it names). Groups not in ``groups`` (default: all) keep what the
        previous version says of them. Returns the new version, or ``None`` when nothing changed
        since the previous one (no version is written then). ``expire_older``: older versions
        can no longer be read (a compaction deleted shards they name)."""
        if self.version is not None:
            raise StoreError(f"{self.url}: commit from a store opened for writing, not a pinned version")
        parent = self.latest_version()
        chosen = set(groups) if groups is not None else None
        entries: dict[str, vs.GroupVersion] = {}
        for path in self.group_paths():
            before = parent.groups.get(path) if parent else None
            if chosen is not None and path not in chosen:
                if before is not None:
                    entries[path] = before
                continue
            group = self.group(path)
            stages = {}
            for stage in group.stages():
                index = group.stage_index(stage)
                name = (group.consolidate(stage) if index.consolidation_needed else None) or index.consolidated
                if name:
                    stages[stage] = name
            plan = group.layout
            added, removed = plan.changes_since(before.segments if before else 0)
            checkpoint = plan.segments > 1
            if checkpoint and not (before is not None and before.segments == plan.segments and before.plan_checkpoint):
                pl.write_checkpoint(self.fs, group.manifest_dir, plan, {"group": path, **group.plan})
            entries[path] = vs.GroupVersion(plan.segments, len(group), added, removed, stages, checkpoint)

        def state(groups: dict[str, vs.GroupVersion]) -> dict[str, tuple[int, int, dict[str, str]]]:
            return {p: (g.segments, g.samples, g.stages) for p, g in groups.items()}

        if parent is not None and state(entries) == state(parent.groups):
            log.info("%s: nothing changed since version %d; no new version", self.url, parent.number)
            return None
        meta = self.meta
        version = vs.Version(
            number=(parent.number + 1) if parent else 1, committed=vs.now(), kind=kind,
            package_version=depthdata.__version__,
            catalog_hash=catalog_hash or (mf.config_hash(meta["catalog"]) if meta.get("catalog") else None),
            groups=entries, parent=parent.number if parent else None,
            expires_before=None if not parent else parent.expires_before)
        if expire_older:
            version = replace(version, expires_before=version.number)
        vs.write(self.fs, self.fs_root, version)
        self._pinned_files = None
        log.info("%s: committed version %d (%d added, %d removed, %d samples)", self.url, version.number,
                 version.added, version.removed, version.samples)
        return version

    # -- metadata --------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.root.attrs["depthdata"])

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    def group_paths(self) -> list[str]:
        """``dataset/split`` paths of every group, sorted.

        A pinned version names its groups. Otherwise they are read from two levels of folder
        listings, not from Zarr's members: Zarr would fetch and parse every node's ``zarr.json``
        (two requests each on object stores), and one corrupt node would hide every group behind
        it. Opening a group (:meth:`group`) checks it."""
        if self.version is not None:
            return sorted(self.version.groups)

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
        view = None
        if self.version is not None:
            view = self.version.groups.get(path)
            if view is None:
                raise StoreError(f"{self.url}: no group {path!r} in version {self.version.number} "
                                 f"(groups: {', '.join(self.group_paths()) or 'none'})")
        try:
            zg = self.root[path]
        except KeyError:
            known = ", ".join(self.group_paths()) or "none"
            raise StoreError(f"{self.url}: no group {path!r} (groups: {known})") from None
        if not isinstance(zg, zarr.Group) or "plan" not in zg.attrs:
            raise StoreError(f"{self.url}: {path!r} is not a depthdata group")
        return Group(self, path, zg, view)

    def create_group(self, dataset: str, split: str, sample_ids: Sequence[str], source_uris: Sequence[str],
                     height: int, width: int, shard_size: int, max_pairs: int = 0,
                     compressor: tuple[str, int] = ("blosc-lz4", 5), locators: Sequence[str | None] | None = None,
                     fingerprints: Sequence[str] | None = None, resize: str = "") -> "Group":
        """Plan a new group: its samples in slots ``0..n-1`` and its geometry.

        An existing group is returned as it is when its geometry is the same (how a re-run
        resumes; :meth:`Group.append` then adds what the source gained), and refused when it is
        not: another resolution, resize mode, shard size, pairs capacity or codec cannot be
        appended to shards already written."""
        n = len(sample_ids)
        if len(source_uris) != n or (locators is not None and len(locators) != n) or \
                (fingerprints is not None and len(fingerprints) != n):
            raise ValueError("sample_ids, source_uris, locators and fingerprints differ in length")
        if len(set(sample_ids)) != n:
            dup = next(s for s in sample_ids if list(sample_ids).count(s) > 1)
            raise StoreError(f"{dataset}/{split}: duplicate sample id {dup!r} in the plan")
        path = f"{dataset}/{split}"
        plan = {
            "shard_size": int(shard_size),
            "height": int(height),
            "width": int(width),
            "max_pairs": int(max_pairs),
            "compressor": list(compressor),
            "resize": resize,
        }
        try:
            existing = self.root[path]
        except KeyError:
            existing = None
        if existing is not None and "plan" not in existing.attrs:
            # a creation cut short between the group's zarr.json and its attributes (a kill, an
            # outage): nothing was written into the group yet, so finish creating it
            existing = None
        if existing is not None:
            old = dict(existing.attrs.get("plan", {}))
            if old != plan:
                diff = {k: (old.get(k), plan[k]) for k in plan if old.get(k) != plan[k]}
                raise StoreError(
                    f"{self.url}: group {path} was built with other settings {diff} (old, new); samples "
                    "stored that way cannot be appended to: build into a new store, or under another "
                    "dataset name"
                )
            return self.group(path)
        rows = [{"index": i, "sample_id": s, "source_uri": u, "locator": locators[i] if locators else None,
                 "fingerprint": fingerprints[i] if fingerprints else None, "op": "add"}
                for i, (s, u) in enumerate(zip(sample_ids, source_uris))]
        if not rows:
            raise StoreError(f"{path}: a group needs at least one sample")
        # The plan also keeps each item's locator (JSON), so a shard task on any worker finds
        # its items without listing the source again.
        pl.write_segment(self.fs, f"{self.fs_root}/{mf.group_dir(path)}", 0, rows, {"group": path, **plan})
        # the group's zarr.json is written once, with its attributes: a group without its plan
        # could be neither read nor planned again (see above for stores cut short before this)
        parent = self.root.require_group(dataset)
        attributes = {"plan": plan, "created": _now()}
        if split in parent:
            parent[split].attrs.update(attributes)
        else:
            parent.create_group(split, attributes=attributes)
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
    """One ``dataset/split``: writing whole shards, reading samples, shards and the manifest.

    Samples sit in *slots* (0-based positions on every field's sample axis). Slots of a group
    built once are ``0..n-1``; a later build appends whole shards, so the sample axis may have
    unused slots (holes) before an appended shard, and a removed sample's slot stays (a
    tombstone). ``len(group)`` counts live samples; :attr:`num_slots` is the axis length.
    """

    def __init__(self, store: Store, path: str, zgroup: zarr.Group, view: vs.GroupVersion | None = None):
        self.store = store
        self.path = path
        self.zgroup = zgroup
        #: the group's geometry (shard size, resolution, ...): never changes
        self.plan: dict[str, Any] = dict(zgroup.attrs["plan"])
        #: what a committed version says of this group; ``None``: the working state
        self.view = view
        self._layout: pl.Plan | None = None
        self._index: dict[str, int] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._stage_index: dict[str, cons.StageIndex] = {}
        self._fields: list[str] | None = None

    def __repr__(self) -> str:
        return f"Group({self.store.url!r}, {self.path!r}, samples={len(self)}, shards={self.num_shards})"

    def __len__(self) -> int:
        """Live samples (planned and not removed)."""
        return int(self.live_mask().sum())

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
    def num_slots(self) -> int:
        """Length of the sample axis the plan uses (holes and removed slots included)."""
        return self.layout.slots

    @property
    def num_shards(self) -> int:
        return self.layout.num_shards

    def shard_range(self, shard: int) -> range:
        """Slots (0-based) of ``shard``: the first ``count`` of its ``shard_size``."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"{self.path}: shard {shard} out of range 0..{self.num_shards - 1}")
        start = shard * self.shard_size
        return range(start, start + int(self.layout.shard_counts()[shard]))

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    def live_shards(self) -> list[int]:
        """Shards holding at least one live sample: the shards builds run and readers serve (a
        shard whose samples were all removed is retired)."""
        return np.flatnonzero(self.layout.live_shards()).tolist()

    # -- plan ------------------------------------------------------------------------------
    @property
    def layout(self) -> pl.Plan:
        """The plan (:class:`~depthdata.store.plan.Plan`) this handle sees: the segments its
        version names, or every segment on disk. Read once per Group object."""
        if self._layout is None:
            view = self.view
            self._layout = pl.read(self.store.fs, self.manifest_dir, self.shard_size,
                                   view.segments if view is not None else None,
                                   checkpoint=view is not None and view.plan_checkpoint)
        return self._layout

    @property
    def manifest_dir(self) -> str:
        """Filesystem path of the group's manifest folder (plan segments, one folder per stage)."""
        return f"{self.store.fs_root}/{mf.group_dir(self.path)}"

    def plan_table(self) -> pa.Table:
        """The plan's samples: one row per slot that holds one (``index``, ``sample_id``,
        ``source_uri``, ``locator``, ``fingerprint``), removed ones included."""
        return self.layout.adds

    def live_mask(self) -> np.ndarray:
        """Per slot: holds a sample that is not removed."""
        return self.layout.live_mask()

    @property
    def sample_ids(self) -> list[str | None]:
        """Sample id per slot (``None`` for a hole)."""
        return self.layout.sample_ids()

    def source_uris(self, shard: int | None = None) -> list[str | None]:
        """Source URIs from the plan per slot: every slot's, or ``shard``'s. Known for samples
        whose shard is not built yet."""
        if shard is None:
            return self.layout.column("source_uri")
        idx = self.shard_range(shard)
        return self.layout.rows(idx.start, idx.stop).column("source_uri").to_pylist()

    def plan_rows(self, shard: int) -> list[dict[str, Any]]:
        """The plan's rows (index, sample_id, source_uri, locator, fingerprint) of ``shard``."""
        idx = self.shard_range(shard)
        return self.layout.rows(idx.start, idx.stop).to_pylist()

    def index_of(self, sample_id: str) -> int:
        """The slot of a live sample."""
        if self._index is None:
            live = self.live_mask()
            self._index = {s: i for i, s in enumerate(self.sample_ids) if s is not None and live[i]}
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f"{self.path}: no sample {sample_id!r}") from None

    def append(self, adds: Sequence[dict[str, Any]], removes: Sequence[int] = (),
               touches: Sequence[tuple[int, str]] = ()) -> tuple[int, int]:
        """Record what the source gained, lost and re-touched as the next plan segment.

        ``adds``: rows with ``sample_id``, ``source_uri``, ``locator``, ``fingerprint``, given
        slots from the start of the next unused shard on; ``removes``: live slots to tombstone;
        ``touches``: ``(slot, fingerprint)`` of unchanged items with a new fingerprint. Writes
        nothing when all are empty. Returns the new shards' range ``(first, stop)``. Call
        :meth:`ensure_fields` after, to grow the arrays."""
        if self.view is not None:
            raise StoreError(f"{self.path}: cannot append through a pinned version")
        layout = self.layout
        first_shard = layout.num_shards
        if not adds and not removes and not touches:
            return first_shard, first_shard
        live = layout.live_mask()
        bad = [i for i in removes if not (0 <= i < len(live) and live[i])]
        if bad:
            raise ValueError(f"{self.path}: cannot remove slots {bad[:5]}: not live samples")
        live_ids = {s for i, s in enumerate(layout.sample_ids()) if s is not None and live[i]} - \
            {layout.sample_ids()[i] for i in removes}
        clash = [r["sample_id"] for r in adds if r["sample_id"] in live_ids]
        if clash or len({r["sample_id"] for r in adds}) != len(adds):
            raise StoreError(f"{self.path}: duplicate sample id {(clash or [r['sample_id'] for r in adds])[0]!r}")
        start = layout.next_slot()
        rows = [{"index": start + j, "sample_id": r["sample_id"], "source_uri": r["source_uri"],
                 "locator": r.get("locator"), "fingerprint": r.get("fingerprint"), "op": "add"}
                for j, r in enumerate(adds)]
        rows += [{"index": int(i), "sample_id": layout.sample_ids()[i], "source_uri": None, "locator": None,
                  "fingerprint": None, "op": "remove"} for i in removes]
        rows += [{"index": int(i), "sample_id": layout.sample_ids()[i], "source_uri": None, "locator": None,
                  "fingerprint": fp, "op": "touch"} for i, fp in touches]
        pl.write_segment(self.store.fs, self.manifest_dir, layout.segments, rows, {"group": self.path, **self.plan})
        self._layout, self._index = None, None
        return first_shard, self.num_shards

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
        """Create the arrays of ``names`` if missing, grow every array to the plan's slots, and
        record the group's fields in its attributes (readers take them from there: no request
        per array). Call once, before parallel shard writes.

        Growing rewrites only each array's ``zarr.json``: the shard grid stays the same, so no
        shard already written is touched, and a reader that opened the array before keeps
        reading its slots."""
        if self.view is not None:
            raise StoreError(f"{self.path}: cannot add fields through a pinned version")
        existing = set(self.array_names())  # the arrays themselves: the writer's truth
        codec, level = self.plan["compressor"]
        slots = self.num_slots
        for name in existing:
            arr = self.array(name)
            if arr.shape[0] < slots:
                arr.resize((slots, *arr.shape[1:]))
        for name in names:
            if name in existing:
                continue
            spec = field_spec(name)
            sample_shape = spec.shape(self.height, self.width, int(self.plan["max_pairs"]))
            self.zgroup.create_array(
                name,
                shape=(slots, *sample_shape),
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
                    config: dict[str, Any] | None = None, upstream: dict[str, str] | None = None) -> None:
        """Write ``stage``'s fields of one whole shard, then its manifest part.

        ``data[field]`` holds every sample of the shard (sample axis first). ``rows`` are the
        per-sample manifest rows (stats, lineage, status); this adds ``index``, ``sample_id``,
        ``shard`` and one ``checksum_<field>`` column per field. ``config`` (the stage's settings)
        is hashed into the part so that a re-run with other settings redoes the shard;
        ``upstream`` (stage → :meth:`part_digest` of the parts this shard was made from) is kept
        in it so that a re-run after an upstream change redoes it too.
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
            "upstream": upstream or {}, "package_version": depthdata.__version__,
            # to the microsecond: a retry tells its own attempt's part from one written by
            # another run in the same second (flows.stages.written_since)
            "written": _now("microseconds"),
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
        """What the manifest says of ``stage``: in a pinned version, the consolidated file it
        names (no listing); otherwise one listing, the newest consolidated file and any parts
        newer than it (:mod:`depthdata.store.consolidated`). Files read by an earlier call on
        this Group are not read again unless the listing shows them changed."""
        if self.view is not None:
            if stage not in self._stage_index:
                self._stage_index[stage] = cons.load_pinned(self.store.fs, self.stage_dir(stage), stage,
                                                            self.view.stages.get(stage))
            return self._stage_index[stage]
        index = cons.load(self.store.fs, self.stage_dir(stage), stage, self._stage_index.get(stage))
        self._stage_index[stage] = index
        return index

    def shard_status(self, shard: int, stage: str, config: dict[str, Any] | None = None,
                     upstream: dict[str, str] | None = None) -> ShardStatus:
        """Whether ``stage`` is complete for ``shard``: its part exists, parses, has one row per
        sample, names this shard, and (when given) was written with ``config`` from the
        ``upstream`` parts with those digests (:meth:`part_digest`).

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
        return self._status(shard, stage, table.num_rows, meta, config, set(self.fields()), upstream)

    def shard_statuses(self, stage: str, config: dict[str, Any] | None = None,
                       index: cons.StageIndex | None = None,
                       upstream: dict[int, dict[str, str]] | None = None) -> list[ShardStatus]:
        """:meth:`shard_status` of every shard, from the stage's index (a handful of requests
        whatever the number of shards); ``index``: one already loaded by :meth:`stage_index`;
        ``upstream``: shard → the digests its part must have been made from."""
        index, present = index or self.stage_index(stage), set(self.fields())
        return [self._status_from_index(k, index, config, present, upstream.get(k) if upstream is not None else None)
                for k in range(self.num_shards)]

    def _status_from_index(self, shard: int, index: cons.StageIndex, config: dict[str, Any] | None,
                           present: set[str], upstream: dict[str, str] | None = None) -> ShardStatus:
        if shard in index.unreadable:
            return ShardStatus(self.path, index.stage, shard, False, index.unreadable[shard])
        rec = index.parts.get(shard)
        if rec is None:
            return ShardStatus(self.path, index.stage, shard, False, "no manifest part")
        return self._status(shard, index.stage, rec.rows, rec.meta, config, present, upstream)

    def _status(self, shard: int, stage: str, rows: int, meta: dict[str, Any],
                config: dict[str, Any] | None, present: set[str], upstream: dict[str, str] | None = None
                ) -> ShardStatus:
        def status(ok: bool, reason: str = "") -> ShardStatus:
            return ShardStatus(self.path, stage, shard, ok, reason)

        if rows != len(self.shard_range(shard)) or meta.get("shard") != shard:
            return status(False, "manifest part does not match the shard")
        missing = [f for f in meta.get("fields", []) if f not in present]
        if missing:
            return status(False, f"manifest part names fields without data: {missing}")
        if config is not None and meta.get("config_hash") != mf.config_hash(config):
            return status(False, "written with other settings")
        if upstream is not None:
            recorded = meta.get("upstream") or {}
            changed = sorted(st for st in set(upstream) | set(recorded) if recorded.get(st) != upstream.get(st))
            if changed:
                return status(False, f"{', '.join(changed)} changed since it was written")
        return status(True)

    def is_complete(self, shard: int, stage: str, config: dict[str, Any] | None = None,
                    upstream: dict[str, str] | None = None) -> bool:
        return self.shard_status(shard, stage, config, upstream).complete

    def part_digest(self, stage: str, shard: int, index: cons.StageIndex | None = None) -> str:
        """A digest of what ``stage`` wrote for ``shard``: its settings hash, and every sample's
        status and field checksums ("" when the shard has no readable part). A later stage
        records the digests of the parts it read; when one changes (another teacher, a shard
        redone after a failure) the later stage's shard is no longer complete.

        ``index``: read from that stage index (planning every shard) instead of the part."""
        if index is not None:
            rec = index.parts.get(shard)
            if rec is None:
                return ""
            table, meta = index.rows([shard]), rec.meta
        else:
            try:
                table, meta = mf.read_table(self.store.fs, self.part_path(stage, shard))
            except (OSError, pa.ArrowInvalid, ValueError):
                return ""
        cols = sorted(c for c in table.column_names if c == "status" or c.startswith("checksum_"))
        rows = table.sort_by("index").select(cols).to_pydict()
        return mf.config_hash({"config_hash": meta.get("config_hash"), "rows": rows})

    def shard_rows(self, shard: int, stage: str, needed_by: str = "this stage") -> list[dict[str, Any]]:
        """Manifest rows of ``stage`` for ``shard`` in index order; the stage must be complete."""
        if not self.is_complete(shard, stage):
            raise StoreError(f"{self.store.url}: group {self.path} shard {shard}: {stage} is not complete "
                             f"(run {stage} before {needed_by})")
        table, _ = mf.read_table(self.store.fs, self.part_path(stage, shard))
        return table.sort_by("index").to_pylist()

    def stages(self) -> list[str]:
        """Stages that have a manifest folder in this group (those its version names, when pinned)."""
        if self.view is not None:
            return sorted(self.view.stages)
        try:
            entries = self.store.fs.ls(self.manifest_dir, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(name for e in entries if e.get("type") == "directory"
                      and not (name := e["name"].rstrip("/").rsplit("/", 1)[-1]).startswith(("_", ".")))

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
            cons.prune(self.store.fs, self.stage_dir(stage), keep=name,
                       protected=self.store.pinned_manifests(self.path, stage))
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
        if not 0 <= index < self.num_slots or not self.live_mask()[index]:
            raise IndexError(f"{self.path}: slot {index} holds no sample (slots 0..{self.num_slots - 1}; "
                             "unused and removed slots hold none)")
        out: dict[str, Any] = {"sample_id": self.sample_ids[index], "index": index}
        for name in fields or self.fields():
            out[name] = self.array(name)[index]
        return out

    def manifest(self, stage: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """The manifest rows of live samples in complete shards: one stage's, or every stage
        joined on index.

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
        # removed samples keep their rows in the parts; they are no longer the group's
        return merged.filter(pa.array(self.live_mask()[merged.column("index").to_numpy()]))
