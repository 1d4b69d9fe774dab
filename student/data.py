"""What the student reads from a store: which fields, at which size, as a resumable loader."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from depthdata.errors import DepthdataError
from depthdata.store import Store
from depthdata.stream import ColorJitter, Compose, GaussianBlur, RandomHFlip, ResumableLoader, ShardDataset, crop
from depthdata.stream.decode import SPATIAL_MASKS
from student.losses import LossConfig

log = logging.getLogger(__name__)

#: every field the student can read, in the order it requests them (kept stable: the order is
#: part of a stream's resume fingerprint)
FIELD_ORDER = ("rgb", "teacher", "teacher_conf", "sparse", "pairs", "depth")
# Maps resampled bilinearly; everything else spatial (validity masks, LiDAR depth whose holes must
# not bleed into returns) takes the nearest pixel.
_SMOOTH = ("rgb", "teacher", "teacher_conf")


@dataclass(frozen=True)
class FieldPlan:
    """What a run reads: ``required`` fields (every group must have them: ``rgb`` and the model's
    inputs), ``optional`` ones (read where a group has them; each loss term applies to the samples
    that have its fields), and the loss terms that some group can feed."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    terms: tuple[str, ...]


def _ordered(names: set[str]) -> tuple[str, ...]:
    return tuple(f for f in FIELD_ORDER if f in names) + tuple(sorted(names - set(FIELD_ORDER)))


def training_fields(store_url: str, groups: Sequence[str], version: int | None = None,
                    term_fields: Mapping[str, Sequence[str]] | None = None,
                    inputs: Sequence[str] = ("rgb",)) -> FieldPlan:
    """Plan the fields of a run over ``groups``.

    ``term_fields`` maps each loss term to the fields it needs (default: the default
    :class:`~student.losses.LossConfig`'s); ``teacher_conf`` rides along with ``teacher``.
    Fields every group has are requested as required (as the stream always did), the others as
    optional, so a DIW group (``pairs``) and an NYU group (``depth``, ``teacher``) train together.
    A term no group can feed is dropped with a log line; a group that feeds no term, or lacks a
    model input, is an error naming it.
    """
    if term_fields is None:
        term_fields = LossConfig().term_fields()
    store = Store.open(store_url, version=version)
    have = {g: set(store.group(g).fields()) for g in groups}
    for g in groups:
        missing = [f for f in inputs if f not in have[g]]
        if missing:
            raise DepthdataError(f"{store_url}: group {g} has no {missing[0]!r}, an input of the student model "
                                 f"(inputs: {', '.join(inputs)})")
    terms = tuple(t for t, fs in term_fields.items() if any(set(fs) <= h for h in have.values()))
    for t in term_fields:
        if t not in terms:
            log.info("loss term %s: no group has %s; not used", t, " and ".join(term_fields[t]))
    for g in groups:
        if not any(set(term_fields[t]) <= have[g] for t in terms):
            needs = "; ".join(f"{t}: {' + '.join(fs)}" for t, fs in term_fields.items())
            raise DepthdataError(f"{store_url}: the loss terms need teacher labels or other targets ({needs}), and "
                                 f"group {g} has none of them (run the teacher stage first, or choose other terms)")
    wanted = set(inputs) | {"rgb"} | {f for t in terms for f in term_fields[t]}
    if "teacher" in wanted and any("teacher_conf" in h for h in have.values()):
        wanted.add("teacher_conf")
    everywhere = {f for f in wanted if all(f in h for h in have.values())}
    return FieldPlan(_ordered(everywhere), _ordered(wanted - everywhere), terms)


@dataclass(frozen=True)
class MixedCollate:
    """``collate_fn`` for batches whose samples come from groups with different fields.

    A sample lacking an ``optional`` field gets a placeholder that no loss can use (zeros with an
    all-false ``<field>_valid`` mask; ``pairs`` all NaN, ``pairs_valid`` false), ``pairs`` are
    NaN-padded to the batch's largest count (groups store different numbers per sample), and
    ``batch["present"][field]`` (bool ``B``) says which samples really have each field.
    """

    optional: tuple[str, ...] = ()

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        present = {f: torch.tensor([f in s for s in samples]) for f in self.optional}
        h, w = samples[0]["rgb"].shape[-2:]
        with_pairs = "pairs" in self.optional or any("pairs" in s for s in samples)
        p = max((s["pairs"].shape[0] for s in samples if "pairs" in s), default=1)
        filled = []
        for s in samples:
            s = dict(s)
            if with_pairs:
                have = s.get("pairs", torch.zeros(0, 5))
                s["pairs"] = torch.cat([have, torch.full((p - len(have), 5), float("nan"))])
                s["pairs_valid"] = torch.cat([s.get("pairs_valid", torch.zeros(0, dtype=torch.bool)),
                                              torch.zeros(p - len(have), dtype=torch.bool)])
            for f in self.optional:
                if f != "pairs" and f not in s:
                    s[f] = torch.zeros(1, h, w)
                    if f in SPATIAL_MASKS:
                        s[f"{f}_valid"] = torch.zeros(1, h, w, dtype=torch.bool)
            filled.append(s)
        batch = default_collate(filled)
        batch["present"] = present
        return batch


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


@dataclass(frozen=True)
class RandomZoom:
    """Crop a window whose sides are a fraction ``s ~ U(min_scale, 1)`` of the image's (same
    aspect, uniformly random position) and resample it back to the full size: the scene through
    a longer lens. Disparity labels stay valid up to a scale (a pixel keeps its depth), which the
    scale-and-shift-invariant losses ignore; LiDAR and validity masks take the nearest pixel."""

    min_scale: float

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        h, w = sample["rgb"].shape[-2:]
        s = float(rng.uniform(self.min_scale, 1.0))
        ch, cw = max(1, round(h * s)), max(1, round(w * s))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if (ch, cw) == (h, w):
            return sample
        return Resize((int(h), int(w)))(crop(sample, top, left, ch, cw), rng)


def augmentations(zoom_min: float = 1.0, color_jitter: float = 0.0, blur: float = 0.0) -> list[Any]:
    """The student's input perturbations (after flips): a random zoom down to ``zoom_min`` of
    each side (1: none), brightness/contrast/saturation jitter of ± ``color_jitter`` (0: none) and
    a Gaussian blur with probability ``blur`` (0: none). Depth Anything trains its student on
    pseudo-labels under such strong perturbations of the image, never of the labels."""
    if not 0 < zoom_min <= 1:
        raise DepthdataError(f"zoom_min must be in (0, 1], got {zoom_min}")
    if not 0 <= color_jitter < 1:
        raise DepthdataError(f"color_jitter must be in [0, 1), got {color_jitter}")
    if not 0 <= blur <= 1:
        raise DepthdataError(f"blur is a probability in [0, 1], got {blur}")
    out: list[Any] = []
    if zoom_min < 1:
        out.append(RandomZoom(zoom_min))
    if color_jitter > 0:
        out.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    if blur > 0:
        out.append(GaussianBlur(blur))
    return out


def training_loader(store_url: str, groups: Sequence[str], batch_size: int, seed: int,
                    size: tuple[int, int] | None, hflip: bool, streams: int,
                    num_workers: int = 0, version: int | None = None,
                    fields: FieldPlan | None = None, rank: int = 0,
                    world_size: int = 1, augment: Sequence[Any] = ()) -> tuple[ShardDataset, ResumableLoader]:
    """A shuffled, resumable stream of training batches (``rgb`` float in [0, 1]) from store
    ``version`` (default: the newest; ``ds.version`` says which) reading ``fields`` (default:
    :func:`training_fields` for the default loss); batches carry ``present`` (:class:`MixedCollate`).
    ``rank`` of ``world_size`` processes reads its own share of every epoch; ``augment`` are
    further ``transform(sample, rng)`` steps after the flip (:func:`augmentations`)."""
    transforms: list[Any] = []
    if size is not None:
        transforms.append(Resize(tuple(size)))
    if hflip:
        transforms.append(RandomHFlip())
    transforms.extend(augment)
    plan = fields or training_fields(store_url, groups, version)
    ds = ShardDataset(store_url, groups=list(groups), fields=plan.required, optional_fields=plan.optional,
                      shuffle=True, seed=seed, batch_size=batch_size, streams=streams, rgb_float=True, rank=rank,
                      world_size=world_size, transform=Compose(transforms) if transforms else None,
                      num_workers=max(1, num_workers), version=version)
    if len(ds) == 0:
        raise DepthdataError(f"{store_url}: no training batch can be formed from {len(ds.shards)} servable shard(s) "
                             f"with batch size {batch_size} × {streams} streams × {world_size} process(es) (lower them, or "
                             "check that the "
                             "teacher stage completed)")
    return ds, ResumableLoader(ds, num_workers=num_workers, collate_fn=MixedCollate(plan.optional))
