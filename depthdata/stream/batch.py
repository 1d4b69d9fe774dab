"""Whole batches made inside DataLoader workers, in recycled shared memory.

The default way a batch reaches the trainer costs more than reading it: each worker builds
per-sample tensors, ``default_collate`` copies them into a *fresh* shared-memory segment per
tensor, and each segment crosses the queue as a file descriptor handed over by a separate
connection. Fresh memory is the expensive part: every 4 KiB page is faulted in and zeroed by the
kernel (on the benchmark machines, a VM, about 5 ms per MiB — more than decoding it), in the
worker and again in the trainer.

Here a worker writes each batch straight into one *slab*: a shared-memory block holding every
tensor of the batch. A slab crosses the queue as a few bytes (its worker, slot and the tensors'
places in it); its memory is handed over (a file descriptor) only the first time. The trainer
process keeps a mapping of each slab and, when nothing references a slab's tensors any more
(checked with the storage's reference count each time the trainer asks for a batch), marks it
free in a small shared table, and the worker writes a later batch into it. Batches the trainer
keeps stay intact: a slab still referenced is never reused; if a worker finds none free it makes
another (at most ``slots`` per worker are recycled; past that, batches take fresh memory and are
freed as usual).

:class:`Receiver` is the trainer-process side (one per
:class:`~depthdata.stream.loader.ResumableLoader`, handing its slabs from one epoch's workers to
the next's), :class:`SlabPool` the worker side.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

ALIGN = 64  # each tensor starts on a cache line
#: trainer-process receivers by token (each lives as long as its loader); a batch names the
#: receiver its slab is registered with
_RECEIVERS: weakref.WeakValueDictionary[str, Receiver] = weakref.WeakValueDictionary()
_RECEIVERS_LOCK = threading.Lock()


class Entry(NamedTuple):
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]  #: the batch tensor's shape (batch first)
    offset: int  #: bytes from the slab's start


def plan(specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]]) -> tuple[list[Entry], int]:
    """Places of batch tensors ``(key, dtype, shape)`` in one slab, and the slab's size."""
    entries, offset = [], 0
    for key, dtype, shape in specs:
        entries.append(Entry(key, dtype, tuple(shape), offset))
        nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
        offset += -(-nbytes // ALIGN) * ALIGN
    return entries, max(offset, ALIGN)


def views(storage: torch.UntypedStorage, entries: Sequence[Entry]) -> dict[str, torch.Tensor]:
    """The batch tensors of ``entries`` over ``storage`` (no copy)."""
    out = {}
    for e in entries:
        size = torch.empty((), dtype=e.dtype).element_size()
        out[e.key] = torch.empty(0, dtype=e.dtype).set_(storage, e.offset // size, e.shape)
    return out


def _use_count(storage: torch.UntypedStorage) -> int:
    return int(torch._C._storage_Use_Count(storage._cdata))


class PackedBatch(dict):
    """A batch whose tensors live in a worker's slab. Pickled (to cross the worker queue) it is
    the slab's identity, the tensors' places and the other values; unpickled it is a plain
    ``dict`` built on the receiving process's mapping of the slab."""

    def __init__(self, tensors: dict[str, torch.Tensor], extras: dict[str, Any], order: Sequence[str],
                 ident: tuple[str, int, int, int], storage: torch.UntypedStorage, entries: list[Entry],
                 send_storage: bool):
        super().__init__((k, tensors[k] if k in tensors else extras[k]) for k in order)
        self._wire = (ident, storage if send_storage else None, entries, extras, tuple(order))
        self._storage = storage  # keeps the slab alive while this object is

    def __reduce__(self):
        return _unpack, self._wire

    def __copy__(self) -> dict[str, Any]:
        return dict(self)


def _unpack(ident: tuple[str, int, int, int], storage: torch.UntypedStorage | None, entries: list[Entry],
            extras: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    token, worker, slot, generation = ident
    with _RECEIVERS_LOCK:
        receiver = _RECEIVERS.get(token)
    if receiver is not None and slot >= 0:
        storage = receiver.receive(worker, slot, generation, storage)
    elif storage is None:
        raise RuntimeError("a streamed batch arrived whose shared memory this process never received "
                           "(was the batch pickled outside the DataLoader that made it?)")
    tensors = views(storage, entries)
    return {k: tensors[k] if k in tensors else extras[k] for k in order}


class Receiver:
    """The trainer-process side of a loader's slabs: mappings, and which ones are free again.

    One lives as long as its :class:`~depthdata.stream.loader.ResumableLoader`, so the slabs of
    one epoch's workers are handed to the next epoch's (:meth:`handover`, before the
    ``DataLoader`` starts them): after the first epoch no batch needs fresh memory. Call
    :meth:`release` whenever the trainer asks for the next batch.
    """

    def __init__(self, workers: int, slots: int):
        self.token = uuid.uuid4().hex
        self.slots = int(slots)
        #: ``flags[w, s] == 1``: slot ``s`` of worker ``w`` is free for the worker to refill
        self.flags = torch.zeros((max(1, workers), self.slots), dtype=torch.uint8).share_memory_()
        self._flags = self.flags.numpy()
        self._slabs: dict[tuple[int, int], tuple[int, torch.UntypedStorage]] = {}
        self._busy: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        with _RECEIVERS_LOCK:
            _RECEIVERS[self.token] = self

    def receive(self, worker: int, slot: int, generation: int,
                storage: torch.UntypedStorage | None) -> torch.UntypedStorage:
        with self._lock:
            if storage is not None:  # a new slab (or a bigger one in place of an old one)
                self._slabs[(worker, slot)] = (generation, storage)
            known = self._slabs.get((worker, slot))
            if known is None or known[0] != generation:
                raise RuntimeError(f"streamed batch from worker {worker} names slab {slot}/{generation}, "
                                   "which this process does not hold")
            self._busy.add((worker, slot))
            return known[1]

    def release(self) -> None:
        """Mark every slab that no tensor references any more as free for its worker."""
        with self._lock:
            for key in list(self._busy):
                if _use_count(self._slabs[key][1]) == 1:  # only our own handle is left
                    self._busy.discard(key)
                    self._flags[key] = 1

    def handover(self) -> dict[int, list[tuple[int, int, torch.UntypedStorage]]]:
        """Per worker, its slabs as ``(slot, generation, storage)`` for the workers about to start
        (no worker may be running). A slab the last workers had taken but whose batch never
        reached the trainer (an epoch left early) is free again."""
        out: dict[int, list[tuple[int, int, torch.UntypedStorage]]] = {}
        with self._lock:
            for (worker, slot), (generation, storage) in self._slabs.items():
                free = _use_count(storage) == 1
                self._flags[worker, slot] = free
                if free:
                    self._busy.discard((worker, slot))
                else:
                    self._busy.add((worker, slot))
                out.setdefault(worker, []).append((slot, generation, storage))
        return out

    def close(self) -> None:
        """Forget every slab (their memory goes once the trainer drops what it holds)."""
        with _RECEIVERS_LOCK:
            _RECEIVERS.pop(self.token, None)
        with self._lock:
            self._slabs.clear()
            self._busy.clear()


class SlabPool:
    """A worker's slabs: refilled when the trainer process has released them.

    Without ``flags`` (no :class:`Receiver`, e.g. a plain ``DataLoader``), or once all ``slots``
    are in use, every batch gets a fresh slab that is not recycled.
    """

    def __init__(self, token: str | None, flags: torch.Tensor | None, worker: int,
                 inherited: Sequence[tuple[int, int, torch.UntypedStorage]] = ()):
        self.token, self.worker = token or "", worker
        self._flags = flags.numpy() if flags is not None and token else None
        slots = self._flags.shape[1] if self._flags is not None else 0
        self._slabs: list[torch.UntypedStorage | None] = [None] * slots
        self._generation = [0] * slots
        for slot, generation, storage in inherited if slots else ():  # the last epoch's, already mapped
            self._slabs[slot], self._generation[slot] = storage, generation
        self.fresh = 0  #: slabs allocated (recycled ones are not counted again)

    def take(self, nbytes: int) -> tuple[tuple[str, int, int, int], torch.UntypedStorage, bool]:
        """``(identity, storage, first)``: a slab of at least ``nbytes``; ``first`` when the
        receiving process has not seen its memory yet (it then travels with the batch)."""
        free = [s for s, slab in enumerate(self._slabs) if slab is not None and self._flags[self.worker, s] == 1]
        for s in free:
            slab = self._slabs[s]
            if slab is not None and slab.nbytes() >= nbytes:
                self._flags[self.worker, s] = 0
                return (self.token, self.worker, s, self._generation[s]), slab, False
        # a new slab: in an unused slot, else in place of a free one too small (another resolution)
        empty = next((s for s, slab in enumerate(self._slabs) if slab is None), free[0] if free else None)
        if empty is not None:
            self._flags[self.worker, empty] = 0
        self.fresh += 1
        storage = torch.UntypedStorage._new_shared(nbytes)
        if empty is None:
            return (self.token, self.worker, -1, 0), storage, True
        self._slabs[empty] = storage
        self._generation[empty] += 1
        return (self.token, self.worker, empty, self._generation[empty]), storage, True
