"""Student losses (student.losses): every term against hand-computed values and its
invariances, and their composition from a config with per-sample field presence."""

import math

import numpy as np
import pytest
import torch

from depthdata.errors import DepthdataError
from student.arch import Prediction
from student.losses import (LossConfig, LossTerm, align_lsq, gradient_loss, l1_loss, loss_terms, pixel_distill_loss,
                            ranking_loss, silog_loss, sparse_loss, ssi_loss, total_loss)


def _maps(seed=0, shape=(2, 1, 8, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, 1, -1)


# -- single terms ------------------------------------------------------------------------------

def test_l1_hand_value_per_image_then_mean():
    pred = torch.tensor([1.0, 2.0, 3.0, 5.0, 0.0, 0.0]).view(2, 1, 1, 3)
    target = torch.tensor([1.5, 2.0, 1.0, 4.0, 4.0, 4.0]).view(2, 1, 1, 3)
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.0]).view(2, 1, 1, 3)
    # image 0: (0.5 + 0) / 2 = 0.25; image 1: (1·1 + 0.5·4) / 1.5 = 2
    assert float(l1_loss(pred, target, weight)) == pytest.approx((0.25 + 2.0) / 2)
    assert float(l1_loss(pred, target, torch.zeros_like(weight))) == 0.0


def test_silog_hand_value_and_scale_invariance():
    pred, gt = _t([2.0, 4.0, 1.0]), _t([1.0, 1.0, 1.0])
    mask = _t([1.0, 1.0, 0.0])
    d = [math.log(2.0), math.log(4.0)]
    mean_d2, mean_d = (d[0] ** 2 + d[1] ** 2) / 2, (d[0] + d[1]) / 2
    assert float(silog_loss(pred, gt, mask, lam=0.5)) == pytest.approx(mean_d2 - 0.5 * mean_d ** 2, rel=1e-6)
    # Eigen's λ = 1 error: d = (log 2, log 4) has variance (log 2)²/4 around its mean.
    assert float(silog_loss(pred, gt, mask, lam=1.0)) == pytest.approx(math.log(2.0) ** 2 / 4, rel=1e-5)
    p, g = _maps(1)
    p, g = p + 0.1, g + 0.1
    base = float(silog_loss(p, g, torch.ones_like(p), lam=1.0))
    assert base > 1e-3
    assert float(silog_loss(7.3 * p, g, torch.ones_like(p), lam=1.0)) == pytest.approx(base, rel=1e-4)
    # λ < 1 keeps part of the scale: scaling changes it.
    assert float(silog_loss(7.3 * p, g, torch.ones_like(p), lam=0.5)) > float(silog_loss(p, g, torch.ones_like(p), 0.5))
    # Invalid depth (0) is left out even under weight 1.
    assert float(silog_loss(_t([2.0, 0.0]), _t([1.0, 1.0]), _t([1.0, 1.0]), lam=1.0)) == pytest.approx(0.0, abs=1e-7)


def test_pixel_distillation_l2_and_rmse_hand_values():
    pred = torch.tensor([0.0, 1.0, 0.5, 0.5]).view(2, 1, 1, 2)
    target = torch.tensor([0.5, 0.0, 0.5, 0.1]).view(2, 1, 1, 2)
    weight = torch.ones_like(pred)
    mse = [(0.25 + 1.0) / 2, (0.0 + 0.16) / 2]
    assert float(pixel_distill_loss(pred, target, weight, "l2")) == pytest.approx(np.mean(mse))
    assert float(pixel_distill_loss(pred, target, weight, "rmse")) == pytest.approx(np.mean(np.sqrt(mse)), rel=1e-5)
    assert float(pixel_distill_loss(target, target, weight, "rmse")) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="l2"):
        pixel_distill_loss(pred, target, weight, "l1")


def test_sparse_metric_l1_hand_value_on_valid_returns():
    z = torch.zeros(2, 1, 2, 2)
    z[0, 0, 0, 0], z[0, 0, 1, 1], z[1, 0, 0, 1] = 2.0, 4.0, 10.0
    pred = torch.full_like(z, 3.0)
    # image 0: (|3−2| + |3−4|)/2 = 1; image 1: |3−10| = 7; holes (0) are never compared
    assert float(sparse_loss(pred, z, z > 0, mode="metric")) == pytest.approx(4.0)
    assert float(sparse_loss(pred, z, z > 0, mode="metric", min_points=2)) == pytest.approx(1.0)
    assert float(sparse_loss(pred, z, torch.zeros_like(z, dtype=torch.bool), mode="metric")) == 0.0


def test_gradient_matching_of_the_aligned_prediction_is_scale_and_shift_invariant():
    pred, target = _maps(5)
    w = torch.ones_like(pred)
    base = float(gradient_loss(align_lsq(pred, target, w), target, w))
    assert base > 0.01
    for s, t in ((3.0, -1.0), (0.2, 4.0)):
        assert float(gradient_loss(align_lsq(s * pred + t, target, w), target, w)) == pytest.approx(base, rel=1e-3)


def test_ssi_median_hand_value():
    # One image of 3 pixels. pred (0, 1, 5): median 1, MAD (1 + 0 + 4)/3 = 5/3 → (−0.6, 0, 2.4);
    # target (0, 2, 4): median 2, MAD 4/3 → (−1.5, 0, 1.5); mean |diff| = (0.9 + 0 + 0.9)/3 = 0.6
    pred, target = _t([0.0, 1.0, 5.0]), _t([0.0, 2.0, 4.0])
    assert float(ssi_loss(pred, target, torch.ones_like(pred), "median")) == pytest.approx(0.6, rel=1e-5)


# -- composition -------------------------------------------------------------------------------

def _mixed_batch(seed=0):
    """Two samples: 0 is DIW-like (pairs only), 1 NYU-like (teacher, depth); absent fields hold
    placeholders with garbage that a term must never read."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 6, 8
    teacher = torch.rand(b, 1, h, w, generator=g)
    pairs = torch.tensor([[[0, 0, 5, 7, 1], [5, 7, 0, 0, -1]], [[1, 1, 2, 2, 1], [2, 2, 1, 1, 1]]], dtype=torch.float32)
    return {
        "rgb": torch.rand(b, 3, h, w, generator=g),
        "teacher": teacher, "teacher_valid": torch.ones(b, 1, h, w, dtype=torch.bool),
        "teacher_conf": torch.rand(b, 1, h, w, generator=g),
        "depth": 1.0 + 4.0 * torch.rand(b, 1, h, w, generator=g),
        "depth_valid": torch.ones(b, 1, h, w, dtype=torch.bool),
        "pairs": pairs, "pairs_valid": torch.ones(b, 2, dtype=torch.bool),
        "present": {"teacher": torch.tensor([False, True]), "teacher_conf": torch.tensor([False, True]),
                    "depth": torch.tensor([False, True]), "pairs": torch.tensor([True, False])},
    }


def test_each_term_applies_to_the_samples_that_have_its_fields():
    batch = _mixed_batch()
    pred = torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(9)) * 0.9 + 0.05
    cfg = LossConfig((LossTerm("ssi", 1.0), LossTerm("rank", 0.5), LossTerm("silog", 0.25, {"lam": 1.0})))
    total, terms = total_loss(pred, batch, cfg)
    w1 = batch["teacher_conf"][1:]  # teacher valid everywhere, times confidence
    ssi = ssi_loss(pred[1:], batch["teacher"][1:], w1, mode="median")  # the term's default mode
    rank = ranking_loss(pred[:1], batch["pairs"][:1], batch["pairs_valid"][:1])
    silog = silog_loss(1.0 / pred[1:], batch["depth"][1:], batch["depth_valid"][1:], lam=1.0)
    assert float(terms["ssi"]) == pytest.approx(float(ssi), rel=1e-6)
    assert float(terms["rank"]) == pytest.approx(float(rank), rel=1e-6)
    assert float(terms["silog"]) == pytest.approx(float(silog), rel=1e-6)
    assert float(total) == pytest.approx(float(ssi + 0.5 * rank + 0.25 * silog), rel=1e-6)
    # Only sample 1 has a teacher: the loss does not depend on sample 0's placeholder teacher/depth.
    other = dict(batch, teacher=batch["teacher"].clone(), depth=batch["depth"].clone())
    other["teacher"][0], other["depth"][0] = 0.123, 7.0
    assert float(total_loss(pred, other, cfg)[0]) == pytest.approx(float(total), rel=1e-6)
    # Nobody has sparse returns: the term is left out, not zero-padded into the total.
    assert "sparse" not in loss_terms(pred, batch, LossConfig((LossTerm("sparse"),)))


def test_teacher_confidence_weighs_only_where_a_sample_has_it():
    batch = _mixed_batch(1)
    batch["present"] = {"teacher_conf": torch.tensor([True, False])}  # both have a teacher
    pred = torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(3))
    cfg = LossConfig((LossTerm("distill", 1.0),))
    weight = torch.stack([batch["teacher_conf"][0], torch.ones_like(batch["teacher_conf"][1])])
    expected = pixel_distill_loss(pred, batch["teacher"], weight)
    assert float(total_loss(pred, batch, cfg)[0]) == pytest.approx(float(expected), rel=1e-6)
    no_conf = LossConfig((LossTerm("distill", 1.0),), use_conf=False)
    assert float(total_loss(pred, batch, no_conf)[0]) == pytest.approx(
        float(pixel_distill_loss(pred, batch["teacher"], torch.ones_like(pred))), rel=1e-6)


def test_depth_models_are_read_in_each_terms_space():
    batch = _mixed_batch(2)
    batch.pop("present")
    depth = 0.5 + torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(4)) * 4
    cfg = LossConfig((LossTerm("ssi"), LossTerm("l1"), LossTerm("rank")))
    terms = loss_terms(depth, batch, cfg, kind="depth")
    assert float(terms["ssi"]) == pytest.approx(float(ssi_loss(1 / depth, batch["teacher"], batch["teacher_conf"],
                                                               mode="median")))
    assert float(terms["l1"]) == pytest.approx(float(l1_loss(depth, batch["depth"], batch["depth_valid"])))
    assert float(terms["rank"]) == pytest.approx(float(ranking_loss(1 / depth, batch["pairs"], batch["pairs_valid"])))


def test_intermediate_predictions_add_their_weighted_loss():
    batch = _mixed_batch(3)
    g = torch.Generator().manual_seed(5)
    main, a1, a2 = (torch.rand(2, 1, 6, 8, generator=g) for _ in range(3))
    cfg = LossConfig((LossTerm("ssi", 1.0), LossTerm("rank", 0.5)), aux_weight=0.4)
    total, terms = total_loss(Prediction(main, (a1, a2)), batch, cfg)
    expected = sum(w * float(total_loss(p, batch, cfg)[0]) for w, p in ((1.0, main), (0.4, a1), (0.4, a2)))
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert "aux" in terms


def test_loss_config_parsing_and_validation():
    cfg = LossConfig.from_dict({"terms": [{"name": "ssi", "weight": 2, "mode": "median"}, {"name": "rank"}],
                                "use_conf": False})
    assert cfg.terms == (LossTerm("ssi", 2.0, {"mode": "median"}), LossTerm("rank", 1.0, {}))
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    assert LossConfig.from_spec("ssi=1, grad=0.5,rank").terms == (LossTerm("ssi", 1.0), LossTerm("grad", 0.5),
                                                                  LossTerm("rank", 1.0))
    assert cfg.term_fields() == {"ssi": ("teacher",), "rank": ("pairs",)}
    assert LossConfig((LossTerm("l1", 1, {"target": "teacher"}),)).term_fields() == {"l1": ("teacher",)}
    for bad, match in ((LossConfig((LossTerm("nope"),)), "unknown loss term 'nope'"),
                       (LossConfig((LossTerm("ssi", 1, {"modes": "lsq"}),)), "unknown option.*modes"),
                       (LossConfig((LossTerm("rank"), LossTerm("rank"))), "twice"),
                       (LossConfig(()), "no term")):
        with pytest.raises(DepthdataError, match=match):
            bad.validate()
    # terms that do not fit the model's output
    with pytest.raises(DepthdataError, match="distill.*disparity.*outputs depth"):
        LossConfig((LossTerm("distill"),)).validate("depth")
    with pytest.raises(DepthdataError, match="l1.*depth.*outputs disparity"):
        LossConfig((LossTerm("l1"),)).validate("disparity")
    with pytest.raises(DepthdataError, match="weight must be a number"):
        LossConfig.from_spec("ssi=x")
    with pytest.raises(DepthdataError, match="unknown setting"):
        LossConfig.from_dict({"term": []})


def test_batched_median_normalisation_matches_the_definition_image_by_image():
    from depthdata.losses import median_normalise

    # the definition, one image at a time: (x − median) / mean|x − median| over the weighted
    # pixels, the lower median for an even count; fewer than two weighted pixels → 0
    def one(x, m):
        if m.sum() < 2:
            return x * 0.0
        vals = x[m]
        med = vals.sort().values[(len(vals) - 1) // 2]
        return (x - med) / (vals - med).abs().mean().clamp_min(1e-6)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 6, 7, generator=gen, dtype=torch.float64)
    w = (torch.rand(5, 1, 6, 7, generator=gen) > 0.3).double()
    w[3] = 0.0
    w[3, 0, 2, 2] = 1.0  # one weighted pixel: zero
    w[4] = 1.0  # 42 pixels: an even count
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    got = median_normalise(a, w)
    want = torch.stack([one(b[i], w[i] > 0) for i in range(len(x))])
    torch.testing.assert_close(got, want)
    assert torch.equal(got[3], torch.zeros_like(got[3]))
    (got * x).sum().backward()
    (want * x).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)  # the same gradient, the median's pixel included


def test_contest_loss_hand_value_scale_invariance_and_shift_sensitivity():
    from student.losses import contest_loss

    gt = _t([1.0, 2.0, 4.0])
    # median-scaled: pred 2, 2, 8 → medians 2 (pred) and 2 (gt) → scaled 2, 2, 8 → |1|/1, 0, |4|/4
    assert float(contest_loss(_t([2.0, 2.0, 8.0]), gt, torch.ones_like(gt))) == pytest.approx((1 + 0 + 1) / 3)
    p = torch.rand(2, 1, 6, 6) + 0.5
    g = torch.rand(2, 1, 6, 6) + 0.5
    w = torch.ones_like(p)
    np.testing.assert_allclose(contest_loss(7.3 * p, g, w).numpy(), contest_loss(p, g, w).numpy(), rtol=1e-5)
    # exact depth scores 0; the same depth read through a shifted inverse does not
    assert float(contest_loss(3 * g, g, w).max()) < 1e-6
    assert float(contest_loss(1 / (1 / g + 0.5), g, w).min()) > 0.01
    # a term: disparity models are scored on their inverse, over valid ground truth only
    batch = {"rgb": torch.zeros(2, 3, 6, 6), "depth": g, "depth_valid": w > 0}
    term = total_loss(1 / g, batch, LossConfig((LossTerm("contest", 1.0),)))[0]
    assert float(term) < 1e-6
