"""A group's plan: which sample sits in which slot of the sample axis, kept as append-only segments.

The first build of a group writes ``_plan-000000.parquet``; each later build that finds items
added, changed or removed at the source writes the next segment and never rewrites an earlier
one (Zarr shards and manifest parts already written stay byte-identical). A segment's rows are
operations on slots, the 0-based positions on every field's sample axis:

- ``add``: a new sample at a new slot. A segment's first new slot starts a new shard, so a
  later build never writes into a shard an earlier one wrote; the slots between the end of the
  previous segment and that shard boundary are never used (*holes*).
- ``remove``: a tombstone; the sample at that slot is no longer served (it disappeared from the
  source, or changed: its replacement is an ``add`` with the same sample id at a new slot).
- ``touch``: the item's fingerprint changed but its content did not (a file copied again with
  a new modification time); recorded so the next build does not re-read it.

A committed version (:mod:`depthdata.store.versions`) names how many segments it saw, so a
reader pinned to it never sees a later build's slots or tombstones.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from depthdata.store import manifest as mf

SEGMENT_RE = re.compile(r"^_plan-(\d{6,})\.parquet$")
CHECKPOINT_RE = re.compile(r"^_plan-upto-(\d{6,})\.parquet$")
OPS = ("add", "remove", "touch")


def segment_name(seq: int) -> str:
    return f"_plan-{seq:06d}.parquet"


def fingerprint_files(paths: Sequence[str], locator: dict[str, Any] | None = None) -> str:
    """What a listing says of an item, enough to notice it may have changed: size and modification
    time (ns) of each of its files, plus its locator (a DIW record, a ``.mat`` index). A missing
    file fingerprints as ``missing``. Costs one ``stat`` per file, no read."""
    parts: list[Any] = [locator or {}]
    for path in paths:
        try:
            st = os.stat(path)
            parts.append([path, st.st_size, st.st_mtime_ns])
        except OSError:
            parts.append([path, "missing"])
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=8).hexdigest()


@dataclass
class Plan:
    """A group's plan as of some number of segments: live samples, tombstones and holes."""

    shard_size: int
    #: the ``add`` rows in slot order: index, sample_id, source_uri, locator, fingerprint
    adds: pa.Table
    #: slots tombstoned by a ``remove``
    removed: np.ndarray
    #: slot → newest fingerprint from a ``touch``
    touched: dict[int, str] = field(default_factory=dict)
    #: segments read
    segments: int = 0
    #: per segment: (samples added, slots removed)
    segment_changes: list[tuple[int, int]] = field(default_factory=list)
    #: the segment tables it was made from, in order (what a checkpoint writes)
    tables: list[pa.Table] = field(default_factory=list, repr=False)
    _slot_index: np.ndarray | None = None
    _ids: list[str | None] | None = None
    _counts: np.ndarray | None = None

    @property
    def slot_indices(self) -> np.ndarray:
        """Slots holding a sample (live or removed), ascending."""
        if self._slot_index is None:
            self._slot_index = self.adds.column("index").to_numpy()
        return self._slot_index

    @property
    def slots(self) -> int:
        """Length of the sample axis the plan needs (highest slot + 1)."""
        idx = self.slot_indices
        return int(idx[-1]) + 1 if len(idx) else 0

    @property
    def num_shards(self) -> int:
        return math.ceil(self.slots / self.shard_size)

    def shard_counts(self) -> np.ndarray:
        """Planned slots per shard (a shard's slots are the first ``count`` of its range)."""
        if self._counts is None:
            self._counts = np.bincount(self.slot_indices // self.shard_size, minlength=self.num_shards)
        return self._counts

    def live_shards(self) -> np.ndarray:
        """Per shard: holds at least one live sample. A shard whose samples were all removed is
        *retired*: builds leave it alone, readers skip it, compaction may delete its data."""
        live = self.live_mask()
        out = np.zeros(self.num_shards, bool)
        out[np.flatnonzero(live) // self.shard_size] = True
        return out

    def changes_since(self, segments: int) -> tuple[int, int]:
        """Samples added and slots removed by the segments after the first ``segments``."""
        later = self.segment_changes[segments:]
        return sum(a for a, _ in later), sum(r for _, r in later)

    def live_mask(self) -> np.ndarray:
        """Per slot: holds a sample that is not tombstoned."""
        mask = np.zeros(self.slots, bool)
        mask[self.slot_indices] = True
        mask[self.removed[self.removed < self.slots]] = False
        return mask

    def sample_ids(self) -> list[str | None]:
        """Sample id per slot (``None`` for holes); a removed slot keeps its id."""
        if self._ids is None:
            ids: list[str | None] = [None] * self.slots
            for i, sid in zip(self.slot_indices.tolist(), self.adds.column("sample_id").to_pylist()):
                ids[i] = sid
            self._ids = ids
        return self._ids

    def rows(self, start: int, stop: int) -> pa.Table:
        """``add`` rows of slots ``start ≤ index < stop``."""
        lo, hi = np.searchsorted(self.slot_indices, [start, stop])
        return self.adds.slice(int(lo), int(hi - lo))

    def column(self, name: str) -> list[Any]:
        """A plan column per slot (``None`` for holes)."""
        out: list[Any] = [None] * self.slots
        for i, v in zip(self.slot_indices.tolist(), self.adds.column(name).to_pylist()):
            out[i] = v
        return out

    def live_fingerprints(self) -> dict[str, tuple[int, str]]:
        """Sample id → (its live slot, its newest known fingerprint)."""
        live = self.live_mask()
        out = {}
        for i, sid, fp in zip(self.slot_indices.tolist(), self.adds.column("sample_id").to_pylist(),
                              self.adds.column("fingerprint").to_pylist()):
            if live[i]:
                out[sid] = (i, self.touched.get(i, fp or ""))
        return out

    def next_slot(self) -> int:
        """Where a new segment's first sample goes: the start of the next unused shard."""
        return math.ceil(self.slots / self.shard_size) * self.shard_size


def list_segments(fs: fsspec.AbstractFileSystem, group_dir: str, pattern: re.Pattern = SEGMENT_RE) -> list[str]:
    """Names of the plan segments in ``group_dir`` (the group's manifest folder), in order (or
    of its checkpoints, with ``pattern=CHECKPOINT_RE``)."""
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(group_dir, detail=False, refresh=True)]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if pattern.match(n))


def read(fs: fsspec.AbstractFileSystem, group_dir: str, shard_size: int, segments: int | None = None,
         checkpoint: bool = False) -> Plan:
    """The plan made of the first ``segments`` segments (all listed, when ``None``), read from
    their checkpoint (:func:`write_checkpoint`) when ``checkpoint``. Raises ``FileNotFoundError``
    or ``pyarrow.ArrowInvalid`` naming nothing: callers name the file."""
    if checkpoint and segments:
        return from_tables(read_checkpoint(fs, group_dir, segments), shard_size)
    return from_tables(read_segments(fs, group_dir, segments), shard_size)


def read_segments(fs: fsspec.AbstractFileSystem, group_dir: str, segments: int | None = None) -> list[pa.Table]:
    """The first ``segments`` segment tables (all listed, when ``None``), one file each."""
    names = list_segments(fs, group_dir) if segments is None else [segment_name(k) for k in range(segments)]
    tables = []
    for k, name in enumerate(names):
        if name != segment_name(k):
            raise ValueError(f"plan segments are not numbered 0..{len(names) - 1}: found {name}")
        table, _ = mf.read_table(fs, f"{group_dir}/{name}")
        tables.append(table.replace_schema_metadata(None))
    return tables


def checkpoint_name(segments: int) -> str:
    """The file holding segments ``0 … segments-1`` together."""
    return f"_plan-upto-{segments:06d}.parquet"


def write_checkpoint(fs: fsspec.AbstractFileSystem, group_dir: str, plan: Plan, meta: dict[str, Any]) -> str:
    """Write the segments ``plan`` was made from as one file (a ``segment`` column keeps them
    apart); returns its name. A version names it (:class:`~depthdata.store.versions.GroupVersion`), so
    opening that version reads one plan file however many builds added segments: on an object
    store each file read is a request. Written at commit; never rewritten or pruned."""
    segments = plan.segments
    table = pa.concat_tables([t.append_column("segment", pa.array(np.full(len(t), k, np.int32)))
                              for k, t in enumerate(plan.tables)], promote_options="permissive")
    table = table.replace_schema_metadata({b"depthdata": json.dumps({**meta, "segments": segments},
                                                                    sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    name = checkpoint_name(segments)
    mf.atomic_write(fs, f"{group_dir}/{name}", buf.getvalue())
    return name


def read_checkpoint(fs: fsspec.AbstractFileSystem, group_dir: str, segments: int) -> list[pa.Table]:
    """The segment tables that :func:`write_checkpoint` wrote for ``segments``, in order."""
    table, _ = mf.read_table(fs, f"{group_dir}/{checkpoint_name(segments)}")
    seg = table.column("segment").to_numpy()
    if len(seg) and (seg.min() < 0 or seg.max() >= segments or (np.diff(seg) < 0).any()):
        raise ValueError(f"{checkpoint_name(segments)}: segment numbers out of order or range")
    rest = table.drop_columns(["segment"]).replace_schema_metadata(None)
    return [rest.filter(pa.array(seg == k)) for k in range(segments)]


def from_tables(tables: list[pa.Table], shard_size: int) -> Plan:
    """A :class:`Plan` from segment tables in order."""
    if not tables:
        return Plan(shard_size, _empty_adds(), np.empty(0, np.int64), {}, 0)
    # counted and filtered in Arrow: a string column's ``to_numpy`` builds a Python object per row
    changes = []
    for t in tables:
        counts = dict.fromkeys(OPS, 0) | {d["values"]: d["counts"] for d in pc.value_counts(t.column("op")).to_pylist()}
        changes.append((counts["add"], counts["remove"]))
    table = pa.concat_tables(tables, promote_options="permissive")
    ops = table.column("op")
    adds = table.filter(pc.equal(ops, "add")).select(["index", "sample_id", "source_uri", "locator", "fingerprint"])
    removed = table.filter(pc.equal(ops, "remove")).column("index").to_numpy().astype(np.int64)
    touched_rows = table.filter(pc.equal(ops, "touch"))
    touched = dict(zip(touched_rows.column("index").to_pylist(), touched_rows.column("fingerprint").to_pylist()))
    idx = adds.column("index").to_numpy()
    if len(idx) and (np.diff(idx) <= 0).any():
        raise ValueError("plan slots are not strictly increasing across segments")
    return Plan(shard_size, adds, removed, touched, len(tables), changes, list(tables))


def _empty_adds() -> pa.Table:
    return pa.table({"index": pa.array([], pa.int64()), "sample_id": pa.array([], pa.string()),
                     "source_uri": pa.array([], pa.string()), "locator": pa.array([], pa.string()),
                     "fingerprint": pa.array([], pa.string())})


def write_segment(fs: fsspec.AbstractFileSystem, group_dir: str, seq: int, rows: list[dict[str, Any]],
                  meta: dict[str, Any]) -> str:
    """Write segment ``seq`` (rows with every :data:`~depthdata.store.manifest.PLAN_COLUMNS`)
    atomically; returns its name. The group's geometry travels in the footer (``verify`` compares
    it with the group's attributes)."""
    if not rows:
        raise ValueError("a plan segment needs at least one row")
    for row in rows:
        if row["op"] not in OPS:
            raise ValueError(f"unknown plan op {row['op']!r}")
    name = segment_name(seq)
    mf.atomic_write(fs, f"{group_dir}/{name}", mf.table_bytes(rows, {**meta, "segment": seq}))
    return name
