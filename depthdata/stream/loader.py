"""The trainer-side half of exact resume: count what the trainer actually received.

DataLoader workers run ahead of the trainer (``prefetch_factor`` batches each) and hold copies
of the dataset, so neither a worker nor the dataset can know how far training got. This wrapper
counts the samples of each batch as it hands the batch over and records the count on the
dataset, whose :meth:`~depthdata.stream.dataset.ShardDataset.state_dict` then names the exact
resume point. Usage::

    ds = ShardDataset(url, batch_size=32, ...)
    loader = ResumableLoader(ds, num_workers=2)
    if checkpoint: ds.load_state_dict(checkpoint["data"])
    for epoch in range(ds.epoch, epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            step(batch)
            if time_to_save: save({"model": ..., "data": loader.state_dict()})

Workers make whole batches (:meth:`ShardDataset.batches
<depthdata.stream.dataset.ShardDataset.batches>`) in shared memory that is recycled once the
trainer drops a batch (:mod:`depthdata.stream.batch`); the batches, their order and the resume
points are the same as a ``DataLoader`` collating single samples would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.utils.data as tud

from depthdata.errors import DepthdataError
from depthdata.stream.batch import Receiver
from depthdata.stream.dataset import ShardDataset

#: slabs each worker recycles beyond the ``prefetch_factor`` batches it has in flight: the one it
#: is writing, the one the trainer holds, and one the trainer dropped but has not reported yet
SPARE_SLABS = 3


def _as_is(batch: Any) -> Any:
    """The DataLoader's ``collate_fn`` for batches a worker already made."""
    return batch


class _Batches(tud.IterableDataset):
    """The dataset's epoch as whole batches, for a ``DataLoader`` with ``batch_size=None``."""

    def __init__(self, dataset: ShardDataset):
        super().__init__()
        self.dataset = dataset
        # the current Receiver's token, flags and slabs, for the workers the DataLoader starts
        self.token: str | None = None
        self.flags: Any = None
        self.slabs: dict[int, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset) // self.dataset.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = tud.get_worker_info()
        inherited = self.slabs.get(info.id, []) if info is not None else []
        return self.dataset.batches(self.token, self.flags, inherited)


class ResumableLoader:
    """A ``DataLoader`` over a :class:`ShardDataset` with the batch size the dataset expects, that
    counts delivered samples. Extra keyword arguments go to ``DataLoader`` (``num_workers``,
    ``pin_memory``, ``prefetch_factor``, ...); ``persistent_workers`` is refused because
    persistent workers keep a stale copy of the epoch and resume point.

    Workers deliver whole batches built in recycled shared memory. With a ``collate_fn`` of your
    own, they deliver single samples and the ``DataLoader`` collates them with it, as a plain
    ``DataLoader(dataset, batch_size=dataset.batch_size)`` does (slower)."""

    def __init__(self, dataset: ShardDataset, **loader_kwargs: Any):
        for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "persistent_workers"):
            if loader_kwargs.get(key):
                raise ValueError(f"ResumableLoader sets {key} itself (the dataset defines batches and order)")
            loader_kwargs.pop(key, None)
        workers = int(loader_kwargs.get("num_workers", 0))
        if workers and dataset.streams % workers:
            raise DepthdataError(f"{workers} DataLoader workers cannot share streams={dataset.streams} evenly; "
                                 "use a number of workers that divides streams (or set streams)")
        dataset.share_cache(workers)
        self.dataset = dataset
        self._workers = workers
        self._slots = int(loader_kwargs.get("prefetch_factor") or 2) + SPARE_SLABS
        self._receiver: Receiver | None = None
        self._iterating = False
        if loader_kwargs.get("collate_fn") is None:
            loader_kwargs.pop("collate_fn", None)
            self._batches: _Batches | None = _Batches(dataset)
            self.loader = tud.DataLoader(self._batches, batch_size=None, collate_fn=_as_is, **loader_kwargs)
        else:
            self._batches = None
            self.loader = tud.DataLoader(dataset, batch_size=dataset.batch_size, **loader_kwargs)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        delivered = ds._start()
        ds.mark_delivered(delivered)
        receiver, shared = None, False
        if self._batches is not None and self._workers:
            # one set of slabs per loader, handed from epoch to epoch; an iteration started while
            # another is still open gets its own
            shared = not self._iterating
            if shared and self._receiver is None:
                self._receiver = Receiver(self._workers, self._slots)
            receiver = self._receiver if shared else Receiver(self._workers, self._slots)
            b = self._batches
            b.token, b.flags, b.slabs = receiver.token, receiver.flags, receiver.handover()
        try:
            it = iter(self.loader)  # starts the workers: they take the receiver's token, flags and slabs
        finally:
            if self._batches is not None:
                self._batches.token, self._batches.flags, self._batches.slabs = None, None, {}
        self._iterating = self._iterating or shared
        try:
            for batch in it:
                delivered += ds.batch_size  # every batch is full: an epoch is whole batches
                ds.mark_delivered(delivered)
                yield batch
                del batch
                if receiver is not None:  # the trainer asks for the next one: what it dropped is free
                    receiver.release()
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()  # now, not when the iterator is collected: the next epoch's workers reuse the slabs
            if shared:
                self._iterating = False
            elif receiver is not None:
                receiver.close()
