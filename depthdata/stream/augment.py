"""Augmentations for depth samples (the tensor dicts of :mod:`depthdata.stream.decode`).

Every transform is called as ``transform(sample, rng)`` with a :class:`numpy.random.Generator`
the dataset seeds from ``(seed, epoch, group, index)``, so augmentations are reproducible and the
same after a resume or with another number of workers. Spatial fields (every ``C×H×W`` tensor:
image, depth-like fields and their masks) move together; ``pairs`` coordinates follow them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from depthdata.errors import DepthdataError

Sample = dict[str, Any]


def _spatial(sample: Sample) -> list[str]:
    return [k for k, v in sample.items() if isinstance(v, torch.Tensor) and v.ndim == 3]


def _size(sample: Sample) -> tuple[int, int]:
    keys = _spatial(sample)
    if not keys:
        raise DepthdataError(f"sample {sample.get('sample_id')!r}: no spatial field to augment")
    h, w = sample[keys[0]].shape[-2:]
    return int(h), int(w)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right: every spatial field, and pair x-coordinates ``x → W-1-x`` (0-based pixel
    centres). Depth order of a pair is unchanged: the same two scene points are compared."""
    _, w = _size(sample)
    out = dict(sample)
    for k in _spatial(sample):
        out[k] = torch.flip(sample[k], dims=[-1])
    if "pairs" in sample:
        pairs = sample["pairs"].clone()
        pairs[:, [1, 3]] = (w - 1) - pairs[:, [1, 3]]
        out["pairs"] = pairs
    return out


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Cut the window ``[top, top+height) × [left, left+width)`` (0-based) from every spatial field.
    Pairs shift by ``(-top, -left)``; pairs with a point outside the window are dropped (the kept
    rows move to the front, NaN rows pad to the same ``P`` so batches still collate)."""
    h, w = _size(sample)
    if not (0 <= top and 0 <= left and top + height <= h and left + width <= w and height > 0 and width > 0):
        raise DepthdataError(f"sample {sample.get('sample_id')!r}: crop {height}×{width} at ({top}, {left}) "
                             f"does not fit the {h}×{w} image")
    out = dict(sample)
    for k in _spatial(sample):
        out[k] = sample[k][..., top: top + height, left: left + width].contiguous()
    if "pairs" in sample:
        pairs = sample["pairs"].clone()
        pairs[:, [0, 2]] -= top
        pairs[:, [1, 3]] -= left
        ys, xs = pairs[:, [0, 2]], pairs[:, [1, 3]]
        inside = ((ys >= 0) & (ys <= height - 1) & (xs >= 0) & (xs <= width - 1)).all(dim=1)
        keep = pairs[inside]
        packed = torch.full_like(pairs, float("nan"))
        packed[: len(keep)] = keep
        out["pairs"] = packed
        out["pairs_valid"] = torch.arange(len(pairs)) < len(keep)
    return out


@dataclass(frozen=True)
class RandomHFlip:
    """Flip left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return hflip(sample) if rng.random() < self.p else sample


@dataclass(frozen=True)
class RandomCrop:
    """Crop ``size = (height, width)`` pixels at a uniformly random position."""

    size: tuple[int, int]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = _size(sample)
        ch, cw = self.size
        if ch > h or cw > w:
            raise DepthdataError(f"sample {sample.get('sample_id')!r}: crop {ch}×{cw} is larger than the {h}×{w} image")
        return crop(sample, int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast and saturation of ``rgb`` only (factors drawn uniformly from
    ``[1-x, 1+x]``); depth-like fields are measurements and stay untouched."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        rgb = sample["rgb"]
        for amount, fn in ((self.brightness, TF.adjust_brightness), (self.contrast, TF.adjust_contrast),
                           (self.saturation, TF.adjust_saturation)):
            if amount > 0:
                rgb = fn(rgb, float(rng.uniform(max(0.0, 1 - amount), 1 + amount)))
        return {**sample, "rgb": rgb}


@dataclass(frozen=True)
class GaussianBlur:
    """Blur ``rgb`` only, with probability ``p``, by a Gaussian of standard deviation drawn
    uniformly from ``sigma`` (pixels; the kernel spans ±3σ). One of Depth Anything's strong
    perturbations of the student's input: the labels stay sharp, so the student learns depth
    that does not hinge on fine texture."""

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        draw, s = rng.random(), float(rng.uniform(*self.sigma))  # both drawn always: one stream per sample
        if draw >= self.p:
            return sample
        k = 2 * int(np.ceil(3 * s)) + 1
        return {**sample, "rgb": TF.gaussian_blur(sample["rgb"], [k, k], [s, s])}


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, sharing the sample's generator."""

    transforms: Sequence[Any]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample
