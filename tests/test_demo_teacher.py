"""The demo teacher shipped with the package: loading (by path, by id, as the fallback), its
lineage and hash check, its recorded held-out metrics, and the recipe that trains it."""

import hashlib
import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import DepthAnythingForDepthEstimation

from depthdata.cli import main
from depthdata.teacher import TeacherConfig
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID, DEMO_WEIGHTS_DIR, LINEAGE_FILE, checkpoint_lineage
from depthdata.teacher.model import TeacherError, load_teacher
from depthdata.teacher.tiny import demo_config, save_tiny_teacher
from depthdata.teacher.train_demo import (Recipe, cache_file, disparity_target, fit, held_out_metrics, mean_loss, new_model,
                                          pixel_values, render_split, scene_metrics, train_demo)
from depthdata.teacher.tiny import DEMO_SIZE, image_processor

#: a re-run of the recorded held-out metrics may differ by this much (absolute): another CPU or
#: thread count changes the last float bits of the prediction, and after the float16 storage
#: that moves a handful of pixels across the δ1 threshold
METRIC_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def lineage():
    return json.loads((DEMO_WEIGHTS_DIR / LINEAGE_FILE).read_text())


@pytest.fixture(scope="module")
def demo_teacher():
    return load_teacher(TeacherConfig(model=DEMO_TEACHER_ID, device="cpu", threads=1))


def test_shipped_weights_are_small_safetensors_of_the_real_class_with_their_lineage(lineage, demo_teacher):
    weights = DEMO_WEIGHTS_DIR / "model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert sorted(p.name for p in DEMO_WEIGHTS_DIR.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")) == []
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert lineage["weights_sha256"] == sha == demo_teacher.weights_sha256
    assert isinstance(demo_teacher.model, DepthAnythingForDepthEstimation)
    assert demo_teacher.model.config.depth_estimation_type == "relative"
    assert demo_teacher.num_parameters == lineage["parameters"]
    assert (demo_teacher.model_id, demo_teacher.revision, demo_teacher.random_init) == (DEMO_TEACHER_ID, "packaged",
                                                                                          False)
    recipe = lineage["recipe"]
    for key in ("seed", "steps", "batch_size", "lr", "train_rooms", "train_streets", "name", "command"):
        assert key in recipe
    assert lineage["scenes"]["train"] == {"room": recipe["train_rooms"], "street": recipe["train_streets"]}
    assert lineage["versions"]["depthdata"]
    assert "NOT Depth Anything V2" in lineage["what"]


def test_shipped_weights_load_by_path_as_by_id(demo_teacher):
    by_path = load_teacher(TeacherConfig(model=str(DEMO_WEIGHTS_DIR), device="cpu", threads=1))
    assert by_path.weights_sha256 == demo_teacher.weights_sha256 and by_path.revision == "local"
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, DEMO_SIZE, DEMO_SIZE + 42)).astype(np.float32))
    with torch.no_grad():
        a = by_path.model(pixel_values=x).predicted_depth
        b = demo_teacher.model(pixel_values=x).predicted_depth
    assert torch.equal(a, b)


def test_shipped_weights_reproduce_their_recorded_held_out_metrics(lineage, demo_teacher):
    recipe = Recipe(**{k: tuple(v) if k == "size" else v for k, v in lineage["recipe"].items()
                       if k in Recipe.__dataclass_fields__})
    recorded = {r["index"]: r for r in lineage["heldout"]["per_scene"]}
    rooms = recipe.heldout_rooms
    picks = [0, 1, rooms, rooms + 1]  # two rooms and two streets, rendered again from their seeds
    scenes = render_split(recipe, "heldout", picks)
    assert scenes.kinds == ["room", "room", "street", "street"]
    for row in held_out_metrics(demo_teacher, scenes, picks):
        want = recorded[row["index"]]
        assert row["kind"] == want["kind"]
        for m in ("abs_rel", "delta1"):
            assert row[m] == pytest.approx(want[m], abs=METRIC_TOLERANCE), (row, want)
    # the record's summary is the mean of its per-scene rows
    rows = lineage["heldout"]["per_scene"]
    assert lineage["heldout"]["summary"]["all"]["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in rows]))


def test_weights_that_differ_from_their_lineage_are_refused(tmp_path):
    copy = shutil.copytree(DEMO_WEIGHTS_DIR, tmp_path / "demo", ignore=shutil.ignore_patterns("__pycache__"))
    load_teacher(TeacherConfig(model=str(copy), device="cpu", threads=1))  # an intact copy loads
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one parameter: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(TeacherError, match="does not match") as exc:
        load_teacher(TeacherConfig(model=str(copy), device="cpu", threads=1))
    assert str(copy) in str(exc.value) and LINEAGE_FILE in str(exc.value)
    with pytest.raises(TeacherError, match="does not match"):
        checkpoint_lineage(TeacherConfig(model=str(copy)))  # planning refuses them too


def test_demo_teacher_is_the_fallback_only_when_weights_are_absent(tmp_path, caplog, demo_teacher):
    absent = TeacherConfig(model="depthdata-tests/no-such-model", allow_demo_teacher=True, device="cpu", threads=1)
    with caplog.at_level(logging.WARNING, logger="depthdata.teacher.model"):
        t = load_teacher(absent)
    assert (t.model_id, t.weights_sha256) == (DEMO_TEACHER_ID, demo_teacher.weights_sha256)
    assert any("DEMO TEACHER" in r.getMessage() and "NOT Depth Anything V2" in r.getMessage() for r in caplog.records)
    assert checkpoint_lineage(absent) == t.lineage()
    # weights that are there win over the fallback, and the random fallback comes after it
    tiny = save_tiny_teacher(tmp_path / "tiny")
    present = absent.model_copy(update={"model": str(tiny)})
    assert load_teacher(present).model_id == str(tiny)
    assert checkpoint_lineage(present)["teacher_id"] == str(tiny)
    both = absent.model_copy(update={"allow_random_init": True})
    assert load_teacher(both).model_id == DEMO_TEACHER_ID


def test_scene_metrics_score_exact_disparity_perfectly_and_reversed_as_a_constant():
    y = np.linspace(0.0, 1.0, 40)[:, None] * np.ones((1, 30))
    depth = 1.0 / (0.1 + 2.0 * y)  # 0.48 … 10 m, inverse depth affine in y
    exact = scene_metrics(3.0 * y + 7.0, depth)  # any positive scale and shift of the disparity
    assert exact["abs_rel"] < 1e-9 and exact["delta1"] == 1.0
    reversed_ = scene_metrics(-y, depth)  # a free fit would undo the reversal with a negative scale
    constant = 1.0 / np.mean(1.0 / depth)  # the best constant in disparity, as depth
    assert reversed_["scale"] == 0.0
    assert reversed_["abs_rel"] == pytest.approx(np.mean(np.abs(constant - depth) / depth), rel=1e-9)


# -- the recipe ---------------------------------------------------------------------------------

TINY_RECIPE = Recipe(steps=12, batch_size=4, lr=1e-3, warmup_steps=2, train_rooms=2, train_streets=2,
                     heldout_rooms=1, heldout_streets=1, size=(48, 64), threads=1)


@pytest.fixture(scope="module")
def tiny_data():
    scenes = render_split(TINY_RECIPE, "train")
    return pixel_values(image_processor(DEMO_SIZE), scenes.rgb), disparity_target(scenes.depth)


def test_recipe_lowers_its_loss_and_is_deterministic(tiny_data):
    pixels, target = tiny_data
    torch.set_num_threads(1)
    model = new_model(TINY_RECIPE.seed)
    before = mean_loss(model, pixels, target, TINY_RECIPE.grad_weight)
    losses = fit(model, pixels, target, TINY_RECIPE)
    after = mean_loss(model, pixels, target, TINY_RECIPE.grad_weight)
    assert len(losses) == TINY_RECIPE.steps
    assert after < 0.8 * before, (before, after)
    again = new_model(TINY_RECIPE.seed)
    fit(again, pixels, target, TINY_RECIPE)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other = new_model(TINY_RECIPE.seed)
    fit(other, pixels, target, replace(TINY_RECIPE, seed=1))
    assert not torch.equal(other.head.conv3.weight, model.head.conv3.weight)


def test_bf16_recipe_lowers_its_loss_deterministically_with_float32_weights(tiny_data):
    pixels, target = tiny_data
    torch.set_num_threads(1)
    recipe = replace(TINY_RECIPE, bf16=True)
    model = new_model(recipe.seed)
    before = mean_loss(model, pixels, target, recipe.grad_weight)
    fit(model, pixels, target, recipe)
    assert mean_loss(model, pixels, target, recipe.grad_weight) < 0.8 * before
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model
    again = new_model(recipe.seed)
    fit(again, pixels, target, recipe)
    assert torch.equal(again.head.conv3.weight, model.head.conv3.weight)
    plain = new_model(recipe.seed)
    fit(plain, pixels, target, TINY_RECIPE)
    assert not torch.equal(plain.head.conv3.weight, model.head.conv3.weight)  # it did run in bf16


def test_disparity_target_is_inverse_depth_over_its_maximum_with_sky_farthest():
    depth = np.array([[[2.0, 4.0], [np.nan, 8.0]]], np.float32)
    np.testing.assert_allclose(disparity_target(depth)[0, 0].numpy(), [[1.0, 0.5], [0.0, 0.25]])


def test_cli_train_demo_writes_a_loadable_checkpoint_with_lineage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["teacher", "train-demo", "--out", str(out), "--steps", "2", "--train-scenes", "1", "1",
                 "--heldout-scenes", "1", "1", "--threads", "1", "--bf16"]) == 0
    text = capsys.readouterr().out
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["weights_sha256"] in text and lineage["recipe"]["steps"] == 2
    assert lineage["scenes"]["heldout"] == {"room": 1, "street": 1}
    assert "--train-scenes 1 1" in lineage["recipe"]["command"]
    assert lineage["recipe"]["bf16"] is True and lineage["recipe"]["command"].endswith(" --bf16")
    t = load_teacher(TeacherConfig(model=str(out), device="cpu", threads=1))
    assert t.weights_sha256 == lineage["weights_sha256"]
    assert t.model.config.to_dict()["backbone_config"]["hidden_size"] == demo_config().backbone_config.hidden_size
    assert len(lineage["heldout"]["per_scene"]) == 2


def test_a_build_summary_says_when_the_demo_teacher_labelled(tmp_path):
    from depthdata.pipeline import STAGES
    from flows.build import _warn_stand_in_teacher
    from flows.summary import StageSummary

    absent = TeacherConfig(model="depthdata-tests/no-such-model", allow_demo_teacher=True)
    summary = StageSummary("teacher")
    _warn_stand_in_teacher(STAGES["teacher"], absent, checkpoint_lineage(absent), summary)
    [warning] = summary.warnings
    assert "DEMO TEACHER" in warning and "not Depth Anything V2" in warning and "no-such-model" in warning
    real = TeacherConfig(model=str(save_tiny_teacher(tmp_path / "real")))
    quiet = StageSummary("teacher")
    _warn_stand_in_teacher(STAGES["teacher"], real, checkpoint_lineage(real), quiet)
    assert quiet.warnings == []


def test_scene_cache_holds_exactly_what_rendering_gives(tmp_path):
    recipe = Recipe(train_rooms=2, train_streets=2, size=(30, 40))
    rendered = render_split(recipe, "train", cache=tmp_path)  # renders and writes the cache
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [cache_file(tmp_path, recipe, "train").name]
    again = render_split(recipe, "train", cache=tmp_path)  # read back, not rendered
    np.testing.assert_array_equal(again.rgb, rendered.rgb)
    np.testing.assert_array_equal(again.depth, rendered.depth)  # NaN sky in the same places
    assert again.kinds == rendered.kinds == ["room", "room", "street", "street"]
    # depth is kept at float16 precision whether rendered or read
    np.testing.assert_array_equal(rendered.depth, rendered.depth.astype(np.float16).astype(np.float32))
    # another recipe's scenes are another file: the cache never answers for different scenes
    assert cache_file(tmp_path, Recipe(train_rooms=2, train_streets=2, size=(30, 40), seed=1), "train") != files[0]
    assert not cache_file(tmp_path, recipe, "heldout").exists()


def test_train_demo_goes_on_from_a_checkpoint_and_chains_its_lineage(tmp_path, capsys):
    first, second, again = tmp_path / "first", tmp_path / "second", tmp_path / "again"
    tiny = ["--train-scenes", "1", "1", "--heldout-scenes", "1", "1", "--threads", "1"]
    assert main(["teacher", "train-demo", "--out", str(first), "--steps", "2", *tiny]) == 0
    parent = json.loads((first / LINEAGE_FILE).read_text())
    # no step taken: the weights written are the parent's, bit for bit (a fresh model would differ)
    assert main(["teacher", "train-demo", "--out", str(again), "--init", str(first), "--steps", "0", *tiny]) == 0
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert main(["teacher", "train-demo", "--out", str(second), "--init", str(first), "--steps", "2", *tiny]) == 0
    capsys.readouterr()
    child = json.loads((second / LINEAGE_FILE).read_text())
    assert child["recipe"]["init_sha256"] == parent["weights_sha256"] != child["weights_sha256"]
    assert child["parent"]["weights_sha256"] == parent["weights_sha256"]
    assert child["parent"]["recipe"]["steps"] == 2 and "per_scene" not in child["parent"]["heldout"]
    assert "--init" in child["recipe"]["command"]
    # weights without a lineage have no known recipe: refused, naming the folder
    (first / LINEAGE_FILE).unlink()
    refused = main(["teacher", "train-demo", "--out", str(tmp_path / "x"), "--init", str(first), "--steps", "1", *tiny])
    assert refused != 0
    assert f"{first}: no {LINEAGE_FILE}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rendering_in_processes_gives_the_same_scenes(tmp_path):
    recipe = Recipe(train_rooms=3, train_streets=2, size=(30, 40))
    alone = render_split(recipe, "train")
    forked = render_split(recipe, "train", workers=2)
    np.testing.assert_array_equal(forked.rgb, alone.rgb)
    np.testing.assert_array_equal(forked.depth, alone.depth)
    assert forked.kinds == alone.kinds == ["room"] * 3 + ["street"] * 2


def test_zoom_crops_input_and_target_alike_and_leaves_the_rest():
    from depthdata.teacher.train_demo import _zoom

    def ramp(h: int, w: int) -> torch.Tensor:
        # u: the pixel centre's horizontal position as a share of the width, 0 … 1
        u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        return u.expand(1, 1, h, w).repeat(2, 1, 1, 1)

    pixels, target = ramp(14, 28), ramp(12, 16)  # different sizes, as input and target are
    apply = torch.tensor([True, False])
    side = torch.tensor([0.5, 0.5], dtype=torch.float64)
    where = torch.tensor([[1.0, 0.0], [0.3, 0.3]], dtype=torch.float64)  # the right half, at the top
    zp, zt = _zoom(pixels, target, apply, side, where)
    for x, z in ((pixels, zp), (target, zt)):
        w = x.shape[-1]
        u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        # the zoomed image shows u in [0.5, 1]: its pixel centre at u shows 0.5 + u / 2 (a ramp
        # is linear, so bilinear sampling is exact), but for the last column, which lies beyond
        # the last pixel centre and takes the border's value
        torch.testing.assert_close(z[0, 0, 0, :-1], (0.5 + u / 2)[:-1])
        assert z[0, 0, 0, -1] == x[0, 0, 0, -1]
        torch.testing.assert_close(z[1], x[1])  # not applied: unchanged


def test_recipe_refuses_a_crop_share_or_input_size_it_cannot_use():
    with pytest.raises(ValueError, match="crop_min"):
        Recipe(crop_min=0)
    with pytest.raises(ValueError, match="multiple of the 14"):
        Recipe(input_size=100)


def test_with_a_time_budget_the_learning_rate_decays_with_the_clock(tiny_data, monkeypatch):
    """A run stopped by its budget must end annealed, whatever the planned steps: the cosine
    follows the share of the budget spent when that is further along than the steps."""
    import depthdata.teacher.train_demo as td

    pixels, target = tiny_data
    clock = [0.0]  # seconds; each step takes exactly 1 s of this clock
    monkeypatch.setattr(td, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    lrs: list[float] = []

    class Recording(torch.optim.lr_scheduler.LambdaLR):
        def step(self, *args, **kwargs):
            super().step(*args, **kwargs)
            lrs.append(self.get_last_lr()[0])

    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", Recording)
    recipe = replace(TINY_RECIPE, steps=1000, warmup_steps=2)
    losses = fit(new_model(recipe.seed), pixels, target, recipe,
                 on_step=lambda step, loss, terms: clock.__setitem__(0, float(step)), deadline=10.0)
    assert len(losses) == 10  # the step that ends at 10 s spends the budget
    # the first rate is set before training, the rate of step s + 1 after step s, at s seconds:
    # warm-up (2 steps: 1/2, 2/2) first, then 5 % + 95 % of a half cosine over the 10 s, not
    # over the 1,000 planned steps
    expected = [0.5, 1.0] + [0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * s / 10)) for s in range(1, 10)]
    np.testing.assert_allclose(np.array(lrs) / recipe.lr, expected, rtol=1e-6)
    assert lrs[-1] / recipe.lr < 0.08
    # without a budget the steps alone set it: after 10 of 1,000 steps it is still near its peak
    assert td._lr_factor(10, recipe) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 8 / 998)))


def test_a_time_budget_stops_training_writes_the_weights_and_says_so(tmp_path, capsys):
    out = tmp_path / "demo"
    # a budget of 0 minutes is spent by the first step
    assert main(["teacher", "train-demo", "--out", str(out), "--steps", "5", "--train-scenes", "1", "1",
                 "--heldout-scenes", "1", "1", "--threads", "1", "--max-minutes", "0"]) == 0
    assert " 1 steps in " in capsys.readouterr().out
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["recipe"]["steps"] == 5 and lineage["training"]["steps"] == 1
    assert "stopped by max_minutes 0 at step 1 of the 5" in lineage["training"]["note"]
    assert lineage["recipe"]["command"].endswith(" --max-minutes 0")  # it shaped the schedule
    assert load_teacher(TeacherConfig(model=str(out), device="cpu", threads=1)).weights_sha256 == lineage["weights_sha256"]
    with pytest.raises(ValueError, match="max_minutes must be >= 0"):
        train_demo(TINY_RECIPE, tmp_path / "never", max_minutes=-1)
