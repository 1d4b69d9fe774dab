"""``fpn-mnv3s``: a torchvision MobileNet encoder and a light FPN decoder (the original student).

Source: feature pyramid decoder (Lin et al., "Feature Pyramid Networks for Object Detection",
CVPR 2017) over a MobileNetV3-Small encoder (Howard et al., "Searching for MobileNetV3", ICCV
2019). ``encoder`` may also be ``mobilenet_v3_large`` or ``mobilenet_v2``; the name is after
the default.

I/O: :mod:`student.arch.base` convention, output relative disparity in [0, 1] (sigmoid).

Layers: encoder stages at strides 4, 8, 16, 32; a 1×1 lateral conv per stage to
``decoder_channels`` (32); top-down path of bilinear ×2 upsampling + add + 3×3 conv-BN-ReLU;
head 3×3 conv-BN-ReLU (16 channels) + 1×1 conv at stride 4; bilinear upsampling to the input
size; sigmoid.

Size (deployed graph, :func:`~student.arch.base.profile`, FlopCounterMode): **0.98 M parameters,
0.68 GMACs** at 480×640.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from depthdata.errors import DepthdataError
from student.arch import register
from student.arch.base import StudentConfig, StudentNet, conv_bn_relu, resize_to, run_encoder

ENCODERS = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2")


def stage_ends(features: nn.Sequential, strides: tuple[int, ...] = (4, 8, 16, 32)) -> list[int]:
    """Index of the last encoder block at each output stride in ``strides``.

    Found by a probe forward pass rather than hard-coded per torchvision model, so every
    MobileNet variant works with the same decoder. Stride 2 is left out by default: a decoder
    level at half resolution would cost more MACs than the whole encoder (at 480×640) for detail
    that the final bilinear upsampling mostly recovers.
    """
    x = torch.zeros(1, 3, 64, 64, device=next(features.parameters()).device)
    ends: dict[int, int] = {}
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            ends[64 // x.shape[-1]] = i
    return [ends[s] for s in strides]


def minimalistic(module: nn.Module) -> None:
    """Replace Hardswish by ReLU and squeeze-excitation by identity, in place (recursively)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Hardswish):
            setattr(module, name, nn.ReLU(inplace=True))
        elif isinstance(child, SqueezeExcitation):
            setattr(module, name, nn.Identity())
        else:
            minimalistic(child)


def out_channels(block: nn.Module) -> int:
    """Channels a torchvision MobileNet block outputs (its last conv's)."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def mobilenet_features(name: str, int8_friendly: bool) -> nn.Sequential:
    if name not in ENCODERS:
        raise DepthdataError(f"unknown student encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    # weights=None: pretrained URLs are unreachable offline; a local state dict loads via
    # student.model.load_encoder_weights.
    features = getattr(torchvision.models, name)(weights=None).features
    if int8_friendly:
        minimalistic(features)
    return features


@register("fpn-mnv3s")
class FpnMnv3s(StudentNet):
    """MobileNet encoder + FPN decoder over strides 4–32 + sigmoid disparity head at stride 4,
    upsampled bilinearly to the input size (module doc)."""

    source = "FPN decoder (Lin et al. CVPR 2017) on torchvision MobileNetV3-Small (Howard et al. ICCV 2019)"
    options = frozenset({"encoder", "decoder_channels", "int8_friendly"})

    def __init__(self, config: StudentConfig = StudentConfig()):
        super().__init__(config)
        self.encoder = mobilenet_features(config.encoder, config.int8_friendly)
        self.stage_ends = stage_ends(self.encoder)
        widths = [out_channels(self.encoder[i]) for i in self.stage_ends]
        c = config.decoder_channels
        self.lateral = nn.ModuleList(nn.Conv2d(w, c, 1) for w in widths)
        self.smooth = nn.ModuleList(conv_bn_relu(c, c, 3) for _ in widths[:-1])
        self.head = nn.Sequential(conv_bn_relu(c, c // 2, 3), nn.Conv2d(c // 2, 1, 1))

    @property
    def prediction_conv(self) -> nn.Conv2d:
        return self.head[-1]

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` float ``B×3×H×W`` in [0, 1] → disparity ``B×1×H×W`` in [0, 1]."""
        return torch.sigmoid(resize_to(self.logits(rgb), rgb.shape[-2:]))

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """The head's output at stride 4, before upsampling and sigmoid."""
        _, skips = run_encoder(self.encoder, self.normalise(rgb), self.stage_ends)
        y = self.lateral[-1](skips[-1])
        for k in range(len(skips) - 2, -1, -1):
            lat = self.lateral[k](skips[k])
            y = self.smooth[k](lat + resize_to(y, lat.shape[-2:]))
        return self.head(y)
