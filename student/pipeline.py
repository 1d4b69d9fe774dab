"""The whole student stage in one call: train → prune → fine-tune → export FP32/INT8 → evaluate.

Output layout under ``out_dir``::

    train/checkpoint/{model.safetensors,state.pt}      distilled student (resumable)
    finetune/checkpoint/{model.safetensors,state.pt}   pruned + fine-tuned student
    student_fp32.onnx, student_int8.onnx               contest I/O (see student.export), with the
                                                       fitted disparity → depth shift (student.shift)
    report.json                                        everything :func:`run` returns
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from depthdata.errors import DepthdataError
from depthdata.store import Store, select_groups
from student import evaluate as ev
from student import export
from student.arch import StudentConfig
from student.arch import get as get_arch
from student.checkpoint import param_count, save_model
from student.losses import LossConfig
from student.model import DEFAULT_EPS
from student.prune import prune
from student.shift import fit_shift
from student.shift_methods import shift_steps as resolve_shift_steps
from student.tune import tune_zero
from student.train import TrainConfig, train

log = logging.getLogger(__name__)


def run(store_url: str, out_dir: str | Path, steps: int = 40, finetune_steps: int | None = None,
        prune_ratio: float = 0.3, groups: Sequence[str] | None = None, batch_size: int = 4,
        size: tuple[int, int] | None = None, export_size: tuple[int, int] | None = None,
        calibration_images: int = 16, eval_limit: int | None = None, seed: int = 0, eps: float = DEFAULT_EPS,
        shift_steps: int | None = None, shift_method: str = "head", progress: bool = True,
        **train_options: Any) -> dict[str, Any]:
    """Run the student stage on a store and return paths and metrics (also in ``report.json``).

    ``size`` is the training ``(height, width)`` (default: the first group's); ``export_size``
    the ONNX input size (default: the training size; pass ``(480, 640)`` for the contest).
    ``finetune_steps`` defaults to half of ``steps``. ``groups`` defaults to every group that has
    the model's inputs and the fields of at least one loss term (with the default loss: teacher
    labels, LiDAR or ordinal pairs). Extra keyword arguments go to
    :class:`student.train.TrainConfig` (``lr``, ``streams``, ``model``, ``loss``, ...).
    A disparity student gets a per-image disparity → depth shift fitted for ``shift_steps`` steps
    (default: the method's, :data:`student.shift.SHIFT_STEPS`) on
    the store's groups with ground-truth depth, when it has any: ``shift_method`` ``"head"`` a
    shift head (:func:`student.shift.fit_shift`), ``"tune"`` a fine-tune that keeps the student's
    zero (:func:`student.tune.tune_zero`); otherwise, or with ``shift_steps=0``, the export uses
    the constant ``eps``.
    """
    shift_steps = resolve_shift_steps(shift_method, shift_steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # every step reads the version that is newest now, even if a build commits another meanwhile
    store = Store.open(store_url)
    version = store.version.number if store.version else None
    chosen = select_groups(store, groups)
    if groups is None:
        # By default train on every group that can feed the model and some loss term; others cannot be used.
        needs = (train_options.get("loss") or LossConfig()).term_fields()
        inputs = get_arch((train_options.get("model") or StudentConfig()).arch).inputs
        chosen = [g for g in chosen if set(inputs) <= set(fs := store.group(g).fields())
                  and any(set(f) <= set(fs) for f in needs.values())]
        if not chosen:
            wanted = "; ".join(f"{t}: {' + '.join(f)}" for t, f in needs.items())
            raise DepthdataError(f"{store_url}: no group has the model's inputs ({', '.join(inputs)}) and the fields "
                                 f"of a loss term ({wanted}); run the teacher stage first")
    if size is None:
        first = store.group(chosen[0])
        size = (first.height, first.width)
    export_size = tuple(export_size or size)
    train_options.setdefault("store_version", version)
    cfg = TrainConfig(store_url=store_url, out_dir=str(out / "train"), groups=chosen, steps=steps,
                      batch_size=batch_size, seed=seed, size=tuple(size), **train_options)
    clock = {"start": time.perf_counter()}
    trained = train(cfg, progress=progress)
    clock["train"] = time.perf_counter()
    version = trained.store_version  # a resumed run keeps the version it started on
    cfg = replace(cfg, store_version=version)
    params_unpruned = param_count(trained.model)

    ft_cfg = replace(cfg, out_dir=str(out / "finetune"), steps=finetune_steps if finetune_steps is not None
                     else max(1, steps // 2))
    fine = {}

    def fine_tune(model):
        result = train(ft_cfg, model=model, progress=progress)
        fine["losses"] = result.losses
        return result.model

    pruned, report = prune(trained.model, prune_ratio, input_size=tuple(size), fine_tune=fine_tune)
    clock["prune_finetune"] = time.perf_counter()
    shift = None
    with_depth = [g for g in select_groups(store) if "depth" in store.group(g).fields()]
    if pruned.output == "disparity" and shift_steps > 0 and with_depth:
        if shift_method == "tune":
            pruned, shift = tune_zero(pruned, store_url, out / "tune", with_depth, shift_steps, size=tuple(size),
                                      seed=seed, version=version, progress=progress)
        else:
            shift = fit_shift(pruned, store_url, with_depth, shift_steps, tuple(size), seed=seed, version=version,
                              progress=progress)
    elif pruned.output == "disparity":
        log.info("the export maps disparity to depth with the constant eps %g (%s)", eps,
                 "no group has ground-truth depth to fit a shift on" if shift_steps > 0 else "shift_steps = 0")
    pruned_path = save_model(pruned, out / "finetune" / "checkpoint" / "model.safetensors",
                             trained_on={"store": store_url, "version": version, "groups": list(chosen)})
    clock["shift"] = time.perf_counter()

    exported = export.export_fp32_int8(pruned, out, export_size, eps, store_url, chosen, calibration_images, version)
    fp32, int8 = exported["onnx_fp32"], exported["onnx_int8"]
    clock["export"] = time.perf_counter()
    evaluation = {
        "fp32": ev.evaluate(ev.onnx_predictor(fp32), store_url, chosen, eval_limit, eps, progress, version),
        "int8": ev.evaluate(ev.onnx_predictor(int8), store_url, chosen, eval_limit, eps, progress, version),
    }
    clock["evaluate"] = time.perf_counter()
    marks = list(clock)

    result: dict[str, Any] = {
        "store": store_url,
        "store_version": version,
        "groups": chosen,
        "arch": pruned.name,
        "train_size": list(size),
        "export_size": list(export_size),
        "paths": {"trained": str(trained.checkpoint), "pruned": str(pruned_path), "onnx_fp32": str(fp32),
                  "onnx_int8": str(int8)},
        "train": {"steps": trained.steps, "loss_first": trained.losses[0] if trained.losses else None,
                  "loss_last": trained.losses[-1] if trained.losses else None},
        "finetune": {"steps": ft_cfg.steps, "loss_last": fine["losses"][-1] if fine.get("losses") else None},
        "prune": report.as_dict() | {"params_unpruned": params_unpruned},
        "shift": None if shift is None else shift | {"groups": with_depth},
        "size_bytes": {"fp32": exported["bytes_fp32"], "int8": exported["bytes_int8"]},
        "int8_vs_fp32": exported["int8_vs_fp32"],
        "eval": evaluation,
        "eval_protocols": ev.PROTOCOLS,
        "seconds": {b: round(clock[b] - clock[a], 2) for a, b in pairwise(marks)},
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    log.info("student stage done: %s", out / "report.json")
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
