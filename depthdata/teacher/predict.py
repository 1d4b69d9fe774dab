"""Running the teacher on a batch of same-size images: disparity at the stored resolution,
per-image [0, 1] normalisation, and test-time-augmentation confidence.

Conventions: images are ``uint8`` ``N×H×W×3`` RGB; every output is ``float32`` ``N×H×W`` at
that same ``H×W``. The model's ``predicted_depth`` is relative inverse depth (disparity, larger =
nearer, affine-ambiguous); it is resized back to ``H×W`` bicubically, pixel-centre aligned, as
the processor's ``post_process_depth_estimation`` does, in one call for the whole batch: the same
values (the resize is per image), 5× faster on a CPU than that method's image-by-image loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from depthdata.teacher.align import fit_scale_shift
from depthdata.teacher.model import Teacher


@dataclass(frozen=True)
class Normalised:
    """``disparity01 = (raw − raw_min) / (raw_max − raw_min)`` per image (raw = model units)."""

    disparity01: np.ndarray
    raw_min: np.ndarray
    raw_max: np.ndarray
    #: the mirrored pass's raw disparity (model units, mirrored back), when the caller of a
    #: flip-averaged prediction asked to keep it: the TTA confidence's flip view, not run twice
    mirrored: np.ndarray | None = None

    def take(self, indices) -> Normalised:
        """These images only (an index array or list)."""
        return Normalised(self.disparity01[indices], self.raw_min[indices], self.raw_max[indices],
                          None if self.mirrored is None else self.mirrored[indices])


def processes_on_device(processor: Any) -> bool:
    """Whether ``processor`` can resize and normalise on a given device (transformers'
    torchvision-backed image processors take ``device=``; the PIL ones do not)."""
    kwargs = getattr(processor, "valid_kwargs", None)
    return "device" in getattr(kwargs, "__annotations__", {})


def process(processor: Any, images: np.ndarray, device: torch.device | str, size: int | None = None,
            on_device: bool | None = None) -> torch.Tensor:
    """``processor``'s ``pixel_values`` for uint8 ``N×H×W×3`` images, on ``device``.
    ``on_device`` (default: when ``device`` is not the CPU and the processor can) hands the
    processor the batch as one uint8 tensor and lets it resize and normalise on ``device``: on a
    GPU the processor's CPU time bounded the stage (about 4 ms an image at 480×640, as much as
    the forward pass; ``benchmarks/NOTES.md``, "teacher_gpu"), and the copy to the device is
    then of uint8 pixels, a quarter of the float32 ones. Same operations either way
    (torchvision's), so the same values up to the device's rounding."""
    device = torch.device(device)
    kwargs: dict[str, Any] = {"size": {"height": size, "width": size}} if size else {}
    if on_device is None:
        on_device = device.type != "cpu" and processes_on_device(processor)
    if on_device:
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        inputs = processor(images=batch, return_tensors="pt", device=device, **kwargs)
    else:
        inputs = processor(images=list(images), return_tensors="pt", **kwargs)
    return inputs["pixel_values"].to(device)


def pixel_values(teacher: Teacher, images: np.ndarray, size: int | None = None,
                 on_device: bool | None = None) -> torch.Tensor:
    """The teacher's model input for uint8 ``N×H×W×3`` images, on its device in its dtype
    (:func:`process`)."""
    return process(teacher.processor, images, teacher.device, size, on_device).to(teacher.dtype)


def _forward(teacher: Teacher, images: np.ndarray, size: int | None = None, flip: bool = False) -> torch.Tensor:
    """Raw disparity ``N×H×W`` float32, on the teacher's device."""
    h, w = images.shape[1:3]
    pixels = pixel_values(teacher, images, size)
    if flip:
        # flipping the resized tensor equals resizing the flipped image (the resize is symmetric)
        pixels = pixels.flip(-1)
    with torch.inference_mode():
        pred = teacher.model(pixel_values=pixels).predicted_depth
    if flip:
        pred = pred.flip(-1)
    return F.interpolate(pred.float()[:, None], size=(h, w), mode="bicubic", align_corners=False)[:, 0]


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 N×H×W×3 RGB, got {images.dtype} {images.shape}")


def predict_raw(teacher: Teacher, images: np.ndarray, batch_size: int = 4, size: int | None = None,
                flip: bool = False) -> np.ndarray:
    """Raw disparity (model units) ``N×H×W`` float32, in batches of ``batch_size``.

    ``size`` overrides the processor's input size (pixels, before the multiple-of-14 rounding);
    ``flip`` runs on the horizontally mirrored input and mirrors the output back.

    Every batch has exactly ``batch_size`` images (the last is padded with black ones, whose
    outputs are dropped): kernels pick their blocking by batch size, so a shorter last batch
    would give an image values that differ in the last float16 bit from a full one's.
    """
    parts = [raw.cpu().numpy() for raw, _ in _batches(teacher, images, batch_size, size, flip)]
    return np.concatenate(parts) if parts else np.zeros((0, *images.shape[1:3]), np.float32)


def _batches(teacher: Teacher, images: np.ndarray, batch_size: int, size: int | None = None, flip: bool = False,
             flip_average: bool = False):
    """``(raw, mirrored)`` disparity of each batch, on the teacher's device (see
    :func:`predict_raw`): with ``flip_average`` ``raw`` is the mean of the pass on the batch and
    ``mirrored``, the pass on its mirror (mirrored back); else ``mirrored`` is ``None``."""
    _check_images(images)
    for i in range(0, len(images), batch_size):
        batch = images[i: i + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        raw = _forward(teacher, batch, size=size, flip=flip)
        if not flip_average:
            yield raw[:n], None
            continue
        mirrored = _forward(teacher, batch, size=size, flip=not flip)
        yield 0.5 * (raw + mirrored)[:n], mirrored[:n]


def predict_normalised(teacher: Teacher, images: np.ndarray, batch_size: int = 4,
                       flip_average: bool = False, keep_mirrored: bool = False) -> Normalised:
    """``normalise01(predict_raw(teacher, images, batch_size))``, normalised batch by batch on
    the teacher's device: on a GPU the per-image min-max pass then costs no host time (it took
    more of the stage's time per image than the forward pass, measured on an H200).

    ``flip_average`` normalises the mean of the raw disparity and that of the mirrored image
    (mirrored back) instead: the flip augmentation of ZoeDepth's and Metric3D's evaluation, one
    more forward pass for labels whose errors the two views do not share averaged down.
    ``keep_mirrored`` (with ``flip_average``) keeps that mirrored pass's raw output in
    :attr:`Normalised.mirrored`: ``predict_raw(..., flip=True)``'s values, for the TTA
    confidence (:func:`predict_confidence`), which would otherwise run the pass again."""
    parts, mirrored = [], []
    for raw, flipped in _batches(teacher, images, batch_size, flip_average=flip_average):
        parts.append(_normalise(raw))
        if keep_mirrored and flipped is not None:
            mirrored.append(flipped.cpu().numpy())
    if not parts:
        empty = np.zeros(0, np.float32)
        none = np.zeros((0, *images.shape[1:3]), np.float32)
        return Normalised(none, empty, empty, none if keep_mirrored and flip_average else None)
    return Normalised(*(np.concatenate(field) for field in zip(*(
        (p.disparity01, p.raw_min, p.raw_max) for p in parts))), np.concatenate(mirrored) if mirrored else None)


def normalise01(raw: np.ndarray) -> Normalised:
    """Per-image min-max normalisation of ``N×H×W`` disparity to [0, 1] (larger stays nearer).

    A constant image (``raw_max == raw_min``) has no relative depth; it maps to NaN so the
    caller can quarantine it instead of storing a fake ramp.
    """
    return _normalise(torch.from_numpy(np.ascontiguousarray(raw, np.float32)))


def _normalise(raw: torch.Tensor) -> Normalised:
    """:func:`normalise01` of a float32 ``N×H×W`` tensor on any device; float32 throughout."""
    lo = raw.amin(dim=(1, 2), keepdim=True)
    hi = raw.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (raw - lo) / span, torch.full_like(raw, float("nan")))
    return Normalised(out.cpu().numpy(), lo.flatten().cpu().numpy(), hi.flatten().cpu().numpy())


def tta_size(teacher: Teacher, scale: float) -> int:
    """Input size of the second TTA scale: ``scale`` × the processor's size, at least one patch."""
    return max(14, int(round(teacher.input_size * scale)))


def agreement_confidence(base01: np.ndarray, views: list[np.ndarray], tolerance: float) -> np.ndarray:
    """Per-pixel confidence ``exp(−max_view |aligned view − base| / tolerance)`` in [0, 1].

    ``base01`` is one image's [0, 1] disparity; each view (another augmentation's raw output at
    the same size) is first least-squares aligned to it (scale and shift: views differ by an
    affine ambiguity, which is not disagreement; a fit with scale ≤ 0 counts as disagreement of
    the whole range). ``tolerance`` is in units of the [0, 1] range.
    """
    dev = np.zeros(base01.shape, np.float64)
    for view in views:
        fit = fit_scale_shift(view, base01, robust=False)
        if fit.scale <= 0:
            # a view that best matches reversed (near ↔ far) disagrees everywhere: full range
            dev[:] = 1.0
            continue
        dev = np.maximum(dev, np.abs(fit.apply(view.astype(np.float64)) - base01))
    return np.exp(-dev / tolerance).astype(np.float32)


def predict_confidence(teacher: Teacher, images: np.ndarray, base01: np.ndarray, batch_size: int,
                       scale: float, tolerance: float, flipped: np.ndarray | None = None) -> np.ndarray:
    """TTA confidence ``N×H×W`` float32: agreement of the base prediction with a horizontal
    flip and with a second input scale (see :func:`agreement_confidence`); NaN for images
    whose ``base01`` is not finite. ``flipped``: the flip view's raw output when the caller
    already has it (:attr:`Normalised.mirrored`), else it is predicted here."""
    if flipped is None:
        flipped = predict_raw(teacher, images, batch_size, flip=True)
    rescaled = predict_raw(teacher, images, batch_size, size=tta_size(teacher, scale))
    out = np.full(base01.shape, np.nan, np.float32)
    for i in range(len(images)):
        # an image without a usable base prediction (quarantined) has no confidence either
        if np.isfinite(base01[i]).all():
            out[i] = agreement_confidence(base01[i], [flipped[i], rescaled[i]], tolerance)
    return out
