"""Reading single samples straight from the shard files of a local store.

Every field of a group is a Zarr v3 array whose shards hold ``shard_size`` samples, one inner
chunk per sample (``depthdata/store/store.py``), in Zarr's ``sharding_indexed`` format: the
compressed chunks one after the other and an index of ``(offset, nbytes)`` per chunk (uint64,
little-endian) with a CRC32C, at the end of the file by default. A DataLoader worker needs one
sample at a time, so instead of decoding whole shards through zarr it reads the index of a
shard once, then per sample reads that sample's chunk (``os.preadv``) into a reused buffer and
decompresses it (numcodecs, which releases the GIL) into a reused destination:

* no decoded-shard buffers (a worker held ``streams / workers × shuffle_window + 1`` whole
  decoded shards), so memory per worker is a few samples;
* the first batch costs its own samples, not two whole shards;
* no zarr, asyncio or Rayon thread pool in the worker, and no store to reopen there: the
  layout below is read in the trainer process and inherited.

Only layouts this module can read exactly are used: a local store, one sample per inner chunk,
the ``bytes`` codec (little-endian or single-byte) followed by nothing, Blosc or Zstandard,
and the standard index codecs. For anything else (remote stores, other codecs)
:func:`field_layout` returns ``None`` and the dataset reads through zarr as before. Tests
compare every byte with zarr's own reading (``tests/test_stream.py``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from depthdata.errors import DepthdataError

EMPTY = 2**64 - 1  # an index entry of a chunk that was never written (reads as the fill value)


@dataclass(frozen=True)
class FieldLayout:
    """Where and how one field's samples are stored: plain data, picklable, no zarr objects."""

    folder: str  #: the array's folder on the local disk
    key_prefix: str  #: chunk key of shard ``k`` is ``f"{key_prefix}{k}{key_suffix}"``
    key_suffix: str
    dtype: str  #: stored dtype (``numpy`` string, e.g. ``"<f4"``)
    sample_shape: tuple[int, ...]
    shard_size: int  #: samples (inner chunks) per shard
    fill: float  #: what a never-written chunk reads as
    codec: str  #: ``"none"``, ``"blosc"`` or ``"zstd"``
    index_at_end: bool

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.sample_shape)) * np.dtype(self.dtype).itemsize

    def path(self, shard: int) -> str:
        return os.path.join(self.folder, f"{self.key_prefix}{shard}{self.key_suffix}")


def field_layout(arr: Any) -> FieldLayout | None:
    """The :class:`FieldLayout` of zarr array ``arr``, or ``None`` when this module cannot read
    it exactly (not on the local disk, another chunking or codec): then read through zarr."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation
    from zarr.storage import LocalStore

    meta = arr.metadata
    store = arr.store_path.store
    if getattr(meta, "zarr_format", None) != 3 or type(store) is not LocalStore or len(meta.codecs) != 1:
        return None
    shard = meta.codecs[0]
    if not isinstance(shard, ShardingCodec):
        return None
    sample_shape = tuple(int(n) for n in arr.shape[1:])
    outer = tuple(int(n) for n in meta.chunk_grid.chunk_shape)
    if tuple(shard.chunk_shape) != (1, *sample_shape) or outer[1:] != sample_shape:
        return None
    dtype = np.dtype(arr.dtype)
    inner = list(shard.codecs)
    if not inner or not isinstance(inner[0], BytesCodec):
        return None
    endian = getattr(inner[0].endian, "value", inner[0].endian)
    if dtype.itemsize > 1 and endian not in ("little", None):
        return None
    if len(inner) == 1:
        codec = "none"
    elif len(inner) == 2 and isinstance(inner[1], BloscCodec):
        codec = "blosc"
    elif len(inner) == 2 and isinstance(inner[1], ZstdCodec):
        codec = "zstd"
    else:
        return None
    index = list(shard.index_codecs)
    if len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec) \
            or getattr(index[0].endian, "value", index[0].endian) != "little":
        return None
    # the key of shard k: the chunk key encoding applied to (k, 0, 0, ...), split around k
    marker = 987654321
    key = meta.encode_chunk_key((marker, *[0] * len(sample_shape)))
    prefix, _, suffix = key.partition(str(marker))
    return FieldLayout(
        folder=os.path.join(str(store.root), arr.store_path.path), key_prefix=prefix, key_suffix=suffix,
        dtype=dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str, sample_shape=sample_shape,
        shard_size=outer[0], fill=float(meta.fill_value), codec=codec,
        index_at_end=shard.index_location == ShardingCodecIndexLocation.end)


def _crc32c(data: bytes | memoryview) -> int:
    import google_crc32c  # zarr's own dependency for the same check

    return int(google_crc32c.value(bytes(data)))


def _zstd_content_size(frame: memoryview) -> int | None:
    """Decompressed size a Zstandard frame header declares (``None`` when it does not)."""
    if len(frame) < 6 or bytes(frame[:4]) != b"\x28\xb5\x2f\xfd":
        return None
    fhd = frame[4]
    single = (fhd >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if size == 0 or len(frame) < pos + size:
        return None
    value = int.from_bytes(frame[pos: pos + size], "little")
    return value + 256 if size == 2 else value


class _Shard:
    """One open shard file of one field: its descriptor and index."""

    def __init__(self, layout: FieldLayout, shard: int):
        self.path = layout.path(shard)
        n = layout.shard_size
        index_bytes = 16 * n + 4
        try:
            self.fd: int | None = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:  # Zarr writes no file for a shard whose chunks are all fill
            self.fd, self.index = None, np.full((n, 2), EMPTY, np.uint64)
            return
        try:
            size = os.fstat(self.fd).st_size
            raw = os.pread(self.fd, index_bytes, size - index_bytes if layout.index_at_end else 0)
            if len(raw) != index_bytes or _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise DepthdataError(f"{self.path}: shard index is damaged (checksum or size); "
                                     "run `depthdata verify` on the store")
            self.index = np.frombuffer(raw[:-4], "<u8").reshape(n, 2)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ChunkReader:
    """Reads samples of local fields into caller-given arrays, keeping up to ``capacity`` shard
    files open (their indexes read once). Not thread-safe; one per process."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._open: OrderedDict[tuple[Any, int], _Shard] = OrderedDict()
        self._buffer = bytearray(1 << 20)

    def _shard(self, key: Any, layout: FieldLayout, shard: int) -> _Shard:
        handle = self._open.get((key, shard))
        if handle is not None:
            self._open.move_to_end((key, shard))
            return handle
        handle = _Shard(layout, shard)
        self._open[(key, shard)] = handle
        while len(self._open) > self.capacity:
            self._open.popitem(last=False)[1].close()
        return handle

    def read(self, key: Any, layout: FieldLayout, slot: int, out: np.ndarray) -> None:
        """Sample ``slot`` of the field ``layout`` describes (``key`` names it among open
        shards) into ``out``: C-contiguous, the stored dtype and sample shape."""
        shard, j = divmod(int(slot), layout.shard_size)
        handle = self._shard(key, layout, shard)
        offset, nbytes = (int(v) for v in handle.index[j])
        if offset == EMPTY:
            out[...] = layout.fill
            return
        dest = memoryview(out).cast("B")
        if len(dest) != layout.sample_nbytes:
            raise ValueError(f"{handle.path}: destination of {len(dest)} bytes for a {layout.sample_nbytes}-byte sample")
        if layout.codec == "none":
            got = os.preadv(handle.fd, [dest], offset) if nbytes == len(dest) else -1
            if got != len(dest):
                raise DepthdataError(f"{handle.path}: sample {j} holds {nbytes} bytes, expected {len(dest)}; "
                                     "run `depthdata verify` on the store")
            return
        if len(self._buffer) < nbytes:
            self._buffer = bytearray(max(nbytes, 2 * len(self._buffer)))
        src = memoryview(self._buffer)[:nbytes]
        if os.preadv(handle.fd, [src], offset) != nbytes:
            raise DepthdataError(f"{handle.path}: shard file is shorter than its index says; "
                                 "run `depthdata verify` on the store")
        if layout.codec == "blosc":
            from numcodecs import blosc

            declared = int.from_bytes(src[4:8], "little") if nbytes >= 16 else -1
            if declared != len(dest):
                raise DepthdataError(f"{handle.path}: sample {j} decompresses to {declared} bytes, expected "
                                     f"{len(dest)}; run `depthdata verify` on the store")
            blosc.decompress(src, dest)
        else:
            from numcodecs import zstd

            declared = _zstd_content_size(src)
            if declared is not None and declared != len(dest):
                raise DepthdataError(f"{handle.path}: sample {j} decompresses to {declared} bytes, expected "
                                     f"{len(dest)}; run `depthdata verify` on the store")
            zstd.decompress(src, dest)

    def close(self) -> None:
        """Close every open shard file (also done when the reader is collected)."""
        while self._open:
            self._open.popitem()[1].close()

    __del__ = close
