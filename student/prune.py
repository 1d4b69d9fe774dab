"""Structured channel pruning with torch-pruning (DepGraph, Fang et al. CVPR 2023).

Whole conv channels are removed, with every layer that depends on them (batch norms, the
next convs, depthwise groups, squeeze-excitation, the decoder's laterals) pruned together, so
the result is a smaller dense network that any runtime speeds up, not a masked one. Channels
are ranked by the L2 norm of their weights within each dependency group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch_pruning as tp

from depthdata.errors import DepthdataError
from student.model import StudentNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneReport:
    """Parameters and multiply-accumulates (at the example input size) before and after."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    ratio: float
    input_size: tuple[int, int]

    def as_dict(self) -> dict:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after, "ratio": self.ratio,
                "input_size": list(self.input_size)}


def prune_step(model: StudentNet, ratio: float, input_size: tuple[int, int], round_to: int = 8) -> StudentNet:
    """One DepGraph pass (in place): every prunable layer loses ``ratio`` of its output channels
    (L2 magnitude within each dependency group; counts multiples of ``round_to``). The
    prediction conv is never pruned; the graph is traced at ``input_size`` through
    :meth:`~student.arch.base.StudentNet.forward`, so intermediate heads must be dropped first."""
    example = model.example_inputs(tuple(input_size))
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[model.prediction_conv], round_to=round_to)
    pruner.step()
    return model


def prune(model: StudentNet, ratio: float, input_size: tuple[int, int] = (64, 96), round_to: int = 8,
          fine_tune: Callable[[StudentNet], StudentNet] | None = None) -> tuple[StudentNet, PruneReport]:
    """Remove ``ratio`` of the channels of every prunable layer (in place) and fine-tune.

    ``ratio`` in [0, 1): the fraction of output channels removed per layer; ``round_to`` keeps
    channel counts multiples of 8 (vector-friendly for INT8 kernels). The final 1-channel
    prediction conv is never pruned. ``fine_tune(model) -> model`` runs afterwards (e.g. a few
    hundred steps of :func:`student.train.train`) to recover accuracy. ``input_size`` is the
    ``(height, width)`` the dependency graph is traced and MACs are counted at.

    Intermediate (training-only) heads are dropped first: the dependency graph is traced through
    the deployed forward pass, which does not reach them, so their input channels would not
    follow the pruned decoder. Fine-tuning then trains the main output alone.
    """
    if not 0 <= ratio < 1:
        raise DepthdataError(f"pruning ratio must be in [0, 1), got {ratio}")
    model = model.drop_aux_heads().eval()
    example = model.example_inputs(tuple(input_size))
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    if ratio > 0:
        prune_step(model, ratio, input_size, round_to)
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    report = PruneReport(int(params0), int(params1), int(macs0), int(macs1), float(ratio), tuple(input_size))
    log.info("pruned %.0f%% of channels: params %d → %d, MACs %.1fM → %.1fM at %dx%d", ratio * 100, params0,
             params1, macs0 / 1e6, macs1 / 1e6, *input_size)
    if fine_tune is not None:
        model = fine_tune(model)
    return model.eval(), report
