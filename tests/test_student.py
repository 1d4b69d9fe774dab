"""The student stage: model I/O, losses (against hand-computed values), training and exact resume,
pruning, ONNX FP32/INT8 export with the contest I/O, evaluation, CLI."""

import json
import math

import numpy as np
import onnx
import pytest
import torch
from student_fixtures import H, W, build_store, scene

from depthdata.errors import DepthdataError
from depthdata.store import Store
from student import evaluate as ev
from student import export
from student.checkpoint import load_model, param_count, save_model
from student.losses import align_lsq, gradient_loss, ranking_loss, sparse_loss, ssi_loss
from student.model import ContestWrapper, Student, disparity_to_relative_depth, load_encoder_weights
from student.prune import prune
from student.train import STATE_FILE, TrainConfig, checkpoint_dir, train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(str(tmp_path_factory.mktemp("student") / "s.zarr"), n=12, shard_size=4)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return Student().eval()


# -- model ------------------------------------------------------------------------------------

def test_student_disparity_shape_and_range(student):
    out = student(torch.rand(2, 3, H, W))
    assert out.shape == (2, 1, H, W)
    assert out.min() >= 0 and out.max() <= 1


def test_contest_wrapper_maps_disparity_to_proportional_depth(student):
    x = torch.rand(2, 3, H, W) * 255
    eps = 0.1
    with torch.no_grad():
        disp = student(x / 255).numpy()
        out = ContestWrapper(student, eps, low_res_tail=False)(x).numpy()
    lo = disp.reshape(2, -1).min(axis=1)[:, None, None, None]
    hi = disp.reshape(2, -1).max(axis=1)[:, None, None, None]
    expected = 1 / ((disp - lo) / (hi - lo) + eps)
    expected /= expected.reshape(2, -1).max(axis=1)[:, None, None, None]
    # Far/near ratio of the output is exactly (1 + eps)/eps: the nearest pixel reads eps/(1 + eps).
    np.testing.assert_allclose(out.reshape(2, -1).min(axis=1), eps / (1 + eps), rtol=1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-3)
    assert out.shape == (2, 1, H, W) and out.min() > 0
    np.testing.assert_allclose(out.reshape(2, -1).max(axis=1), 1.0, rtol=1e-6)
    # Nearer (larger disparity) → smaller output: the order of pixels is reversed.
    flat_d, flat_o = disp[0, 0].ravel(), out[0, 0].ravel()
    i, j = flat_d.argmax(), flat_d.argmin()
    assert flat_o[i] < flat_o[j]


def test_low_resolution_tail_maps_the_prediction_maps_depth_then_upsamples(student):
    """The default export graph: sigmoid and depth mapping at the prediction conv's stride, the
    depth upsampled bilinearly, then divided by its maximum (contract: max 1, near = small)."""
    x = torch.rand(2, 3, H, W) * 255
    eps = 0.1
    wrapper = ContestWrapper(student, eps)
    assert wrapper.low_res_tail and student.has_logits
    with torch.no_grad():
        logits = student.logits(x / 255)
        out = wrapper(x)
        full = ContestWrapper(student, eps, low_res_tail=False)(x)
    assert logits.shape[-2:] == (H // 4, W // 4)
    low = disparity_to_relative_depth(torch.sigmoid(logits), eps)
    up = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.numpy(), (up / up.amax(dim=(1, 2, 3), keepdim=True)).numpy(), rtol=1e-5)
    assert out.shape == (2, 1, H, W) and out.min() > 0
    np.testing.assert_allclose(out.amax(dim=(1, 2, 3)).numpy(), 1.0, rtol=1e-6)
    # The same depth up to where the interpolation happens: close to the full-resolution mapping.
    assert float((out - full).abs().mean()) < 0.05
    # The student's own forward is unchanged: the sigmoid of the upsampled logits.
    with torch.no_grad():
        np.testing.assert_allclose(student(x / 255).numpy(), torch.sigmoid(torch.nn.functional.interpolate(
            logits, size=(H, W), mode="bilinear", align_corners=False)).numpy(), atol=1e-6)


def test_depth_mapping_takes_a_per_image_eps_tensor():
    disp = torch.rand(3, 1, 8, 12)
    eps = torch.tensor([0.05, 0.1, 0.5]).view(3, 1, 1, 1)
    out = disparity_to_relative_depth(disp, eps)
    for b in range(3):
        np.testing.assert_allclose(out[b].numpy(), disparity_to_relative_depth(disp[b:b + 1], float(eps[b])).numpy()[0],
                                   rtol=1e-6)
        # far/near ratio (1 + eps)/eps per image
        assert float(out[b].min()) == pytest.approx(float(eps[b] / (1 + eps[b])), rel=1e-3)


def test_an_architecture_without_logits_keeps_the_full_resolution_mapping():
    from torch import nn

    from student.arch import StudentConfig, StudentNet

    class Tiny(StudentNet):
        def __init__(self):
            super().__init__(StudentConfig())
            self.head = nn.Conv2d(3, 1, 1)

        @property
        def prediction_conv(self):
            return self.head

        def forward(self, rgb):
            return torch.sigmoid(self.head(rgb))

    tiny = Tiny().eval()
    assert not tiny.has_logits and not ContestWrapper(tiny).low_res_tail
    with pytest.raises(NotImplementedError):
        tiny.logits(torch.rand(1, 3, 8, 8))


# -- losses -----------------------------------------------------------------------------------

def _maps(seed=0, shape=(2, 1, 8, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_ssi_loss_matches_independent_least_squares():
    pred, target = _maps()
    weight = torch.ones_like(pred)
    weight[:, :, :2] = 0  # the top two rows are ignored
    expected = []
    for b in range(2):
        m = weight[b, 0].numpy() > 0
        p, y = pred[b, 0].numpy()[m].astype(np.float64), target[b, 0].numpy()[m].astype(np.float64)
        (s, t), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), y, rcond=None)
        expected.append(np.mean(np.abs(s * p + t - y)))
    assert float(ssi_loss(pred, target, weight)) == pytest.approx(np.mean(expected), rel=1e-4)


@pytest.mark.parametrize("mode", ["lsq", "median"])
def test_ssi_loss_is_invariant_to_scale_and_shift(mode):
    pred, target = _maps(1)
    weight = torch.ones_like(pred)
    base = float(ssi_loss(pred, target, weight, mode))
    assert base > 0.01
    assert float(ssi_loss(3.7 * pred - 2.0, target, weight, mode)) == pytest.approx(base, rel=1e-3)
    assert float(ssi_loss(0.05 * pred + 9.0, target, weight, mode)) == pytest.approx(base, rel=1e-3)


@pytest.mark.parametrize("mode", ["lsq", "median"])
def test_ssi_loss_is_zero_for_an_affine_prediction(mode):
    _, target = _maps(2)
    assert float(ssi_loss(2.5 * target + 0.3, target, torch.ones_like(target), mode)) < 1e-5


def test_gradient_loss_zero_for_constant_offset_and_hand_value():
    _, target = _maps(3)
    assert float(gradient_loss(target + 0.7, target, torch.ones_like(target))) == pytest.approx(0, abs=1e-6)
    # Residual [[0, 1], [0, 0]] at one scale: |1−0| in x (row 0) + |0−1| in y (col 1) = 2 over 4 pixels.
    pred = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert float(gradient_loss(pred, torch.zeros_like(pred), torch.ones_like(pred), scales=1)) == pytest.approx(0.5)
    # A masked-out pixel removes both differences that touch it.
    w = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert float(gradient_loss(pred, torch.zeros_like(pred), w, scales=1)) == pytest.approx(0.0)


def test_sparse_loss_zero_for_affine_inverse_depth_and_relative_otherwise():
    z = torch.full((1, 1, 8, 8), 0.0)
    z[0, 0, ::2, ::2] = torch.linspace(1.0, 8.0, 16).view(4, 4)  # 16 returns, metres
    valid = z > 0
    pred = torch.where(valid, 0.2 / z.clamp_min(1e-6) + 0.05, torch.zeros_like(z))  # affine in 1/z
    assert float(sparse_loss(pred, z, valid)) < 1e-5
    noisy = pred.clone()
    noisy[0, 0, 0, 0] += 0.3
    assert float(sparse_loss(noisy, z, valid)) > 0.01
    # Too few returns: nothing to compare, exactly zero.
    assert float(sparse_loss(pred, z, valid, min_points=100)) == 0.0


def test_ranking_loss_hand_values():
    pred = torch.zeros(1, 1, 4, 4)
    pred[0, 0, 0, 0], pred[0, 0, 3, 3] = 0.2, 0.8
    pairs = torch.tensor([[[0, 0, 3, 3, 1], [0, 0, 3, 3, -1], [0, 0, 0, 0, 0], [math.nan] * 5]])
    valid = torch.tensor([[True, True, True, False]])
    # d = 10·(0.2 − 0.8) = −6: A farther (+1) is right → softplus(−6); A closer (−1) wrong → softplus(6); equal → 0.
    expected = (math.log1p(math.exp(-6)) + math.log1p(math.exp(6)) + 0.0) / 3
    assert float(ranking_loss(pred, pairs, valid)) == pytest.approx(expected, rel=1e-5)


def test_align_lsq_recovers_scale_and_shift():
    _, target = _maps(4)
    pred = (target - 0.3) / 2.0
    np.testing.assert_allclose(align_lsq(pred, target, torch.ones_like(pred)).numpy(), target.numpy(), atol=1e-5)


# -- training and resume -----------------------------------------------------------------------

def _cfg(store, out, steps, **kw):
    return TrainConfig(store_url=store, out_dir=str(out), steps=steps, batch_size=2, streams=1, lr=2e-3,
                       checkpoint_every=kw.pop("checkpoint_every", 100), seed=3, **kw)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    return train(_cfg(store, tmp_path_factory.mktemp("train"), 16), progress=False)


def test_training_reduces_the_loss(trained):
    assert len(trained.losses) == 16
    first, last = np.mean(trained.losses[:3]), np.mean(trained.losses[-3:])
    assert last < 0.6 * first, (first, last)


def test_resume_gives_identical_parameters(tmp_path):
    # 6 samples, batch 2: an epoch is 3 steps. The interrupted run stops exactly at the epoch's
    # end and the resumed one must start the next epoch, as the uninterrupted run does.
    small = build_store(str(tmp_path / "s.zarr"), n=6, shard_size=3)
    full = train(_cfg(small, tmp_path / "a", 5), progress=False)
    part = train(_cfg(small, tmp_path / "b", 3), progress=False)
    assert part.steps == 3
    state = torch.load(checkpoint_dir(tmp_path / "b") / STATE_FILE, weights_only=True)
    assert state["step"] == 3 and state["data"]["delivered"] == 6
    resumed = train(_cfg(small, tmp_path / "b", 5), progress=False)
    assert resumed.steps == 5
    assert resumed.losses[:3] == part.losses and resumed.losses == full.losses
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def _append_scenes(url: str, start: int, n: int) -> None:
    """``n`` more analytic scenes appended to the store's group as a new plan segment, committed."""
    from student_fixtures import scene

    store = Store.open(url, mode="r+")
    g = store.group("synth/train")
    first, stop = g.append([{"sample_id": f"synth/train/{i:03d}", "source_uri": f"/src/{i}.png"}
                            for i in range(start, start + n)])
    g.ensure_fields([])
    for k in range(first, stop):
        scenes = [scene(start + j) for j in range(len(g.shard_range(k)))]
        start += len(scenes)
        ok = [{"status": "ok"} for _ in scenes]
        g.write_shard(k, "ingest", {"rgb": np.stack([x[0] for x in scenes]), "depth": np.stack([x[1] for x in scenes])},
                      ok)
        g.write_shard(k, "teacher", {"teacher": np.stack([x[2] for x in scenes]),
                                     "teacher_conf": np.ones((len(scenes), *scenes[0][2].shape), np.float32)}, ok)
    store.commit()


def test_a_resumed_run_keeps_training_on_its_store_version_and_records_it(tmp_path):
    from safetensors import safe_open

    small = build_store(str(tmp_path / "s.zarr"), n=6, shard_size=3, sparse=False, pairs=False)
    assert Store.open(small, mode="r+").commit().number == 1
    full = train(_cfg(small, tmp_path / "a", 5), progress=False)
    part = train(_cfg(small, tmp_path / "b", 3), progress=False)
    _append_scenes(small, 6, 6)  # a later build: version 2 has 12 samples
    resumed = train(_cfg(small, tmp_path / "b", 5), progress=False)
    assert (full.store_version, part.store_version, resumed.store_version) == (1, 1, 1)
    assert resumed.losses == full.losses  # the same batches: the 6 samples of version 1
    with safe_open(str(resumed.checkpoint), "pt") as f:
        assert json.loads(f.metadata()["trained_on"]) == {"store": small, "version": 1, "groups": ["synth/train"]}
    fresh = train(_cfg(small, tmp_path / "c", 1), progress=False)
    assert fresh.store_version == 2


def test_training_without_teacher_is_a_clear_error(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"))
    g = store.create_group("x", "train", ["x/train/0", "x/train/1"], ["a", "b"], 8, 8, 2)
    g.ensure_fields(["rgb"])
    g.write_shard(0, "ingest", {"rgb": np.zeros((2, 8, 8, 3), np.uint8)}, [{"status": "ok"}] * 2)
    with pytest.raises(DepthdataError, match="teacher.*x/train"):
        train(_cfg(str(tmp_path / "s.zarr"), tmp_path / "o", 1), progress=False)


# -- checkpoints and pruning ------------------------------------------------------------------

def test_pruning_reduces_parameters_and_model_still_runs(trained, tmp_path):
    model = load_model(trained.checkpoint)
    before = param_count(model)
    calls = []
    pruned, report = prune(model, 0.5, input_size=(H, W), fine_tune=lambda m: calls.append(1) or m)
    assert calls == [1]
    assert report.params_before == before and report.params_after == param_count(pruned) < 0.5 * before
    assert report.macs_after < report.macs_before
    x = torch.rand(1, 3, H, W)
    out = pruned(x)
    assert out.shape == (1, 1, H, W)
    reloaded = load_model(save_model(pruned, tmp_path / "p.safetensors"))
    assert param_count(reloaded) == report.params_after
    torch.testing.assert_close(reloaded(x), out)


def test_bad_inputs_are_clear_errors(tmp_path, student):
    with pytest.raises(DepthdataError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(DepthdataError, match="junk.safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(DepthdataError, match="ratio"):
        prune(student, 1.5)


# -- export -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(trained, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    fp32 = export.export_onnx(trained.model, out / "fp32.onnx", (H, W))
    images = list(export.store_images(store, None, 6))
    int8 = export.quantize_int8(fp32, out / "int8.onnx", images)
    return fp32, int8, images


def test_onnx_fp32_matches_torch(trained, exported):
    fp32, _, images = exported
    batch = np.concatenate([export.to_input(im, (H, W)) for im in images[:2]])
    onnx_out = export.run(export.session(fp32), batch)
    with torch.no_grad():
        torch_out = ContestWrapper(trained.model)(torch.from_numpy(batch)).numpy()
    assert onnx_out.shape == (2, 1, H, W)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4)


def test_int8_runs_and_agrees_with_fp32(exported):
    fp32, int8, images = exported
    s32, s8 = export.session(fp32), export.session(int8)
    ref = [export.run(s32, export.to_input(im, (H, W)))[0, 0] for im in images]
    q = [export.run(s8, export.to_input(im, (H, W)))[0, 0] for im in images]
    agree = export.agreement(ref, q)
    # Stated bound: INT8 within 1% AbsRel of FP32 and ≥ 99% of pixels within δ<1.25.
    assert agree["abs_rel"] < 0.01 and agree["delta1"] > 0.99, agree
    assert export.model_bytes(int8) < 0.6 * export.model_bytes(fp32)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)


def test_contest_io_spec(student, tmp_path):
    path = export.export_onnx(student, tmp_path / "contest.onnx")
    sess = export.session(path)
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert inp.shape[1:] == [3, 480, 640] and out.shape[1:] == [1, 480, 640]
    assert inp.type == out.type == "tensor(float)"
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 480, 640)).astype(np.float32)
    y = export.run(sess, x)
    assert y.shape == (1, 1, 480, 640)
    assert y.min() > 0 and y.max() == pytest.approx(1.0)


# -- evaluation -------------------------------------------------------------------------------

def test_evaluate_oracle_and_reversed_predictors(store):
    def oracle(rgb):  # the exact scene depth, up to scale: perfect after median scaling
        i = next(k for k in range(12) if np.array_equal(scene(k)[0], rgb))
        return scene(i)[1] / 10.0

    def reversed_(rgb):  # depth order flipped: every ordinal pair wrong
        return 1.0 / oracle(rgb)

    res = ev.evaluate(oracle, store, progress=False)["synth/train"]
    assert res["samples"] == 12 and res["contest"]["abs_rel"] < 1e-6 and res["contest"]["delta1"] == 1.0
    assert res["affine_invariant"]["abs_rel"] < 1e-6 and res["affine_invariant"]["delta1"] == 1.0
    assert res["whdr"] == 0.0 and res["pairs"] == 24
    # The teacher is the exact disparity min–max normalised, so its depth differs from the truth.
    assert res["teacher"]["abs_rel"] > 0.01
    assert ev.evaluate(reversed_, store, progress=False, limit=4)["synth/train"]["whdr"] == 1.0


def test_onnx_and_torch_predictors_agree(trained, exported, store):
    fp32, _, _ = exported
    a = ev.evaluate(ev.torch_predictor(trained.model), store, limit=3, progress=False)["synth/train"]
    b = ev.evaluate(ev.onnx_predictor(fp32), store, limit=3, progress=False)["synth/train"]
    assert a["contest"]["abs_rel"] == pytest.approx(b["contest"]["abs_rel"], rel=1e-3)
    assert a["affine_invariant"]["abs_rel"] == pytest.approx(b["affine_invariant"]["abs_rel"], rel=1e-3)


# -- CLI and pipeline -------------------------------------------------------------------------

def test_cli_evaluate_writes_json(exported, store, tmp_path, capsys):
    from depthdata.cli import main

    fp32, _, _ = exported
    assert main(["student", "evaluate", "--store", store, "--model", str(fp32), "--limit", "2",
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["synth/train"]["samples"] == 2
    assert main(["student", "evaluate", "--store", store, "--model", "x.pt"]) == 2
    assert "expected a .safetensors" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_end_to_end(store, tmp_path):
    from student.pipeline import run

    # a short shift fit: its default 600 steps were most of this test's time (16 s alone, and
    # over the 600 s timeout on a machine whose two cores something else was using)
    r = run(store, tmp_path / "out", steps=16, finetune_steps=4, batch_size=2, streams=1, eval_limit=4,
            calibration_images=4, shift_steps=50, progress=False)
    for p in r["paths"].values():
        assert (tmp_path / "out").as_posix() in p
    assert r["prune"]["params_after"] < r["prune"]["params_before"]
    assert r["int8_vs_fp32"]["abs_rel"] < 0.05, r["int8_vs_fp32"]
    assert r["eval"]["int8"]["synth/train"]["samples"] == 4
    assert json.loads((tmp_path / "out" / "report.json").read_text())["export_size"] == [H, W]


def test_local_encoder_weights_load_into_the_encoder(tmp_path):
    import torchvision

    torch.manual_seed(5)
    ref = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(ref.state_dict(), tmp_path / "mnv3.pth")
    model = Student()
    load_encoder_weights(model, tmp_path / "mnv3.pth")
    for key, value in ref.features.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(DepthdataError, match="other.pth"):
        load_encoder_weights(model, tmp_path / "other.pth")
