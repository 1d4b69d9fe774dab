"""The student network: a torchvision MobileNet encoder and a light FPN decoder.

Conventions:

* :class:`Student` takes ``rgb`` as float ``B×3×H×W`` in **[0, 1]** (RGB order; ImageNet
  normalisation happens inside) and returns relative **disparity** ``B×1×H×W`` in [0, 1]
  (larger = nearer, the store's ``teacher`` convention), at the input resolution. Any ``H×W``
  works; multiples of 32 waste nothing.
* :class:`ContestWrapper` is the exported model (LPCVC 2025 Track 3): input float RGB
  ``B×3×H×W`` in **0–255**, output relative **depth** ``B×1×H×W`` in (0, 1], near = small,
  far = 1. Mapping (:func:`disparity_to_relative_depth`): disparity min–max normalised per
  image to [0, 1] (the teacher's convention; training is scale-and-shift invariant), then
  ``depth = 1 / (disparity + eps)``, divided by its per-image maximum. That last division (not a
  min–max stretch) keeps the output *proportional* to depth, which is what the organisers'
  median scaling assumes.

  Why ``eps = 0.1`` by default: the teacher's disparity is min–max normalised per image, so
  ``t = 0`` at the farthest pixel. For a scene whose depth spans ``d_min..d_max`` metres the
  true inverse depth is proportional to ``t + 1/(R − 1)`` with ``R = d_max/d_min``; ``eps = 0.1``
  is exact for ``R ≈ 11`` (typical indoor, e.g. NYU 0.7–8 m) and bounds the far/near ratio of
  the output at ``(1 + eps)/eps = 11``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from depthdata.errors import DepthdataError

ENCODERS = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_EPS = 0.1


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a :class:`Student` (saved beside every checkpoint as JSON)."""

    encoder: str = "mobilenet_v3_small"
    decoder_channels: int = 32
    #: MobileNetV3 "minimalistic" style (as TF's Small-Minimalistic): ReLU for Hardswish and no
    #: squeeze-excitation, so every conv fuses with its activation into one int8 kernel instead of
    #: dequantize → HardSigmoid → Mul → quantize. Encoder-only pretrained weights no longer fit.
    int8_friendly: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> StudentConfig:
        return StudentConfig(**json.loads(text))


def _stage_ends(features: nn.Sequential) -> list[int]:
    """Index of the last encoder block at each output stride 4, 8, 16, 32.

    Found by a probe forward pass rather than hard-coded per torchvision model, so every
    MobileNet variant in :data:`ENCODERS` works with the same decoder. Stride 2 is left out on
    purpose: a decoder level at half resolution would cost more MACs than the whole encoder
    (at 480×640) for detail that the final bilinear upsampling mostly recovers.
    """
    x = torch.zeros(1, 3, 64, 64)
    ends: dict[int, int] = {}
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            ends[64 // x.shape[-1]] = i
    return [ends[s] for s in sorted(ends) if s >= 4]


def _minimalistic(module: nn.Module) -> None:
    """Replace Hardswish by ReLU and squeeze-excitation by identity, in place (recursively)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Hardswish):
            setattr(module, name, nn.ReLU(inplace=True))
        elif isinstance(child, SqueezeExcitation):
            setattr(module, name, nn.Identity())
        else:
            _minimalistic(child)


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Student(nn.Module):
    """MobileNet encoder + FPN decoder over strides 4–32 + sigmoid disparity head at stride 4,
    upsampled bilinearly to the input size (see module doc)."""

    def __init__(self, config: StudentConfig = StudentConfig()):
        super().__init__()
        if config.encoder not in ENCODERS:
            raise DepthdataError(f"unknown student encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}")
        self.config = config
        # weights=None: pretrained URLs are unreachable offline; a local state dict loads via load_encoder_weights.
        backbone = getattr(torchvision.models, config.encoder)(weights=None)
        self.encoder = backbone.features
        if config.int8_friendly:
            _minimalistic(self.encoder)
        self.stage_ends = _stage_ends(self.encoder)
        widths = [self._width(i) for i in self.stage_ends]
        c = config.decoder_channels
        self.lateral = nn.ModuleList(nn.Conv2d(w, c, 1) for w in widths)
        self.smooth = nn.ModuleList(_conv_bn_relu(c, c, 3) for _ in widths[:-1])
        self.head = nn.Sequential(_conv_bn_relu(c, c // 2, 3), nn.Conv2d(c // 2, 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _width(self, index: int) -> int:
        convs = [m for m in self.encoder[index].modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` float ``B×3×H×W`` in [0, 1] → disparity ``B×1×H×W`` in [0, 1]."""
        size = rgb.shape[-2:]
        x = (rgb - self.mean) / self.std
        skips = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i in ends:
                skips.append(x)
        y = self.lateral[-1](skips[-1])
        for k in range(len(skips) - 2, -1, -1):
            lat = self.lateral[k](skips[k])
            y = self.smooth[k](lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False))
        y = self.head(y)
        return torch.sigmoid(F.interpolate(y, size=size, mode="bilinear", align_corners=False))


class ContestWrapper(nn.Module):
    """LPCVC I/O around a :class:`Student`: RGB 0–255 in, relative depth in (0, 1] out (module doc)."""

    def __init__(self, student: nn.Module, eps: float = DEFAULT_EPS):
        super().__init__()
        if not eps > 0:
            raise DepthdataError(f"disparity-to-depth eps must be positive, got {eps}")
        self.student = student
        self.eps = float(eps)

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        return disparity_to_relative_depth(self.student(rgb255 / 255.0), self.eps)


def disparity_to_relative_depth(disparity: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The wrapper's mapping of ``B×1×H×W`` student disparity to relative depth in (0, 1].

    The student is trained with scale-and-shift-invariant losses, so its disparity matches the
    teacher's only up to an affine map. Min–max normalising it per image first (as the teacher
    field is, see :mod:`depthdata.store.fields`) restores the teacher's convention — 0 at the
    farthest pixel, 1 at the nearest — before ``1/(d + eps)`` is taken.
    """
    lo = disparity.amin(dim=(1, 2, 3), keepdim=True)
    hi = disparity.amax(dim=(1, 2, 3), keepdim=True)
    # The 1e-6 keeps a constant prediction finite (it maps to a constant depth of 1).
    depth = 1.0 / ((disparity - lo) / (hi - lo + 1e-6) + eps)
    return depth / depth.amax(dim=(1, 2, 3), keepdim=True)


def load_encoder_weights(model: Student, path: str | Path) -> None:
    """Load a torchvision MobileNet state dict (``.pth``/``.pt`` via ``torch.load(weights_only=True)``
    or ``.safetensors``) into the encoder. Keys may carry the classifier's ``features.`` prefix;
    classifier weights are ignored."""
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
    enc = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} or state
    missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    if missing or len(unexpected) == len(enc):
        raise DepthdataError(f"{path}: does not match the {model.config.encoder} encoder "
                             f"({len(missing)} missing keys, e.g. {missing[:3]})")
