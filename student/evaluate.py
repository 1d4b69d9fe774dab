"""Evaluate a student (torch or exported ONNX) on store groups.

Every model is seen through its exported output: relative depth in (0, 1] proportional to depth
(:class:`student.model.ContestWrapper`), or metric depth in metres for completion models (which
also read the sample's ``sparse`` LiDAR), predicted at the model's input size and resized back
to the sample's size (bilinear). Per group, averaged over images, each ground-truth protocol
under its name (:data:`PROTOCOLS`; the standard set of :func:`depthdata.metrics.evaluate`, ground
truth valid in (1e-3, ``max_depth``) m, default 10 m as NYU):

* ``affine_invariant``: the model measured, not its conversion to depth: the output is turned
  back into disparity (``1/depth``), least-squares fitted with a scale (kept ≥ 0: a model with
  near and far reversed scores as a constant) and a shift to ``1/GT``, turned into depth and
  scored (``scale_shift_disparity``; the Monocular Depth Estimation Challenge's protocol).
  Whatever ``eps`` the export used, an affine disparity gives the same numbers;
* ``contest``: the exported output as it is scored: relative depth median-scaled to GT depth
  (LPCVC 2025 Track 3), so the fixed disparity-to-depth conversion counts too; metric
  predictions as they are, in metres;
* ``teacher``: against the teacher turned into depth the same way as the student
  (``1/(teacher + eps)``), median scaling — how closely the student imitates its teacher;
* ``whdr``: over the ``pairs`` of the group (DIW convention: ``order = +1`` when A is farther).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from depthdata import metrics
from depthdata.errors import DepthdataError
from depthdata.store import Store, select_groups
from depthdata.stream import ShardMapDataset
from student import export
from student.model import DEFAULT_EPS, ContestWrapper, StudentNet

log = logging.getLogger(__name__)

#: ``predict(rgb)`` (uint8 ``H×W×3``) → depth ``H×W``; completion predictors take ``predict(rgb, sparse)``
#: (``H×W`` metres). A predictor may say so with attributes: ``inputs`` (default ``("rgb",)``) and
#: ``metric`` (default ``False``: relative depth, median-scaled before comparison).
Predictor = Callable[..., np.ndarray]


#: the ground-truth protocols of :func:`evaluate_group`, by the key their metrics appear under
PROTOCOLS = {
    "affine_invariant": "least-squares scale (>= 0) and shift of the model's disparity (1/output) to 1/GT, metrics "
                        "in depth (Monocular Depth Estimation Challenge)",
    "contest": "the exported relative depth median-scaled to GT depth (LPCVC 2025 Track 3); metric predictions "
               "as they are",
}


def _describe(predict: Predictor, inputs: tuple[str, ...], metric: bool) -> Predictor:
    predict.inputs, predict.metric = inputs, metric  # type: ignore[attr-defined]
    return predict


def _resize(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if depth.shape == tuple(size):
        return depth
    return cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def torch_predictor(model: StudentNet, eps: float = DEFAULT_EPS, size: tuple[int, int] | None = None) -> Predictor:
    """uint8 ``H×W×3`` RGB (and ``sparse`` metres for completion models) → relative depth ``H×W``
    (metres for completion models) of a torch student, run at ``size`` if given."""
    model.eval()
    # The exported graph itself (same depth mapping and low-resolution tail as the ONNX file).
    contest = None if model.output == "depth" else ContestWrapper(model, eps).eval()

    def predict(rgb: np.ndarray, sparse: np.ndarray | None = None) -> np.ndarray:
        at = size or rgb.shape[:2]
        x255 = torch.from_numpy(export.to_input(rgb, at))
        with torch.no_grad():
            if contest is None:
                out = model(x255 / 255.0, torch.from_numpy(export.sparse_input(sparse, at)))[0, 0].numpy()
            else:
                out = contest(x255)[0, 0].numpy()
        return _resize(out, rgb.shape[:2])

    return _describe(predict, model.inputs, model.output == "depth")


def onnx_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """uint8 ``H×W×3`` RGB → relative depth ``H×W`` of an exported model at its fixed input size;
    a completion export (a ``sparse`` input) also takes ``sparse`` and gives metres."""
    sess = export.session(path, threads)
    size = export.input_size(sess)
    completion = any(i.name == export.SPARSE_NAME for i in sess.get_inputs())

    def predict(rgb: np.ndarray, sparse: np.ndarray | None = None) -> np.ndarray:
        feed = export.feed(rgb, size, sparse if completion else None)
        return _resize(export.run(sess, feed[export.INPUT_NAME], feed.get(export.SPARSE_NAME))[0, 0], rgb.shape[:2])

    return _describe(predict, ("rgb", "sparse") if completion else ("rgb",), completion)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in metrics.METRIC_NAMES if rows and k in rows[0]]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys} | {"images": len(rows)}


def evaluate_group(predict: Predictor, store_url: str, group: str, limit: int | None = None,
                   eps: float = DEFAULT_EPS, progress: bool = True, version: int | None = None,
                   max_depth: float = metrics.MAX_DEPTH) -> dict[str, object]:
    """Metrics of one group (see module doc) at store ``version`` (default: the newest);
    ``limit`` evaluates the first ``limit`` samples; ground truth beyond ``max_depth`` metres is
    not evaluated."""
    have = set(Store.open(store_url, version=version).group(group).fields())
    inputs = tuple(getattr(predict, "inputs", ("rgb",)))
    metric = bool(getattr(predict, "metric", False))
    missing = [f for f in inputs if f not in have]
    if missing:
        raise DepthdataError(f"{store_url}: group {group} has no {missing[0]!r}, an input of the model")
    fields = [f for f in ("rgb", "depth", "teacher", "pairs", "sparse") if f in have and (f != "sparse" or f in inputs)]
    ds = ShardMapDataset(store_url, groups=[group], fields=fields, version=version)
    n = len(ds) if limit is None else min(limit, len(ds))
    contest_rows, affine_rows, teacher_rows = [], [], []
    wrong = total = 0
    for k in tqdm(range(n), desc=f"evaluate {group}", unit="img", disable=not progress):
        s = ds[k]
        rgb = s["rgb"].numpy().transpose(1, 2, 0)
        pred = (predict(rgb, s["sparse"][0].numpy()) if "sparse" in inputs else predict(rgb)).astype(np.float64)
        if "depth" in s:
            gt = np.where(s["depth_valid"][0].numpy(), s["depth"][0].numpy(), np.nan)
            contest_rows.append(metrics.evaluate(pred, gt, align=None if metric else "median", max_depth=max_depth,
                                                 on_empty="nan", name=s["sample_id"]))
            affine_rows.append(metrics.evaluate(1.0 / pred, gt, align="scale_shift_disparity", max_depth=max_depth,
                                                positive_scale=True, on_empty="nan", name=s["sample_id"]))
        if "teacher" in s:
            valid = s["teacher_valid"][0].numpy()
            t_depth = np.where(valid, 1.0 / (s["teacher"][0].numpy().astype(np.float64) + eps), np.nan)
            # Teacher depth lies in [1/(1+eps), 1/eps]; the range must include all of it.
            teacher_rows.append(metrics.evaluate(pred, t_depth, align="median", min_depth=1e-6,
                                                 max_depth=2.0 / eps, on_empty="nan", name=s["sample_id"]))
        if "pairs" in s and bool(s["pairs_valid"].any()):
            w, t = metrics.ordinal_errors(pred, s["pairs"].numpy())
            wrong, total = wrong + w, total + t
    out: dict[str, object] = {"samples": n}
    if affine_rows:
        out["affine_invariant"] = _mean([r for r in affine_rows if r["n_valid"] > 0])
        out["contest"] = _mean([r for r in contest_rows if r["n_valid"] > 0])
    if teacher_rows:
        out["teacher"] = _mean([r for r in teacher_rows if r["n_valid"] > 0])
    if total:
        out["whdr"] = wrong / total
        out["pairs"] = total
    return out


def evaluate(predict: Predictor, store_url: str, groups: Sequence[str] | None = None, limit: int | None = None,
             eps: float = DEFAULT_EPS, progress: bool = True, version: int | None = None,
             max_depth: float = metrics.MAX_DEPTH) -> dict[str, dict[str, object]]:
    """:func:`evaluate_group` for each group (default: all groups of the store)."""
    store = Store.open(store_url, version=version)
    return {g: evaluate_group(predict, store_url, g, limit, eps, progress, version, max_depth)
            for g in select_groups(store, groups)}
