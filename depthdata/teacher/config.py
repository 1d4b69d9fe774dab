"""Catalog settings of the teacher stage (``teacher:`` in catalog.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: Hugging Face id or a local directory saved with ``save_pretrained``. Small is
    #: Apache-2.0; Base and Large are CC-BY-NC-4.0 (non-commercial).
    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(4, ge=1)
    #: test-time augmentation (flip + second scale) for ``teacher_conf``; false skips it
    tta: bool = True
    #: when no weights are found, use a tiny randomly initialised model of the same
    #: architecture (demo only: its labels are meaningless, and the build says so)
    allow_random_init: bool = False
