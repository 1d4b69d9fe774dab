"""A tiny synthetic store for the student tests: analytic scenes with exact depth.

Scene ``i`` is a slanted plane seen by a pinhole camera: depth ``z = a_i + b_i·y/(H−1)`` metres
(far at the top), so its disparity ``1/z`` is known exactly. The teacher field is that disparity
min–max normalised per image (the store's convention); the image's brightness is the teacher
value plus a fixed texture, so a network can learn the mapping in a few steps.
"""

import numpy as np
import torch

from depthdata.store import Store

H, W = 64, 96


def scene(i: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rgb uint8 h×w×3, depth metres h×w, teacher disparity in [0, 1])`` of scene ``i``."""
    rng = np.random.default_rng(i)
    near, far = 1.0 + 0.1 * (i % 5), 6.0 + 0.5 * (i % 3)
    y = np.linspace(0.0, 1.0, h)[:, None] * np.ones((1, w))
    depth = (far + (near - far) * y).astype(np.float32)  # top row far, bottom row near
    disp = 1.0 / depth
    teacher = (disp - disp.min()) / (disp.max() - disp.min())
    texture = rng.integers(0, 30, size=(h, w, 1))
    rgb = np.clip(teacher[..., None] * 200 + texture + np.array([10, 20, 30]), 0, 255).astype(np.uint8)
    if i % 2:
        rgb, depth, teacher = rgb[:, ::-1].copy(), depth[:, ::-1].copy(), teacher[:, ::-1].copy()
    return rgb, depth, teacher.astype(np.float32)


def build_store(url: str, n: int = 12, shard_size: int = 4, h: int = H, w: int = W, sparse: bool = True,
                pairs: bool = True, group: tuple[str, str] = ("synth", "train"), teacher: bool = True,
                depth: bool = True, add: bool = False) -> str:
    """A store (or, with ``add``, one more group in an existing one) of analytic scenes with the
    chosen fields: ``rgb`` always; ``depth``, ``teacher`` + ``teacher_conf``, ``sparse`` and
    ``pairs`` (a DIW-like group has rgb and pairs only)."""
    store = Store.open(url, mode="r+") if add else Store.create(url)
    ids = [f"{group[0]}/{group[1]}/{i:03d}" for i in range(n)]
    g = store.create_group(group[0], group[1], ids, [f"/src/{i}.png" for i in range(n)], h, w, shard_size,
                           max_pairs=2 if pairs else 0)
    fields = (["rgb"] + (["depth"] if depth else []) + (["teacher", "teacher_conf"] if teacher else [])
              + (["sparse"] if sparse else []) + (["pairs"] if pairs else []))
    g.ensure_fields(fields)
    for k in range(g.num_shards):
        idx = list(g.shard_range(k))
        scenes = [scene(i, h, w) for i in idx]
        ingest = {"rgb": np.stack([s[0] for s in scenes])}
        if depth:
            ingest["depth"] = np.stack([s[1] for s in scenes])
        if pairs:
            # A at the top (far) vs B at the bottom (near): A farther, order +1; and the reverse.
            p = np.array([[1, w // 2, h - 2, w // 2, 1], [h - 2, 3, 2, 3, -1]], np.float32)
            ingest["pairs"] = np.stack([p] * len(idx))
        ok = [{"status": "ok"} for _ in idx]
        g.write_shard(k, "ingest", ingest, ok)
        if teacher:
            g.write_shard(k, "teacher", {"teacher": np.stack([s[2] for s in scenes]),
                                         "teacher_conf": np.ones((len(idx), h, w), np.float32)}, ok)
        if sparse:
            sp = np.zeros((len(idx), h, w), np.float32)
            sp[:, ::8, ::8] = np.stack([s[1] for s in scenes])[:, ::8, ::8]  # one return per 8×8 pixels
            g.write_shard(k, "lidar", {"sparse": sp}, ok)
    return url


def hand_macs(model, size) -> int:
    """Σ over convs of output pixels × out channels × (in channels / groups) × kernel area,
    counted from a forward pass at ``size``: MACs by hand, independent of the counters under test."""
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.shape[2] * out.shape[3] * mod.out_channels * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(*model.example_inputs(size))
    for h in handles:
        h.remove()
    return total
