"""Loading a Depth Anything teacher: by Hugging Face id or local directory, offline-first.

Safetensors only, never remote code. Finding the checkpoint and its lineage (Hub commit or
``local``, weights SHA-256) is :mod:`depthdata.teacher.checkpoint`, which needs no torch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoImageProcessor, AutoModelForDepthEstimation

from depthdata._system import usable_cpus
from depthdata.teacher.checkpoint import (DEMO_TEACHER_ID, TeacherError, check_lineage, demo_config,
                                         missing_weights_message, random_init_id, resolve_checkpoint, weights_sha256)
from depthdata.teacher.config import TeacherConfig
from depthdata.teacher.tiny import quiet_transformers, save_tiny_teacher

log = logging.getLogger(__name__)

@dataclass
class Teacher:
    """A loaded teacher: model in eval mode on ``device``, its own image processor, lineage."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    #: what the catalog named (Hub id or directory), or ``random-init:tiny(seed=N)``
    model_id: str
    #: Hub commit of the snapshot, ``local`` for a directory, ``random`` for random init
    revision: str
    weights_sha256: str
    random_init: bool
    directory: str

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def input_size(self) -> int:
        """The processor's target size in pixels (518 for the real checkpoints)."""
        return int(self.processor.size["height"])

    def lineage(self) -> dict[str, Any]:
        return {"teacher_id": self.model_id, "teacher_revision": self.revision,
                "weights_sha256": self.weights_sha256, "teacher_random_init": self.random_init}


def pick_device(name: str) -> tuple[torch.device, torch.dtype]:
    """``auto``: CUDA (bf16 where supported, else fp16), then MPS (fp32), then CPU (fp32)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TeacherError("teacher.device is 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise TeacherError("teacher.device is 'mps' but torch reports MPS unavailable (use 'auto' or 'cpu')")
        return torch.device("mps"), torch.float32
    return torch.device("cpu"), torch.float32


def cpu_threads(requested: int | None) -> int:
    """``requested``, or every core this process may run on (its affinity, not the machine's)."""
    return requested or usable_cpus()


def load_from_directory(directory: str | Path, device: str = "cpu", threads: int | None = None,
                        model_id: str | None = None, revision: str = "local", random_init: bool = False) -> Teacher:
    """Load a checkpoint directory (safetensors weights + processor config) onto ``device``."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise TeacherError(f"{directory}: not a checkpoint directory (no config.json)")
    if not list(directory.glob("*.safetensors")):
        others = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        hint = f" (found {others}: only safetensors are loaded, since pickled weights can run code)" if others else ""
        raise TeacherError(f"{directory}: no *.safetensors weights{hint}")
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise TeacherError(f"{directory / 'config.json'}: not valid JSON ({exc})") from None
    kind = cfg.get("model_type")
    if kind != "depth_anything":
        raise TeacherError(f"{directory}: model_type {kind!r} is not a Depth Anything checkpoint; the teacher "
                           "stage stores relative disparity, which only 'depth_anything' models predict here")
    if cfg.get("depth_estimation_type", "relative") != "relative":
        raise TeacherError(f"{directory}: a metric-depth checkpoint (depth_estimation_type "
                           f"{cfg['depth_estimation_type']!r}); the teacher stage needs a relative (disparity) one")
    sha = weights_sha256(directory)
    check_lineage(directory, sha)
    dev, dtype = pick_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads(threads))
    try:
        with quiet_transformers():
            model = AutoModelForDepthEstimation.from_pretrained(
                directory, use_safetensors=True, local_files_only=True, trust_remote_code=False, dtype=dtype)
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise TeacherError(f"{directory}: cannot load the teacher checkpoint (corrupt or incomplete?): "
                           f"{type(exc).__name__}: {exc}") from None
    model.to(dev).eval()
    log.info("teacher %s (%s, sha256 %s…) on %s/%s, %d CPU threads", model_id or directory, revision, sha[:12],
             dev, str(dtype).removeprefix("torch."), torch.get_num_threads())
    return Teacher(model=model, processor=processor, device=dev, dtype=dtype, model_id=model_id or str(directory),
                   revision=revision, weights_sha256=sha, random_init=random_init, directory=str(directory))


def load_teacher(config: TeacherConfig) -> Teacher:
    """The teacher ``config`` names; when its weights are absent, the packaged demo teacher if
    ``allow_demo_teacher`` is set, else the tiny random one if ``allow_random_init`` is set (each
    with a warning). Raises :class:`TeacherError`."""
    found = resolve_checkpoint(config)
    if found is not None:
        directory, revision = found
        return load_from_directory(directory, config.device, config.threads, model_id=config.model, revision=revision)
    if config.allow_demo_teacher:
        log.warning("teacher weights for %r not found: using the DEMO TEACHER shipped with depthdata (a small Depth "
                    "Anything trained on procedural scenes, NOT Depth Anything V2). Provide real weights for real "
                    "labels.", config.model)
        directory, revision = resolve_checkpoint(demo_config(config))
        return load_from_directory(directory, config.device, config.threads, model_id=DEMO_TEACHER_ID,
                                   revision=revision)
    if not config.allow_random_init:
        raise TeacherError(missing_weights_message(config.model, config.revision, "not in the Hugging Face cache"))
    log.warning(
        "TEACHER WEIGHTS FOR %r NOT FOUND: using a tiny RANDOMLY INITIALISED model (seed %d). Its pseudo-labels "
        "are meaningless; use them to exercise the pipeline only. Provide real weights (a save_pretrained "
        "directory or the Hugging Face cache) for real labels.", config.model, config.random_init_seed)
    with tempfile.TemporaryDirectory(prefix="depthdata-tiny-teacher-") as tmp:
        save_tiny_teacher(tmp, seed=config.random_init_seed)
        return load_from_directory(tmp, config.device, config.threads,
                                   model_id=random_init_id(config),
                                   revision="random", random_init=True)
