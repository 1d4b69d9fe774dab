"""Catalog settings of the teacher stage (``teacher:`` in catalog.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: Hugging Face id or a local directory saved with ``save_pretrained``. Small is
    #: Apache-2.0; Base and Large are CC-BY-NC-4.0 (non-commercial).
    model: str = DEFAULT_MODEL
    #: Hub revision (branch, tag or commit) of ``model``; ignored for a local directory
    revision: str | None = None
    #: ``auto``: CUDA (bf16 where supported, else fp16), else MPS (fp32), else CPU (fp32)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    #: images per forward pass
    batch_size: int = Field(4, ge=1)
    #: CPU threads for torch; ``None`` = every core this process may use
    threads: int | None = Field(None, ge=1)
    #: store the mean of the prediction and its horizontal mirror's (mirrored back) as the label:
    #: one more forward pass per image; the demo teacher's held-out δ1 rose 0.835 → 0.842 so
    #: (benchmarks/NOTES.md, "distill"). Off by default: turning it on relabels existing shards
    flip_average: bool = False
    #: test-time augmentation (flip + second scale) for ``teacher_conf``; false skips it
    tta: bool = True
    #: the second TTA scale, relative to the checkpoint's input size (0.75 of 518 → 388)
    tta_scale: float = Field(0.75, gt=0.1, le=2.0)
    #: disagreement (in units of the image's [0, 1] disparity range) at which confidence
    #: falls to 1/e: ``conf = exp(-max_aug |aug - base| / conf_tolerance)``
    conf_tolerance: float = Field(0.05, gt=0)
    #: fetch weights from the Hub when they are not on this machine (needs network); off by
    #: default so builds are offline and reproducible
    allow_download: bool = False
    #: when the weights of ``model`` are not on this machine, use the demo teacher shipped
    #: with depthdata (``depthdata/demo-teacher``: a small Depth Anything trained on procedural
    #: scenes, not Depth Anything V2; the build says so). Weights that are found always win
    allow_demo_teacher: bool = False
    #: when no weights are found (and no demo teacher is allowed), use a tiny randomly
    #: initialised model of the same architecture (tests only: its labels are meaningless)
    allow_random_init: bool = False
    #: seed of that tiny random model
    random_init_seed: int = 0

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what is written (hashed into each manifest part, so that
        changing one redoes the shards; device, batch size and threads do not count).
        ``allow_demo_teacher`` is left out: whether it applies shows in the weights' lineage,
        which is hashed with these, and leaving it out keeps existing stores' hashes;
        ``flip_average`` counts only when on, for the same reason."""
        return self.model_dump(mode="json", include={
            "model", "revision", "tta", "tta_scale", "conf_tolerance", "allow_random_init", "random_init_seed",
        }) | ({"flip_average": True} if self.flip_average else {})
