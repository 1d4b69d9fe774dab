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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.utils.data as tud

from depthdata.errors import DepthdataError
from depthdata.stream.dataset import ShardDataset


class ResumableLoader:
    """A ``DataLoader`` over a :class:`ShardDataset` with the batch size the dataset expects, that
    counts delivered samples. Extra keyword arguments go to ``DataLoader`` (``num_workers``,
    ``pin_memory``, ``prefetch_factor``, ...); ``persistent_workers`` is refused because
    persistent workers keep a stale copy of the epoch and resume point."""

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
        for batch in self.loader:
            delivered += len(batch["sample_id"])
            ds.mark_delivered(delivered)
            yield batch
