"""Structured pruning **to a target** (parameters, MACs or measured latency), NetAdapt-style.

The loop follows NetAdapt (Yang et al., ECCV 2018) as Yucel et al. (CVPRW 2021) use it: remove
channels a step at a time, measure the resource after each step, fine-tune briefly, and stop as
soon as the target is met. Each step is one pass of torch-pruning's DepGraph
(:func:`student.prune.prune_step`): every layer loses ``step`` of its current output channels
(L2-magnitude ranking, counts kept multiples of ``round_to``), with the layers that depend on
them pruned together. Simplification of NetAdapt made here: one uniform proposal per step
instead of one per layer ranked by short-term accuracy (that needs a fine-tune per layer per
step, far beyond this stage's budget).

The step that would overshoot the target is shrunk by bisection on its ratio (on copies of the
model), so the result lands at the target rather than up to a whole step below it.

Resources: ``params`` (every parameter of the deployed graph), ``macs`` (:func:`student.arch.count_macs`
at ``input_size``) and ``latency_ms`` (a ``measure(model) -> ms`` callable, e.g.
:class:`student.latency.LatencyMeter`). What is never pruned on its own: the 1-channel prediction
conv; depthwise convs and concatenations are not pruned independently — DepGraph removes a
depthwise conv's channels only with the channels of its input, and maps a concatenation's
channel ranges back to the layers that produce them. Intermediate (training-only) heads are
dropped first (the traced graph does not reach them).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from depthdata.errors import DepthdataError
from student.arch.base import StudentNet, count_macs, count_params
from student.prune import prune_step

log = logging.getLogger(__name__)

METRICS = ("params", "macs", "latency_ms")


@dataclass(frozen=True)
class Target:
    """Stop when ``metric`` (``params``, ``macs`` or ``latency_ms``) is at most ``value``."""

    metric: str
    value: float

    def __post_init__(self):
        if self.metric not in METRICS:
            raise DepthdataError(f"unknown pruning target {self.metric!r}; choose one of {', '.join(METRICS)}")
        if not self.value > 0:
            raise DepthdataError(f"pruning target {self.metric} must be positive, got {self.value}")


@dataclass(frozen=True)
class Step:
    """One accepted pruning step: the ratio applied to the model as it was, and the resources after."""

    ratio: float
    params: int
    macs: int
    latency_ms: float | None


@dataclass
class TargetReport:
    target: Target
    input_size: tuple[int, int]
    start: Step
    steps: list[Step] = field(default_factory=list)
    met: bool = False
    latency: dict | None = None

    @property
    def final(self) -> Step:
        return self.steps[-1] if self.steps else self.start

    def as_dict(self) -> dict:
        return {"target": asdict(self.target), "input_size": list(self.input_size), "met": self.met,
                "start": asdict(self.start), "steps": [asdict(s) for s in self.steps],
                "params_before": self.start.params, "params_after": self.final.params,
                "macs_before": self.start.macs, "macs_after": self.final.macs, "latency": self.latency}


def prune_to_target(model: StudentNet, target: Target, input_size: tuple[int, int] = (64, 96), step: float = 0.1,
                    round_to: int = 8, measure: Callable[[StudentNet], float] | None = None,
                    fine_tune: Callable[[StudentNet], StudentNet] | None = None, max_steps: int = 40,
                    bisections: int = 6) -> tuple[StudentNet, TargetReport]:
    """Prune ``model`` (in place for the accepted steps) until ``target`` is met (module doc).

    ``step`` in (0, 1): fraction of each layer's current channels removed per step.
    ``measure(model) -> ms`` is required for a ``latency_ms`` target (and, if given, recorded
    for the others). ``fine_tune(model) -> model`` runs after every accepted step (NetAdapt's
    short-term fine-tune). ``bisections`` halvings of the last step's ratio bring the result
    close to the target. Raises :class:`DepthdataError` when a step no longer removes anything
    (every layer down to ``round_to`` channels) before the target is met.
    """
    if not 0 < step < 1:
        raise DepthdataError(f"pruning step must be in (0, 1), got {step}")
    if target.metric == "latency_ms" and measure is None:
        raise DepthdataError("a latency target needs a measure (e.g. student.latency.LatencyMeter)")
    size = tuple(input_size)
    model = model.drop_aux_heads().eval()

    def resources(m: StudentNet) -> Step:
        return Step(0.0, count_params(m), count_macs(m, size), measure(m) if measure is not None else None)

    def value(s: Step) -> float:
        return float(getattr(s, target.metric))

    now = resources(model)
    report = TargetReport(target, size, now, latency=getattr(measure, "describe", lambda: None)())
    for _ in range(max_steps):
        if value(now) <= target.value:
            break
        candidate, after, ratio = _step_towards(model, step, round_to, size, resources, value, target.value, now,
                                                 bisections)
        if candidate is None:
            raise DepthdataError(f"cannot prune to {target.metric} ≤ {target.value:g}: at {value(now):g} no layer has "
                                 f"channels left to remove (round_to={round_to})")
        model, now = candidate, Step(ratio, after.params, after.macs, after.latency_ms)
        report.steps.append(now)
        log.info("pruning step %d: ratio %.3f → params %d, MACs %.1fM, latency %s ms", len(report.steps), ratio,
                 now.params, now.macs / 1e6, f"{now.latency_ms:.2f}" if now.latency_ms is not None else "-")
        if fine_tune is not None:
            model = fine_tune(model).eval()
    report.met = value(now) <= target.value
    if not report.met:
        log.warning("pruning target %s ≤ %g not met after %d steps (%g)", target.metric, target.value, max_steps,
                    value(now))
    return model, report


def _step_towards(model, step, round_to, size, resources, value, goal, now, bisections):
    """The next model: ``step`` applied to a copy; if that overshoots the goal, the smallest ratio
    in (0, step] that still meets it (bisection). A step that removes nothing is doubled (small
    layers need a larger ratio to lose a whole ``round_to`` group). ``(None, None, 0)`` when even a
    0.9 ratio removes nothing."""
    ratio = step
    while True:
        candidate = _pruned_copy(model, ratio, round_to, size)
        after = resources(candidate)
        if after.params < now.params:
            break
        if ratio >= 0.9:
            return None, None, 0.0
        ratio = min(0.9, ratio * 2)
    if value(after) > goal:
        return candidate, after, ratio
    lo, hi, best = 0.0, ratio, (candidate, after)
    for _ in range(bisections):
        mid = (lo + hi) / 2
        trial = _pruned_copy(model, mid, round_to, size)
        got = resources(trial)
        if got.params < now.params and value(got) <= goal:
            hi, best = mid, (trial, got)
        else:
            lo = mid
    return best[0], best[1], hi


def _pruned_copy(model: StudentNet, ratio: float, round_to: int, size: tuple[int, int]) -> StudentNet:
    return prune_step(copy.deepcopy(model), ratio, size, round_to)
