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
so a reader never sees half a file, and a later version scheme can pin one.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

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
class StageIndex:
    """Every readable part of one stage of one group, after one listing."""

    stage: str
    #: shard → the part's record (readable parts only)
    parts: dict[int, PartRecord] = field(default_factory=dict)
    #: shard → its rows
    rows: dict[int, pa.Table] = field(default_factory=dict)
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

    def table(self) -> pa.Table | None:
        """All rows of the readable parts, in index order (``None`` when there are none)."""
        tables = [self.rows[k] for k in sorted(self.rows)]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive").sort_by("index")


def list_stage(fs: fsspec.AbstractFileSystem, stage_dir: str) -> dict[str, dict[str, Any]]:
    """File name → listing info of one stage folder (empty when the folder does not exist)."""
    try:
        # object-store file systems cache listings; a reader must see parts written since
        entries = fs.ls(stage_dir, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in entries if e.get("type") != "directory"}


def _read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> tuple[pa.Table, dict[str, Any]]:
    """A Parquet file and its ``depthdata`` footer metadata, fetched in one request."""
    table = pq.read_table(io.BytesIO(fs.cat_file(path)))
    return table, json.loads((table.schema.metadata or {}).get(b"depthdata", b"{}"))


def load(fs: fsspec.AbstractFileSystem, stage_dir: str, stage: str, previous: StageIndex | None = None) -> StageIndex:
    """The index of one stage folder: consolidated rows where still valid, parts for the rest.

    With ``previous`` (an earlier index of the same folder) only what changed since is read:
    the listing is always fresh, so the result is exactly what a first load would give."""
    listing = list_stage(fs, stage_dir)
    parts = {int(m.group(1)): (name, fingerprint(info)) for name, info in listing.items()
             if (m := PART_RE.match(name))}
    index = StageIndex(stage)
    consolidated = sorted((n for n in listing if CONSOLIDATED_RE.match(n)), reverse=True)
    if consolidated and previous is not None and previous.consolidated == consolidated[0] \
            and previous.consolidated_fingerprint == fingerprint(listing[consolidated[0]]):
        _reuse_consolidated(previous, parts, index)
    elif consolidated:
        _take_consolidated(fs, stage_dir, consolidated[0], parts, index)
    if index.consolidated:
        index.consolidated_fingerprint = fingerprint(listing[index.consolidated])
    for shard, (name, fp) in sorted(parts.items()):
        if shard in index.parts:
            continue
        old = previous.parts.get(shard) if previous is not None else None
        if old is not None and (old.name, old.fingerprint) == (name, fp):
            index.parts[shard], index.rows[shard] = old, previous.rows[shard]
            index.read_from_parts.append(shard)
            continue
        try:
            table, meta = _read_bytes(fs, f"{stage_dir}/{name}")
        except FileNotFoundError:  # removed between the listing and the read
            continue
        except (OSError, pa.ArrowInvalid, ValueError) as exc:
            index.unreadable[shard] = f"manifest part unreadable: {exc}"
            continue
        index.parts[shard] = PartRecord(shard, name, fp, table.num_rows, meta)
        index.rows[shard] = table.replace_schema_metadata(None)
        index.read_from_parts.append(shard)
    return index


def _reuse_consolidated(previous: StageIndex, parts: dict[int, tuple[str, str]], index: StageIndex) -> None:
    """Like :func:`_take_consolidated` with the same file, from what ``previous`` read of it."""
    index.consolidated, index.warnings = previous.consolidated, list(previous.warnings)
    covered = set(previous.parts) - set(previous.read_from_parts)
    for shard in sorted(covered | set(previous.stale)):
        rec = previous.parts.get(shard)
        if rec is not None and shard in covered and parts.get(shard) == (rec.name, rec.fingerprint):
            index.parts[shard], index.rows[shard] = rec, previous.rows[shard]
        else:
            index.stale.append(shard)


def _take_consolidated(fs: fsspec.AbstractFileSystem, stage_dir: str, name: str,
                       parts: dict[int, tuple[str, str]], index: StageIndex) -> None:
    """Fill ``index`` from the consolidated file ``name`` for every part it still describes."""
    path = f"{stage_dir}/{name}"
    try:
        table, meta = _read_bytes(fs, path)
        records = [PartRecord(int(r["shard"]), r["name"], r["fingerprint"], int(r["rows"]), r["meta"])
                   for r in meta["parts"]]
    except (OSError, pa.ArrowInvalid, ValueError, KeyError, TypeError) as exc:
        _ignore(index, f"{path}: unreadable consolidated manifest ({type(exc).__name__}: {exc}); reading the parts")
        return
    if "shard" not in table.column_names and records:
        _ignore(index, f"{path}: consolidated manifest without a shard column; reading the parts")
        return
    by_shard = _split_by_shard(table) if records else {}
    for rec in records:
        rows = by_shard.get(rec.shard)
        if rows is None or rows.num_rows != rec.rows:
            _ignore(index, f"{path}: consolidated manifest disagrees with its own record for shard {rec.shard}; "
                           "reading the parts")
            index.parts.clear()
            index.rows.clear()
            return
        if parts.get(rec.shard) == (rec.name, rec.fingerprint):
            index.parts[rec.shard] = rec
            index.rows[rec.shard] = rows
        else:
            index.stale.append(rec.shard)
    index.consolidated = name


def _split_by_shard(table: pa.Table) -> dict[int, pa.Table]:
    import pyarrow.compute as pc

    table = table.replace_schema_metadata(None)
    out = {}
    for shard in pc.unique(table["shard"]).to_pylist():
        out[int(shard)] = table.filter(pc.equal(table["shard"], shard))
    return out


def _ignore(index: StageIndex, message: str) -> None:
    log.warning("%s", message)
    index.warnings.append(message)


def write(fs: fsspec.AbstractFileSystem, stage_dir: str, index: StageIndex, extra: dict[str, Any]) -> str | None:
    """Write the rows of ``index`` as the next consolidated file; returns its name (``None``
    when there is nothing to consolidate or nothing changed since the newest one)."""
    table = index.table()
    if table is None:
        return None
    if index.consolidated and not (index.read_from_parts or index.stale or index.warnings):
        return None  # the newest consolidated file already says all of it
    seq = max((int(m.group(1)) for n in list_stage(fs, stage_dir) if (m := CONSOLIDATED_RE.match(n))), default=0)
    name = f"consolidated-{seq + 1:06d}.parquet"
    meta = {**extra, "stage": index.stage, "kind": "consolidated",
            "parts": [{"shard": r.shard, "name": r.name, "fingerprint": r.fingerprint, "rows": r.rows,
                       "meta": r.meta} for r in sorted(index.parts.values(), key=lambda r: r.shard)]}
    table = table.replace_schema_metadata({b"depthdata": json.dumps(meta, sort_keys=True, default=str).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    mf.atomic_write(fs, f"{stage_dir}/{name}", buf.getvalue())
    return name


def prune(fs: fsspec.AbstractFileSystem, stage_dir: str, keep: str) -> list[str]:
    """Delete the consolidated files of ``stage_dir`` older than ``keep``; returns their names."""
    old = [n for n in list_stage(fs, stage_dir) if CONSOLIDATED_RE.match(n) and n < keep]
    for n in old:
        fs.rm_file(f"{stage_dir}/{n}")
    return old
