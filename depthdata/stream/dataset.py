"""PyTorch datasets over a depthdata store: :class:`ShardDataset` (streaming, shuffled, split
across ranks and DataLoader workers, resumable) and :class:`ShardMapDataset` (random access)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from depthdata.errors import DepthdataError
from depthdata.store import WORKING, Group, Store, is_remote, select_groups
from depthdata.stream import fastread
from depthdata.stream import order as od
from depthdata.stream.batch import PackedBatch, SlabPool
from depthdata.stream.batch import plan as slab_plan
from depthdata.stream.batch import views as slab_views
from depthdata.stream.cache import CacheConfig, open_groups
from depthdata.stream.chunks import ChunkReader, FieldLayout, field_layout
from depthdata.stream.decode import Output, convert, decode, outputs
from depthdata.stream.servable import group_fields, scan
from depthdata.stream.topology import resolve_rank

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_FIELDS = ("rgb", "teacher", "teacher_conf")
Transform = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]


def _weighted_groups(store: Store, groups: Sequence[str] | Mapping[str, float] | None
                     ) -> tuple[list[str], list[float] | None]:
    """The chosen group paths and, when ``groups`` maps paths to sampling weights, their weights."""
    paths = select_groups(store, groups)
    weights = [float(groups[p]) for p in paths] if isinstance(groups, Mapping) and groups else None
    return paths, weights


class _Source:
    """The per-process handle on the store's groups.

    The process that plans the stream keeps the group handles it planned with (``planned``).
    Another process (a DataLoader worker, forked or spawned) never uses their zarr objects,
    which do not survive a fork: it reads a local store straight from its shard files
    (:mod:`~depthdata.stream.chunks`, the :attr:`layouts` read here), taking sample ids from the
    inherited plan without reopening the store, and opens the groups anew only to read through
    zarr (remote stores, a local cache, codecs the chunk reader does not handle).
    """

    def __init__(self, url: str, paths: list[str], storage_options: dict[str, Any] | None,
                 cache: CacheConfig | None, version: int | str | None, planned: Sequence[Group] = (),
                 fields: Sequence[Sequence[str]] = ()):
        self.url, self.paths, self.storage_options, self.cache = url, paths, storage_options, cache
        #: the store version every process reads (``WORKING`` when none was committed)
        self.version = version
        self._planned = list(planned)
        # this process reads through the planning handles unless data goes through the cache
        adopt = bool(self._planned) and cache is None
        self._pid: int | None = os.getpid() if adopt else None
        self._groups: list[Group] = list(self._planned) if adopt else []
        # per group: its slots holding a sample (ascending) and their ids, as arrays: a worker
        # looks up a batch's ids there (no per-sample Python objects to build or copy-on-write)
        self._ids: list[tuple[np.ndarray, Any]] | None = None
        if self._planned:
            self._ids = self._id_columns(self._planned)
        #: per group, field → where its samples sit in local shard files (``fields[g]``: the fields
        #: read from group ``g``); ``None``: read through zarr
        self.layouts = self._local_layouts(fields)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pid": None, "_groups": [], "_planned": []}

    @staticmethod
    def _id_columns(groups: Sequence[Group]) -> list[tuple[np.ndarray, Any]]:
        out = []
        for group in groups:
            table = group.plan_table()  # the plan's rows in slot order
            out.append((table.column("index").to_numpy(), table.column("sample_id")))
        return out

    def _local_layouts(self, fields: Sequence[Sequence[str]]) -> list[dict[str, FieldLayout]] | None:
        if not self._planned or not fields or self.cache is not None or is_remote(self.url):
            return None
        layouts = []
        for group, names in zip(self._planned, fields):
            per_field: dict[str, FieldLayout] = {}
            if not set(names) <= set(group.fields()):  # skipped by the scan: nothing of it is served
                layouts.append(per_field)
                continue
            for name in names:
                layout = field_layout(group.array(name))
                if layout is None:
                    log.info("%s/%s: stored in a layout the chunk reader does not read; streaming through zarr",
                             group.path, name)
                    return None
                per_field[name] = layout
            layouts.append(per_field)
        return layouts

    def uncached_groups(self) -> list[Group]:
        """Fresh handles without the data cache, for reading metadata and manifests."""
        return open_groups(self.url, self.paths, self.storage_options, version=self.version)

    def groups(self, tag: str = "main") -> list[Group]:
        """Handles for reading through zarr in this process (opened here after a fork)."""
        if self._pid != os.getpid():
            if tud.get_worker_info() is not None and not is_remote(self.url):
                fastread.enable_in_worker()
            self._groups = open_groups(self.url, self.paths, self.storage_options, self.cache, tag, self.version)
            self._pid = os.getpid()
        return self._groups

    def sample_ids(self, g: int, slots: Sequence[int]) -> list[str]:
        """The sample ids of ``slots`` (servable, so planned) of group ``g``."""
        if self._ids is None:
            self._ids = self._id_columns(self.uncached_groups())
        index, ids = self._ids[g]
        return ids.take(np.searchsorted(index, np.asarray(slots, np.int64))).to_pylist()

    def reader(self, fields: Sequence[Sequence[str]], shards: int, tag: str) -> _LocalRows | _ShardLRU:
        """What reads samples here (``fields[g]`` of group ``g``): from local shard files, or whole
        shards through zarr; ``shards``: how many shards the caller interleaves at once."""
        if self.layouts is not None:
            return _LocalRows(self.layouts, fields, shards)
        return _ShardLRU(self.groups(tag), fields, capacity=shards)


class _LocalRows:
    """Samples read one at a time from local shard files into reused per-field buffers; a row
    is valid until the next call (callers convert or copy it at once)."""

    def __init__(self, layouts: list[dict[str, FieldLayout]], fields: Sequence[Sequence[str]], shards: int):
        self.layouts, self.fields = layouts, [list(f) for f in fields]
        self._chunks = ChunkReader(capacity=shards * max(len(f) for f in self.fields))
        self._buffers: dict[tuple[str, str, tuple[int, ...]], np.ndarray] = {}

    def close(self) -> None:
        self._chunks.close()

    def row(self, g: int, index: int) -> dict[str, np.ndarray]:
        out = {}
        for name in self.fields[g]:
            layout = self.layouts[g][name]
            key = (name, layout.dtype, layout.sample_shape)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = np.empty(layout.sample_shape, layout.dtype)
            self._chunks.read((g, name), layout, index, buf)
            out[name] = buf
        return out


class _ShardLRU:
    """Whole shards decoded to numpy, least-recently-used out; ``capacity`` shards per process.

    An evicted shard's arrays are reused for the next shard of the same group: a DataLoader
    worker then touches the same memory every shard instead of faulting in tens of MB of fresh
    pages (benchmarks/bench_stream.py). Rows are views into these buffers, so callers copy what
    they keep (:func:`~depthdata.stream.decode.decode` does).
    """

    def __init__(self, groups: list[Group], fields: Sequence[Sequence[str]], capacity: int):
        # fields[g]: what is read from group g (groups may lack optional fields)
        self.groups, self.fields, self.capacity = groups, [list(f) for f in fields], capacity
        # (group, shard) → (whole buffers, the shard's rows of them; shorter for a group's last shard)
        self._shards: OrderedDict[tuple[int, int], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = OrderedDict()
        self._spare: dict[int, list[dict[str, np.ndarray]]] = {}

    def _buffers(self, g: int) -> dict[str, np.ndarray]:
        spare = self._spare.get(g)
        if spare:
            return spare.pop()
        group = self.groups[g]
        return {f: np.empty((group.shard_size, *group.array(f).shape[1:]), group.array(f).dtype) for f in self.fields[g]}

    def row(self, g: int, index: int) -> dict[str, np.ndarray]:
        group = self.groups[g]
        shard = group.shard_of(index)
        key = (g, shard)
        if key in self._shards:
            self._shards.move_to_end(key)
        else:
            buffers = self._buffers(g)
            self._shards[key] = buffers, group.read_shard(shard, self.fields[g], out=buffers)
            while len(self._shards) > self.capacity:
                (old_g, _), (buffers, _) = self._shards.popitem(last=False)
                self._spare.setdefault(old_g, []).append(buffers)
        offset = index - group.shard_range(shard).start
        return {f: a[offset] for f, a in self._shards[key][1].items()}

    def close(self) -> None:
        self._shards.clear()
        self._spare.clear()


class ShardDataset(tud.IterableDataset):
    """Stream a store's shards into a ``DataLoader`` as per-sample dicts of tensors.

    Parameters
    ----------
    store_url: local path or fsspec URL of the store (``storage_options`` for credentials).
    groups: ``dataset/split`` paths (default: all), or ``{path: weight}`` to mix groups in those
        proportions; with weights an epoch is ``samples_per_epoch`` samples (default: all servable
        ones) and a group cycles or stops early to meet its share.
    fields: store fields to load (see :mod:`depthdata.stream.decode` for the tensors they give).
        Only shards whose writing stages are complete for every field are served, and only
        samples whose manifest status is ``ok``; others are skipped and logged at construction.
    optional_fields: fields read from the groups that have them (and then required there as
        ``fields`` are); groups without one are served without it, so a sample has only the
        keys of its group's fields (collate mixed batches accordingly).
    shuffle, seed: the order is a function of ``(seed, epoch)`` only (see :meth:`set_epoch`).
    rank, world_size: this training process (default: ``torch.distributed``, else ``RANK`` /
        ``WORLD_SIZE``, else one process).
    batch_size: the DataLoader's batch size; the dataset interleaves its streams in batches of
        this size, so it must match (use :class:`~depthdata.stream.loader.ResumableLoader`).
    streams: streams per rank; the number of DataLoader workers must divide it. More streams
        mix more shards at once but hold more shards in memory.
    shuffle_window: shards pooled and shuffled together within a stream.
    tail: ``"drop"`` (each sample at most once per epoch) or ``"pad"`` (at least once): the
        policy for the fewer than ``world_size × streams × batch_size`` samples that do not
        fill the last round of batches.
    samples_per_epoch: epoch size when mixing with weights.
    rgb_float: ``rgb`` as ``float32`` in ``[0, 1]`` instead of ``uint8``.
    transform: ``transform(sample, rng)`` (see :mod:`depthdata.stream.augment`).
    cache_dir, cache_bytes: local cache for remote stores, at most ``cache_bytes`` on disk per
        rank, split between ``num_workers`` worker processes (see :meth:`share_cache`).
    version: the committed store version to read (default: the newest; see
        :meth:`~depthdata.store.Store.open`). :attr:`version` says which one was chosen; a
        state saved by :meth:`state_dict` keeps it, so a resumed run reads the same samples
        even after a later build committed more.
    """

    def __init__(self, store_url: str, groups: Sequence[str] | Mapping[str, float] | None = None,
                 fields: Sequence[str] = DEFAULT_FIELDS, shuffle: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, transform: Transform | None = None,
                 batch_size: int = 1, streams: int = 4, shuffle_window: int = 2, tail: str = "drop",
                 samples_per_epoch: int | None = None, rgb_float: bool = False,
                 storage_options: dict[str, Any] | None = None, cache_dir: str | None = None,
                 cache_bytes: int = 2 * 2**30, num_workers: int = 1, version: int | str | None = None,
                 optional_fields: Sequence[str] = ()):
        super().__init__()
        self.store_url = str(store_url)
        self.fields = tuple(fields)
        self.optional_fields = tuple(f for f in optional_fields if f not in self.fields)
        if not self.fields:
            raise DepthdataError("no fields requested")
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.transform = transform
        self.batch_size, self.streams, self.window = int(batch_size), int(streams), int(shuffle_window)
        self.tail, self.samples_per_epoch, self.rgb_float = tail, samples_per_epoch, rgb_float
        self._groups_arg = groups
        self._cache = CacheConfig(cache_dir, cache_bytes, max(1, num_workers)) if cache_dir else None
        self._storage_options = storage_options
        self._open(version)

    def _open(self, version: int | str | None) -> None:
        """Plan the stream over ``version`` of the store: its groups and servable shards."""
        store = Store.open(self.store_url, storage_options=self._storage_options, version=version)  # once
        #: the committed store version served (``None``: the store had none; its working state is served)
        self.version: int | None = store.version.number if store.version else None
        paths, self.weights = _weighted_groups(store, self._groups_arg)
        planned = [store.group(p) for p in paths]
        #: per group, the fields read from it (``fields`` plus the optional ones it has)
        self.group_fields = [tuple(group_fields(g, self.fields, self.optional_fields)) for g in planned]
        self.shards = scan(planned, self.fields, self.optional_fields)
        if not any(r.indices for r in self.shards):
            raise DepthdataError(f"{self.store_url}: nothing to serve for fields {list(self.fields)} in groups "
                                 f"{paths} (no complete shard with 'ok' samples; see the warnings above)")
        self._source = _Source(self.store_url, paths, self._storage_options, self._cache,
                               self.version if self.version is not None else WORKING, planned, self.group_fields)
        self.epoch = getattr(self, "epoch", 0)
        self._delivered = getattr(self, "_delivered", 0)
        self._plans: dict[int, od.EpochPlan] = {}
        plan = self.plan()  # validates the settings now rather than inside a worker
        if not len(plan):
            servable = sum(len(r.indices) for r in self.shards)
            raise DepthdataError(
                f"{self.store_url}: an epoch of rank {self.rank}/{self.world_size} would be empty: its "
                f"{plan.dropped} of {servable} servable sample(s) are fewer than streams × batch_size = "
                f"{self.streams} × {self.batch_size}, and tail='drop' drops the remainder. Use tail='pad', "
                "fewer streams or a smaller batch")
        log.info("%s (version %s): %d group(s), %d servable shard(s), %d samples per epoch on rank %d/%d "
                 "(%d dropped, %d padded by tail=%s)", self.store_url, self.version, len(paths), len(self.shards),
                 len(plan), self.rank, self.world_size, plan.dropped, plan.padded, self.tail)

    def share_cache(self, processes: int) -> None:
        """Split the cache budget between ``processes`` reading processes (DataLoader workers);
        :class:`~depthdata.stream.loader.ResumableLoader` calls it with its ``num_workers``."""
        if self._source.cache is not None:
            self._source.cache = replace(self._source.cache, processes=max(1, int(processes)))

    @property
    def group_paths(self) -> list[str]:
        return list(self._source.paths)

    # -- order -----------------------------------------------------------------------------
    def plan(self, epoch: int | None = None) -> od.EpochPlan:
        """This rank's plan of ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        if e not in self._plans:
            self._plans = {e: od.plan_epoch(
                self.shards, len(self._source.paths), seed=self.seed, epoch=e, shuffle=self.shuffle,
                world_size=self.world_size, rank=self.rank, streams=self.streams, batch_size=self.batch_size,
                window=self.window, tail=self.tail, weights=self.weights, samples_per_epoch=self.samples_per_epoch)}
        return self._plans[e]

    def __len__(self) -> int:
        """Samples this rank delivers per epoch."""
        return len(self.plan())

    def order(self, epoch: int | None = None) -> list[tuple[str, int]]:
        """``(group path, index)`` of every sample this rank delivers in ``epoch``, in order."""
        items = od.interleave(self.plan(epoch).streams, self.batch_size)
        return [(self._source.paths[g], int(i)) for g, i in items]

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (a new order). Calling it with the current epoch keeps the progress, so a
        trainer can call it at the top of every epoch, also right after :meth:`load_state_dict`."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._delivered = 0

    # -- resume ----------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        blob = json.dumps({
            "url": self.store_url, "groups": self._source.paths, "weights": self.weights, "fields": self.fields,
            "shuffle": self.shuffle, "rank": self.rank, "world_size": self.world_size, "batch": self.batch_size,
            "streams": self.streams, "window": self.window, "tail": self.tail, "spe": self.samples_per_epoch,
            "shards": [(r.group, r.shard, list(r.indices)) for r in self.shards],
            # only when used, so states saved before optional fields existed still resume
            **({"optional": self.group_fields} if self.optional_fields else {}),
        }, sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=8).hexdigest()

    @property
    def delivered(self) -> int:
        """Samples of the current epoch handed to the trainer so far (kept by the trainer side)."""
        return self._delivered

    def mark_delivered(self, count: int) -> None:
        """Set how many samples of the current epoch the trainer has received (absolute count)."""
        self._delivered = int(count)

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch stands: restore with :meth:`load_state_dict` in a new process."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "delivered": self._delivered,
                "seed": self.seed, "store_version": self.version, "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the last delivered sample, with the same remaining order. Refuses a state
        from another configuration or another set of servable shards (the order would differ)."""
        if state.get("version") != STATE_VERSION:
            raise DepthdataError(f"stream state version {state.get('version')!r} is not {STATE_VERSION}")
        saved = state.get("store_version")
        if saved != self.version:  # a later build committed since: keep serving the run's version
            log.info("%s: resuming on store version %s (the newest is %s)", self.store_url, saved, self.version)
            self._open(saved if saved is not None else WORKING)
        if state["seed"] != self.seed or state["fingerprint"] != self._fingerprint():
            raise DepthdataError(
                "stream state was saved with other settings (seed, groups, fields, rank/world size, "
                "batch size, streams, tail) or another set of servable shards; cannot resume it exactly")
        self.epoch = int(state["epoch"])
        self._delivered = int(state["delivered"])
        od.remaining(self.plan(), self._delivered)  # validates the resume point

    # -- iteration -------------------------------------------------------------------------
    def _start(self) -> int:
        """Resume point; a fully delivered epoch starts over (as iterating a sampler twice does)."""
        return 0 if self._delivered >= len(self.plan()) else self._delivered

    def _my_streams(self) -> tuple[list[np.ndarray], Any, str]:
        """The streams this process serves from the resume point, its worker info and tag."""
        plan = self.plan()
        start = self._start()
        streams = od.remaining(plan, start)
        info = tud.get_worker_info()
        if info is not None:
            return od.worker_streams(streams, info.id, info.num_workers), info, f"rank{self.rank}-worker{info.id}"
        self._delivered = start
        return streams, None, f"rank{self.rank}-main"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        streams, info, tag = self._my_streams()
        reader = self._source.reader(self.group_fields, len(streams) * self.window + 1, tag)
        try:
            for g, index in od.interleave(streams, self.batch_size):
                sample = self._sample(reader.row(int(g), int(index)), int(g), int(index))
                if info is None:
                    self._delivered += 1
                yield sample
        finally:
            reader.close()

    def _sample(self, row: dict[str, np.ndarray], g: int, index: int) -> dict[str, Any]:
        sample = decode(row, self.rgb_float)
        sample.update(sample_id=self._source.sample_ids(g, [index])[0], group=self._source.paths[g], index=index)
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, self.epoch, g, index]))
        return sample

    # -- whole batches (ResumableLoader) ---------------------------------------------------
    def batches(self, token: str | None = None, flags: Any = None,
                slabs: Sequence[tuple[int, int, Any]] = ()) -> Iterator[dict[str, Any]]:
        """This process's share of the epoch as whole batches, in the order and with the values
        the per-sample iteration collated by a ``DataLoader`` gives
        (:class:`~depthdata.stream.loader.ResumableLoader` uses it). In a DataLoader worker each
        batch is written into one shared-memory slab (:mod:`depthdata.stream.batch`); ``token``,
        ``flags`` and ``slabs`` (this worker's, from the last epoch) come from the trainer's
        :class:`~depthdata.stream.batch.Receiver`."""
        streams, info, tag = self._my_streams()
        reader = self._source.reader(self.group_fields, len(streams) * self.window + 1, tag)
        pool = SlabPool(token, flags, info.id, slabs) if info is not None else None
        items = od.interleave(streams, self.batch_size)
        try:
            for start in range(0, len(items), self.batch_size):
                chunk = [(int(g), int(i)) for g, i in items[start: start + self.batch_size]]
                if self.transform is None:
                    batch = self._decode_batch(chunk, reader, pool)
                else:
                    batch = self._collate([self._sample(reader.row(g, i), g, i) for g, i in chunk], pool)
                if info is None:
                    self._delivered += len(chunk)
                yield batch
        finally:
            reader.close()

    def _slab(self, specs: list[tuple[str, Any, tuple[int, ...]]], extras: dict[str, Any], order: list[str],
              pool: SlabPool | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """A batch (the object to yield) over a slab holding tensors ``specs``, and its tensors."""
        entries, nbytes = slab_plan(specs)
        if pool is None:  # the main process: nothing crosses a queue
            tensors = slab_views(torch.empty(nbytes, dtype=torch.uint8).untyped_storage(), entries)
            return {k: tensors[k] if k in tensors else extras[k] for k in order}, tensors
        ident, storage, first = pool.take(nbytes)
        tensors = slab_views(storage, entries)
        return PackedBatch(tensors, extras, order, ident, storage, entries, first), tensors

    def _decode_batch(self, chunk: list[tuple[int, int]], reader: _LocalRows | _ShardLRU,
                      pool: SlabPool | None) -> dict[str, Any]:
        """Decode ``chunk``'s samples straight into the batch tensors (no per-sample tensors)."""
        n = len(chunk)
        fields = self.group_fields[chunk[0][0]]
        for g in {g for g, _ in chunk}:
            if self.group_fields[g] != fields:
                raise self._mixed_fields(chunk[0][0], g)
        first = reader.row(*chunk[0])
        shapes = {name: first[name].shape for name in fields}
        per_field = {name: outputs(name, shapes[name], self.rgb_float) for name in fields}
        specs = [(o.key, o.dtype, (n, *o.shape)) for outs in per_field.values() for o in outs]
        specs.append(("index", torch.int64, (n,)))
        extras = {"sample_id": self._chunk_ids(chunk), "group": [self._source.paths[g] for g, _ in chunk]}
        order = [key for key, _, _ in specs[:-1]] + ["sample_id", "group", "index"]  # as decode + collate
        batch, tensors = self._slab(specs, extras, order, pool)
        arrays = {k: t.numpy() for k, t in tensors.items()}
        arrays["index"][:] = [i for _, i in chunk]
        for j, (g, index) in enumerate(chunk):
            row = first if j == 0 else reader.row(g, index)
            for name in fields:
                if row[name].shape != shapes[name]:
                    raise DepthdataError(
                        f"samples of {self._source.paths[chunk[0][0]]} ({name} {shapes[name]}) and "
                        f"{self._source.paths[g]} ({name} {row[name].shape}) meet in one batch: groups mixed "
                        "into a batch must share H×W (crop them to a common size with RandomCrop)")
                convert(name, row[name], {o.key: arrays[o.key][j] for o in per_field[name]})
        return batch

    def _mixed_fields(self, g1: int, g2: int) -> DepthdataError:
        return DepthdataError(
            f"samples of {self._source.paths[g1]} (fields {list(self.group_fields[g1])}) and "
            f"{self._source.paths[g2]} (fields {list(self.group_fields[g2])}) meet in one batch: with "
            "optional_fields, pass ResumableLoader a collate_fn that fills in what a sample lacks")

    def _chunk_ids(self, chunk: list[tuple[int, int]]) -> list[str]:
        """Sample ids of ``chunk``, looked up a group at a time."""
        ids = [""] * len(chunk)
        for g in {g for g, _ in chunk}:
            at = [j for j, (g2, _) in enumerate(chunk) if g2 == g]
            for j, sid in zip(at, self._source.sample_ids(g, [chunk[j][1] for j in at])):
                ids[j] = sid
        return ids

    def _collate(self, samples: list[dict[str, Any]], pool: SlabPool | None) -> dict[str, Any]:
        """``default_collate(samples)``, with the tensors and ints stacked into one slab."""
        first = samples[0]
        for s in samples:
            if s.keys() != first.keys():  # default_collate would fail on (or drop) the difference
                raise DepthdataError(
                    f"samples with keys {list(first)} and {list(s)} meet in one batch: with optional_fields, "
                    "pass ResumableLoader a collate_fn that fills in what a sample lacks")
        specs: list[tuple[str, Any, tuple[int, ...]]] = []
        ints: set[str] = set()
        extras: dict[str, Any] = {}
        for key, value in first.items():
            values = [s[key] for s in samples]
            if isinstance(value, torch.Tensor) and all(
                    isinstance(v, torch.Tensor) and v.shape == value.shape and v.dtype == value.dtype for v in values):
                specs.append((key, value.dtype, (len(samples), *value.shape)))
            elif type(value) is int and all(type(v) is int for v in values):
                specs.append((key, torch.int64, (len(samples),)))
                ints.add(key)
            else:  # strings, and whatever a transform adds: as default_collate does it
                extras[key] = tud.default_collate(values)
        batch, tensors = self._slab(specs, extras, list(first), pool)
        for key, t in tensors.items():
            if key in ints:
                t.numpy()[:] = [s[key] for s in samples]
            else:
                torch.stack([s[key] for s in samples], out=t)
        return batch


class ShardMapDataset(tud.Dataset):
    """Random access to the servable samples of a store (evaluation, inspection).

    Item ``k`` is the ``k``-th servable sample in group order, then index order. Each access
    reads one sample (one chunk per field). ``transform`` is seeded from ``(seed, group, index)``.
    ``version``: the committed store version to read (default: the newest).
    """

    def __init__(self, store_url: str, groups: Sequence[str] | None = None, fields: Sequence[str] = DEFAULT_FIELDS,
                 transform: Transform | None = None, seed: int = 0, rgb_float: bool = False,
                 storage_options: dict[str, Any] | None = None, cache_dir: str | None = None,
                 cache_bytes: int = 2 * 2**30, num_workers: int = 1, version: int | str | None = None):
        self.store_url = str(store_url)
        self.fields = tuple(fields)
        self.transform, self.seed, self.rgb_float = transform, int(seed), rgb_float
        store = Store.open(self.store_url, storage_options=storage_options, version=version)  # once, for planning
        #: the committed store version read (``None``: the store had none; its working state)
        self.version: int | None = store.version.number if store.version else None
        paths = select_groups(store, groups)
        cache = CacheConfig(cache_dir, cache_bytes, max(1, num_workers)) if cache_dir else None
        self._source = _Source(self.store_url, paths, storage_options, cache,
                               self.version if self.version is not None else WORKING)
        refs = scan([store.group(p) for p in paths], self.fields)
        self.items = np.array([(r.group, i) for r in refs for i in r.indices], dtype=np.int64).reshape(-1, 2)
        self._position: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"{self.store_url}: item {k} out of range (0..{len(self) - 1})")
        g, index = (int(v) for v in self.items[k])
        info = tud.get_worker_info()
        groups = self._source.groups("map-main" if info is None else f"map-worker{info.id}")
        group = groups[g]
        row = {f: group.array(f)[index] for f in self.fields}
        sample = decode(row, self.rgb_float)
        sample.update(sample_id=group.sample_ids[index], group=group.path, index=index)
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, g, index]))
        return sample

    def position(self, sample_id: str) -> int:
        """The item number of ``sample_id`` (``KeyError`` if it is not servable)."""
        if self._position is None:
            groups = self._source.uncached_groups()
            self._position = {groups[g].sample_ids[i]: k for k, (g, i) in enumerate(self.items.tolist())}
        try:
            return self._position[sample_id]
        except KeyError:
            raise KeyError(f"{self.store_url}: no servable sample {sample_id!r}") from None
