"""The learned disparity → depth shift (``student.shift``, issue #17 item 4): the exported model's
relative depth becomes proportional to depth for scenes of any depth range, which the contest's
median scaling assumes.

Scenes are analytic: depth rises linearly down the rows from a near to a far plane; "rooms" span
a far/near ratio R of 2–4, "streets" 25–60. A stand-in student reads its disparity off the red
channel, where the scene's exact normalised inverse depth is written, so the only error left
is the disparity → depth mapping; the green channel says which kind of scene it is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from depthdata import metrics
from depthdata.store import Store
from student import export
from student.arch import StudentConfig
from student.checkpoint import load_model, save_model
from student.losses import contest_loss
from student.model import ContestWrapper, build_student, normalise_disparity, relative_depth
from student.shift import KeptZero, ShiftHead, fit_shift
from student.tune import tune_zero

H, W = 32, 48


def scene(rng: np.random.Generator, street: bool) -> tuple[np.ndarray, np.ndarray]:
    ratio = rng.uniform(25, 60) if street else rng.uniform(2, 4)
    near = rng.uniform(0.5, 2.0)
    rows = np.linspace(1.0, 0.0, H)[:, None] * np.ones((1, W))  # 1 at the top (far), 0 at the bottom (near)
    depth = near * (1 + (ratio - 1) * rows)
    disp = 1 / depth
    t = (disp - disp.min()) / (disp.max() - disp.min())
    rgb = np.stack([np.round(t * 255), np.full((H, W), 190.0 if street else 60.0),
                    rng.integers(0, 256, (H, W))], axis=-1).astype(np.uint8)
    return rgb, depth.astype(np.float32)


def make_store(url: str, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    scenes = [scene(rng, street=i % 2 == 1) for i in range(n)]
    store = Store.create(url)
    g = store.create_group("synthetic", "train", [f"synthetic/train/{i:03d}" for i in range(n)],
                           [f"/analytic/{i}" for i in range(n)], H, W, 8)
    g.ensure_fields(["rgb", "depth"])
    for k in range(g.num_shards):
        idx = list(g.shard_range(k))
        g.write_shard(k, "ingest", {"rgb": np.stack([scenes[i][0] for i in idx]),
                                    "depth": np.stack([scenes[i][1] for i in idx])}, [{"status": "ok"} for _ in idx])
    return url


class RedChannelStudent(nn.Module):
    """Disparity = the red channel (the exact normalised inverse depth of :func:`scene`)."""

    output = "disparity"
    name = "red-channel"

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb[:, :1]


def contest_scores(student: nn.Module, scenes: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """The contest protocol, computed by ``depthdata.metrics`` from the exported mapping's output."""
    out = []
    for rgb, depth in scenes:
        with torch.no_grad():
            pred = relative_depth(student, torch.from_numpy(rgb.transpose(2, 0, 1)[None] / 255.0).float())
        out.append(metrics.evaluate(pred[0, 0].numpy().astype(np.float64), depth, align="median", max_depth=80.0)["abs_rel"])
    return out


def test_the_contest_loss_is_the_metric_of_the_contest_protocol():
    rng = np.random.default_rng(3)
    rel = torch.from_numpy(rng.uniform(0.1, 1.0, (2, 1, 8, 8)))
    depth = torch.from_numpy(rng.uniform(0.5, 9.0, (2, 1, 8, 8)))
    valid = torch.from_numpy(rng.uniform(size=(2, 1, 8, 8)) > 0.2)
    ours = contest_loss(rel, depth, valid)
    for b in range(2):
        gt = np.where(valid[b, 0].numpy(), depth[b, 0].numpy(), np.nan)
        want = metrics.evaluate(rel[b, 0].numpy(), gt, align="median")["abs_rel"]
        assert float(ours[b]) == pytest.approx(want, rel=1e-9)


def test_a_new_head_predicts_the_default_eps():
    eps = ShiftHead()(torch.rand(3, 3, 40, 60), torch.rand(3, 1, 10, 15))
    assert eps.shape == (3, 1, 1, 1)
    assert torch.allclose(eps, torch.full_like(eps, 0.1))


def test_the_head_reads_the_disparity_unless_it_is_an_rgb_only_head():
    rgb, t = torch.rand(2, 3, 40, 60), torch.rand(2, 1, 10, 15)
    for sees, differs in ((True, True), (False, False)):
        torch.manual_seed(0)
        head = ShiftHead(sees_disparity=sees)
        torch.nn.init.normal_(head.out.weight, std=0.5)
        with torch.no_grad():
            assert (not torch.allclose(head(rgb, t), head(rgb, t.flip(-2)))) == differs


@pytest.fixture
def one_thread():
    """The fit takes ~10 s on one thread; two threads on a shared 2-core machine took minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_fitted_shift_makes_rooms_and_streets_proportional_to_depth(tmp_path, one_thread):
    url = make_store(str(tmp_path / "train.zarr"), 64, seed=0)
    student = RedChannelStudent()
    fitted = fit_shift(student, url, steps=300, batch_size=16, progress=False)
    assert fitted["images"] == 64 and fitted["after"] < 0.5 * fitted["before"]

    rng = np.random.default_rng(99)  # held-out scenes
    held_out = [scene(rng, street=i % 2 == 1) for i in range(16)]
    with_shift = contest_scores(student, held_out)
    del student.shift
    fixed = contest_scores(student, held_out)
    rooms, streets = slice(0, None, 2), slice(1, None, 2)
    # exact disparity: a fixed eps = 0.1 is right for neither kind of scene
    assert np.mean(fixed[rooms]) > 0.1 and np.mean(fixed[streets]) > 0.01
    assert np.mean(with_shift[rooms]) < 0.4 * np.mean(fixed[rooms])
    assert np.mean(with_shift[streets]) < 0.5 * np.mean(fixed[streets])


@pytest.mark.parametrize("sees_disparity", [True, False], ids=["rgb+disparity", "rgb-only head of earlier checkpoints"])
def test_a_fitted_shift_travels_with_the_checkpoint_and_the_onnx_export(tmp_path, sees_disparity):
    model = build_student(StudentConfig(arch="lpcvc-mnv3s")).eval()
    model.shift = ShiftHead(sees_disparity=sees_disparity)
    with torch.no_grad():
        model.shift.out.weight.normal_(std=0.2)  # a head whose eps differs per image
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        assert float(model.shift(x / 255, torch.rand(2, 1, 16, 24)).flatten().std()) > 0
        ref = ContestWrapper(model)(x)

    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.shift is not None and loaded.shift.sees_disparity == sees_disparity
    assert torch.allclose(ContestWrapper(loaded)(x), ref, atol=1e-6)

    onnx_path = export.export_onnx(model, tmp_path / "m.onnx", (64, 96))
    out = export.run(export.session(onnx_path), x.numpy())
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-3)
    # the head stays float in INT8 exports, like the prediction tail
    tail = export._output_tail(onnx_path)
    # (the low-resolution tail calls student.logits, so the student's nodes carry no /student/ scope)
    assert any(n.endswith("/head/Conv") for n in tail) and any(n.startswith("/shift/") for n in tail)
    assert not any("/encoder" in n for n in tail)


def test_the_shift_command_writes_the_student_with_its_head_and_reports_the_gain(tmp_path, capsys, one_thread):
    import json

    from depthdata.cli import main as cli_main

    url = make_store(str(tmp_path / "train.zarr"), 16, seed=1)
    model = build_student(StudentConfig(arch="lpcvc-mnv3s")).eval()
    src = save_model(model, tmp_path / "in" / "model.safetensors", trained_on={"store": url, "groups": ["x/y"]})
    assert cli_main(["student", "shift", "--store", url, "--model", str(src), "--out", str(tmp_path / "out"),
                     "--steps", "5", "--batch-size", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["contest_abs_rel"]["images"] == 16 and printed["contest_abs_rel"]["steps"] == 5
    loaded = load_model(printed["model"])
    assert loaded.shift is not None
    # the student itself is unchanged: same disparity for the same input
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    from student.card import model_info

    assert model_info(printed["model"])["trained_on"] == {"store": url, "groups": ["x/y"]}


def test_a_store_without_ground_truth_depth_is_refused_by_name(tmp_path):
    from depthdata.errors import DepthdataError

    store = Store.create(str(tmp_path / "s.zarr"))
    g = store.create_group("photos", "train", ["photos/train/0"], ["/p/0"], H, W, 1)
    g.ensure_fields(["rgb"])
    g.write_shard(0, "ingest", {"rgb": np.zeros((1, H, W, 3), np.uint8)}, [{"status": "ok"}])
    with pytest.raises(DepthdataError, match="no group with ground-truth depth.*photos/train"):
        fit_shift(RedChannelStudent(), str(tmp_path / "s.zarr"), steps=1, progress=False)


class ExactDisparityStudent(nn.Module):
    """A student whose disparity kept its zero exactly: proportional to the scene's inverse depth."""

    output = "disparity"
    name = "exact-disparity"

    def __init__(self, disparity: torch.Tensor):
        super().__init__()
        self.disparity = disparity

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.disparity


def test_the_kept_zero_is_each_scenes_own_shift_and_makes_the_output_proportional_to_depth():
    rng = np.random.default_rng(5)
    for street in (False, True, False, True):
        _, depth = scene(rng, street)
        scale = rng.uniform(0.2, 3.0)  # any scale: the disparity is proportional to 1/depth
        disparity = torch.from_numpy(scale / depth)[None, None]
        student = ExactDisparityStudent(disparity)
        student.shift = KeptZero()
        # for inverse depth a·t + b of the normalised t, eps = b/a = 1/(R − 1), R = far/near
        ratio = float(depth.max() / depth.min())
        eps = student.shift(None, normalise_disparity(disparity), disparity)
        assert float(eps) == pytest.approx(1 / (ratio - 1), rel=1e-4)
        with torch.no_grad():
            pred = relative_depth(student, torch.zeros(1, 3, H, W))[0, 0].numpy().astype(np.float64)
        assert metrics.evaluate(pred, depth, align="median", max_depth=80.0)["abs_rel"] < 1e-4


def test_tune_zero_fine_tunes_the_student_to_keep_its_zero(tmp_path, one_thread):
    url = make_store(str(tmp_path / "train.zarr"), 32, seed=2)
    torch.manual_seed(0)
    model = build_student(StudentConfig(arch="lpcvc-mnv3s"))
    model.shift = ShiftHead()  # a head fitted before is dropped: it read the disparity the tune changes
    tuned, fitted = tune_zero(model, url, tmp_path / "tune", steps=300, lr=5e-3, progress=False)
    assert fitted["method"] == "tune" and fitted["images"] == 32 and fitted["steps"] == 300
    assert isinstance(tuned.shift, KeptZero)
    # an untrained student, tuned from scratch: its own zero already beats the constant eps 0.1
    # on these scenes (rooms R 2-4, streets 25-60); 0.42 against 0.57 when written
    assert fitted["after"] < 0.8 * fitted["before"]
    # resumable like any training run: the checkpoint is in the output folder
    assert (tmp_path / "tune" / "checkpoint" / "model.safetensors").is_file()


def test_a_kept_zero_travels_with_the_checkpoint_and_the_onnx_export(tmp_path):
    torch.manual_seed(0)
    model = build_student(StudentConfig(arch="lpcvc-mnv3s")).eval()
    model.shift = KeptZero()
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        # an untrained student's logits span ~0.02: widened so its disparity has a far/near ratio to show
        model.head.weight.mul_(300)
        model.head.bias.zero_()
        d = torch.sigmoid(model.logits(x / 255))
        assert float((d.amax(dim=(1, 2, 3)) / d.amin(dim=(1, 2, 3))).min()) > 1.5  # eps < 2, not clamped
        ref = ContestWrapper(model)(x)
        # the output is 1/disparity of the prediction conv's map, upsampled and divided by its maximum
        want = torch.nn.functional.interpolate(1 / d, size=(64, 96), mode="bilinear", align_corners=False)
        want = want / want.amax(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(ref, want, atol=1e-5)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert isinstance(loaded.shift, KeptZero)
    assert torch.allclose(ContestWrapper(loaded)(x), ref, atol=1e-6)
    out = export.run(export.session(export.export_onnx(model, tmp_path / "m.onnx", (64, 96))), x.numpy())
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-3)
    # the model card says which mapping the export carries
    from student.card import build_card

    card = build_card(tmp_path / "m.safetensors", tmp_path, [], (64, 96), eps=0.1)
    assert "own disparity (student.shift.KeptZero)" in card["export"]["eps"]


def test_the_shift_command_tunes_the_student_with_method_tune(tmp_path, capsys, one_thread):
    import json

    from depthdata.cli import main as cli_main

    url = make_store(str(tmp_path / "train.zarr"), 16, seed=1)
    src = save_model(build_student(StudentConfig(arch="lpcvc-mnv3s")).eval(), tmp_path / "in" / "model.safetensors")
    assert cli_main(["student", "shift", "--store", url, "--model", str(src), "--out", str(tmp_path / "out"),
                     "--method", "tune", "--steps", "4", "--batch-size", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["contest_abs_rel"]["method"] == "tune" and printed["contest_abs_rel"]["steps"] == 4
    assert isinstance(load_model(printed["model"]).shift, KeptZero)
    assert (tmp_path / "out" / "tune" / "checkpoint" / "model.safetensors").is_file()


def test_an_unknown_shift_method_is_refused_before_training(tmp_path):
    from depthdata.errors import DepthdataError
    from student.pipeline import run

    with pytest.raises(DepthdataError, match="shift_method must be 'head' or 'tune', got 'metric'"):
        run(str(tmp_path / "missing.zarr"), tmp_path / "out", shift_method="metric")


def test_each_method_has_its_own_default_steps_and_an_explicit_count_wins():
    # `student run --shift-method tune` used the head's 600 steps before; the tune needs ~3,000
    from student.shift_methods import shift_steps

    assert shift_steps("head") == 600 and shift_steps("tune") == 3000
    assert shift_steps("tune", 0) == 0 and shift_steps("head", 25) == 25
