"""Training with other architectures and loss terms: mixed-field batches (each term on the samples
that have its fields), short runs that lower the loss, exact resume with training-only heads, and
the completion model on sparse LiDAR."""

import numpy as np
import pytest
import torch
from student_fixtures import build_store

from depthdata.errors import DepthdataError
from student.arch import StudentConfig
from student.data import RandomZoom, augmentations, training_fields, training_loader
from student.losses import LossConfig, LossTerm
from student.train import TrainConfig, train

H, W = 32, 48
MIXED_LOSS = LossConfig((LossTerm("ssi", 1.0), LossTerm("grad", 0.5), LossTerm("rank", 0.5),
                         LossTerm("silog", 0.25)))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """An NYU-like group (rgb, depth, teacher) and a DIW-like one (rgb, pairs)."""
    url = str(tmp_path_factory.mktemp("mixed") / "s.zarr")
    build_store(url, n=6, shard_size=3, h=H, w=W, sparse=False, pairs=False, group=("nyu", "train"))
    build_store(url, n=6, shard_size=3, h=H, w=W, sparse=False, pairs=True, teacher=False, depth=False,
                group=("diw", "train"), add=True)
    return url


def _cfg(store, out, steps, **kw):
    return TrainConfig(store_url=store, out_dir=str(out), steps=steps, batch_size=kw.pop("batch_size", 4), streams=1,
                       lr=kw.pop("lr", 3e-3), checkpoint_every=100, seed=1, log_every=1000, **kw)


def test_mixed_groups_feed_each_term_with_the_samples_that_have_its_fields(mixed):
    groups = ["diw/train", "nyu/train"]
    plan = training_fields(mixed, groups, term_fields=MIXED_LOSS.term_fields())
    assert plan.required == ("rgb",) and plan.optional == ("teacher", "teacher_conf", "pairs", "depth")
    assert plan.terms == ("ssi", "grad", "rank", "silog")
    ds, loader = training_loader(mixed, groups, 4, 0, None, True, 1, fields=plan)
    seen = set()
    for batch in loader:
        present = batch["present"]
        for b, group in enumerate(batch["group"]):
            nyu = group == "nyu/train"
            assert bool(present["teacher"][b]) == nyu and bool(present["depth"][b]) == nyu
            assert bool(present["pairs"][b]) == (not nyu)
            if not nyu:  # placeholders no term can use
                assert not batch["teacher_valid"][b].any() and not batch["depth_valid"][b].any()
            else:
                assert not batch["pairs_valid"][b].any()
            seen.add(group)
    assert seen == set(groups)


def test_a_short_mixed_run_lowers_the_loss(mixed, tmp_path):
    result = train(_cfg(mixed, tmp_path, 14, model=StudentConfig(arch="lpcvc-mnv3s"), loss=MIXED_LOSS),
                   progress=False)
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last < 0.8 * first, (first, last)


def test_resume_with_intermediate_heads_equals_an_uninterrupted_run(mixed, tmp_path):
    kw = dict(model=StudentConfig(arch="mnv2-fbnet"), loss=MIXED_LOSS, batch_size=2)
    full = train(_cfg(mixed, tmp_path / "a", 4, **kw), progress=False)
    part = train(_cfg(mixed, tmp_path / "b", 2, **kw), progress=False)
    resumed = train(_cfg(mixed, tmp_path / "b", 4, **kw), progress=False)
    assert resumed.losses == full.losses and resumed.losses[:2] == part.losses
    assert full.model.aux is not None  # trained with its heads
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_completion_trains_on_sparse_lidar(tmp_path):
    url = build_store(str(tmp_path / "s.zarr"), n=4, shard_size=2, h=H, w=W, pairs=False)
    loss = LossConfig((LossTerm("ssi", 1.0), LossTerm("sparse", 1.0), LossTerm("l1", 0.1)))
    result = train(_cfg(url, tmp_path / "o", 10, model=StudentConfig(arch="completion"), loss=loss), progress=False)
    assert result.model.output == "depth"
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert np.isfinite(result.losses).all() and last < first, (first, last)


def test_groups_that_cannot_feed_the_model_or_the_loss_are_errors(mixed, tmp_path):
    with pytest.raises(DepthdataError, match="group diw/train has no 'sparse', an input"):
        train(_cfg(mixed, tmp_path / "c", 1, model=StudentConfig(arch="completion")), progress=False)
    with pytest.raises(DepthdataError, match="group diw/train has none of them"):
        train(_cfg(mixed, tmp_path / "d", 1, loss=LossConfig((LossTerm("ssi"),))), progress=False)
    with pytest.raises(DepthdataError, match="distill.*outputs depth"):
        train(_cfg(mixed, tmp_path / "e", 1, model=StudentConfig(arch="completion"),
                   loss=LossConfig((LossTerm("distill"),))), progress=False)


def test_command_line_options_select_architecture_and_loss():
    import argparse

    from student.cli import _train_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["student", "train", "--store", "s.zarr", "--out", "o", "--arch", "mnv2-fbnet",
                              "--loss", "ssi=1,rank=0.25", "--zoom-min", "0.7", "--color-jitter", "0.2",
                              "--blur", "0.5"])
    cfg = _train_config(args, "o")
    assert cfg.model == StudentConfig(arch="mnv2-fbnet")
    assert (cfg.zoom_min, cfg.color_jitter, cfg.blur) == (0.7, 0.2, 0.5)
    assert cfg.loss == LossConfig((LossTerm("ssi", 1.0), LossTerm("rank", 0.25)))


@pytest.mark.slow
def test_cli_run_of_the_completion_model_exports_and_evaluates_metres(tmp_path):
    import json

    import onnx

    from depthdata.cli import main

    url = build_store(str(tmp_path / "s.zarr"), n=6, shard_size=3, h=H, w=W, pairs=False)
    assert main(["student", "run", "--store", url, "--out", str(tmp_path / "o"), "--arch", "completion",
                 "--steps", "3", "--finetune-steps", "1", "--batch-size", "2", "--loss", "ssi=1,sparse=1,l1=0.1"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["arch"] == "completion"
    assert [i.name for i in onnx.load(report["paths"]["onnx_fp32"]).graph.input] == ["input", "sparse"]
    assert report["int8_vs_fp32"]["abs_rel"] < 0.05
    assert report["eval"]["int8"]["synth/train"]["contest"]["images"] == 6


def test_collate_pads_pairs_of_groups_that_store_different_numbers():
    from student.data import MixedCollate

    def sample(n_pairs):
        s = {"rgb": torch.zeros(3, 4, 4), "teacher": torch.ones(1, 4, 4), "teacher_valid": torch.ones(1, 4, 4) > 0}
        if n_pairs:
            s["pairs"] = torch.arange(n_pairs * 5, dtype=torch.float32).view(n_pairs, 5)
            s["pairs_valid"] = torch.ones(n_pairs, dtype=torch.bool)
        return s

    batch = MixedCollate(("pairs",))([sample(3), sample(0), sample(1)])
    assert batch["pairs"].shape == (3, 3, 5) and batch["present"]["pairs"].tolist() == [True, False, True]
    assert batch["pairs_valid"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert torch.equal(batch["pairs"][2, 0], torch.arange(5, dtype=torch.float32))
    assert torch.isnan(batch["pairs"][1]).all() and torch.isnan(batch["pairs"][2, 1:]).all()
    # required everywhere (no presence flag), still padded to one count
    assert MixedCollate(())([sample(2), sample(1)])["pairs"].shape == (2, 2, 5)


def test_random_zoom_magnifies_labels_and_image_together():
    """A ramp ``teacher = x`` (0-based column) zoomed by a window of ``cw`` columns becomes a ramp of
    slope ``cw / W`` over the full width: still affine in x (what a scale-and-shift-invariant loss
    needs), the image on the same pixels, masks still boolean."""
    h, w = 40, 60
    x = torch.arange(w, dtype=torch.float32).expand(h, w)
    sample = {"rgb": torch.stack([x / w, x / w, torch.zeros(h, w)]), "teacher": x[None].clone(),
              "teacher_valid": torch.ones(1, h, w, dtype=torch.bool), "sample_id": "ramp"}
    slopes = []
    for seed in range(6):
        z = RandomZoom(0.5)(sample, np.random.default_rng(seed))
        assert z["teacher"].shape == (1, h, w) and z["teacher_valid"].dtype == torch.bool and z["teacher_valid"].all()
        # bilinear resampling of a linear ramp is linear away from the outermost pixels (clamped)
        row = z["teacher"][0, h // 2].double().numpy()[2:-2]
        fit = np.polyfit(np.arange(2, w - 2), row, 1)
        assert np.abs(np.polyval(fit, np.arange(2, w - 2)) - row).max() < 1e-3
        slopes.append(fit[0])
        assert torch.allclose(z["rgb"][0] * w, z["teacher"][0], atol=1e-3)  # image and labels move together
    assert all(0.5 - 0.02 <= s <= 1.0 + 1e-6 for s in slopes) and max(slopes) - min(slopes) > 0.05


def test_augmentation_settings_are_checked():
    assert augmentations() == []
    assert [type(a).__name__ for a in augmentations(0.6, 0.3, 0.5)] == ["RandomZoom", "ColorJitter", "GaussianBlur"]
    for kw, match in ((dict(zoom_min=0.0), "zoom_min"), (dict(color_jitter=1.0), "color_jitter"),
                      (dict(blur=1.5), "blur")):
        with pytest.raises(DepthdataError, match=match):
            augmentations(**kw)
