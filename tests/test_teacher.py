"""Teacher stage: loading by path, prediction geometry, alignment, confidence, lineage, errors.

Everything runs the tiny randomly initialised Depth Anything model (depthdata.teacher.tiny) saved to
a temporary directory and loaded by path through the same code as a real checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math

import cv2
import numpy as np
import pytest
import torch

from depthdata.cli import main
from depthdata.store import Store
from depthdata.teacher import TeacherConfig, pseudo_metric, pseudo_metric_range
from depthdata.teacher.align import aligned_depth, align_disparity_to_depth, fit_scale_shift
from depthdata.teacher.model import TeacherError, load_teacher
from depthdata.teacher.predict import agreement_confidence, normalise01, predict_normalised, predict_raw
from depthdata.teacher.stage import stage as teacher_stage
from depthdata.teacher.tiny import save_tiny_teacher

H, W = 24, 40  # stored resolution: non-square and not a multiple of 14


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("tiny-teacher"), seed=0)


@pytest.fixture(scope="session")
def teacher(tiny_dir):
    return load_teacher(TeacherConfig(model=str(tiny_dir), device="cpu", threads=1))


def _images(n, h=H, w=W, seed=0):
    # smooth colour gradients plus noise: varied enough that the tiny model's output is not flat
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3.0, 3)
        base = np.stack([np.sin(a * xx / w * 3), np.cos(b * yy / h * 3), np.sin(c * (xx + yy) / (h + w) * 3)], -1)
        img = (base + 1) * 100 + rng.normal(0, 10, base.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def _store_with_ingest(tmp_path, images, depth=None, statuses=None, shard_size=4):
    n = len(images)
    store = Store.create(str(tmp_path / "s.zarr"))
    ids = [f"demo/train/{i:03d}" for i in range(n)]
    group = store.create_group("demo", "train", ids, [f"file:///src/{i}.png" for i in range(n)],
                               images.shape[1], images.shape[2], shard_size)
    fields = ["rgb"] + (["depth"] if depth is not None else [])
    group.ensure_fields(fields)
    statuses = statuses or ["ok"] * n
    for shard in range(group.num_shards):
        idx = group.shard_range(shard)
        data = {"rgb": images[idx.start: idx.stop]}
        if depth is not None:
            data["depth"] = depth[idx.start: idx.stop]
        rows = [{"status": statuses[i], "reason": "" if statuses[i] == "ok" else "unreadable PNG"} for i in idx]
        group.write_shard(shard, "ingest", data, rows)
    teacher_stage.prepare_group(group)
    return group


# -- prediction geometry -------------------------------------------------------------------

def test_stage_writes_normalised_disparity_and_confidence(tmp_path, teacher):
    images = _images(5)
    group = _store_with_ingest(tmp_path, images)
    cfg = TeacherConfig(model=teacher.directory, batch_size=2)
    results = [teacher_stage.run_shard(group, k, cfg) for k in range(group.num_shards)]
    assert sum(r.written for r in results) == 5 and not any(r.quarantined for r in results)

    disp = group.array("teacher")[:]
    conf = group.array("teacher_conf")[:]
    assert disp.dtype == np.float16 and disp.shape == (5, H, W)
    assert conf.dtype == np.float16 and conf.shape == (5, H, W)
    for i in range(5):
        # per-image min-max normalisation: exactly 0 and 1 are attained
        assert disp[i].min() == 0.0 and disp[i].max() == 1.0
        assert np.isfinite(conf[i]).all() and conf[i].min() >= 0 and conf[i].max() <= 1
    rows = group.manifest("teacher").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 5
    assert all(r["raw_min"] < r["raw_max"] for r in rows)
    assert all(r["conf_method"].startswith("tta") and 0 <= r["conf_mean"] <= 1 for r in rows)
    # a group without ground truth has no alignment
    assert all(math.isnan(r["align_scale"]) and r["align_pixels"] == 0 for r in rows)


def test_raw_range_in_manifest_restores_model_units(tmp_path, teacher):
    images = _images(3)
    group = _store_with_ingest(tmp_path, images)
    teacher_stage.run_shard(group, 0, TeacherConfig(model=teacher.directory, tta=False))
    raw = predict_raw(teacher, images)
    rows = group.manifest("teacher").to_pylist()
    for i, row in enumerate(rows):
        assert row["raw_min"] == pytest.approx(raw[i].min(), rel=1e-5)
        assert row["raw_max"] == pytest.approx(raw[i].max(), rel=1e-5)
        restored = group.array("teacher")[i].astype(np.float64) * (row["raw_max"] - row["raw_min"]) + row["raw_min"]
        # float16 keeps ~3 significant digits of the [0, 1] value
        np.testing.assert_allclose(restored, raw[i], atol=1e-3 * (row["raw_max"] - row["raw_min"]))


def test_batch_equals_single_image(teacher):
    images = _images(5, seed=1)
    batched = predict_raw(teacher, images, batch_size=3)
    single = np.concatenate([predict_raw(teacher, images[i:i + 1], batch_size=1) for i in range(5)])
    scale = np.abs(single).max()
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5 * scale)


def test_resize_back_matches_an_independent_bicubic_on_a_non_square_image(teacher):
    image = _images(1, h=30, w=70, seed=2)
    out = predict_raw(teacher, image)
    assert out.shape == (1, 30, 70)
    # the bare model at its own resolution, resized with OpenCV's bicubic (same a = -0.75
    # kernel and pixel-centre convention as torch's, independent code)
    inputs = teacher.processor(images=[image[0]], return_tensors="pt")
    with torch.inference_mode():
        bare = teacher.model(**inputs).predicted_depth[0].numpy()
    assert bare.shape != (30, 70)
    assert bare.shape[1] > bare.shape[0]  # landscape stays landscape: no H/W swap
    expected = cv2.resize(bare, (70, 30), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-4 * np.abs(bare).max())


def test_the_batched_resize_back_gives_the_processors_own_post_processing_bits(teacher):
    from transformers.modeling_outputs import DepthEstimatorOutput

    images = _images(3, h=30, w=70, seed=4)
    out = predict_raw(teacher, images, batch_size=3)
    inputs = teacher.processor(images=list(images), return_tensors="pt")
    with torch.inference_mode():
        pred = teacher.model(**inputs).predicted_depth
    ref = teacher.processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=pred),
                                                          target_sizes=[(30, 70)] * 3)
    np.testing.assert_array_equal(out, np.stack([r["predicted_depth"].numpy() for r in ref]))


def test_normalising_on_the_device_gives_the_same_values_as_normalise01(teacher):
    images = _images(5, h=24, w=32, seed=5)  # 5 images in batches of 2: a padded last batch
    want = normalise01(predict_raw(teacher, images, batch_size=2))
    got = predict_normalised(teacher, images, batch_size=2)
    np.testing.assert_array_equal(got.disparity01, want.disparity01)
    np.testing.assert_array_equal(got.raw_min, want.raw_min)
    np.testing.assert_array_equal(got.raw_max, want.raw_max)
    part = got.take([0, 3])
    np.testing.assert_array_equal(part.disparity01, want.disparity01[[0, 3]])
    assert part.raw_min.tolist() == want.raw_min[[0, 3]].tolist()


def test_flip_average_is_the_mean_of_the_image_and_its_mirror_normalised(teacher):
    images = _images(3, h=30, w=70, seed=6)

    def bare(image):  # the bare model on one image, resized back with OpenCV's bicubic
        inputs = teacher.processor(images=[np.ascontiguousarray(image)], return_tensors="pt")
        with torch.inference_mode():
            pred = teacher.model(**inputs).predicted_depth[0].numpy()
        return cv2.resize(pred, (70, 30), interpolation=cv2.INTER_CUBIC).astype(np.float64)

    got = predict_normalised(teacher, images, batch_size=2, flip_average=True)
    for i, image in enumerate(images):
        mean = 0.5 * (bare(image) + bare(image[:, ::-1])[:, ::-1])
        assert got.raw_min[i] == pytest.approx(mean.min(), rel=1e-4)
        want = (mean - mean.min()) / (mean.max() - mean.min())
        np.testing.assert_allclose(got.disparity01[i], want, rtol=0, atol=1e-4)
    # and it is not the plain prediction: the tiny model is not mirror-symmetric
    assert np.abs(got.disparity01 - predict_normalised(teacher, images, batch_size=2).disparity01).max() > 1e-3


def test_flip_average_is_a_setting_that_relabels_and_is_off_by_default(tmp_path, teacher):
    images = _images(2, seed=7)
    group = _store_with_ingest(tmp_path, images)
    plain = TeacherConfig(model=teacher.directory, tta=False)
    teacher_stage.run_shard(group, 0, plain)
    assert "flip_average" not in plain.output_settings()  # existing stores keep their hashes
    averaged = plain.model_copy(update={"flip_average": True})
    assert not teacher_stage.run_shard(group, 0, averaged).skipped
    want = predict_normalised(teacher, images, flip_average=True).disparity01.astype(np.float16)
    np.testing.assert_array_equal(group.array("teacher")[:], want)
    assert teacher_stage.run_shard(group, 0, averaged).skipped


def test_flip_average_with_tta_runs_the_mirrored_pass_once(tmp_path, teacher, monkeypatch):
    """With both on, the TTA confidence's flip view is the flip average's own mirrored pass:
    three forward passes a batch (image, mirror, second scale), not four, and the confidence
    that of :func:`predict_confidence` computing its own flip view."""
    from depthdata.teacher.predict import pixel_values, predict_confidence, tta_size

    images = _images(3, seed=8)
    group = _store_with_ingest(tmp_path, images)
    cfg = TeacherConfig(model=teacher.directory, batch_size=4, flip_average=True)
    cls, calls = type(teacher.model), []  # the stage loads its own instance
    real = cls.forward

    def counted(self, *args, **kwargs):
        calls.append(tuple(kwargs["pixel_values"].shape))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counted)
    teacher_stage.run_shard(group, 0, cfg)
    monkeypatch.setattr(cls, "forward", real)
    # the image and its mirror at the processor's size, then the second scale: one batch of 4
    assert len(calls) == 3 and calls[0] == calls[1] != calls[2], calls
    assert calls[2][-2:] == pixel_values(teacher, images, size=tta_size(teacher, cfg.tta_scale)).shape[-2:]

    label = predict_normalised(teacher, images, 4, flip_average=True).disparity01.astype(np.float16)
    np.testing.assert_array_equal(group.array("teacher")[:], label)
    want = predict_confidence(teacher, images, label.astype(np.float32), 4, cfg.tta_scale, cfg.conf_tolerance)
    np.testing.assert_array_equal(group.array("teacher_conf")[:], want.astype(np.float16))


def test_the_processor_on_the_teachers_device_gives_its_host_values(teacher):
    """On a GPU the stage hands the processor the batch as one uint8 tensor to resize and
    normalise on the device; the values are those of the processor's usual call (checked here
    on the CPU, where only the device differs), also with another input size (the TTA scale)."""
    from depthdata.teacher.predict import pixel_values, processes_on_device

    assert processes_on_device(teacher.processor)  # transformers' torchvision-backed processor
    images = _images(3, h=30, w=70, seed=6)
    for size in (None, 28):
        kwargs = {"size": {"height": size, "width": size}} if size else {}
        want = teacher.processor(images=list(images), return_tensors="pt", **kwargs)["pixel_values"]
        got = pixel_values(teacher, images, size=size, on_device=True)
        assert got.dtype == teacher.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want.to(teacher.dtype), rtol=0, atol=0)


def test_normalise01_maps_range_and_refuses_constant_images():
    raw = np.stack([np.linspace(2.0, 6.0, 12, dtype=np.float32).reshape(3, 4), np.full((3, 4), 5.0, np.float32)])
    n = normalise01(raw)
    np.testing.assert_allclose(n.disparity01[0], (raw[0] - 2.0) / 4.0, atol=1e-7)
    assert n.raw_min[0] == 2.0 and n.raw_max[0] == 6.0
    assert np.isnan(n.disparity01[1]).all()


# -- confidence ----------------------------------------------------------------------------

def test_confidence_is_one_for_views_that_agree_up_to_scale_and_shift():
    base = np.tile(np.linspace(0, 1, 11), (5, 1))
    conf = agreement_confidence(base, [3 * base + 2, 0.5 * base - 1], tolerance=0.05)
    np.testing.assert_allclose(conf, 1.0, atol=1e-9)


def test_confidence_drops_as_exp_of_disagreement():
    ramp = np.tile(np.linspace(0, 1, 11), (5, 1))
    base = ramp.copy()
    delta = 0.02
    # the view is the clean ramp; the base differs from it by e, orthogonal to [ramp, 1]
    # (the sums of e and e·ramp are zero), so the least-squares alignment of the view to the
    # base is scale 1, shift 0 and the disagreement is exactly |e|
    base[0, 1] += delta   # ramp 0.1
    base[0, 9] += delta   # ramp 0.9
    base[1, 4] -= delta   # ramp 0.4
    base[1, 6] -= delta   # ramp 0.6
    conf = agreement_confidence(base, [ramp], tolerance=0.05)
    expected = np.ones_like(base)
    for yx in [(0, 1), (0, 9), (1, 4), (1, 6)]:
        expected[yx] = math.exp(-delta / 0.05)
    np.testing.assert_allclose(conf, expected, atol=1e-6)
    # a view that is reversed (near ↔ far) disagrees everywhere
    reversed_conf = agreement_confidence(ramp, [1 - ramp], tolerance=0.05)
    np.testing.assert_allclose(reversed_conf, math.exp(-1 / 0.05), rtol=1e-6)


def test_tta_off_fills_nan_and_says_so(tmp_path, teacher):
    group = _store_with_ingest(tmp_path, _images(2))
    teacher_stage.run_shard(group, 0, TeacherConfig(model=teacher.directory, tta=False))
    assert np.isnan(group.array("teacher_conf")[:]).all()
    assert np.isfinite(group.array("teacher")[:]).all()
    rows = group.manifest("teacher").to_pylist()
    assert all(r["conf_method"] == "none (tta: false)" and math.isnan(r["conf_mean"]) for r in rows)


# -- alignment -----------------------------------------------------------------------------

def _synthetic_scene(h=60, w=80, scale=2.5, shift=0.05):
    yy, xx = np.mgrid[0:h, 0:w]
    disp = (0.2 + 0.6 * xx / (w - 1) + 0.2 * np.sin(yy / 7.0)).astype(np.float64)
    depth = 1.0 / (scale * disp + shift)
    return disp, depth


def test_alignment_recovers_known_scale_and_shift_exactly():
    disp, depth = _synthetic_scene()
    a = align_disparity_to_depth(disp, depth.astype(np.float32))
    assert a.fit.scale == pytest.approx(2.5, rel=1e-5)
    assert a.fit.shift == pytest.approx(0.05, rel=1e-4, abs=1e-6)
    assert a.absrel < 1e-5 and a.delta1 == 1.0
    np.testing.assert_allclose(a.depth_m, depth, rtol=1e-5)
    assert a.cap_m == pytest.approx(depth.max(), rel=1e-6)


def test_alignment_is_robust_to_outliers_and_holes():
    disp, depth = _synthetic_scene()
    rng = np.random.default_rng(3)
    corrupt = depth.copy()
    bad = rng.random(depth.shape) < 0.25
    corrupt[bad] = rng.uniform(0.3, 20.0, bad.sum())      # 25% sensor outliers
    corrupt[rng.random(depth.shape) < 0.1] = np.nan       # holes
    corrupt[:3] = 0.0                                      # a row band of zeros = invalid
    target = np.where(np.isfinite(corrupt) & (corrupt > 0), 1.0 / np.where(corrupt > 0, corrupt, 1), np.nan)
    plain = fit_scale_shift(disp, target, robust=False)
    assert abs(plain.scale - 2.5) > 0.05  # the outliers do pull a plain fit away
    a = align_disparity_to_depth(disp, corrupt.astype(np.float32))
    assert a.fit.scale == pytest.approx(2.5, rel=1e-6)
    assert a.fit.shift == pytest.approx(0.05, rel=1e-5)
    assert a.fit.inliers < a.fit.n


def test_fit_refuses_too_few_pixels_and_constant_prediction():
    with pytest.raises(ValueError, match="usable pixels"):
        fit_scale_shift(np.arange(10.0), np.arange(10.0), np.arange(10) < 3)
    with pytest.raises(ValueError, match="constant"):
        fit_scale_shift(np.ones(100), np.arange(100.0))


def test_aligned_depth_caps_non_positive_disparity_at_far_cap():
    d = aligned_depth(np.array([1.0, 0.5, 0.0]), scale=2.0, shift=-0.5, cap_m=8.0)
    np.testing.assert_allclose(d, [1 / 1.5, 1 / 0.5, 8.0])


def test_stage_aligns_to_ground_truth_and_skips_bad_ingest_rows(tmp_path, teacher):
    images = _images(4, seed=5)
    # ground truth built from the teacher's own stored disparity with a known scale and shift
    stored = normalise01(predict_raw(teacher, images)).disparity01.astype(np.float16).astype(np.float64)
    depth = (1.0 / (3.0 * stored + 0.2)).astype(np.float32)
    depth[:, :2, :] = np.nan  # holes
    group = _store_with_ingest(tmp_path, images, depth=depth, statuses=["ok", "ok", "failed", "ok"])
    res = teacher_stage.run_shard(group, 0, TeacherConfig(model=teacher.directory))
    assert res.written == 3 and res.quarantined == []
    rows = group.manifest("teacher").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped", "ok"]
    assert "unreadable PNG" in rows[2]["reason"]
    assert np.isnan(group.array("teacher")[2]).all() and np.isnan(group.array("teacher_conf")[2]).all()
    for i in (0, 1, 3):
        r = rows[i]
        assert r["align_scale"] == pytest.approx(3.0, rel=1e-4)
        assert r["align_shift"] == pytest.approx(0.2, rel=1e-4)
        assert r["align_absrel"] < 1e-4 and r["align_delta1"] == 1.0
        assert r["align_pixels"] == (H - 2) * W
    assert math.isnan(rows[2]["align_scale"])


def test_a_samples_labels_do_not_depend_on_a_quarantined_neighbour(tmp_path, teacher):
    """Batch composition must not leak into results: the same images give byte-identical
    labels whether or not another sample of the shard was quarantined at ingest. (Kernels
    block by batch size: at 96×128 the tiny model's float16 labels of one image differ between
    a batch of 1 and a batch of 4, which is what skipping the bad sample used to cause.)"""
    images = _images(5, 96, 128, seed=3)
    cfg = TeacherConfig(model=teacher.directory, batch_size=4)
    clean = _store_with_ingest(tmp_path / "a", images, shard_size=5)
    teacher_stage.run_shard(clean, 0, cfg)
    holed = images.copy()
    holed[1] = 0  # what ingest leaves in a quarantined slot
    bad = _store_with_ingest(tmp_path / "b", holed, statuses=["ok", "failed", "ok", "ok", "ok"], shard_size=5)
    teacher_stage.run_shard(bad, 0, cfg)
    for name in ("teacher", "teacher_conf"):
        a, b = clean.array(name)[:], bad.array(name)[:]
        for i in (0, 2, 3, 4):
            assert a[i].tobytes() == b[i].tobytes(), (name, i)


def test_stage_skips_complete_shards_and_redoes_on_new_settings(tmp_path, teacher):
    group = _store_with_ingest(tmp_path, _images(2))
    cfg = TeacherConfig(model=teacher.directory, tta=False)
    assert not teacher_stage.run_shard(group, 0, cfg).skipped
    assert teacher_stage.run_shard(group, 0, cfg).skipped
    # batch size changes nothing that is written; TTA does
    assert teacher_stage.run_shard(group, 0, cfg.model_copy(update={"batch_size": 1})).skipped
    assert not teacher_stage.run_shard(group, 0, cfg.model_copy(update={"tta": True})).skipped


# -- lineage and loading -------------------------------------------------------------------

def test_lineage_recorded_per_sample(tmp_path, tiny_dir, teacher):
    group = _store_with_ingest(tmp_path, _images(2))
    teacher_stage.run_shard(group, 0, TeacherConfig(model=str(tiny_dir), tta=False))
    sha = hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    for r in group.manifest("teacher").to_pylist():
        assert r["teacher_id"] == str(tiny_dir)
        assert r["teacher_revision"] == "local"
        assert r["weights_sha256"] == sha
        assert r["teacher_random_init"] is False


def test_tiny_teacher_is_reproducible_from_its_seed(tmp_path):
    a = save_tiny_teacher(tmp_path / "a", seed=7)
    b = save_tiny_teacher(tmp_path / "b", seed=7)
    c = save_tiny_teacher(tmp_path / "c", seed=8)
    read = lambda d: (d / "model.safetensors").read_bytes()  # noqa: E731
    assert read(a) == read(b) != read(c)


def test_missing_directory_gives_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TeacherError, match="no such teacher checkpoint directory") as exc:
        load_teacher(TeacherConfig(model=str(missing)))
    assert str(missing) in str(exc.value)


def test_uncached_hub_id_explains_how_to_provide_weights():
    with pytest.raises(TeacherError) as exc:
        load_teacher(TeacherConfig(model="depthdata-tests/no-such-model"))
    msg = str(exc.value)
    assert "depthdata-tests/no-such-model" in msg and "save_pretrained" in msg and "HF_HOME" in msg


def test_corrupt_checkpoint_gives_clear_error(tmp_path, tiny_dir):
    bad = save_tiny_teacher(tmp_path / "bad", seed=0)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TeacherError, match="cannot load the teacher checkpoint") as exc:
        load_teacher(TeacherConfig(model=str(bad)))
    assert str(bad) in str(exc.value)


def test_pickled_weights_are_refused(tmp_path):
    d = save_tiny_teacher(tmp_path / "bin", seed=0)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(TeacherError, match="only safetensors"):
        load_teacher(TeacherConfig(model=str(d)))


def test_random_init_fallback_warns_loudly(caplog):
    cfg = TeacherConfig(model="depthdata-tests/no-such-model", allow_random_init=True, device="cpu", threads=1)
    with caplog.at_level(logging.WARNING, logger="depthdata.teacher.model"):
        t = load_teacher(cfg)
    assert t.random_init and t.revision == "random" and t.model_id == "random-init:tiny(seed=0)"
    assert any("RANDOMLY INITIALISED" in r.getMessage() for r in caplog.records)


# -- pseudo-metric depth -------------------------------------------------------------------

def test_pseudo_metric_maps_disparity_ends_to_drawn_near_and_far():
    disp = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    r = pseudo_metric_range(11, near_range_m=(1.0, 2.0), far_range_m=(20.0, 40.0))
    assert 1.0 <= r.near_m <= 2.0 and 20.0 <= r.far_m <= 40.0
    depth = pseudo_metric(disp, 11, near_range_m=(1.0, 2.0), far_range_m=(20.0, 40.0))
    assert depth.dtype == np.float32
    assert depth[0, 0] == pytest.approx(r.far_m, rel=1e-6)
    assert depth[0, 3] == pytest.approx(r.near_m, rel=1e-6)
    # inverse depth is affine in disparity
    inv = 1.0 / depth[0].astype(np.float64)
    assert inv[2] - inv[1] == pytest.approx(inv[1] - inv[0], rel=1e-5)
    # seeded: same seed same metres, a generator draws the same as its seed
    np.testing.assert_array_equal(depth, pseudo_metric(disp, np.random.default_rng(11), (1.0, 2.0), (20.0, 40.0)))
    assert not np.array_equal(depth, pseudo_metric(disp, 12, (1.0, 2.0), (20.0, 40.0)))


def test_pseudo_metric_fixed_range_and_nan():
    depth = pseudo_metric(np.array([0.0, 1.0, np.nan]), 0, near_range_m=(2.0, 2.0), far_range_m=(50.0, 50.0))
    np.testing.assert_allclose(depth[:2], [50.0, 2.0], rtol=1e-6)
    assert np.isnan(depth[2])
    with pytest.raises(ValueError):
        pseudo_metric(np.zeros(3), 0, near_range_m=(5.0, 60.0), far_range_m=(50.0, 80.0))


# -- CLI -----------------------------------------------------------------------------------

def test_cli_make_tiny_info_and_run(tmp_path, capsys):
    d = tmp_path / "tiny"
    assert main(["teacher", "make-tiny", str(d), "--seed", "3"]) == 0
    sha = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert main(["teacher", "info", str(d)]) == 0
    out = capsys.readouterr().out
    assert sha in out and "56 px" in out
    group = _store_with_ingest(tmp_path, _images(3))
    assert main(["teacher", "run", group.store.url, "--model", str(d), "--no-tta"]) == 0
    assert "3 sample(s) labelled" in capsys.readouterr().out
    assert np.isfinite(group.array("teacher")[:]).all()
    # --flip-average is a setting that changes the labels: the complete shard is redone
    assert main(["teacher", "run", group.store.url, "--model", str(d), "--no-tta", "--flip-average"]) == 0
    assert "3 sample(s) labelled" in capsys.readouterr().out
    tiny = load_teacher(TeacherConfig(model=str(d), device="cpu", threads=1))
    want = predict_normalised(tiny, _images(3), flip_average=True).disparity01.astype(np.float16)
    np.testing.assert_array_equal(group.array("teacher")[:], want)
    assert main(["teacher", "info", str(tmp_path / "missing")]) == 2
    assert "no such teacher checkpoint directory" in capsys.readouterr().err


def test_loading_and_saving_a_teacher_prints_no_transformers_progress_bars(tmp_path, capfd):
    from transformers.utils import logging as tlog

    directory = save_tiny_teacher(tmp_path / "t", seed=1)
    load_teacher(TeacherConfig(model=str(directory), device="cpu", threads=1))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert tlog.is_progress_bar_enabled()  # the caller's setting is restored
