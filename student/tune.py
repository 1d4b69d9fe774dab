"""The kept zero: fine-tune a disparity student on ground-truth depth so that its own disparity
keeps its zero, the second way to make the exported output proportional to depth (the first, a
shift head beside the frozen student, and why it matters: :mod:`student.shift`).

The loss is the contest's score on the student's output (the ``contest`` term of
:mod:`student.losses`); the student then carries a :class:`student.shift.KeptZero`, which reads
``eps`` off its output. A module of its own because it trains through :mod:`student.train`,
which :mod:`student.shift` (loaded with every checkpoint) must not import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from student.losses import LossConfig, LossTerm, contest_loss
from student.model import DEFAULT_EPS, StudentNet, normalise_disparity
from student.shift import KeptZero, fit_data, ground_truth_examples
from student.shift_methods import SHIFT_METHODS
from student.train import TrainConfig, train

log = logging.getLogger(__name__)


def tune_zero(model: StudentNet, store_url: str, out_dir: str | Path, groups: Sequence[str] | None = None,
              steps: int = SHIFT_METHODS["tune"].steps, lr: float = SHIFT_METHODS["tune"].lr,
              batch_size: int = SHIFT_METHODS["tune"].batch_size, teacher_weight: float = 0.0,
              size: tuple[int, int] | None = None, limit: int = 512, seed: int = 0, version: int | None = None,
              max_depth: float = 80.0, progress: bool = True) -> tuple[StudentNet, dict[str, float]]:
    """Fine-tune a disparity student on the ``groups`` with ground-truth depth so that its own
    disparity keeps its zero, and give it a :class:`KeptZero` shift: the other way to make the
    export's output proportional to depth (module doc), the one ``bench_distill`` records.

    The loss is the contest's score on the student's own output (``contest`` term of
    :mod:`student.losses`: AbsRel of ``1/disparity`` median-scaled to ground truth), plus
    ``teacher_weight`` × the scale-and-shift-invariant loss to the teacher on samples that have
    one. Training is :func:`student.train.train` (streamed, checkpointed in ``out_dir`` and
    resumable; AdamW at ``lr``, 100 warm-up steps, cosine to 0, flips). Why the whole student
    and not a head: on ``bench_distill``'s rooms the head's contest AbsRel stayed at 0.18–0.19
    whatever it was given to read, while the fine-tuned student's own zero gave 0.164
    (``benchmarks/NOTES.md``, distill). The disparity changes too, so its affine-invariant
    metrics move (on ground truth, usually for the better). Returns the tuned student (eval
    mode, ``shift`` attached) and the contest AbsRel on up to ``limit`` of the images with the
    constant ``eps`` (0.1) before and the kept zero after."""
    store, chosen, size = fit_data(model, store_url, groups, size, version)
    if hasattr(model, "shift"):
        del model.shift  # a fitted head reads the disparity this changes
    model.eval()
    rgb, raw, depth, valid = ground_truth_examples(model, store_url, chosen, size, limit, version, max_depth,
                                                   progress)
    with torch.no_grad():
        before = float(contest_loss(1.0 / (normalise_disparity(raw) + DEFAULT_EPS), depth, valid).mean())
    terms = [LossTerm("contest", 1.0)]
    if teacher_weight > 0 and any("teacher" in store.group(g).fields() for g in chosen):
        terms.append(LossTerm("ssi", teacher_weight))
    cfg = TrainConfig(store_url=store_url, out_dir=str(out_dir), groups=list(chosen), steps=steps,
                      batch_size=batch_size, lr=lr, schedule="cosine", warmup_steps=min(100, steps // 10), seed=seed,
                      size=size, loss=LossConfig(tuple(terms)), store_version=version,
                      checkpoint_every=max(1, min(500, steps)), log_every=max(1, min(100, steps)))
    tuned = train(cfg, model=model, progress=progress).model
    tuned.shift = KeptZero()
    with torch.no_grad():  # the same images, read once: only the disparity changed
        raw = torch.cat([tuned(rgb[i: i + 32]) for i in range(0, len(rgb), 32)])
        t = normalise_disparity(raw)
        after = float(contest_loss(1.0 / (t + tuned.shift(rgb, t, raw)), depth, valid).mean())
    log.info("student fine-tuned to keep its disparity's zero on %d image(s) of %s: contest AbsRel %.4f → %.4f "
             "(fixed eps 0.1 → its own zero)", len(rgb), ", ".join(chosen), before, after)
    return tuned, {"method": "tune", "before": before, "after": after, "images": len(rgb), "steps": steps}
