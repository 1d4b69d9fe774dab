"""Building students by name, the exported model's I/O, and loading pretrained encoders.

The architectures live in :mod:`student.arch` (one module each, selected by
``StudentConfig.arch``; :func:`build_student`). Conventions:

* a student takes ``rgb`` as float ``B×3×H×W`` in **[0, 1]** (RGB order; ImageNet
  normalisation happens inside) and returns, at the input resolution, relative **disparity**
  ``B×1×H×W`` in [0, 1] (larger = nearer, the store's ``teacher`` convention) — or, for
  completion models (``output == "depth"``, which also take ``sparse`` LiDAR metres), metric
  depth in metres.
* :class:`ContestWrapper` is the exported model of a disparity student (LPCVC 2025 Track 3):
  input float RGB ``B×3×H×W`` in **0–255**, output relative **depth** ``B×1×H×W`` in (0, 1],
  near = small, far = 1. Mapping (:func:`disparity_to_relative_depth`): disparity min–max
  normalised per image to [0, 1] (the teacher's convention; training is scale-and-shift
  invariant), then ``depth = 1 / (disparity + eps)``, divided by its per-image maximum. That last
  division (not a min–max stretch) keeps the output *proportional* to depth, which is what the
  organisers' median scaling assumes.

  Low-resolution tail (``low_res_tail=True``, the default, for architectures with
  :meth:`~student.arch.base.StudentNet.logits`): the sigmoid and the mapping run on the
  prediction conv's map (stride 4, or 2 for ``mnv2-fbnet`` and ``resnet18-unet``), the depth is
  upsampled bilinearly to the input size and divided once more by its maximum (so the output's
  maximum stays exactly 1). At 480×640 that leaves three full-resolution passes (resize, max,
  divide) instead of about ten; the onnxruntime FP32 export of ``lpcvc-mnv3s`` ran 1.3× faster
  with it in one alternating run (``benchmarks/NOTES.md``). It differs from mapping the full-
  resolution disparity only by where the interpolation happens (depth instead of logits).

  Why ``eps = 0.1`` by default: the teacher's disparity is min–max normalised per image, so
  ``t = 0`` at the farthest pixel. For a scene whose depth spans ``d_min..d_max`` metres the
  true inverse depth is proportional to ``t + 1/(R − 1)`` with ``R = d_max/d_min``; ``eps = 0.1``
  is exact for ``R ≈ 11`` (typical indoor, e.g. NYU 0.7–8 m) and bounds the far/near ratio of
  the output at ``(1 + eps)/eps = 11``. A student with a fitted shift (its ``shift`` submodule,
  :mod:`student.shift`) takes ``eps`` per image instead, so rooms and streets both come out
  proportional to depth: from a :class:`student.shift.ShiftHead`, or, for a student fine-tuned
  so that its own disparity keeps its zero, from that disparity (:class:`student.shift.KeptZero`).
* :class:`CompletionWrapper` is the exported model of a completion student: inputs RGB 0–255 and
  sparse LiDAR metres (0 = no return), output metric depth in metres.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from depthdata.errors import DepthdataError
from student.arch import StudentConfig, StudentNet, build
from student.arch.base import IMAGENET_MEAN, IMAGENET_STD, fold_input_normalisation, resize_to
from student.arch.fpn_mnv3s import ENCODERS, FpnMnv3s

__all__ = ["DEFAULT_EPS", "ENCODERS", "IMAGENET_MEAN", "IMAGENET_STD", "CompletionWrapper", "ContestWrapper",
           "Student", "StudentConfig", "StudentNet", "build_student", "disparity_to_relative_depth",
           "export_wrapper", "load_encoder_weights", "relative_depth"]

DEFAULT_EPS = 0.1
#: today's default architecture (``fpn-mnv3s``) under the name it always had
Student = FpnMnv3s


def build_student(config: StudentConfig | None = None) -> StudentNet:
    """A new student of ``config`` (default: ``fpn-mnv3s``); see :mod:`student.arch`."""
    return build(config)


class ContestWrapper(nn.Module):
    """LPCVC I/O around a :class:`Student`: RGB 0–255 in, relative depth in (0, 1] out (module doc)."""

    def __init__(self, student: StudentNet, eps: float = DEFAULT_EPS, low_res_tail: bool = True):
        super().__init__()
        if student.output != "disparity":
            raise DepthdataError(f"the contest wrapper maps disparity; {student.name!r} outputs {student.output}")
        if not eps > 0:
            raise DepthdataError(f"disparity-to-depth eps must be positive, got {eps}")
        self.student = student
        self.eps = float(eps)
        self.low_res_tail = bool(low_res_tail) and getattr(student, "has_logits", False)

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        return relative_depth(self.student, _from_255(self.student, rgb255), self.eps, self.low_res_tail)


class CompletionWrapper(nn.Module):
    """Export I/O of a completion student: RGB 0–255 and sparse LiDAR metres (0 = no return) in,
    metric depth in metres out."""

    def __init__(self, student: StudentNet):
        super().__init__()
        if student.inputs != ("rgb", "sparse"):
            raise DepthdataError(f"{student.name!r} is not a completion model (inputs {student.inputs})")
        self.student = student

    def forward(self, rgb255: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.student(_from_255(self.student, rgb255), sparse)


def _from_255(student: nn.Module, rgb255: torch.Tensor) -> torch.Tensor:
    """The wrapper's 0–255 input as ``student`` takes it: a copy made by
    :func:`~student.arch.base.fold_input_normalisation` takes it as it is, any other in [0, 1]."""
    # getattr: any module with the student's I/O may come here (tests use a bare nn.Module)
    return rgb255 if getattr(student, "input_scale", 1.0) == 255.0 else rgb255 / 255.0


def export_wrapper(student: StudentNet, eps: float = DEFAULT_EPS, low_res_tail: bool = True,
                   fold_input: bool = True) -> nn.Module:
    """The exported graph of ``student``: :class:`CompletionWrapper` for completion models,
    :class:`ContestWrapper` (with ``low_res_tail``) otherwise. With ``fold_input`` the wrapper
    holds a copy of ``student`` whose input normalisation is folded into its first conv
    (:func:`~student.arch.base.fold_input_normalisation`; same outputs, fewer full-resolution
    passes); ``student`` itself is not changed."""
    if fold_input:
        student = fold_input_normalisation(student)
    if "sparse" in student.inputs:
        return CompletionWrapper(student)
    return ContestWrapper(student, eps, low_res_tail)


def relative_depth(student: StudentNet, rgb: torch.Tensor, eps: float = DEFAULT_EPS,
                   low_res_tail: bool = True) -> torch.Tensor:
    """Relative depth ``B×1×H×W`` of a disparity student for RGB in [0, 1]: with its fitted
    ``shift``'s per-image ``eps`` when it has one, else with the constant ``eps``. With
    ``low_res_tail`` (and an architecture that has :meth:`~student.arch.base.StudentNet.logits`)
    the mapping runs at the prediction conv's resolution (module doc, "low-resolution tail")."""
    shift = getattr(student, "shift", None)
    # getattr: any module with the student's I/O may come here (tests use a bare nn.Module)
    low_res = low_res_tail and getattr(student, "has_logits", False)
    # Low-resolution tail: sigmoid and depth mapping on the prediction conv's map (stride 2 or
    # 4), then one bilinear upsampling of the depth, so the full-resolution work is three passes
    # (resize, max, divide) instead of about ten.
    disparity = torch.sigmoid(student.logits(rgb)) if low_res else student(rgb)
    t = normalise_disparity(disparity)
    # a fitted shift reads the student's output (student.shift), so it runs after the student
    depth = depth_from_normalised(t, shift(rgb, t, disparity) if shift is not None else eps)
    if not low_res:
        return depth
    depth = resize_to(depth, rgb.shape[-2:])
    # Bilinear weights are convex and (align_corners=False) no output pixel centre falls on an
    # input one, so the upsampled maximum can sit just below 1: divide once more, as the contract
    # (output proportional to depth, maximum 1) requires.
    return depth / depth.amax(dim=(1, 2, 3), keepdim=True)


def normalise_disparity(disparity: torch.Tensor) -> torch.Tensor:
    """``B×1×H×W`` disparity min–max normalised per image to [0, 1]: the teacher's convention, 0
    at the farthest pixel, 1 at the nearest (:func:`disparity_to_relative_depth`). The 1e-6
    keeps a constant prediction finite (it maps to a constant depth of 1)."""
    lo = disparity.amin(dim=(1, 2, 3), keepdim=True)
    hi = disparity.amax(dim=(1, 2, 3), keepdim=True)
    return (disparity - lo) / (hi - lo + 1e-6)


def depth_from_normalised(t: torch.Tensor, eps: float | torch.Tensor = DEFAULT_EPS) -> torch.Tensor:
    """Relative depth in (0, 1] of normalised disparity ``t``: ``1/(t + eps)`` divided by its
    per-image maximum. ``eps``: a number, or one per image (``B×1×1×1``, from
    :class:`student.shift.ShiftHead`)."""
    depth = 1.0 / (t + eps)
    return depth / depth.amax(dim=(1, 2, 3), keepdim=True)


def disparity_to_relative_depth(disparity: torch.Tensor, eps: float | torch.Tensor = DEFAULT_EPS) -> torch.Tensor:
    """The wrapper's mapping of ``B×1×H×W`` student disparity to relative depth in (0, 1].

    The student is trained with scale-and-shift-invariant losses, so its disparity matches the
    teacher's only up to an affine map. Min–max normalising it per image first (as the teacher
    field is, see :mod:`depthdata.store.fields`) restores the teacher's convention — 0 at the
    farthest pixel, 1 at the nearest — before ``1/(d + eps)`` is taken. ``eps``: a number, or
    one per image (``B×1×1×1``, from :class:`student.shift.ShiftHead`).
    """
    return depth_from_normalised(normalise_disparity(disparity), eps)


def load_encoder_weights(model: StudentNet, path: str | Path) -> None:
    """Load a torchvision classifier's state dict (``.pth``/``.pt`` via
    ``torch.load(weights_only=True)`` or ``.safetensors``) into the student's encoder: MobileNet
    keys may carry the classifier's ``features.`` prefix (``encoder_prefix``), ResNet keys are
    used as they are; classifier weights and layers the encoder leaves out are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DepthdataError(f"{path}: encoder weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, OSError) as exc:
        raise DepthdataError(f"{path}: cannot read encoder weights ({exc})") from None
    prefix = model.encoder_prefix
    enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or state
    try:
        missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    except RuntimeError as exc:  # same keys, other shapes: another network
        raise DepthdataError(f"{path}: does not match the {model.name} encoder ({exc})") from None
    if missing or len(unexpected) == len(enc):
        raise DepthdataError(f"{path}: does not match the {model.name} encoder "
                             f"({len(missing)} missing keys, e.g. {missing[:3]})")
