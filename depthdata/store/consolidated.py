"""Consolidated manifests: the rows of every complete part of one stage of one group, in one file.

A stage writes one manifest part per shard (``shard-000123.parquet``): the crash-safe completion
record writers rely on. Reading a stage part by part costs a request or three per shard, which
stops a store from being usable long before a million samples. So when a stage finishes (and on
``depthdata compact``) its parts are copied into one Parquet file beside them,
``consolidated-<seq>.parquet`` — the analogue of a Delta Lake checkpoint or MosaicML's
``index.json``, readable as-is by pandas, polars or duckdb.

A reader lists the stage folder once (one request per 1,000 files on object stores) and reads
the newest consolidated file. The file's footer records what it was made from: every part's
name, *fingerprint* (size plus ETag or mtime from the listing) and footer metadata. The reader
trusts its rows only for parts still listed with the same fingerprint; a part written after it
(a build still running, a resumed build, a stage re-run with other settings) is read on its own,
and a part that disappeared is no longer complete. A consolidated file that cannot be read, or
whose rows disagree with its own record, is ignored with a warning: the parts are always the
truth, so a kill between the last part and the consolidation loses nothing.

Files are never rewritten in place: each consolidation writes the next ``<seq>`` (atomically),
so a reader never sees half a file, and a committed version (:mod:`depthdata.store.versions`)
pins one: :func:`load_pinned` reads exactly that file, without listing the folder.
"""

from __future__ import annotations

import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from depthdata.errors import StoreError
from depthdata.store import manifest as mf

log = logging.getLogger(__name__)

PART_RE = re.compile(r"^shard-(\d{6,})\.parquet$")
CONSOLIDATED_RE = re.compile(r"^consolidated-(\d{6,})\.parquet$")


def fingerprint(info: dict[str, Any]) -> str:
    """What the listing says of a file, enough to tell a rewritten part from the one recorded:
    its size and its ETag (object stores) or modification time (local disks)."""
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") \
        or info.get("created") or ""
    return f"{info.get('size')}:{tag}"


@dataclass(frozen=True)
class PartRecord:
    """One manifest part as a reader knows it."""

    shard: int
    #: file name in the stage folder
    name: str
    fingerprint: str
    rows: int
    #: the part's footer metadata (shard, fields, config_hash, written, ...)
    meta: dict[str, Any]


@dataclass
class _Consolidated:
    """A consolidated file's bytes (one request), and where each covered shard's rows start."""

    blob: bytes
    #: shard → (first row, row count) in the file, for the shards a reader takes from it
    spans: dict[int, tuple[int, int]]
    _columns: dict[tuple[str, ...] | None, pa.Table] = field(default_factory=dict)

    def read(self, columns: tuple[str, ...] | None) -> pa.Table:
        """The file's rows, only ``columns`` when given (the others are never decoded)."""
        if columns not in self._columns:
            pf = pq.ParquetFile(io.BytesIO(self.blob))
            names = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            self._columns[columns] = pf.read(columns=names).replace_schema_metadata(None)
        return self._columns[columns]


@dataclass
class StageIndex:
    """Every readable part of one stage of one group, after one listing. Rows are read lazily,
    only the columns asked for."""

    stage: str
    #: shard → the part's record (readable parts only)
    parts: dict[int, PartRecord] = field(default_factory=dict)
    #: shard → why its part could not be read
    unreadable: dict[int, str] = field(default_factory=dict)
    #: the consolidated file used (name), or ``None``; its fingerprint in the listing
    consolidated: str | None = None
    consolidated_fingerprint: str = ""
    #: shards read from their own part (newer than the consolidated file, or without one)
    read_from_parts: list[int] = field(default_factory=list)
    #: shards the consolidated file describes whose part changed or disappeared since
    stale: list[int] = field(default_factory=list)
    #: why a consolidated file was ignored
    warnings: list[str] = field(default_factory=list)
    _file: _Consolidated | None = None
    #: rows of the shards read from their own part
    _part_rows: dict[int, pa.Table] = field(default_factory=dict)

    @property
    def consolidation_needed(self) -> bool:
        """Whether a consolidation would write a new file (parts newer than the newest one)."""
        return bool(self.parts) and not (self.consolidated and not (self.read_from_parts or self.stale or
                                                                    self.warnings))

    def rows(self, shards: list[int], columns: tuple[str, ...] | None = None) -> pa.Table | None:
        """Rows of ``shards`` (readable parts only) in index order, only ``columns`` when given;
        ``None`` when there are none."""
        tables = []
        for k in sorted(shards):
            if k in self._part_rows:
                t = self._part_rows[k]
                tables.append(t if columns is None else t.select([c for c in columns if c in t.column_names]))
            elif self._file is not None and k in self._file.spans:
                start, n = self._file.spans[k]
                tables.append(self._file.read(columns).slice(start, n))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")


def list_stage(fs: fsspec.AbstractFileSystem, stage_dir: str) -> dict[str, dict[str, Any]]:
    """File name → listing info of one stage folder (empty when the folder does not exist)."""
    try:
        # object-store file systems cache listings; a reader must see parts written since
        entries = fs.ls(stage_dir, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in entries if e.get("type") != "directory"}


def _footer(blob: bytes) -> tuple[pq.ParquetFile, dict[str, Any]]:
    pf = pq.ParquetFile(io.BytesIO(blob))
    return pf, json.loads((pf.schema_arrow.metadata or {}).get(b"depthdata", b"{}"))


def load(fs: fsspec.AbstractFileSystem, stage_dir: str, stage: str, previous: StageIndex | None = None) -> StageIndex:
    """The index of one stage folder: consolidated rows where still valid, parts for the rest.

    With ``previous`` (an earlier index of the same folder) only what changed since is read:
    the listing is always fresh, so the result is exactly what a first load would give."""
    listing = list_stage(fs, stage_dir)
    parts = {int(m.group(1)): (name, fingerprint(info)) for name, info in listing.items()
             if (m := PART_RE.match(name))}
    index = StageIndex(stage)
    consolidated = sorted((n for n in listing if CONSOLIDATED_RE.match(n)), reverse=True)
    if consolidated:
        newest = consolidated[0]
        same = previous is not None and previous._file is not None and previous.consolidated == newest \
            and previous.consolidated_fingerprint == fingerprint(listing[newest])
        _take_consolidated(fs, stage_dir, newest, parts, index, previous._file if same else None)
        index.consolidated_fingerprint = fingerprint(listing[newest])
    to_read = []
    for shard, (name, fp) in sorted(parts.items()):
        if shard in index.parts:
            continue
        old = previous.parts.get(shard) if previous is not None else None
        if old is not None and (old.name, old.fingerprint) == (name, fp) and shard in previous._part_rows:
            index.parts[shard], index._part_rows[shard] = old, previous._part_rows[shard]
            index.read_from_parts.append(shard)
        else:
            to_read.append((shard, name, fp))

    def read(job: tuple[int, str, str]) -> tuple[int, str, str, Any]:
        shard, name, fp = job
        try:
            pf, meta = _footer(mf.read_bytes(fs, f"{stage_dir}/{name}"))
            return shard, name, fp, (pf.read().replace_schema_metadata(None), meta)
        except FileNotFoundError:  # removed between the listing and the read
            return shard, name, fp, None
        except (OSError, pa.ArrowInvalid, ValueError) as exc:
            return shard, name, fp, f"manifest part unreadable: {exc}"

    # parts newer than the consolidated file (all of them without one): many small reads, which
    # overlap on object stores and decode outside the GIL
    with ThreadPoolExecutor(max_workers=8) as pool:
        for shard, name, fp, got in pool.map(read, to_read):
            if got is None:
                continue
            if isinstance(got, str):
                index.unreadable[shard] = got
                continue
            table, meta = got
            index.parts[shard] = PartRecord(shard, name, fp, table.num_rows, meta)
            index._part_rows[shard] = table
            index.read_from_parts.append(shard)
    index.read_from_parts.sort()
    return index


def load_pinned(fs: fsspec.AbstractFileSystem, stage_dir: str, stage: str, name: str | None) -> StageIndex:
    """The index of one stage exactly as the consolidated file ``name`` records it (a committed
    version's view): no listing, no parts written since. ``None``: the stage had no rows."""
    index = StageIndex(stage)
    if name is None:
        return index
    path = f"{stage_dir}/{name}"
    try:
        blob = mf.read_bytes(fs, path)
        _, meta = _footer(blob)
        recorded = {int(r["shard"]): (r["name"], r["fingerprint"]) for r in meta["parts"]}
    except FileNotFoundError:
        raise StoreError(f"{path}: the manifest this version names is gone (deleted by hand, or the "
                         "version was expired by `depthdata compact --drop-removed`)") from None
    except (OSError, pa.ArrowInvalid, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: unreadable consolidated manifest ({type(exc).__name__}: {exc})") from None
    _take_consolidated(fs, stage_dir, name, recorded, index, _Consolidated(blob, {}))
    if index.warnings:
        raise StoreError(index.warnings[0].replace("; reading the parts", ""))
    return index


def _take_consolidated(fs: fsspec.AbstractFileSystem, stage_dir: str, name: str, parts: dict[int, tuple[str, str]],
                       index: StageIndex, reuse: _Consolidated | None) -> None:
    """Fill ``index`` from the consolidated file ``name`` for every part it still describes
    (from ``reuse`` when that is the same file, already read)."""
    path = f"{stage_dir}/{name}"
    try:
        blob = reuse.blob if reuse is not None else mf.read_bytes(fs, path)
        pf, meta = _footer(blob)
        records = [PartRecord(int(r["shard"]), r["name"], r["fingerprint"], int(r["rows"]), r["meta"])
                   for r in meta["parts"]]
        # the rows are the records' parts in shard order: check that, then slice by offset
        shard_column = pf.read(columns=["shard"]).column("shard").to_numpy() if records else np.empty(0, np.int64)
    except (OSError, pa.ArrowInvalid, ValueError, KeyError, TypeError) as exc:
        _ignore(index, f"{path}: unreadable consolidated manifest ({type(exc).__name__}: {exc}); reading the parts")
        return
    expected = np.repeat([r.shard for r in records], [r.rows for r in records])
    if shard_column.shape != expected.shape or not np.array_equal(shard_column, expected):
        _ignore(index, f"{path}: consolidated manifest disagrees with its own record of parts; reading the parts")
        return
    spans: dict[int, tuple[int, int]] = {}
    offset = 0
    for rec in records:
        if parts.get(rec.shard) == (rec.name, rec.fingerprint):
            index.parts[rec.shard] = rec
            spans[rec.shard] = (offset, rec.rows)
        else:
            index.stale.append(rec.shard)
        offset += rec.rows
    index.consolidated = name
    index._file = reuse if reuse is not None else _Consolidated(blob, spans)
    index._file.spans = spans


def _ignore(index: StageIndex, message: str) -> None:
    log.warning("%s", message)
    index.warnings.append(message)


def write(fs: fsspec.AbstractFileSystem, stage_dir: str, index: StageIndex, extra: dict[str, Any]) -> str | None:
    """Write the rows of ``index`` as the next consolidated file; returns its name (``None``
    when there is nothing to consolidate or nothing changed since the newest one)."""
    records = [index.parts[k] for k in sorted(index.parts)]
    if not index.consolidation_needed:
        return None  # no parts, or the newest consolidated file already says all of it
    table = index.rows([r.shard for r in records])
    seq = max((int(m.group(1)) for n in list_stage(fs, stage_dir) if (m := CONSOLIDATED_RE.match(n))), default=0)
    name = f"consolidated-{seq + 1:06d}.parquet"
    meta = {**extra, "stage": index.stage, "kind": "consolidated",
            "parts": [{"shard": r.shard, "name": r.name, "fingerprint": r.fingerprint, "rows": r.rows,
                       "meta": r.meta} for r in records]}
    table = table.replace_schema_metadata({b"depthdata": json.dumps(meta, sort_keys=True, default=str).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    mf.atomic_write(fs, f"{stage_dir}/{name}", buf.getvalue())
    return name


def prune(fs: fsspec.AbstractFileSystem, stage_dir: str, keep: str, protected: frozenset[str] = frozenset()) -> list[str]:
    """Delete the consolidated files of ``stage_dir`` older than ``keep`` except ``protected``
    ones (named by a committed version); returns their names."""
    old = [n for n in list_stage(fs, stage_dir) if CONSOLIDATED_RE.match(n) and n < keep and n not in protected]
    for n in old:
        fs.rm_file(f"{stage_dir}/{n}")
    return old
