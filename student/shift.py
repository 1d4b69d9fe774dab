"""A learned disparity → depth shift: the exported model's output proportional to depth.

The student's disparity is affine-invariant (trained with scale-and-shift-invariant losses), and
the exported model maps it to relative depth as ``1 / (t + eps)`` with ``t`` the disparity
min–max normalised per image (:func:`student.model.disparity_to_relative_depth`). That output is
proportional to depth only when ``eps`` is the scene's own shift: for true inverse depth
``a·t + b``, ``eps = b / a = 1 / (R − 1)`` with ``R`` the scene's far/near depth ratio. One
constant cannot fit rooms (``R`` ≈ 2–10, ``eps`` ≈ 0.1–1) and streets (``R`` ≈ 15–50, ``eps`` ≈
0.02–0.07) at once, and the contest's median scaling corrects scale only, so a fixed ``eps``
costs what the affine-invariant protocol forgives (measured on rendered scenes with *exact*
disparity: AbsRel 0.17 for rooms, 0.035 for streets at ``eps = 0.1``; 0 with each image's own).

:class:`ShiftHead` predicts ``eps`` per image from the RGB input and the student's own
normalised disparity ``t``: a small CNN (about 30 k parameters, ~8 M MACs at 480×640, under 2 %
of the smallest student) on both resampled to a fixed 96×128, with a vertical-position channel
(where the floor, the walls and the sky are says much about the depth range), global average
and max pooling and one linear layer giving ``log eps``. Why ``t``: the shift is a property of
the disparity map, not only of the picture. On a ground plane true inverse depth falls linearly
with the image row to zero at the horizon, so how ``t`` runs down the rows says where its zero
would be, which is ``eps``. Seeing ``t`` lowered the contest AbsRel on the 1,280 fitted images of
``bench_distill``'s student from 0.257 to 0.242 (means of four seeds; ``benchmarks/NOTES.md``,
distill). :func:`fit_shift` trains it with the student frozen on groups that have metric depth
(ground truth), on random crops and flips: the loss is exactly the contest's score, AbsRel of
the output after median scaling to ground truth. The disparity model is not changed, so every
affine-invariant metric stays what it was. (Heads fitted before the head saw ``t`` load and run
as they were: ``sees_disparity=False``.)

The other way (:func:`student.tune.tune_zero`): fine-tune the student itself on the ground truth
with the contest's loss (:func:`student.losses.contest_loss`, scale-invariant only), so that its
disparity ``d`` keeps its zero, i.e. is proportional to inverse depth; :class:`KeptZero` then
reads ``eps = d_min / (d_max − d_min)`` off each output. The whole student can see what a
30k-parameter head on a 96×128 view could not: on ``bench_distill``'s held-out rooms every head
stayed at a contest AbsRel of 0.18–0.19, the tuned student reached ~0.16
(``benchmarks/NOTES.md``, distill). The price: the disparity model changes (its affine-invariant
metrics move, on ground truth usually down), and the fine-tune costs a training run.

A student carries its head (or its :class:`KeptZero`) as the ``shift`` submodule (saved in its
safetensors file; see :mod:`student.checkpoint`); :class:`student.model.ContestWrapper` uses it
in place of the constant ``eps`` when present.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from depthdata import metrics
from depthdata.errors import DepthdataError
from depthdata.store import Store, select_groups
from depthdata.stream import ShardMapDataset
from student.losses import contest_loss
from student.model import normalise_disparity
from student.shift_methods import SHIFT_METHODS

log = logging.getLogger(__name__)

#: the head's input resolution (height, width); any input is resampled to it
HEAD_SIZE = (96, 128)
#: ``eps`` is kept in this range (far/near ratio of the output between 1.1 and 1001)
EPS_RANGE = (1e-3, 10.0)
class ShiftHead(nn.Module):
    """RGB ``B×3×H×W`` in [0, 1] and the student's normalised disparity ``B×1×h×w`` (any size) →
    ``eps`` ``B×1×1×1`` (module doc). A new head predicts ``initial_eps`` for every image, so
    attaching one changes nothing until it is trained. ``sees_disparity=False`` is the earlier
    head, on RGB alone (it ignores the disparity it is given)."""

    #: how the model card names this mapping
    what = "per image, from a fitted shift head (student.shift.ShiftHead)"

    def __init__(self, width: int = 16, initial_eps: float = 0.1, sees_disparity: bool = True):
        super().__init__()
        w = width
        self.sees_disparity = sees_disparity
        self.features = nn.Sequential(
            nn.Conv2d(5 if sees_disparity else 4, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU())
        self.out = nn.Linear(8 * w, 1)
        nn.init.zeros_(self.out.weight)
        lo, hi = (math.log(e) for e in EPS_RANGE)
        nn.init.constant_(self.out.bias, math.log((math.log(initial_eps) - lo) / (hi - math.log(initial_eps))))
        # vertical position, -1 at the top row, +1 at the bottom (a buffer: exported as a constant)
        self.register_buffer("rows", torch.linspace(-1.0, 1.0, HEAD_SIZE[0]).view(1, 1, -1, 1), persistent=False)
        #: full scale of ``rgb`` (255 in an export whose input normalisation is folded,
        #: :func:`student.arch.base.fold_input_normalisation`): divided out after downsampling
        self.input_scale = 1.0

    @classmethod
    def for_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> ShiftHead:
        """A head of the kind whose weights ``state`` holds (the first conv's input channels
        say whether it sees the disparity)."""
        return cls(sees_disparity=state[f"{prefix}features.0.weight"].shape[1] == 5)

    def forward(self, rgb: torch.Tensor, disparity: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """``eps`` of each image from its RGB and normalised ``disparity``; ``raw`` (the
        student's output before normalising, which :class:`KeptZero` reads) is not used."""
        x = F.interpolate(rgb, size=HEAD_SIZE, mode="bilinear", align_corners=False)
        if self.input_scale != 1.0:
            x = x / self.input_scale
        parts = [(x - 0.5) / 0.25]
        if self.sees_disparity:
            # t in [0, 1] centred and spread like the colour channels
            t = F.interpolate(disparity, size=HEAD_SIZE, mode="bilinear", align_corners=False)
            parts.append((t - 0.5) / 0.25)
        f = self.features(torch.cat(parts + [self.rows.expand(x.shape[0], 1, *HEAD_SIZE)], dim=1))
        z = self.out(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))
        # log eps squashed into EPS_RANGE by a sigmoid: bounded, and never without a gradient (a clamp has none)
        lo, hi = (math.log(e) for e in EPS_RANGE)
        return (lo + (hi - lo) * torch.sigmoid(z)).exp().view(-1, 1, 1, 1)


class KeptZero(nn.Module):
    """The ``eps`` of a student whose own disparity keeps its zero (:func:`student.tune.tune_zero`):
    its output ``d`` is proportional to inverse depth, so ``eps = d_min / (d_max − d_min)`` per
    image makes ``1/(t + eps)`` of the normalised ``t`` proportional to ``1/d``, i.e. to depth. No
    parameters; ``eps`` is kept in ``EPS_RANGE`` (a far/near ratio of at most 1001). Its one buffer,
    ``eps_min``, is saved so that a checkpoint says which shift it carries."""

    #: how the model card names this mapping
    what = "per image, from the fine-tuned student's own disparity (student.shift.KeptZero)"

    def __init__(self):
        super().__init__()
        self.register_buffer("eps_min", torch.tensor(EPS_RANGE[0]))

    def forward(self, rgb: torch.Tensor, disparity: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        lo = raw.amin(dim=(1, 2, 3), keepdim=True)
        hi = raw.amax(dim=(1, 2, 3), keepdim=True)
        # the same 1e-6 as student.model.normalise_disparity, so that t + eps = raw / (hi − lo + 1e-6) exactly
        return (lo / (hi - lo + 1e-6)).clamp(self.eps_min, EPS_RANGE[1])


def shift_for_state_dict(state: dict[str, torch.Tensor], prefix: str = "shift.") -> nn.Module:
    """A new shift module of the kind whose weights ``state`` holds under ``prefix``."""
    if f"{prefix}eps_min" in state:
        return KeptZero()
    return ShiftHead.for_state_dict(state, prefix)


def fit_data(model: nn.Module, store_url: str, groups: Sequence[str] | None, size: tuple[int, int] | None,
              version: int | None) -> tuple[Store, list[str], tuple[int, int]]:
    """What a shift is fitted on: the store, its ``groups`` with ground-truth depth, and ``size``
    (default: the first such group's); a model that predicts metric depth is refused."""
    if getattr(model, "output", "disparity") != "disparity":
        raise DepthdataError(f"{getattr(model, 'name', 'model')!r} predicts metric depth: it needs no shift")
    store = Store.open(store_url, version=version)
    chosen = _depth_groups(store, groups)
    if size is None:
        first = store.group(chosen[0])
        size = (first.height, first.width)
    return store, chosen, tuple(size)


def _depth_groups(store: Store, groups: Sequence[str] | None) -> list[str]:
    chosen = [g for g in select_groups(store, groups) if "depth" in store.group(g).fields()]
    if not chosen:
        raise DepthdataError(f"{store.url}: no group with ground-truth depth to fit the disparity → depth shift on "
                             f"(groups: {', '.join(select_groups(store, groups))})")
    return chosen


def ground_truth_examples(model: nn.Module, store_url: str, groups: list[str], size: tuple[int, int], limit: int,
                          version: int | None, max_depth: float, progress: bool) -> tuple[torch.Tensor, ...]:
    """Up to ``limit`` samples spread evenly over ``groups`` at ``size``: RGB in [0, 1], the
    frozen student's disparity (as it outputs it), ground-truth depth and its validity mask."""
    ds = ShardMapDataset(store_url, groups=groups, fields=("rgb", "depth"), version=version)
    picks = np.unique(np.linspace(0, len(ds) - 1, min(limit, len(ds))).round().astype(int))
    rgbs, ts, depths, valids = [], [], [], []
    with torch.no_grad():
        for k in tqdm(picks, desc="shift: student disparity", unit="img", disable=not progress):
            s = ds[int(k)]
            rgb = F.interpolate(s["rgb"][None].float() / 255.0, size=size, mode="bilinear", align_corners=False)
            # 1×H×W each, like the disparity
            depth = F.interpolate(s["depth"][None].float(), size=size, mode="nearest")[0]
            valid = F.interpolate(s["depth_valid"][None].float(), size=size, mode="nearest")[0] > 0.5
            valid &= (depth > metrics.MIN_DEPTH) & (depth <= max_depth)
            if int(valid.sum()) < 16:
                continue
            d = model(rgb)
            rgbs.append(rgb[0])
            ts.append(d[0])
            depths.append(depth)
            valids.append(valid)
    if not rgbs:
        raise DepthdataError(f"{store_url}: no sample of {', '.join(groups)} has valid ground-truth depth")
    return torch.stack(rgbs), torch.stack(ts), torch.stack(depths), torch.stack(valids)


#: smallest side of a training crop, as a fraction of the image's (:func:`_random_crop`)
MIN_CROP = 0.6


def _random_crop(rgb: torch.Tensor, t: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One random crop (sides ``MIN_CROP``–1 of the image's, same for the batch) with the
    disparity min–max normalised again over the crop, as the export normalises a whole image.

    Why: the shift depends on the depth range of what is in view, and a crop is a scene with
    another range whose answer the ground truth still gives. On the 320 rendered training scenes
    of ``bench_distill`` it kept 1,000 steps from overfitting (held-out rooms' contest AbsRel
    0.251 without crops, 0.226 with). A crop leaving an image too few valid pixels is not taken."""
    h, w = t.shape[-2:]
    side = float(torch.empty(1).uniform_(MIN_CROP, 1.0, generator=gen))
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    win = (..., slice(y0, y0 + ch), slice(x0, x0 + cw))
    if int(valid[win].sum(dim=(1, 2, 3)).min()) < 16:
        return rgb, t, depth, valid
    return rgb[win], normalise_disparity(t[win]), depth[win], valid[win]


#: share of the steps over which the learning rate decays to zero (:func:`_lr_factor`)
DECAY_SHARE = 0.2


def _lr_factor(step: int, steps: int) -> float:
    """The full learning rate, then a cosine to zero over the last ``DECAY_SHARE`` of the steps.

    Why: the last steps settle instead of ending wherever the full rate left the head (on
    ``bench_distill``'s student, contest AbsRel on the fitted images about 0.01 lower than a
    constant rate, with half its spread over seeds), while the long full-rate phase keeps what a
    short fit needs (a cosine over all steps, as good there, left the analytic scenes of
    ``tests/test_student_shift.py`` at 0.23 after 300 steps, against 0.06 constant and 0.03 this
    way; ``benchmarks/NOTES.md``, distill)."""
    start = int(steps * (1 - DECAY_SHARE))
    if step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, steps - start)))


def fit_shift(model: nn.Module, store_url: str, groups: Sequence[str] | None = None,
              steps: int = SHIFT_METHODS["head"].steps, size: tuple[int, int] | None = None,
              batch_size: int = SHIFT_METHODS["head"].batch_size, lr: float = SHIFT_METHODS["head"].lr, limit: int = 512,
              seed: int = 0, version: int | None = None, max_depth: float = 80.0,
              progress: bool = True) -> dict[str, float]:
    """Train a :class:`ShiftHead` for ``model`` (a disparity student, kept frozen) on up to
    ``limit`` samples of the ``groups`` that have ground-truth depth, and attach it as
    ``model.shift``. Returns the mean contest AbsRel on those samples with the constant
    ``eps`` of a new head (0.1) and with the fitted head (``before``, ``after``), and the images used.
    ``size`` (height, width) defaults to the first group's; ground truth beyond ``max_depth``
    metres (default 80, outdoor scenes included) is not used. ``lr`` is Adam's rate, decayed to
    zero on a cosine over the last fifth of the ``steps`` (:func:`_lr_factor`)."""
    _, chosen, size = fit_data(model, store_url, groups, size, version)
    was_training = model.training
    model.eval()
    rgb, raw, depth, valid = ground_truth_examples(model, store_url, chosen, size, limit, version, max_depth,
                                                   progress)
    t = normalise_disparity(raw)
    torch.manual_seed(seed)
    head = ShiftHead()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(_lr_factor, steps=steps))
    gen = torch.Generator().manual_seed(seed)

    def score(h: ShiftHead) -> float:
        with torch.no_grad():
            return float(contest_loss(1.0 / (t + h(rgb, t)), depth, valid).mean())

    before = score(head)
    for step in tqdm(range(steps), desc="shift: fit", unit="step", disable=not progress):
        idx = torch.randint(len(rgb), (min(batch_size, len(rgb)),), generator=gen)
        x, tt, d, v = rgb[idx], t[idx], depth[idx], valid[idx]
        if step % 2:  # a horizontal flip changes nothing a depth range depends on
            x, tt, d, v = x.flip(-1), tt.flip(-1), d.flip(-1), v.flip(-1)
        x, tt, d, v = _random_crop(x, tt, d, v, gen)
        loss = contest_loss(1.0 / (tt + head(x, tt)), d, v).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    head.eval()
    after = score(head)
    model.shift = head
    model.train(was_training)
    log.info("shift head fitted on %d image(s) of %s: contest AbsRel %.4f → %.4f (fixed eps 0.1 → learned)",
             len(rgb), ", ".join(chosen), before, after)
    return {"method": "head", "before": before, "after": after, "images": len(rgb), "steps": steps}
