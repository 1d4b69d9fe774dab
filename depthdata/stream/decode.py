"""One stored sample (numpy rows of each field) → the tensors trainers get.

Output per field (``H×W`` is the group's resolution):

* ``rgb``: ``uint8`` ``3×H×W`` (RGB order), or ``float32`` in ``[0, 1]`` with ``rgb_float``.
* ``depth`` (metres), ``sparse`` (metres), ``teacher`` (relative disparity in ``[0, 1]``, larger =
  nearer), ``teacher_conf``: ``float32`` ``1×H×W``. Invalid pixels read ``0`` — never NaN, so
  losses cannot be poisoned — and ``<field>_valid`` (``bool`` ``1×H×W``) says which are valid:
  depth finite and > 0, sparse > 0 (0 = no return), teacher finite. ``teacher_conf`` has no mask.
* ``pairs``: ``float32`` ``P×5`` ``(y_a, x_a, y_b, x_b, order)``, 0-based pixels, with NaN rows as
  padding after the real ones, and ``pairs_valid`` (``bool`` ``P``).

:func:`outputs` says which tensors a field gives and :func:`convert` writes them into arrays the
caller provides: the per-sample path (:func:`decode`, fresh tensors) and the batch path (a slot
of a shared-memory batch, :mod:`depthdata.stream.batch`) run the same code, so both deliver the
same values bit for bit.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np
import torch

#: fields with a ``<field>_valid`` mask and what makes a pixel valid (``teacher_conf`` has no
#: mask; ``pairs`` has a per-row one). :func:`convert` computes the same without temporaries.
SPATIAL_MASKS = {
    "depth": lambda a: np.isfinite(a) & (a > 0),
    "sparse": lambda a: np.isfinite(a) & (a > 0),
    "teacher": np.isfinite,
}
MASKED = tuple(SPATIAL_MASKS)
_scratch = threading.local()


class Output(NamedTuple):
    """One tensor a field gives per sample."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]


def outputs(name: str, sample_shape: tuple[int, ...], rgb_float: bool = False) -> list[Output]:
    """The tensors field ``name`` (stored per sample as ``sample_shape``) gives, in sample order."""
    if name == "rgb":
        h, w, c = sample_shape
        return [Output("rgb", torch.float32 if rgb_float else torch.uint8, (c, h, w))]
    if name == "pairs":
        return [Output("pairs", torch.float32, tuple(sample_shape)),
                Output("pairs_valid", torch.bool, tuple(sample_shape[:1]))]
    spatial = (1, *sample_shape)
    out = [Output(name, torch.float32, spatial)]
    if name in MASKED:
        out.append(Output(f"{name}_valid", torch.bool, spatial))
    return out


def _tmp(shape: tuple[int, ...]) -> np.ndarray:
    """A bool scratch array of ``shape``, reused per thread (a fresh one per sample would be
    fresh pages, which cost more than the work here)."""
    cache = getattr(_scratch, "arrays", None)
    if cache is None:
        cache = _scratch.arrays = {}
    arr = cache.get(shape)
    if arr is None:
        arr = cache[shape] = np.empty(shape, bool)
    return arr


def convert(name: str, src: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Write field ``name`` of one sample (``src``: the stored row) into ``out`` (key → array of
    the :func:`outputs` dtype and shape; the arrays may hold anything before)."""
    if name == "rgb":
        dst = out["rgb"]
        if dst.dtype == np.uint8:
            np.copyto(dst, src.transpose(2, 0, 1))
        else:  # the same float32 division as ``tensor.float().div_(255)``
            np.divide(src.transpose(2, 0, 1), np.float32(255), out=dst)
        return
    if name == "pairs":
        np.copyto(out["pairs"], src)
        np.isfinite(src).all(axis=1, out=out["pairs_valid"])
        return
    dst = out[name][0]
    valid = out[f"{name}_valid"][0] if name in MASKED else _tmp(src.shape)
    tmp = _tmp(src.shape) if name in MASKED else None
    if name in ("depth", "sparse"):  # valid: finite and > 0 (NaN > 0 is False)
        np.greater(src, 0, out=valid)
        np.less(src, np.inf, out=tmp)
        np.logical_and(valid, tmp, out=valid)
    else:  # teacher, teacher_conf: valid = finite
        np.isfinite(src, out=valid)
    np.copyto(dst, 0)
    np.copyto(dst, src, where=valid, casting="same_kind")


def decode(row: dict[str, np.ndarray], rgb_float: bool = False) -> dict[str, Any]:
    """Tensors of one sample from its per-field numpy rows. Every tensor is a new copy: the rows
    may be views into buffers that the reader reuses."""
    out: dict[str, Any] = {}
    for name, a in row.items():
        tensors = {o.key: torch.empty(o.shape, dtype=o.dtype) for o in outputs(name, a.shape, rgb_float)}
        convert(name, a, {k: t.numpy() for k, t in tensors.items()})
        out.update(tensors)
    return out
