"""Depth Anything architectures of the real class, and saving randomly initialised ones like a
checkpoint.

Used where real weights are absent: tests load a tiny random one by path through the same code
as a real checkpoint (its outputs are meaningless as depth); the benchmark times the real Small
architecture; :func:`demo_config` is the architecture of the packaged demo teacher, trained by
:mod:`depthdata.teacher.train_demo`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

#: the real checkpoints' input size (pixels); keep_aspect_ratio scales the side that needs the
#: least change to this, then rounds both sides to a multiple of the 14 px patch
CHECKPOINT_SIZE = 518
TINY_SIZE = 56
#: initialiser std of the tiny model: the library default (0.02) drives the ReLU head's output
#: to ~1e-7 everywhere, which is too flat to exercise normalisation; 0.1 gives O(0.01) spread
TINY_INIT_STD = 0.1


def image_processor(size: int = CHECKPOINT_SIZE) -> DPTImageProcessor:
    """The preprocessing of the Depth-Anything-V2 checkpoints (their preprocessor_config.json):
    resize keeping aspect to ``size`` (multiple of 14, bicubic), /255, ImageNet mean/std."""
    return DPTImageProcessor(
        do_resize=True, size={"height": size, "width": size}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False,
    )


def tiny_config() -> DepthAnythingConfig:
    """The tiny architecture (DINOv2 backbone: hidden size 32, 4 layers, 2 heads): 137k parameters."""
    backbone = Dinov2Config(
        image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, out_indices=[1, 2, 3, 4], apply_layernorm=True, reshape_hidden_states=False,
        initializer_range=TINY_INIT_STD,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative",
        initializer_range=TINY_INIT_STD,
    )


#: input size (short side, pixels) of the demo teacher: 7 patches of 14 px (98×126 for the
#: demo store's 120×160), which trains about 1.7× faster per step on a CPU than 126 px did for
#: the same held-out metrics after 100 steps
DEMO_SIZE = 98


def demo_config() -> DepthAnythingConfig:
    """The demo teacher's architecture: a DINOv2 backbone with hidden size 128, 6 layers, 4 heads
    (features of layers 2, 3, 5, 6), neck [32, 64, 128, 128], fusion 48, head 16; 2.0M
    parameters (8 MB of float32). Big enough to learn the procedural scenes' depth on a CPU,
    small enough to ship inside the package.

    LayerScale starts at 1e-5, as DINOv2 trains from scratch: every transformer block starts
    as the identity, so the DPT neck first learns on the patch embeddings like a convolutional
    network while the blocks grow in (with 1.0, the value of converted checkpoints, a 16-image
    overfit reached δ1 0.54 in 125 steps instead of 0.61)."""
    backbone = Dinov2Config(
        image_size=DEMO_SIZE, patch_size=14, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
        intermediate_size=384, out_indices=[2, 3, 5, 6], apply_layernorm=True, reshape_hidden_states=False,
        layerscale_value=1e-5,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=128, neck_hidden_sizes=[32, 64, 128, 128],
        fusion_hidden_size=48, head_hidden_size=16, depth_estimation_type="relative",
    )


def small_config() -> DepthAnythingConfig:
    """Depth-Anything-V2-Small's architecture (its config.json on the Hub): DINOv2 ViT-S/14,
    hidden 384, 12 layers, 6 heads, out_indices [3, 6, 9, 12]; neck [48, 96, 192, 384],
    fusion 64, head 32. 24.8M parameters."""
    backbone = Dinov2Config(
        image_size=CHECKPOINT_SIZE, patch_size=14, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
        out_indices=[3, 6, 9, 12], reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64, head_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5],
        depth_estimation_type="relative",
    )


def save_random_teacher(directory: str | Path, config: DepthAnythingConfig, seed: int = 0,
                        size: int = CHECKPOINT_SIZE) -> Path:
    """Initialise ``config`` with ``seed`` and save model (safetensors) + processor to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # fork_rng: seeding must not disturb the caller's global torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(config).eval()
    with quiet_transformers():
        model.save_pretrained(directory, safe_serialization=True)
    image_processor(size).save_pretrained(directory)
    return directory


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards") inside: one
    small model per worker process is not long work, and the bars interleave with the build's."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def save_tiny_teacher(directory: str | Path, seed: int = 0, size: int = TINY_SIZE) -> Path:
    """Write the tiny random teacher (:func:`tiny_config`) to ``directory``; same seed → same bytes."""
    return save_random_teacher(directory, tiny_config(), seed=seed, size=size)
