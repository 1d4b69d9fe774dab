"""Opening a store's groups for reading, with a bounded local cache for remote stores.

fsspec's ``filecache``/``simplecache`` keep every file they fetch (no size limit), so remote
reads go through Zarr's own :class:`zarr.experimental.cache_store.CacheStore` instead: an LRU by
bytes (``max_size``) over a local-disk :class:`~zarr.storage.LocalStore`. Its bookkeeping lives in
memory, so each process (rank × DataLoader worker) gets its own folder, emptied when opened, and
its share of the byte budget; the total on disk stays under ``cache_bytes``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
from zarr.experimental.cache_store import CacheStore
from zarr.storage import FsspecStore, LocalStore

from depthdata.store import Group, Store, is_remote


@dataclass(frozen=True)
class CacheConfig:
    """A local cache for remote stores: ``directory`` and a byte budget shared by ``processes``.

    A cache smaller than one shard file caches nothing (Zarr skips values above the limit).
    """

    directory: str
    max_bytes: int
    processes: int = 1

    def per_process(self) -> int:
        return max(1, self.max_bytes // max(1, self.processes))


def open_groups(url: str, paths: Sequence[str], storage_options: dict[str, Any] | None = None,
                cache: CacheConfig | None = None, tag: str = "main", version: int | str | None = None) -> list[Group]:
    """The groups ``paths`` of the store at ``url`` as ``version`` has them (see
    :meth:`~depthdata.store.Store.open`), reading array data through the cache when the store is
    remote and a cache is configured. ``tag`` names this process's cache folder."""
    store = Store.open(url, storage_options=storage_options, version=version)
    if cache is None or not is_remote(url):
        return [store.group(p) for p in paths]
    folder = Path(cache.directory) / tag
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = FsspecStore.from_url(url, storage_options=storage_options or None, read_only=True)
    cached = CacheStore(source, cache_store=LocalStore(folder), max_size=cache.per_process())
    root = zarr.open_group(store=cached, mode="r", zarr_format=3)
    groups = [store.group(p) for p in paths]
    return [Group(store, g.path, root[g.path], g.view) for g in groups]
