"""Training recipe pieces: optimizers, learning-rate schedules, gradient-norm clipping helpers,
an exponential moving average of the weights, and multi-loss rebalancing.

Everything here is a pure function of the step or keeps its state as plain tensors and numbers,
so :mod:`student.train` can save it in ``state.pt`` and a resumed run continues bit-identically.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from depthdata.errors import DepthdataError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
# torch.optim.lr_scheduler.OneCycleLR's defaults, whose curve "onecycle" reproduces
ONECYCLE_PCT, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adamw`` (decoupled weight decay) or ``sgd`` (Nesterov momentum)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    raise DepthdataError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def lr_at(step: int, lr: float, schedule: str, total: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total``.

    A pure function of the step rather than a ``torch.optim.lr_scheduler`` object: nothing to
    save for an exact resume, and a run stopped early follows the same curve when resumed.

    * ``constant``: ``lr``;
    * ``cosine``: linear warm-up over ``warmup`` steps to ``lr``, then cosine annealing to
      ``lr·min_ratio`` at ``total`` (``CosineAnnealingLR``'s curve when ``warmup`` is 0);
    * ``onecycle``: ``OneCycleLR``'s default curve with ``max_lr = lr``: cosine up from ``lr/25``
      over the first 30 % of the steps, then cosine down to ``lr/25/1e4`` at the last step.
    """
    if schedule == "constant":
        return lr
    if total < 1:
        raise DepthdataError(f"a {schedule} schedule needs at least one step, got {total}")
    if schedule == "cosine":
        if step < warmup:
            return lr * (step + 1) / warmup
        span = max(1, total - warmup)
        return _cos(lr, lr * min_ratio, min(1.0, (step - warmup) / span))
    if schedule == "onecycle":
        start, low = lr / ONECYCLE_DIV, lr / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
        peak = float(ONECYCLE_PCT * total) - 1
        if step <= peak:
            return _cos(start, lr, step / peak if peak > 0 else 1.0)
        return _cos(lr, low, min(1.0, (step - peak) / (total - 1 - peak)))
    raise DepthdataError(f"unknown learning-rate schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class WeightEMA:
    """Exponential moving average of a model's weights: after every optimizer step each float
    parameter becomes ``decay·ema + (1 − decay)·param``; buffers (batch-norm statistics) are
    copied, since they are themselves running averages. The averaged copy is what a run saves,
    exports and evaluates: it is smoother than the last iterate."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise DepthdataError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


class LossRebalancer:
    """Multi-loss rebalancing (Lee & Kim, ECCV 2020), as Yucel et al. (CVPRW 2021) use it for a
    student: every ``every`` steps the term weights are reset from the terms' mean values over
    the period, so that each weighted term contributes in proportion to the share of its initial
    value it still has: ``λ_i ∝ r_i / L̄_i`` with ``r_i = L̄_i / L̄_i⁽⁰⁾`` (``L̄⁽⁰⁾``: the first
    period's means), scaled so the weights sum to the configured weights' sum. Terms that fall
    slowly get more weight; at the first update every term contributes equally. (The papers
    rebalance per epoch; here the period is a step count, the trainer's unit.)
    """

    def __init__(self, base: Mapping[str, float], every: int):
        if every < 1:
            raise DepthdataError(f"rebalancing period must be at least one step, got {every}")
        self.every = int(every)
        self.total = float(sum(base.values()))
        self.weights = dict(base)
        self.initial: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._steps = 0

    def observe(self, terms: Mapping[str, torch.Tensor | float]) -> None:
        """Record one step's (unweighted) term values; rebalance at the end of a period."""
        for k, v in terms.items():
            if k in self.weights:
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
                self._counts[k] = self._counts.get(k, 0) + 1
        self._steps += 1
        if self._steps % self.every == 0:
            self._rebalance()

    def _rebalance(self) -> None:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}
        for k, m in means.items():
            self.initial.setdefault(k, m)
        # Terms not seen in this period (no sample had their fields) keep their weight.
        usable = {k: m for k, m in means.items() if m > 0 and self.initial[k] > 0}
        if usable:
            raw = {k: (m / self.initial[k]) / m for k, m in usable.items()}
            budget = self.total - sum(w for k, w in self.weights.items() if k not in usable)
            scale = budget / sum(raw.values())
            self.weights.update({k: r * scale for k, r in raw.items()})
        self._sums, self._counts = {}, {}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights), "initial": dict(self.initial), "sums": dict(self._sums),
                "counts": dict(self._counts), "steps": self._steps}

    def load_state_dict(self, state: Mapping) -> None:
        self.weights, self.initial = dict(state["weights"]), dict(state["initial"])
        self._sums, self._counts, self._steps = dict(state["sums"]), dict(state["counts"]), int(state["steps"])
