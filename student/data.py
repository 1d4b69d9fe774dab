"""What the student reads from a store: which fields, at which size, as a resumable loader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from depthdata.errors import DepthdataError
from depthdata.store import Store
from depthdata.stream import Compose, RandomHFlip, ResumableLoader, ShardDataset

BASE_FIELDS = ("rgb", "teacher", "teacher_conf")
OPTIONAL_FIELDS = ("sparse", "pairs")
# Maps resampled bilinearly; everything else spatial (validity masks, LiDAR depth whose holes must
# not bleed into returns) takes the nearest pixel.
_SMOOTH = ("rgb", "teacher", "teacher_conf")


def training_fields(store_url: str, groups: Sequence[str], version: int | None = None) -> list[str]:
    """``rgb``, ``teacher``, ``teacher_conf``, plus ``sparse`` / ``pairs`` when every group has
    them (the stream serves a group only if it has every requested field)."""
    store = Store.open(store_url, version=version)
    have = [set(store.group(g).fields()) for g in groups]
    missing = [(g, f) for g, h in zip(groups, have) for f in BASE_FIELDS if f not in h]
    if missing:
        raise DepthdataError(f"{store_url}: cannot distil without {missing[0][1]!r} in group {missing[0][0]} "
                             "(run the teacher stage first)")
    return [*BASE_FIELDS, *(f for f in OPTIONAL_FIELDS if all(f in h for h in have))]


@dataclass(frozen=True)
class Resize:
    """Resample every spatial field of a stream sample to ``size = (height, width)`` pixels; pair
    coordinates follow with the pixel-centre convention ``y' = (y + 0.5)·H'/H − 0.5``."""

    size: tuple[int, int]

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = dict(sample)
        h, w = sample["rgb"].shape[-2:]
        th, tw = self.size
        if (h, w) == (th, tw):
            return out
        for key, v in sample.items():
            if not (isinstance(v, torch.Tensor) and v.ndim == 3 and v.shape[-2:] == (h, w)):
                continue
            x = v[None].float()
            if key in _SMOOTH:
                y = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            else:
                y = F.interpolate(x, size=self.size, mode="nearest")
            out[key] = y[0].to(v.dtype)
        if "pairs" in sample:
            p = sample["pairs"].clone()
            p[:, [0, 2]] = ((p[:, [0, 2]] + 0.5) * th / h - 0.5).clamp(0, th - 1)
            p[:, [1, 3]] = ((p[:, [1, 3]] + 0.5) * tw / w - 0.5).clamp(0, tw - 1)
            out["pairs"] = p
        return out


def training_loader(store_url: str, groups: Sequence[str], batch_size: int, seed: int,
                    size: tuple[int, int] | None, hflip: bool, streams: int,
                    num_workers: int = 0, version: int | None = None) -> tuple[ShardDataset, ResumableLoader]:
    """A shuffled, resumable stream of training batches (``rgb`` float in [0, 1]) from store
    ``version`` (default: the newest; ``ds.version`` says which)."""
    transforms: list[Any] = []
    if size is not None:
        transforms.append(Resize(tuple(size)))
    if hflip:
        transforms.append(RandomHFlip())
    ds = ShardDataset(store_url, groups=list(groups), fields=training_fields(store_url, groups, version),
                      shuffle=True, seed=seed, batch_size=batch_size, streams=streams, rgb_float=True, rank=0,
                      world_size=1, transform=Compose(transforms) if transforms else None,
                      num_workers=max(1, num_workers), version=version)
    if len(ds) == 0:
        raise DepthdataError(f"{store_url}: no training batch can be formed from {len(ds.shards)} servable shard(s) "
                             f"with batch size {batch_size} × {streams} streams (lower them, or check that the "
                             "teacher stage completed)")
    return ds, ResumableLoader(ds, num_workers=num_workers)
