"""``lpcvc-mnv3s``: the MobileNetV3-Small encoder–decoder of the LPCVC 2025 Track 3 report.

Source: the LPCVC 2025 (Low-Power Computer Vision Challenge) Track 3 monocular depth report's
model: MobileNetV3-Small encoder (Howard et al. ICCV 2019); a decoder of three blocks, each a
depthwise-separable convolution + batch norm + ReLU6 + ×2 bilinear upsampling; skips from
encoder layers 3, 8 and 11 (torchvision ``features`` indices: strides 8, 16, 32; 24, 48 and 96
channels) projected by 1×1 convolutions.

Reading of the report made here (it fixes the structure, not every width): the decoder starts
from the encoder's last layer (``features[12]``, 576 channels, stride 32); block ``k`` adds the
projected skip of its resolution, then runs depthwise 3×3 → pointwise 1×1 → BN → ReLU6 → ×2
bilinear, with widths 96, 64, 32 (stride 32 → 16 → 8 → 4). A 1×1 conv predicts at stride 4,
upsampled bilinearly to the input size, then a sigmoid.

I/O: :mod:`student.arch.base` convention, output relative disparity in [0, 1].

Size (deployed graph, :func:`~student.arch.base.profile`, FlopCounterMode): **1.06 M parameters,
0.40 GMACs** at 480×640.
"""

from __future__ import annotations

import torch
from torch import nn

from student.arch import register
from student.arch.base import StudentConfig, StudentNet, resize_to, run_encoder
from student.arch.fpn_mnv3s import mobilenet_features, out_channels

SKIP_LAYERS = (3, 8, 11)
WIDTHS = (96, 64, 32)


class DecoderBlock(nn.Module):
    """Depthwise-separable conv (3×3 depthwise, 1×1 pointwise) + BN + ReLU6 + ×2 bilinear."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # ``size``: the next skip's resolution (×2 up to rounding, for inputs not multiples of 32).
        return resize_to(self.act(self.bn(self.pointwise(self.depthwise(x)))), size)


@register("lpcvc-mnv3s")
class LpcvcMnv3s(StudentNet):
    """MobileNetV3-Small + three depthwise-separable upsampling blocks with 1×1-projected skips
    from layers 3, 8, 11 (module doc)."""

    source = "LPCVC 2025 Track 3 report: MobileNetV3-Small encoder, depthwise-separable decoder, skips 3/8/11"
    options = frozenset({"int8_friendly"})

    def __init__(self, config: StudentConfig = StudentConfig(arch="lpcvc-mnv3s")):
        super().__init__(config)
        self.encoder = mobilenet_features("mobilenet_v3_small", config.int8_friendly)
        skip_widths = [out_channels(self.encoder[i]) for i in SKIP_LAYERS]
        cins = (out_channels(self.encoder[-1]), *WIDTHS[:-1])
        # Skip k joins block k (deepest first): layer 11 at stride 32, 8 at 16, 3 at 8.
        self.skips = nn.ModuleList(nn.Conv2d(w, c, 1) for w, c in zip(reversed(skip_widths), cins))
        self.blocks = nn.ModuleList(DecoderBlock(ci, co) for ci, co in zip(cins, WIDTHS))
        self.head = nn.Conv2d(WIDTHS[-1], 1, 1)

    @property
    def prediction_conv(self) -> nn.Conv2d:
        return self.head

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` float ``B×3×H×W`` in [0, 1] → disparity ``B×1×H×W`` in [0, 1]."""
        return torch.sigmoid(resize_to(self.logits(rgb), rgb.shape[-2:]))

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """The head's output at stride 4, before upsampling and sigmoid."""
        x, kept = run_encoder(self.encoder, self.normalise(rgb), SKIP_LAYERS)
        feats = dict(zip(SKIP_LAYERS, kept))  # SKIP_LAYERS ascend: kept is in that order
        skips = [feats[i] for i in reversed(SKIP_LAYERS)]
        h, w = rgb.shape[-2:]
        # Targets of the three ×2 upsamplings: strides 16, 8, then 4 (rounded up like the encoder's).
        sizes = [skips[1].shape[-2:], skips[2].shape[-2:], ((h + 3) // 4, (w + 3) // 4)]
        for proj, block, skip, size in zip(self.skips, self.blocks, skips, sizes):
            x = block(x + proj(skip), size)
        return self.head(x)
