"""Manifest parts: one Parquet file per (group, stage, shard), written *after* the shard's data.

A part's existence is the shard's completion record for that stage; its rows carry one
checksum per field per sample, so ``verify`` can prove the data it describes is really there.
Parts are written atomically (temporary name + rename on local disks; a single PUT on object
stores), so a kill never leaves a half-written part that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_DIR = "_manifest"


@dataclass(frozen=True)
class Column:
    """One manifest column, described once: the reference docs are generated from these."""

    name: str
    #: Arrow type as written (``string``, ``int64``, ``double``, ``bool``)
    dtype: str
    #: meaning, with units
    doc: str


#: the plan of a group (``_plan-<segment>.parquet``, see :mod:`depthdata.store.plan`): which
#: sample sits at which slot, read from where
PLAN_COLUMNS = (
    Column("index", "int64", "0-based slot of the sample in the group (the sample axis of every field)"),
    Column("sample_id", "string", "stable id `<dataset>/<split>/<source key>`"),
    Column("source_uri", "string", "the file (or file + record) the sample was read from"),
    Column("locator", "string", "JSON the source needs to load the item again (record number, ...); may be empty"),
    Column("fingerprint", "string", "sizes and modification times of the item's files plus its locator, hashed: "
           "what a later build compares to notice a change without reading the files"),
    Column("op", "string", "`add` (a sample at a new slot), `remove` (a tombstone: the slot is no longer served) "
           "or `touch` (new fingerprint, same content)"),
)

#: columns the store adds to every row of every stage's manifest part
PART_COLUMNS = (
    Column("index", "int64", "0-based position of the sample in the group"),
    Column("sample_id", "string", "stable id `<dataset>/<split>/<source key>`"),
    Column("shard", "int64", "shard the sample belongs to (`index // shard_size`)"),
    Column("checksum_<field>", "string", "BLAKE2b-64 of the sample's stored value of each field the stage "
           "wrote (dtype, shape and C-order bytes): what `depthdata verify` recomputes"),
)


def checksum(array: np.ndarray) -> str:
    """Content hash of one sample's field: BLAKE2b-64 over dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def part_path(group_path: str, stage: str, shard: int) -> str:
    return f"{MANIFEST_DIR}/{group_path}/{stage}/shard-{shard:06d}.parquet"


def group_dir(group_path: str) -> str:
    """The group's manifest folder (its plan segments and one folder per stage), store-relative."""
    return f"{MANIFEST_DIR}/{group_path}"


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if is_local(fs):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def table_bytes(rows: list[dict[str, Any]], metadata: dict[str, Any]) -> bytes:
    """Rows (a list of flat dicts) as Parquet bytes with ``metadata`` as JSON in the footer."""
    # Rows may differ in keys (a quarantined row has no stats); pyarrow would take the first
    # row's keys only, so every row gets every column.
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    table = table.replace_schema_metadata({b"depthdata": json.dumps(metadata, sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """A whole (small) file in one request. On an object store ``cat_file(start=0)`` is one
    ranged ``GET``; without the ``start`` s3fs sends a ``HEAD`` for the size first (counted at
    moto's server), and a file object costs a ``HEAD`` and two ``GET`` s (footer, then data)."""
    return fs.cat_file(path, start=0)


def read_table(fs: fsspec.AbstractFileSystem, path: str) -> tuple[pa.Table, dict[str, Any]]:
    """A part and its footer metadata, in one read (every column is read anyway; see
    :func:`read_bytes`). Raises ``FileNotFoundError`` or ``pa.ArrowInvalid``.
    ``ParquetFile`` rather than ``pq.read_table``: the latter goes through ``pyarrow.dataset``,
    whose import (pandas with it) cost every build and worker process 0.4 s."""
    table = pq.ParquetFile(pa.BufferReader(read_bytes(fs, path))).read()
    raw = (table.schema.metadata or {}).get(b"depthdata", b"{}")
    return table, json.loads(raw)


def config_hash(config: Any) -> str:
    """Short stable hash of a stage's settings, stored with each part (re-run on change)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()
