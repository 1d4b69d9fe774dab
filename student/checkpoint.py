"""Saving and loading student weights as safetensors, pruned or not.

A model file is one ``.safetensors`` whose metadata holds the :class:`StudentConfig` JSON
(``arch`` selects the architecture; files written before architectures had names hold none and
load as ``fpn-mnv3s``, the only one there was). Structured pruning only changes channel counts,
so a pruned model is rebuilt from the unpruned architecture by resizing each (transposed) conv /
batch-norm to the tensor shapes in the file (safetensors holds no code, unlike pickling the
pruned module).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from depthdata.errors import DepthdataError
from student.model import StudentConfig, StudentNet, build_student


def save_model(model: StudentNet, path: str | Path, trained_on: dict | None = None) -> Path:
    """Write ``model``'s state dict and config to ``path`` (``.safetensors``); ``trained_on``
    (store URL, committed version, groups) goes into the metadata as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"student_config": model.config.to_json(), "format": "depthdata-student-1"}
    if trained_on is not None:
        meta["trained_on"] = json.dumps(trained_on, sort_keys=True)
    save_file(state, str(path), metadata=meta)
    return path


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every Conv2d / ConvTranspose2d / BatchNorm2d the channel counts of ``state`` (after pruning)."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.ConvTranspose2d) and f"{prefix}weight" in state:
            # Transposed weights are (in, out / groups, k, k); pruning keeps groups = 1 here.
            w = state[f"{prefix}weight"]
            module.in_channels, module.out_channels = int(w.shape[0]), int(w.shape[1]) * module.groups
            module.weight = nn.Parameter(torch.empty_like(w))
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty_like(state[f"{prefix}bias"]))
        elif isinstance(module, nn.Conv2d) and f"{prefix}weight" in state:
            w = state[f"{prefix}weight"]
            depthwise = module.groups > 1 and module.groups == module.in_channels
            module.out_channels = int(w.shape[0])
            module.groups = int(w.shape[0]) if depthwise else module.groups
            module.in_channels = int(w.shape[1]) * module.groups
            module.weight = nn.Parameter(torch.empty_like(w))
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty_like(state[f"{prefix}bias"]))
        elif isinstance(module, nn.BatchNorm2d) and f"{prefix}weight" in state:
            n = int(state[f"{prefix}weight"].shape[0])
            module.num_features = n
            module.weight = nn.Parameter(torch.empty(n))
            module.bias = nn.Parameter(torch.empty(n))
            module.running_mean = torch.zeros(n)
            module.running_var = torch.ones(n)


def load_model(path: str | Path) -> StudentNet:
    """A student (in eval mode) from a file written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise DepthdataError(f"{path}: student model file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise DepthdataError(f"{path}: not a readable safetensors file ({exc})") from None
    if "student_config" not in meta:
        raise DepthdataError(f"{path}: safetensors file without a student_config (not written by student.checkpoint)")
    try:
        config = StudentConfig.from_json(meta["student_config"])
    except TypeError as exc:  # an option this version does not know
        raise DepthdataError(f"{path}: unknown student configuration ({exc})") from None
    model = build_student(config)
    if any(k.startswith("shift.") for k in state):  # a fitted disparity → depth shift (student.shift)
        from student.shift import shift_for_state_dict

        model.shift = shift_for_state_dict(state, "shift.")
    _resize_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DepthdataError(f"{path}: weights do not fit the student architecture ({exc})") from None
    return model.eval()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
