"""Unstructured magnitude pruning (as the LPCVC 2025 Track 3 report applies it), reported honestly.

The smallest-magnitude weights of every convolution (the prediction conv included: it is tiny)
are set to zero, globally across layers (``torch.nn.utils.prune.global_unstructured`` with L1
magnitude), and the masks are made permanent. Tensor shapes do not change, so **no dense runtime
runs faster** — onnxruntime, PyTorch eager and XNNPACK's default kernels multiply the zeros like
any other weight; only a runtime with sparse kernels (and sparsity patterns it supports) could
exploit them. What it does buy is a smaller file *when compressed*: zero runs deflate well.
:func:`magnitude_prune` therefore reports the sparsity reached, the raw and zlib-compressed
size of the weights before and after, and — when given a ``measure`` — the latency before and
after, measured, so that the (absent) speed-up is a number rather than a claim.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from depthdata.errors import DepthdataError
from student.arch.base import StudentNet

#: zlib level of the compressed-size figures (9: smallest output; speed is irrelevant here)
ZLIB_LEVEL = 9


@dataclass(frozen=True)
class SparsityReport:
    """``sparsity``: zero fraction of the pruned conv weights; ``zero_fraction``: of all
    parameters. Sizes in bytes: float32 weights concatenated (``raw``), and that deflated with
    zlib level 9 (``zlib``), before and after. Latency in ms (None unless measured)."""

    requested: float
    sparsity: float
    zero_fraction: float
    weights_pruned: int
    bytes_raw: int
    bytes_zlib_before: int
    bytes_zlib_after: int
    latency_ms_before: float | None
    latency_ms_after: float | None
    note: str = ("unstructured zeros keep every tensor's shape: dense runtimes (onnxruntime, PyTorch, XNNPACK) "
                 "do the same arithmetic, so no speed-up is expected; only the compressed size shrinks")

    def as_dict(self) -> dict:
        return asdict(self)


def weights_bytes(model: nn.Module) -> bytes:
    """Every parameter as float32 bytes, in ``named_parameters`` order."""
    return b"".join(p.detach().to(torch.float32).cpu().numpy().tobytes() for _, p in model.named_parameters())


def compressed_size(model: nn.Module) -> int:
    """zlib-deflated size in bytes of :func:`weights_bytes` (level :data:`ZLIB_LEVEL`)."""
    return len(zlib.compress(weights_bytes(model), ZLIB_LEVEL))


def conv_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


def magnitude_prune(model: StudentNet, sparsity: float, measure: Callable[[StudentNet], float] | None = None
                    ) -> tuple[StudentNet, SparsityReport]:
    """Zero the ``sparsity`` fraction of smallest-|w| conv weights of ``model`` (in place, global
    ranking) and report (module doc). ``measure(model) -> ms`` times it before and after."""
    if not 0 <= sparsity < 1:
        raise DepthdataError(f"sparsity must be in [0, 1), got {sparsity}")
    model = model.drop_aux_heads().eval()
    raw = len(weights_bytes(model))
    zlib_before = compressed_size(model)
    before = measure(model) if measure is not None else None
    params = conv_weights(model)
    if sparsity > 0:
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
        for module, name in params:
            torch_prune.remove(module, name)  # the mask becomes the weight: plain tensors again
    pruned = sum(m.weight.numel() for m, _ in params)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    all_zero = sum(int((p == 0).sum()) for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    after = measure(model) if measure is not None else None
    report = SparsityReport(float(sparsity), zeros / pruned, all_zero / total, int(pruned), raw, zlib_before,
                            compressed_size(model), before, after)
    return model, report


def sparsity_of(arrays: list[np.ndarray]) -> float:
    """Zero fraction over ``arrays`` (e.g. weights read back from an exported file)."""
    n = sum(a.size for a in arrays)
    return float(sum(int((a == 0).sum()) for a in arrays) / n) if n else 0.0
