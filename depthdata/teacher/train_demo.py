"""The demo teacher's training recipe: a small Depth Anything trained from scratch on rendered
scenes with exact depth (``depthdata teacher train-demo``; ``docs/teacher.md``).

Offline there are no Depth Anything V2 weights, and a randomly initialised teacher labels noise.
This recipe trains :func:`depthdata.teacher.tiny.demo_config` — the real
``DepthAnythingForDepthEstimation`` class, loaded by ``AutoModelForDepthEstimation`` like a Hub
checkpoint — on procedurally rendered rooms and streets (:mod:`depthdata.demo.scenes`), so that
the demo's pseudo-labels are depth, of a toy world.

* Data: ``train_rooms + train_streets`` scenes rendered at ``size``, scene ``i`` of split ``s``
  from ``numpy.random.default_rng([seed, s, i])`` (so any one scene can be rendered again alone);
  held-out scenes come from another split of the same streams. Depth is kept at float16 precision
  (5e-4 relative), so that a scene cache (``scene_cache``, 34 KB a scene: lossless WebP + zlib)
  holds exactly what rendering gives; targets are disparity ``1/depth`` per image divided by its
  maximum, sky (no hit) = 0 (farthest).
* Input: the checkpoint's own image processor (resize to 98 px, ImageNet normalisation); the
  output is resized back to the render size bicubically, as the teacher stage does.
* Loss: Depth Anything's for labelled images: scale-and-shift-invariant L1 on disparity, with
  prediction and target each shifted by their median and divided by their mean absolute
  deviation (:func:`depthdata.losses.ssi_loss`, ``mode="median"``), plus multi-scale gradient
  matching (MiDaS eq. 11, :func:`depthdata.losses.gradient_loss`) of the normalised maps,
  weighted 1 : 0.5 (:attr:`Recipe.grad_weight` says why not Depth Anything V2's 1 : 2). The
  normalisation's scale is positive, so the loss teaches which way is near (a least-squares fit
  would accept a reversed prediction with a negative scale).
* Optimiser: AdamW, linear warm-up then cosine decay, gradient norm clipped at 1;
  augmentation: horizontal flips and brightness/contrast jitter, drawn from a seeded generator.
* Determinism: same recipe and thread count → same weights on the same CPU (seeded generators;
  every random draw goes through them). ``device="cuda"`` trains on a GPU (same draws; the
  floating-point order differs, so the weights are not bit-identical to a CPU run).
* Held-out metrics go through the production loader (:func:`depthdata.teacher.model.load_teacher`)
  and the stage's own prediction and float16 storage; the affine-invariant protocol of
  :func:`held_out_metrics`.

The weights and ``lineage.json`` (recipe, seed, steps, scene counts, versions, metrics, the
weights' SHA-256) are written together; loading refuses weights whose hash differs from it.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DepthAnythingForDepthEstimation

from depthdata import __version__, metrics
from depthdata.losses import gradient_loss, median_normalise, ssi_loss
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID, LINEAGE_FILE, TeacherError, weights_sha256
from depthdata.teacher.tiny import DEMO_SIZE, demo_config, image_processor, quiet_transformers

log = logging.getLogger(__name__)

RECIPE_NAME = "depthdata-demo-teacher/1"
#: the seed streams of the scene splits (``default_rng([seed, split, index])``)
SPLITS = {"train": 0, "heldout": 1}
#: ground truth farther than this is not evaluated (metres); streets reach ~200 m, where a
#: disparity-space fit's relative error is dominated by its shift
EVAL_MAX_DEPTH_M = 80.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (recorded in the lineage)."""

    seed: int = 0
    steps: int = 1200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    train_rooms: int = 700
    train_streets: int = 700
    heldout_rooms: int = 24
    heldout_streets: int = 24
    #: render size (H, W): the demo store's resolution
    size: tuple[int, int] = (120, 160)
    #: the image processor's input size (short side, pixels; a multiple of the 14 px patch)
    input_size: int = DEMO_SIZE
    #: share of low-light renders (dim exposure, sensor noise)
    low_light: float = 0.2
    #: weight of gradient matching against the SSI term: MiDaS's 0.5. (Depth Anything V2 uses
    #: 1 : 2 on synthetic images, for sharp edges; in a short CPU budget the heavier gradient
    #: term slowed learning the layout, which the held-out δ1 depends on)
    grad_weight: float = 0.5
    #: random zoom: with probability 1/2 a step's image is replaced by a crop of ``crop_min`` to
    #: 1 of its side (same aspect, anywhere inside), resized back, its target cropped the same
    #: way: more layouts than scenes, as Depth Anything's random crops. 1.0: off (the shipped
    #: CPU recipe; its draws are unchanged)
    crop_min: float = 1.0
    #: gradient norm clipping. Needed, not cosmetic: the freshly initialised model's output is
    #: nearly flat, so the normalised loss's first gradients are ~10³× later ones; unclipped,
    #: they inflate Adam's second-moment estimates and stall learning for hundreds of steps
    grad_clip: float = 1.0
    #: torch CPU threads; results are reproducible for a given count. One, because on a shared
    #: machine two threads that wait on each other ran 10× slower per step than one
    threads: int = 1
    #: the training forward pass under bfloat16 autocast (matrix products and convolutions in
    #: bf16; the loss, gradients' accumulation into the float32 weights and AdamW stay float32).
    #: 1.7× a step on this project's AMD EPYC (AVX-512 BF16; batch 128, 2 threads), and a GPU's
    #: bf16 tensor cores. Off in the shipped recipe (its weights were trained in float32)
    bf16: bool = False
    #: SHA-256 of the weights training started from (``train_demo(init=DIR)``, a checkpoint with
    #: its own lineage, chained under ``"parent"``); None: a fresh model from ``seed``
    init_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.input_size % 14:
            raise ValueError(f"input_size {self.input_size}: not a multiple of the 14 px patch")
        if not 0 < self.crop_min <= 1:
            raise ValueError(f"crop_min {self.crop_min}: a share of each side, in (0, 1]")


@dataclass
class Scenes:
    """Rendered scenes: ``rgb`` uint8 N×H×W×3, ``depth`` float32 N×H×W metres (NaN = sky)."""

    rgb: np.ndarray
    depth: np.ndarray
    kinds: list[str] = field(default_factory=list)


def scene_kind(index: int, rooms: int) -> str:
    """Scenes ``0 … rooms−1`` of a split are rooms, the rest streets."""
    return "room" if index < rooms else "street"


def render_scene(seed: int, split: str, index: int, kind: str, size: tuple[int, int], low_light: float):
    """Scene ``index`` of ``split``: a :class:`~depthdata.demo.render.Render`, the same every time."""
    # imported here: the renderer needs Open3D, which training from a scene cache does not
    from depthdata.demo.scenes import random_render

    rng = np.random.default_rng([seed, SPLITS[split], index])
    return random_render(rng, kind, size, low_light)


def _render_rgb_depth(args: tuple[int, str, int, str, tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray]:
    r = render_scene(*args)
    return r.rgb, r.depth.astype(np.float16)


def render_split(recipe: Recipe, split: str, indices: list[int] | None = None, progress: bool = False,
                 cache: str | Path | None = None, workers: int = 1) -> Scenes:
    """Render the scenes of ``split`` (``train`` or ``heldout``), or only ``indices`` of it; depth
    rounded to float16. With ``cache`` (a directory), a whole split is read from
    :func:`cache_file` when present and written there after rendering. ``workers`` > 1 renders
    in that many forked processes (each scene has its own seed, so the scenes are the same)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    rooms, streets = split_counts(recipe, split)
    whole = indices is None
    indices = list(range(rooms + streets)) if whole else list(indices)
    path = cache_file(cache, recipe, split) if cache is not None and whole else None
    if path is not None and path.exists():
        log.info("%s scenes read from %s", split, path)
        return read_scenes(path)
    kinds = [scene_kind(i, rooms) for i in indices]
    jobs = [(recipe.seed, split, i, kind, recipe.size, recipe.low_light) for i, kind in zip(indices, kinds)]
    bar = dict(desc=f"render {split}", unit="scene", disable=not progress, total=len(jobs))
    if workers > 1 and len(jobs) > 1:
        # forked, not spawned: a worker needs only the renderer, already imported here, and a
        # spawned one would import torch and transformers again (seconds each)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            renders = list(tqdm(pool.map(_render_rgb_depth, jobs, chunksize=16), **bar))
    else:
        renders = [_render_rgb_depth(job) for job in tqdm(jobs, **bar)]
    scenes = Scenes(np.stack([rgb for rgb, _ in renders]),
                    np.stack([depth for _, depth in renders]).astype(np.float32), kinds)
    if path is not None:
        write_scenes(path, scenes)
    return scenes


def split_counts(recipe: Recipe, split: str) -> tuple[int, int]:
    """Rooms and streets of ``split`` (``train`` or ``heldout``)."""
    return (recipe.train_rooms, recipe.train_streets) if split == "train" else \
        (recipe.heldout_rooms, recipe.heldout_streets)


def cache_file(cache: str | Path, recipe: Recipe, split: str) -> Path:
    """Where a split's rendered scenes are cached: named by everything that decides them."""
    rooms, streets = split_counts(recipe, split)
    h, w = recipe.size
    name = (f"{RECIPE_NAME.replace('/', '-')}_seed{recipe.seed}_{split}_{rooms}r{streets}s_{h}x{w}"
            f"_low{recipe.low_light:g}.npz")
    return Path(cache) / name


def write_scenes(path: Path, scenes: Scenes) -> None:
    """Lossless: RGB as WebP (quality > 100 is OpenCV's lossless mode), depth as float16, zlib;
    written to a temporary name and renamed, so a killed run leaves no partial cache."""
    import cv2

    rgb = [np.frombuffer(cv2.imencode(".webp", im[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])[1], np.uint8)
           for im in scenes.rgb]
    offsets = np.cumsum([0] + [len(b) for b in rgb])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, webp=np.concatenate(rgb), offsets=offsets, depth=scenes.depth.astype(np.float16),
                        kinds=np.array(scenes.kinds))
    tmp.replace(path)


def read_scenes(path: Path) -> Scenes:
    """The :class:`Scenes` that :func:`write_scenes` wrote."""
    import cv2

    with np.load(path) as z:
        webp, offsets = z["webp"], z["offsets"]
        rgb = np.stack([cv2.imdecode(webp[a:b], cv2.IMREAD_COLOR)[..., ::-1] for a, b in zip(offsets, offsets[1:])])
        return Scenes(np.ascontiguousarray(rgb), z["depth"].astype(np.float32), [str(k) for k in z["kinds"]])


def disparity_target(depth: np.ndarray) -> torch.Tensor:
    """``N×1×H×W`` float32: ``1/depth`` divided by each image's maximum; no hit (sky) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0)
    disp /= disp.reshape(len(disp), -1).max(axis=1)[:, None, None]
    return torch.from_numpy(disp.astype(np.float32))[:, None]


def pixel_values(processor: Any, rgb: np.ndarray, chunk: int = 1024, device: str = "cpu") -> torch.Tensor:
    """The processor's model input for uint8 ``N×H×W×3`` images, as the teacher stage feeds it
    (:func:`depthdata.teacher.predict.process`: off the CPU the processor resizes and
    normalises there; on the CPU that costs ~0.5 ms an image, minutes for a GPU run's tens of
    thousands), float32 on ``device``, ``chunk`` images at a time."""
    from depthdata.teacher.predict import process

    return torch.cat([process(processor, rgb[i: i + chunk], device) for i in range(0, len(rgb), chunk)]).float()


def predict(model: torch.nn.Module, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Raw disparity ``B×1×H×W`` at ``size``, resized bicubically as the teacher stage does."""
    out = model(pixel_values=pixels).predicted_depth[:, None].float()  # a no-op unless under autocast
    return F.interpolate(out, size=size, mode="bicubic", align_corners=False)


def loss_terms(pred: torch.Tensor, target: torch.Tensor, grad_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Depth Anything's loss on labelled images: SSI (median/mean-absolute-deviation normalised
    L1 on disparity) + ``grad_weight`` × multi-scale gradient matching of the normalised maps."""
    w = torch.ones_like(target)
    ssi = ssi_loss(pred, target, w, mode="median")
    grad = gradient_loss(median_normalise(pred, w), median_normalise(target, w), w)
    return ssi + grad_weight * grad, {"ssi": float(ssi.detach()), "grad": float(grad.detach())}


def _augment(pixels: torch.Tensor, target: torch.Tensor, gen: torch.Generator,
             crop_min: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flips, brightness/contrast/colour jitter (in [0, 1] RGB space) and, with
    ``crop_min`` < 1, random zoom (:attr:`Recipe.crop_min`). The draws come from ``gen`` on the
    CPU; the images are changed where they are (a GPU run keeps its whole set there)."""
    b, dev = len(pixels), pixels.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    flip = draw(b) < 0.5
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    target = torch.where(flip[:, None, None, None], target.flip(-1), target)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    gain = 0.75 + 0.5 * draw(b, 1, 1, 1)
    colour = 0.92 + 0.16 * draw(b, 3, 1, 1)
    offset = 0.16 * draw(b, 1, 1, 1) - 0.08
    rgb = ((pixels * std + mean) * gain * colour + offset).clamp(0, 1)
    pixels = (rgb - mean) / std
    if crop_min < 1.0:
        pixels, target = _zoom(pixels, target, draw(b) < 0.5, crop_min + (1 - crop_min) * draw(b), draw(b, 2))
    return pixels, target


def _zoom(pixels: torch.Tensor, target: torch.Tensor, apply: torch.Tensor, side: torch.Tensor,
          where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``side`` (share of each side, B) of the images where ``apply`` (B), at ``where`` (B×2,
    [0, 1]: left … right, top … bottom of the room left), each resized back to its own size
    (bilinear; the input and the target share one crop in normalised coordinates, so they stay
    registered whatever their sizes)."""
    side = torch.where(apply, side, torch.ones_like(side))
    theta = torch.zeros(len(side), 2, 3, dtype=pixels.dtype, device=pixels.device)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    # the crop's centre in [-1, 1] coordinates: anywhere that keeps it inside the image
    theta[:, :, 2] = (1 - side)[:, None] * (2 * where - 1)

    def resample(x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    return resample(pixels), resample(target)


def _lr_factor(step: int, recipe: Recipe, time_frac: float = 0.0) -> float:
    """The learning rate over its peak: linear warm-up, then cosine decay to 5 % at the end of
    the schedule. ``time_frac`` is the share of a time budget spent (0 without one): the decay
    follows whichever is further along, the steps or the time, so a run stopped by its budget
    ends annealed, however fast the machine turned out to be."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    frac = max((step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps), time_frac)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def new_model(seed: int, config=None) -> DepthAnythingForDepthEstimation:
    """The demo architecture (or ``config``) initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(config or demo_config())
    with torch.no_grad():
        # the head ends in a ReLU: with the default zero bias about half of the pixels start
        # below zero and never receive a gradient; a positive bias starts every pixel alive
        model.head.conv3.bias.fill_(1.0)
    return model


def fit(model: torch.nn.Module, pixels: torch.Tensor, target: torch.Tensor, recipe: Recipe,
        on_step: Callable[[int, float, dict[str, float]], None] | None = None, progress: bool = False,
        device: str = "cpu", deadline: float | None = None) -> list[float]:
    """Train ``model`` in place for ``recipe.steps`` steps on ``pixels`` → ``target``; returns the
    loss of every step. Batches are drawn epoch by epoch from a permutation of a seeded generator
    (on the CPU, whatever ``device`` the model trains on, so the draws are the same). With a
    ``deadline`` (a :func:`time.perf_counter` value) it stops after the first step that ends past
    it, so fewer losses come back than ``recipe.steps``, and the cosine decay follows the time
    budget as well as the steps (:func:`_lr_factor`): it reaches its floor at the deadline
    if the steps have not got there first."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(recipe.seed)
    model.to(device)
    # the whole set on the device, batches drawn there: a GPU otherwise waits on the host's
    # indexing, augmentation and copies (the lent H100 ran ~100 ms a step at batch 16 so)
    pixels, target = pixels.to(device), target.to(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        # TF32 matrix products (10 bits of mantissa, float32 range) and the fused AdamW kernel:
        # the usual GPU training settings; a GPU run is not bit-identical to a CPU run anyway
        torch.backends.cuda.matmul.allow_tf32 = True
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=cuda or None)

    def time_frac() -> float:
        return 0.0 if deadline is None else (time.perf_counter() - t_start) / max(deadline - t_start, 1e-9)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, recipe, time_frac()))
    size = tuple(target.shape[-2:])
    n = len(pixels)
    bs = min(recipe.batch_size, n)
    order = torch.randperm(n, generator=gen)
    pos = 0
    losses: list[float] = []
    model.train()
    bar = tqdm(total=recipe.steps, desc="train demo teacher", unit="step", disable=not progress)
    for step in range(recipe.steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos: pos + bs].to(device)
        pos += bs
        x, y = _augment(pixels[idx], target[idx], gen, recipe.crop_min)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=recipe.bf16):
            pred = predict(model, x, size)
        loss, terms = loss_terms(pred, y, recipe.grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if on_step is not None:
            on_step(step + 1, losses[-1], terms)
        if deadline is not None and time.perf_counter() >= deadline:
            log.info("stopping at step %d of %d: the time budget is spent", step + 1, recipe.steps)
            break
    bar.close()
    model.to("cpu").eval()
    return losses


def mean_loss(model: torch.nn.Module, pixels: torch.Tensor, target: torch.Tensor, grad_weight: float,
              batch: int = 8) -> float:
    """The recipe's loss over a whole set, without augmentation (eval mode, no gradients)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            loss, _ = loss_terms(predict(model, pixels[i: i + batch], tuple(target.shape[-2:])),
                                 target[i: i + batch], grad_weight)
            total += float(loss) * len(pixels[i: i + batch])
    return total / len(pixels)


def scene_metrics(disparity: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """The affine-invariant protocol for one image: the prediction (disparity, any positive scale
    and any shift) is least-squares fitted to ``1/depth`` over ground truth in (1e-3, 80] m with
    the scale kept ≥ 0 (a reversed prediction scores as a constant), turned into depth, clipped
    to that range, and scored (AbsRel, δ1, ...; :func:`depthdata.metrics.evaluate`)."""
    m = metrics.evaluate(disparity, depth, align="scale_shift_disparity", max_depth=EVAL_MAX_DEPTH_M + 1e-6,
                         positive_scale=True)
    return {k: float(m[k]) for k in ("abs_rel", "delta1", "rmse_log", "scale")}


def held_out_metrics(teacher: Any, scenes: Scenes, indices: list[int] | None = None) -> list[dict[str, Any]]:
    """Per-scene metrics of a loaded teacher: predicted as the teacher stage does (processor,
    model, bicubic resize back, per-image [0, 1] normalisation, float16 storage), then
    :func:`scene_metrics` against the exact depth."""
    from depthdata.teacher.predict import predict_normalised

    stored = predict_normalised(teacher, scenes.rgb, batch_size=8).disparity01.astype(np.float16)
    indices = list(range(len(scenes.rgb))) if indices is None else indices
    return [{"index": int(i), "kind": k, **scene_metrics(stored[j].astype(np.float64), scenes.depth[j])}
            for j, (i, k) in enumerate(zip(indices, scenes.kinds))]


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Means over all scenes and per kind."""
    out = {}
    for name, sel in (("all", rows), *((k, [r for r in rows if r["kind"] == k]) for k in ("room", "street"))):
        if sel:
            out[name] = {m: float(np.mean([r[m] for r in sel])) for m in ("abs_rel", "delta1", "rmse_log")} | \
                {"scenes": len(sel), "reversed": sum(r["scale"] <= 0 for r in sel)}
    return out


def save_checkpoint(model: DepthAnythingForDepthEstimation, directory: Path, input_size: int = DEMO_SIZE) -> None:
    """Weights (safetensors) + config + image processor, replacing any earlier weights there."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in [*directory.glob("*.safetensors"), directory / LINEAGE_FILE]:
        old.unlink(missing_ok=True)
    with quiet_transformers():
        model.save_pretrained(directory, safe_serialization=True)
    image_processor(input_size).save_pretrained(directory)


def load_init(directory: str | Path) -> tuple[DepthAnythingForDepthEstimation, dict[str, Any]]:
    """The model of a checkpoint directory to go on training (its weights checked against its
    lineage, as the teacher loader does) and that lineage, less its per-scene rows."""
    from depthdata.teacher.model import load_from_directory

    path = Path(directory) / LINEAGE_FILE
    if not path.is_file():  # checked first: refusing costs no load of the weights
        raise TeacherError(f"{directory}: no {LINEAGE_FILE}; training goes on only from weights whose recipe is known")
    teacher = load_from_directory(directory, "cpu", model_id=DEMO_TEACHER_ID)
    parent = json.loads(path.read_text())
    parent.get("heldout", {}).pop("per_scene", None)
    return teacher.model.float().train(), parent


def train_demo(recipe: Recipe, out_dir: str | Path, progress: bool = True, eval_every: int = 0,
               device: str = "cpu", scene_cache: str | Path | None = None,
               init: str | Path | None = None, render_workers: int = 1,
               max_minutes: float | None = None) -> dict[str, Any]:
    """Run the recipe and write the checkpoint and ``lineage.json`` to ``out_dir``; returns the
    lineage. ``eval_every`` > 0 logs held-out metrics every that many steps (does not change
    the weights). ``device`` is where the model trains (held-out metrics are always measured
    on the CPU, as the shipped teacher runs); ``scene_cache`` is a directory of rendered splits
    (:func:`render_split`). ``init`` is a checkpoint directory with a lineage to go on training
    from (read before ``out_dir`` is written, so it may be the same directory); its lineage is
    kept under ``"parent"`` and its weights' SHA-256 in the recipe. ``render_workers`` renders the
    scenes in that many processes (the same scenes). ``max_minutes`` bounds the training loop
    (rendering and the held-out measurement not counted): the learning rate's decay follows it
    (:func:`fit`), the run stops after the step that spends it, writes what it has, and its
    lineage says so (``training.steps``, ``training.note``).
    Why: a lent GPU is lent for minutes, and weights are written only at the end."""
    if max_minutes is not None and not max_minutes >= 0:
        raise ValueError(f"max_minutes must be >= 0, got {max_minutes}")
    out = Path(out_dir)
    parent = None
    if init is not None:
        start, parent = load_init(init)
        recipe = replace(recipe, init_sha256=parent["weights_sha256"])
    torch.set_num_threads(recipe.threads)  # after loading, which sets the teacher's own count
    t0 = time.perf_counter()
    train = render_split(recipe, "train", progress=progress, cache=scene_cache, workers=render_workers)
    held = render_split(recipe, "heldout", progress=progress, cache=scene_cache, workers=render_workers)
    t_render = time.perf_counter() - t0
    processor = image_processor(recipe.input_size)
    pixels, target = pixel_values(processor, train.rgb, device=device), disparity_target(train.depth)
    held_pixels = pixel_values(processor, held.rgb, device=device)
    model = new_model(recipe.seed) if parent is None else start
    log.info("demo teacher (%s): %d parameters, %d train / %d held-out scenes rendered in %.0f s",
             "from scratch" if parent is None else f"from {init}", sum(p.numel() for p in model.parameters()),
             len(pixels), len(held.rgb), t_render)

    def on_step(step: int, loss: float, terms: dict[str, float]) -> None:
        if step % 50 == 0:
            log.info("step %d/%d loss %.4f (ssi %.4f, grad %.4f) %.0f s", step, recipe.steps, loss, terms["ssi"],
                     terms["grad"], time.perf_counter() - t0)
        if eval_every and step % eval_every == 0 and step < recipe.steps:
            model.eval()
            with torch.no_grad():
                disp = torch.cat([predict(model, held_pixels[i: i + 8], recipe.size).cpu()
                                  for i in range(0, len(held_pixels), 8)])[:, 0].numpy()
            rows = [{"kind": k, **scene_metrics(d.astype(np.float64), g)}
                    for d, g, k in zip(disp, held.depth, held.kinds)]
            log.info("step %d held-out: %s", step, json.dumps(summarise(rows)))
            model.train()

    t1 = time.perf_counter()
    deadline = None if max_minutes is None else t1 + 60.0 * max_minutes
    losses = fit(model, pixels, target, recipe, on_step, progress, device, deadline)
    t_train = time.perf_counter() - t1
    save_checkpoint(model, out, recipe.input_size)
    training = {"steps": len(losses), "device": _device_name(device), "seconds_render": round(t_render, 1),
                "render_workers": render_workers,
                "seconds_train": round(t_train, 1), "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None,
                "loss_every_50": [round(v, 5) for v in losses[49::50]], "versions": training_environment()}
    if max_minutes is not None:
        training["max_minutes"] = max_minutes  # it shaped the learning rate's decay (fit)
    if len(losses) < recipe.steps:
        training["note"] = (f"stopped by max_minutes {max_minutes:g} at step {len(losses)} of the {recipe.steps} its "
                            f"schedule was set for; the cosine decay followed the time budget, so the learning "
                            f"rate had come down to its floor (5% of its peak)")
    return write_lineage(out, recipe, held, training, device, parent)


def training_environment() -> dict[str, str | None]:
    """Versions of what trained the weights (Open3D only renders scenes: None where it is absent)."""
    try:
        o3d = package_version("open3d")
    except Exception:  # noqa: BLE001 - importlib.metadata.PackageNotFoundError
        try:  # a copy without its metadata (the stripped one a lent GPU machine is sent)
            import open3d

            o3d = open3d.__version__
        except ImportError:  # trained from a scene cache
            o3d = None
    return {"depthdata": __version__, "torch": torch.__version__, "transformers": package_version("transformers"),
            "open3d": o3d, "python": platform.python_version()}


def write_lineage(out: Path, recipe: Recipe, held: Scenes, training: dict[str, Any], device: str,
                  parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure the checkpoint in ``out`` on the held-out scenes (on the CPU, through the
    production loader) and write ``lineage.json`` beside it: recipe, scenes, ``training`` (steps,
    device, timings, losses, versions), held-out metrics, the weights' SHA-256 and, for training
    that went on from another checkpoint, that checkpoint's lineage (``parent``)."""
    from depthdata.teacher.model import load_from_directory

    teacher = load_from_directory(out, "cpu", recipe.threads, model_id=DEMO_TEACHER_ID)
    rows = held_out_metrics(teacher, held)
    lineage = {
        "model_id": DEMO_TEACHER_ID,
        "what": "A small Depth Anything (DepthAnythingForDepthEstimation, DINOv2 backbone) trained from scratch on "
                "procedurally rendered rooms and streets with exact depth. NOT Depth Anything V2: its labels are "
                "depth of a toy world, for the offline demo.",
        "weights_file": "model.safetensors",
        "weights_sha256": weights_sha256(out),
        "weights_bytes": (out / "model.safetensors").stat().st_size,
        "parameters": int(teacher.num_parameters),
        "recipe": {"name": RECIPE_NAME, **asdict(recipe),
                   "command": f"depthdata teacher train-demo --seed {recipe.seed} --steps {recipe.steps} "
                              f"--batch-size {recipe.batch_size} --lr {recipe.lr:g} --device {device} "
                              f"--threads {recipe.threads} --train-scenes {recipe.train_rooms} {recipe.train_streets} "
                              f"--heldout-scenes {recipe.heldout_rooms} {recipe.heldout_streets}"
                              + (f" --input-size {recipe.input_size}" if recipe.input_size != DEMO_SIZE else "")
                              + (f" --crop-min {recipe.crop_min:g}" if recipe.crop_min < 1 else "")
                              + (" --bf16" if recipe.bf16 else "")
                              + (f" --max-minutes {training['max_minutes']:g}" if "max_minutes" in training else "")
                              + (f" --init <weights {recipe.init_sha256[:12]}…>" if recipe.init_sha256 else ""),
                   "loss": "SSI L1 on disparity (median / mean-absolute-deviation normalised) + grad_weight x "
                           "multi-scale gradient matching (4 scales) of the normalised maps",
                   "optimiser": f"AdamW, {recipe.warmup_steps} warm-up steps, cosine decay to 5%",
                   "augmentation": "horizontal flip, brightness/contrast/colour jitter"
                                   + (f", random zoom (crops of {recipe.crop_min:g}-1 of each side, half of the "
                                      "images)" if recipe.crop_min < 1 else "")},
        "scenes": {"train": {"room": recipe.train_rooms, "street": recipe.train_streets},
                   "heldout": {"room": recipe.heldout_rooms, "street": recipe.heldout_streets},
                   "size": list(recipe.size), "seed_streams": SPLITS},
        "versions": {"depthdata": __version__, "torch": torch.__version__,
                     "transformers": package_version("transformers"), "python": platform.python_version()},
        "training": training,
        "heldout": {"protocol": "affine-invariant: per image least-squares scale and shift of the stored float16 "
                                "disparity to 1/GT, metrics in depth over GT in (1e-3, 80] m (as the Monocular "
                                "Depth Estimation Challenge); measured on the CPU with the versions above",
                    "max_depth_m": EVAL_MAX_DEPTH_M, "summary": summarise(rows), "per_scene": rows},
    }
    if parent is not None:
        lineage["parent"] = parent
    (out / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
    log.info("demo teacher written to %s: held-out %s", out, json.dumps(lineage["heldout"]["summary"]))
    return lineage


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()})"
