"""``resnet18-unet``: the LPCVC 2025 Track 3 report's baseline, a U-Net on a ResNet-18 encoder.

Source: U-Net decoder (Ronneberger et al., MICCAI 2015) on torchvision ResNet-18 (He et al.,
CVPR 2016), the baseline of the LPCVC 2025 Track 3 report: four decoder blocks of transposed-conv
×2 upsampling, skip concatenation and a double 3×3 conv + BN + ReLU; a 1×1 conv + sigmoid.

Layers: encoder stem (stride 2, 64 ch), ``layer1``–``layer4`` (strides 4–32; 64, 128, 256, 512
ch). Decoder blocks 512→256 (skip ``layer3``), 256→128 (``layer2``), 128→64 (``layer1``),
64→64 (stem), each: ConvTranspose2d(k=2, s=2) halving the channels (64 stays 64), concatenated
with the skip, two conv3×3-BN-ReLU. The prediction is made at stride 2 and upsampled
bilinearly to the input size (a fifth learned ×2 would only add MACs at full resolution). For
inputs not divisible by 32 the upsampled map is resampled to its skip's size before the
concatenation.

I/O: :mod:`student.arch.base` convention, output relative disparity in [0, 1].

Size (deployed graph, :func:`~student.arch.base.profile`, FlopCounterMode): **14.32 M parameters,
26.76 GMACs** at 480×640.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from student.arch import register
from student.arch.base import StudentConfig, StudentNet, conv_bn_relu, resize_to


class UpBlock(nn.Module):
    """Transposed-conv ×2 upsampling, concatenation with the skip, double conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Sequential(conv_bn_relu(cout + cskip, cout, 3), conv_bn_relu(cout, cout, 3))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([resize_to(self.up(x), skip.shape[-2:]), skip], dim=1))


class ResNetEncoder(nn.Module):
    """torchvision ResNet-18 without its pooling and classifier; attribute names as torchvision's,
    so a classifier state dict loads as is."""

    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)  # pretrained weights: load_encoder_weights
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 2, 4, 8, 16, 32."""
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        return [s2, s4, s8, s16, self.layer4(s16)]


@register("resnet18-unet")
class ResNet18UNet(StudentNet):
    """ResNet-18 encoder + four transposed-conv U-Net decoder blocks + 1×1 conv + sigmoid (module doc)."""

    source = "U-Net (Ronneberger et al. 2015) on ResNet-18: the LPCVC 2025 Track 3 report's baseline"
    encoder_prefix = ""

    def __init__(self, config: StudentConfig = StudentConfig(arch="resnet18-unet")):
        super().__init__(config)
        self.encoder = ResNetEncoder()
        self.decoder = nn.ModuleList([UpBlock(512, 256, 256), UpBlock(256, 128, 128), UpBlock(128, 64, 64),
                                      UpBlock(64, 64, 64)])
        self.head = nn.Conv2d(64, 1, 1)

    @property
    def prediction_conv(self) -> nn.Conv2d:
        return self.head

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` float ``B×3×H×W`` in [0, 1] → disparity ``B×1×H×W`` in [0, 1]."""
        return torch.sigmoid(resize_to(self.logits(rgb), rgb.shape[-2:]))

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """The head's output at stride 2, before upsampling and sigmoid."""
        *skips, x = self.encoder(self.normalise(rgb))
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)
