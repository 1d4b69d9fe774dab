"""Disparity and depth conventions end to end, at training time (issue #17, item 5).

A tiny store whose teacher field is exact disparity computed here from ground-truth depth; a
student trained on it for a few dozen steps through the real loader, losses and export; and the
exported ONNX model's output read on held-out scenes. Stored teacher = disparity (larger =
nearer), student output = disparity, contest output = depth (near = small, far = large): if any
stage flipped disparity and depth, the exported model would order near and far pixels backwards.
The negative control stores the flipped field and checks that the same measurement sees it.
"""

import numpy as np
import pytest
import torch

from depthdata.store import Store
from student import export
from student.model import Student
from student.train import TrainConfig, train

H, W = 64, 96
TRAIN, HELD_OUT = range(0, 16), range(100, 106)


def scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8, depth metres)``: a plane receding along one of four image directions (so the
    network must read the image, not learn a fixed layout), its brightness rising with nearness
    through a textured, tinted image."""
    rng = np.random.default_rng(i)
    near, far = rng.uniform(0.8, 2.0), rng.uniform(6.0, 12.0)
    ramp = {0: np.linspace(0, 1, H)[:, None] * np.ones((1, W)), 1: np.linspace(1, 0, H)[:, None] * np.ones((1, W)),
            2: np.ones((H, 1)) * np.linspace(0, 1, W)[None], 3: np.ones((H, 1)) * np.linspace(1, 0, W)[None]}[i % 4]
    depth = (far + (near - far) * ramp).astype(np.float32)  # ramp 1 = near
    nearness = (1 / depth - 1 / far) / (1 / near - 1 / far)
    texture = rng.integers(0, 25, (H, W, 1))
    rgb = np.clip(nearness[..., None] * 190 + texture + rng.integers(5, 40, 3), 0, 255).astype(np.uint8)
    return rgb, depth


def exact_disparity01(depth: np.ndarray) -> np.ndarray:
    """The store's teacher convention computed from ground truth: 1/depth min–max normalised
    per image to [0, 1], 1 = nearest."""
    disp = 1.0 / depth.astype(np.float64)
    return ((disp - disp.min()) / (disp.max() - disp.min())).astype(np.float32)


def build_store(url: str, flip: bool) -> str:
    store = Store.create(url)
    ids = [f"conv/train/{i:03d}" for i in TRAIN]
    g = store.create_group("conv", "train", ids, [f"/src/{i}.png" for i in TRAIN], H, W, 4)
    g.ensure_fields(["rgb", "depth", "teacher", "teacher_conf"])
    for k in range(g.num_shards):
        idx = [TRAIN[i] for i in g.shard_range(k)]
        scenes = [scene(i) for i in idx]
        teacher = np.stack([exact_disparity01(d) for _, d in scenes])
        ok = [{"status": "ok"} for _ in idx]
        g.write_shard(k, "ingest", {"rgb": np.stack([s[0] for s in scenes]), "depth": np.stack([s[1] for s in scenes])},
                      ok)
        g.write_shard(k, "teacher", {"teacher": 1.0 - teacher if flip else teacher,
                                     "teacher_conf": np.ones_like(teacher)}, ok)
    return url


def order_agreement(pred_depth: np.ndarray, gt_depth: np.ndarray, rng: np.random.Generator, pairs: int = 2000) -> float:
    """Fraction of random pixel pairs (depths differing by ≥ 10%) that ``pred_depth`` orders as
    the ground truth does (0.5 = chance; a flipped convention gives ~0)."""
    a = rng.integers(0, gt_depth.size, pairs)
    b = rng.integers(0, gt_depth.size, pairs)
    g, p = gt_depth.ravel(), pred_depth.ravel()
    use = np.maximum(g[a], g[b]) > 1.1 * np.minimum(g[a], g[b])
    return float(np.mean(np.sign(g[a] - g[b])[use] == np.sign(p[a] - p[b])[use]))


@pytest.fixture(scope="module", params=[False, True], ids=["disparity", "flipped_control"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conventions")
    url = build_store(str(tmp / "s.zarr"), flip=request.param)
    cfg = TrainConfig(store_url=url, out_dir=str(tmp / "train"), steps=40, batch_size=4, lr=2e-3, seed=0, streams=1,
                      hflip=True, checkpoint_every=1000)
    result = train(cfg, progress=False)
    return request.param, result.model, export.export_onnx(result.model, tmp / "m.onnx", (H, W))


def test_exported_model_orders_held_out_pixels_as_ground_truth_depth(exported):
    flipped, model, onnx_path = exported
    sess = export.session(onnx_path, threads=1)
    rng = np.random.default_rng(0)
    agree, student_agree = [], []
    for i in HELD_OUT:
        rgb, depth = scene(i)
        out = export.run(sess, export.to_input(rgb, (H, W)))[0, 0]
        # the contest output is relative depth in (0, 1]: far = 1 at its farthest pixel
        assert out.shape == (H, W) and out.min() > 0 and out.max() == pytest.approx(1.0)
        agree.append(order_agreement(out, depth, rng))
        with torch.no_grad():
            disparity = model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
        # the student itself predicts disparity: larger = nearer, so its negation orders like depth
        student_agree.append(order_agreement(-disparity, depth, rng))
    if flipped:
        # the control: a teacher field stored the wrong way round is seen as a reversal
        assert np.mean(agree) < 0.2 and np.mean(student_agree) < 0.2, (agree, student_agree)
    else:
        assert np.mean(agree) > 0.9 and np.mean(student_agree) > 0.9, (agree, student_agree)
        near, far = np.unravel_index(depth.argmin(), depth.shape), np.unravel_index(depth.argmax(), depth.shape)
        assert out[near] < out[far]  # near = small, far = large, in the last held-out scene
