"""The ways to fit the exported model's disparity → relative-depth mapping (``student shift
--method``, ``student run --shift-method``) and their defaults: one table that
:func:`student.shift.fit_shift`, :func:`student.tune.tune_zero`, the pipeline and the CLI's
``--help`` all read. Kept apart from :mod:`student.shift` so the CLI builds its help without
importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from depthdata.errors import DepthdataError


@dataclass(frozen=True)
class ShiftMethod:
    #: what it does, for ``--help``
    help: str
    #: optimizer steps
    steps: int
    #: images per step
    batch_size: int
    #: peak learning rate (the head trains with Adam, the tune with AdamW)
    lr: float


#: a head is cheap and converges in a few hundred steps; a tune trains the whole student (the
#: distillation benchmark's 3,000 steps of batch 8 took 6 minutes at 120×160 on one CPU thread)
SHIFT_METHODS = {
    "head": ShiftMethod("a shift head, the student frozen", steps=600, batch_size=16, lr=3e-3),
    "tune": ShiftMethod("fine-tune the student to keep its zero", steps=3000, batch_size=8, lr=3e-4),
}


def shift_method(name: str) -> ShiftMethod:
    """The method called ``name``; an unknown one is refused by name."""
    try:
        return SHIFT_METHODS[name]
    except KeyError:
        known = " or ".join(repr(m) for m in SHIFT_METHODS)
        raise DepthdataError(f"shift_method must be {known}, got {name!r}") from None


def shift_steps(method: str, steps: int | None = None) -> int:
    """``steps``, or the default of ``method`` when None; an unknown method is refused by name."""
    return shift_method(method).steps if steps is None else steps


def defaults_help(field: str) -> str:
    """``"600 for head, 3000 for tune"``: each method's default ``field``, for ``--help``."""
    return ", ".join(f"{getattr(m, field):g} for {name}" for name, m in SHIFT_METHODS.items())
