"""Student losses, and their composition from a config (:class:`LossConfig`).

Terms: L1; Eigen's scale-invariant log loss (Eigen et al. NeurIPS 2014); the contest's
median-scaled AbsRel; pixel-wise distillation
to the teacher (L2 / RMSE); scale-and-shift-invariant loss (least squares or median/MAD) and
multi-scale gradient matching (MiDaS, Ranftl et al. TPAMI 2020); DIW ranking on ordinal pairs
(Chen et al. NeurIPS 2016); L1 on sparse LiDAR returns.

All maps are ``B×1×H×W`` tensors. ``pred`` and ``target`` are relative **disparity** (larger =
nearer; the student's output and the store's ``teacher`` field, both unitless) unless a function
says metres. ``weight`` is a per-pixel weight, a bool mask or float confidence in [0, 1]
(0 = ignore). Depth and sparse LiDAR are **metres** with 0 = invalid / no return. Pair
coordinates are 0-based pixels, y first.

Every loss is a mean over the pixels/pairs it uses and is exactly zero (with a gradient path)
when a batch has nothing to compare, so optional terms can always be added.

Composition (:func:`total_loss`): a term applies to the samples of a batch that have its fields
(``batch["present"]``, see :class:`student.data.MixedCollate`), so a batch mixing DIW samples
(pairs only) and NYU samples (depth, teacher) trains each on what it has. A model's output is
either disparity or metric depth (``StudentNet.output``); each term reads it in its own space
(disparity = 1/depth for depth models, depth ∝ 1/disparity for disparity models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from depthdata.errors import DepthdataError
# shared with the demo teacher's recipe, so they live in the library (depthdata.losses)
from depthdata.losses import align_lsq, gradient_loss, ssi_loss
from depthdata.losses import zero_loss as _zero


def sparse_loss(pred: torch.Tensor, sparse_m: torch.Tensor, valid: torch.Tensor, min_points: int | None = None,
                mode: str = "aligned") -> torch.Tensor:
    """L1 against sparse LiDAR returns (``sparse_m`` metres, 0 = no return; ``valid`` marks returns).

    ``mode="aligned"`` (``pred`` relative disparity), unitless: the disparity is least-squares
    aligned per image to the metric inverse depth ``1/z`` (1/m) of the returns and the mean
    ``|z·(s·pred + t) − 1|`` is taken — relative to the inverse depth, so near and far returns
    count alike and the value does not depend on the scene's scale. ``mode="metric"`` (``pred``
    depth in metres): mean ``|pred − z|`` in metres. Per image over its returns, then averaged
    over images; images with fewer than ``min_points`` returns are skipped (default 8 for
    ``aligned``, which fits two parameters, 1 for ``metric``).
    """
    if mode not in ("aligned", "metric"):
        raise ValueError(f"sparse_loss mode must be 'aligned' or 'metric', got {mode!r}")
    m = valid & (sparse_m > 0)
    counts = m.sum((1, 2, 3))
    use = counts >= (min_points if min_points is not None else 8 if mode == "aligned" else 1)
    if not use.any():
        return _zero(pred)
    if mode == "metric":
        err = ((pred[use] - sparse_m[use]).abs() * m[use]).sum((1, 2, 3)) / counts[use]
        return err.mean()
    z = torch.where(m, sparse_m, torch.ones_like(sparse_m))
    inv = torch.where(m, 1.0 / z, torch.zeros_like(z))
    aligned = align_lsq(pred[use], inv[use], m[use])
    err = ((z[use] * aligned - 1.0).abs() * m[use]).sum((1, 2, 3)) / counts[use]
    return err.mean()


def ranking_loss(pred: torch.Tensor, pairs: torch.Tensor, pairs_valid: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """Ordinal ranking loss of DIW pairs on disparity.

    ``pairs`` is ``B×P×5`` ``(y_a, x_a, y_b, x_b, order)``, ``order = +1`` when A is farther
    (so A's disparity should be smaller), ``-1`` when A is closer, ``0`` equal. With
    ``d = sharpness·(pred_A − pred_B)`` (coordinates rounded to the nearest pixel) a pair costs
    ``softplus(order·d)`` when ordered and ``d²`` when equal; the mean over valid pairs is
    returned. ``sharpness`` compensates for disparity living in [0, 1].
    """
    if not pairs_valid.any():
        return _zero(pred)
    b, _, h, w = pred.shape
    p = torch.nan_to_num(pairs, nan=0.0)
    ya = torch.floor(p[..., 0] + 0.5).long().clamp(0, h - 1)
    xa = torch.floor(p[..., 1] + 0.5).long().clamp(0, w - 1)
    yb = torch.floor(p[..., 2] + 0.5).long().clamp(0, h - 1)
    xb = torch.floor(p[..., 3] + 0.5).long().clamp(0, w - 1)
    flat = pred.view(b, h * w)
    d = sharpness * (flat.gather(1, ya * w + xa) - flat.gather(1, yb * w + xb))
    order = p[..., 4]
    cost = torch.where(order == 0, d * d, F.softplus(order * d))
    return cost[pairs_valid].mean()




def _image_mean(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ w·err / Σ w`` per image, averaged over the images that have any weight."""
    w = weight.float()
    n = w.sum((1, 2, 3))
    used = n > 0
    if not used.any():
        return _zero(err)
    return ((w * err).sum((1, 2, 3))[used] / n[used]).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean ``|pred − target|`` per image, averaged over images with weight (in the
    inputs' units: metres against depth, unitless against the teacher)."""
    return _image_mean((pred - target).abs(), weight)


def silog_loss(pred_m: torch.Tensor, target_m: torch.Tensor, weight: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Eigen et al.'s scale-invariant log loss (NeurIPS 2014, eq. 4) on depth (any unit).

    With ``d = log pred − log target`` over the pixels with weight (and both depths > 0), per
    image ``mean(d²) − lam·mean(d)²`` (weighted means), averaged over images. ``lam = 1`` is the
    fully scale-invariant error (eq. 1–3: multiplying ``pred`` by any factor leaves it unchanged);
    ``lam = 0.5`` is the paper's training setting, which keeps some of the absolute scale.
    """
    w = weight.float() * ((pred_m > 0) & (target_m > 0)).float()
    d = torch.log(pred_m.clamp_min(1e-8)) - torch.log(target_m.clamp_min(1e-8))
    n = w.sum((1, 2, 3))
    used = n > 0
    if not used.any():
        return _zero(pred_m)
    mean_d = (w * d).sum((1, 2, 3))[used] / n[used]
    mean_d2 = (w * d * d).sum((1, 2, 3))[used] / n[used]
    return (mean_d2 - lam * mean_d * mean_d).mean()


def contest_loss(pred_m: torch.Tensor, target_m: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image AbsRel ``B`` of depth ``pred_m`` median-scaled to ``target_m`` (any one unit) over
    the pixels with weight (both > 0): the LPCVC contest's score (:func:`depthdata.metrics.evaluate`
    with ``align="median"``), differentiable in ``pred_m``. Invariant to the scale of ``pred_m``
    but not to a shift of its inverse, so a disparity model trained on it keeps its zero: its
    output becomes proportional to inverse depth (:func:`student.tune.tune_zero`). An image
    with no such pixel scores 0."""
    out = []
    for p, t, w in zip(pred_m, target_m, weight):
        m = (w > 0) & (p > 0) & (t > 0)
        if not m.any():
            out.append(_zero(p))
            continue
        p, t = p[m], t[m]
        # quantile, not median: torch's median takes the lower middle value, numpy's (the metric's) their mean
        scaled = p * (t.quantile(0.5) / p.quantile(0.5))
        out.append(((scaled - t).abs() / t).mean())
    return torch.stack(out)


def pixel_distill_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                       mode: str = "l2") -> torch.Tensor:
    """Pixel-wise distillation to the teacher, without alignment (the student is trained to the
    teacher's own convention): per image the weighted mean ``(pred − target)²`` (``mode="l2"``) or
    its square root (``"rmse"``), averaged over images with weight."""
    if mode not in ("l2", "rmse"):
        raise ValueError(f"pixel_distill_loss mode must be 'l2' or 'rmse', got {mode!r}")
    if mode == "l2":
        return _image_mean((pred - target) ** 2, weight)
    w = weight.float()
    n = w.sum((1, 2, 3))
    used = n > 0
    if not used.any():
        return _zero(pred)
    mse = (w * (pred - target) ** 2).sum((1, 2, 3))[used] / n[used]
    # The 1e-12 keeps the gradient of the square root finite at a perfect match.
    return torch.sqrt(mse + 1e-12).mean()


# -- composition -------------------------------------------------------------------------------

KINDS = ("disparity", "depth")


def _as_disparity(pred: torch.Tensor, kind: str) -> torch.Tensor:
    # A depth model's inverse depth is a disparity up to scale: every disparity term is
    # scale-invariant (aligned, ranked) or, for the teacher, affine-invariant.
    return pred if kind == "disparity" else 1.0 / pred.clamp_min(1e-6)


def _as_depth(pred: torch.Tensor, kind: str) -> torch.Tensor:
    # For a disparity model 1/disparity is depth up to scale (and the teacher's shift), which the
    # scale-invariant log loss tolerates.
    return pred if kind == "depth" else 1.0 / pred.clamp_min(1e-4)


def _teacher_weight(batch: Mapping[str, Any], use_conf: bool) -> torch.Tensor:
    weight = batch["teacher_valid"].float()
    if use_conf and "teacher_conf" in batch:
        has = batch.get("present", {}).get("teacher_conf")
        conf = batch["teacher_conf"].clamp(0, 1)
        if has is not None:  # samples of groups without a confidence weigh every pixel fully
            conf = torch.where(has.view(-1, 1, 1, 1), conf, torch.ones_like(conf))
        weight = weight * conf
    return weight


@dataclass(frozen=True)
class TermSpec:
    """A loss term as :func:`total_loss` runs it: the sample fields it needs (given its options),
    the output kinds it accepts, its options with their defaults, and how it is computed from
    ``(pred, batch, kind, use_conf, **options)``."""

    fields: Callable[[Mapping[str, Any]], tuple[str, ...]]
    kinds: Callable[[Mapping[str, Any]], tuple[str, ...]]
    options: Mapping[str, Any]
    compute: Callable[..., torch.Tensor]
    doc: str


def _ssi(pred, batch, kind, use_conf, mode):
    return ssi_loss(_as_disparity(pred, kind), batch["teacher"], _teacher_weight(batch, use_conf), mode)


def _grad(pred, batch, kind, use_conf, scales):
    w = _teacher_weight(batch, use_conf)
    aligned = align_lsq(_as_disparity(pred, kind), batch["teacher"], w)
    return gradient_loss(aligned, batch["teacher"], w, scales)


def _distill(pred, batch, kind, use_conf, mode):
    return pixel_distill_loss(pred, batch["teacher"], _teacher_weight(batch, use_conf), mode)


def _l1(pred, batch, kind, use_conf, target):
    if target == "teacher":
        return l1_loss(pred, batch["teacher"], _teacher_weight(batch, use_conf))
    return l1_loss(pred, batch["depth"], batch["depth_valid"])


def _silog(pred, batch, kind, use_conf, lam):
    return silog_loss(_as_depth(pred, kind), batch["depth"], batch["depth_valid"], lam)


def _contest(pred, batch, kind, use_conf):
    return contest_loss(_as_depth(pred, kind), batch["depth"], batch["depth_valid"]).mean()


def _rank(pred, batch, kind, use_conf, sharpness):
    return ranking_loss(_as_disparity(pred, kind), batch["pairs"], batch["pairs_valid"], sharpness)


def _sparse(pred, batch, kind, use_conf, min_points):
    return sparse_loss(pred, batch["sparse"], batch["sparse_valid"], min_points,
                       mode="aligned" if kind == "disparity" else "metric")


def _fixed(*names: str) -> Callable[[Mapping[str, Any]], tuple[str, ...]]:
    return lambda options: names


#: every loss term by name (the names a :class:`LossConfig` uses)
TERMS: dict[str, TermSpec] = {
    # median by default: its normalisation's scale is positive, so it teaches which way is near;
    # lsq is also 0 for a reversed prediction and left the output's direction to chance
    # (tests/test_conventions.py)
    "ssi": TermSpec(_fixed("teacher"), _fixed(*KINDS), {"mode": "median"}, _ssi,
                    "scale-and-shift-invariant L1 to the teacher (`mode`: `median` median/MAD, the default, "
                    "which keeps near and far apart; `lsq` least squares, also 0 for a reversed "
                    "prediction); depth models compare their inverse"),
    "grad": TermSpec(_fixed("teacher"), _fixed(*KINDS), {"scales": 4}, _grad,
                     "multi-scale gradient matching of the least-squares-aligned residual to the teacher"),
    "distill": TermSpec(_fixed("teacher"), _fixed("disparity"), {"mode": "l2"}, _distill,
                        "pixel-wise distillation to the teacher, no alignment (`mode`: `l2` or `rmse`)"),
    "l1": TermSpec(lambda o: ("teacher",) if o["target"] == "teacher" else ("depth",),
                   lambda o: ("disparity",) if o["target"] == "teacher" else ("depth",), {"target": "depth"}, _l1,
                   "L1 to ground-truth depth in metres (`target: depth`, depth models) or to the teacher "
                   "(`target: teacher`, disparity models)"),
    "silog": TermSpec(_fixed("depth"), _fixed(*KINDS), {"lam": 0.5}, _silog,
                      "Eigen's scale-invariant log loss against ground-truth depth (`lam` 1: fully "
                      "scale-invariant; 0.5: Eigen's training setting)"),
    "contest": TermSpec(_fixed("depth"), _fixed(*KINDS), {}, _contest,
                        "the contest's AbsRel of the depth (disparity models: its inverse) median-scaled to "
                        "ground-truth depth; scale-invariant only, so a disparity model keeps its zero"),
    "rank": TermSpec(_fixed("pairs"), _fixed(*KINDS), {"sharpness": 10.0}, _rank,
                     "DIW ranking loss on ordinal pairs"),
    "sparse": TermSpec(_fixed("sparse"), _fixed(*KINDS), {"min_points": None}, _sparse,
                       "L1 on the valid LiDAR returns: aligned inverse depth (disparity models) or metres "
                       "(depth models)"),
}


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of a :class:`LossConfig`: a name of :data:`TERMS` and its options."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> LossTerm:
        """``{"name": "ssi", "weight": 1.0, "mode": "median"}``: keys besides name and weight are options."""
        d = dict(d)
        if "name" not in d:
            raise DepthdataError(f"loss term {d} has no name")
        return LossTerm(str(d.pop("name")), float(d.pop("weight", 1.0)), d)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, **self.options}

    def resolved(self) -> dict[str, Any]:
        """The term's options, defaults filled in."""
        return {**TERMS[self.name].options, **self.options}


DEFAULT_TERMS = (LossTerm("ssi", 1.0), LossTerm("grad", 0.5), LossTerm("sparse", 0.5), LossTerm("rank", 0.5))


@dataclass(frozen=True)
class LossConfig:
    """The loss of a run: weighted :class:`LossTerm` s (default: ``1.0·ssi + 0.5·grad + 0.5·sparse
    + 0.5·rank``), whether teacher confidence weighs the teacher terms, and the weight of each
    intermediate prediction's loss (architectures with training-only heads)."""

    terms: tuple[LossTerm, ...] = DEFAULT_TERMS
    use_conf: bool = True
    aux_weight: float = 0.5

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> LossConfig:
        d = dict(d)
        terms = d.pop("terms", None)
        unknown = set(d) - {"use_conf", "aux_weight"}
        if unknown:
            raise DepthdataError(f"loss: unknown setting(s) {', '.join(sorted(unknown))} "
                                 "(known: terms, use_conf, aux_weight)")
        return LossConfig(DEFAULT_TERMS if terms is None else tuple(
            t if isinstance(t, LossTerm) else LossTerm.from_dict(t) for t in terms), **d)

    @staticmethod
    def from_spec(spec: str) -> LossConfig:
        """``"ssi=1,grad=0.5,rank"`` (``name[=weight]``, comma-separated) with default options."""
        terms = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, weight = part.partition("=")
            try:
                terms.append(LossTerm(name.strip(), float(weight) if weight else 1.0))
            except ValueError:
                raise DepthdataError(f"loss term {part!r}: weight must be a number") from None
        return LossConfig(tuple(terms))

    def to_dict(self) -> dict[str, Any]:
        return {"terms": [t.to_dict() for t in self.terms], "use_conf": self.use_conf, "aux_weight": self.aux_weight}

    def validate(self, kind: str = "disparity") -> LossConfig:
        """Refuse unknown terms or options, duplicate terms, and terms that do not fit a model
        whose output is ``kind``; returns ``self``."""
        if not self.terms:
            raise DepthdataError("the loss has no term")
        names = [t.name for t in self.terms]
        for t in self.terms:
            if t.name not in TERMS:
                raise DepthdataError(f"unknown loss term {t.name!r}; choose from {', '.join(TERMS)}")
            extra = set(t.options) - set(TERMS[t.name].options)
            if extra:
                raise DepthdataError(f"loss term {t.name}: unknown option(s) {', '.join(sorted(extra))} "
                                     f"(known: {', '.join(TERMS[t.name].options) or 'none'})")
            kinds = TERMS[t.name].kinds(t.resolved())
            if kind not in kinds:
                raise DepthdataError(f"loss term {t.name} {t.options or ''} needs a model that outputs "
                                     f"{' or '.join(kinds)}; this one outputs {kind}")
            if names.count(t.name) > 1:
                raise DepthdataError(f"loss term {t.name} is listed twice")
        return self

    def term_fields(self) -> dict[str, tuple[str, ...]]:
        """Each term's name → the sample fields it needs."""
        return {t.name: TERMS[t.name].fields(t.resolved()) for t in self.terms}


def _samples_with(batch: Mapping[str, Any], fields: Sequence[str]) -> torch.Tensor | None:
    """Per sample: has every one of ``fields`` (``None``: the batch lacks one altogether)."""
    if any(f not in batch for f in fields):
        return None
    sel = torch.ones(len(batch["rgb"]), dtype=torch.bool)
    for f in fields:
        has = batch.get("present", {}).get(f)
        if has is not None:
            sel &= has.cpu()
    return sel


def _subset(batch: Mapping[str, Any], sel: torch.Tensor) -> dict[str, Any]:
    n = len(sel)
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if k == "present":
            out[k] = {f: p[sel] for f, p in v.items()}
        elif isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n:
            out[k] = v[sel.to(v.device)]
        else:
            out[k] = v
    return out


def loss_terms(pred: torch.Tensor, batch: Mapping[str, Any], cfg: LossConfig = LossConfig(),
               kind: str = "disparity") -> dict[str, torch.Tensor]:
    """Each term's value on the samples that have its fields; terms no sample feeds are left out."""
    out = {}
    for t in cfg.terms:
        spec = TERMS[t.name]
        options = t.resolved()
        sel = _samples_with(batch, spec.fields(options))
        if sel is None or not sel.any():
            continue
        part = batch if bool(sel.all()) else _subset(batch, sel)
        out[t.name] = spec.compute(pred if part is batch else pred[sel.to(pred.device)], part, kind, cfg.use_conf,
                                   **options)
    return out


def total_loss(pred: torch.Tensor | Any, batch: Mapping[str, Any], cfg: LossConfig = LossConfig(),
               kind: str = "disparity", weights: Mapping[str, float] | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of :func:`loss_terms` and the terms themselves (detached).

    ``pred`` is the output map or a :class:`~student.arch.base.Prediction`; its intermediate
    predictions add ``aux_weight ×`` their own weighted sum (reported as ``aux``). ``weights``
    overrides the configured term weights (loss rebalancing)."""
    main, aux = (pred.main, pred.aux) if hasattr(pred, "main") else (pred, ())
    w = {t.name: t.weight for t in cfg.terms} | dict(weights or {})
    terms = loss_terms(main, batch, cfg, kind)
    total = sum((w[k] * v for k, v in terms.items()), _zero(main))
    report = {k: v.detach() for k, v in terms.items()}
    if aux and cfg.aux_weight:
        aux_total = _zero(main)
        for a in aux:
            aux_total = aux_total + sum((w[k] * v for k, v in loss_terms(a, batch, cfg, kind).items()), _zero(a))
        total = total + cfg.aux_weight * aux_total
        report["aux"] = aux_total.detach()
    return total, report
