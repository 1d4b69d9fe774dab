"""``mnv2-fbnet``: MobileNetV2 encoder, FBNet-style decoder and two intermediate heads (Yucel et al.).

Source: Yucel, Dimaridou, Drosou, Saà-Garriga, "Real-time Monocular Depth Estimation with
Sparse Supervision on Mobile", CVPR 2021 Workshops (arXiv 2105.12053): MobileNetV2 encoder
(Sandler et al. CVPR 2018), a decoder of FBNet (Wu et al. CVPR 2019) search-space blocks, i.e.
inverted residuals ``ir_k{3,5}_e{1,6}`` (1×1 expansion ×e → k×k depthwise → 1×1 projection,
residual when shapes match), and intermediate predictions used only while training; about
2.6 M parameters.

Widths and block choices here are this project's (the paper gives the building blocks and the
size, not a layer table): encoder ``features[0:18]`` (the 1280-channel classifier conv left out),
skips at strides 2, 4, 8, 16 (16, 24, 32, 96 ch) and 32 (320 ch). Each of the four decoder levels
upsamples ×2 (bilinear), concatenates the skip, merges with ``ir_k5_e1`` to the level's width
(208, 96, 48, 24) and refines with ``ir_k3_e6``, ``ir_k3_e6``, ``ir_k3_e3`` and nothing at stride
2 (widths chosen to land at the paper's 2.6 M parameters). The prediction is a 1×1 conv at stride 2,
upsampled bilinearly to the input size, then a sigmoid. Intermediate heads (1×1 conv + sigmoid)
read the stride-16 and stride-8 levels; :meth:`~Mnv2FBNet.forward_train` returns them upsampled to
the input size, :meth:`~Mnv2FBNet.forward` never runs them, so they are absent from the exported
graph; :meth:`~Mnv2FBNet.drop_aux_heads` removes their weights (pruning does).

I/O: :mod:`student.arch.base` convention, output relative disparity in [0, 1].

Size (deployed graph, :func:`~student.arch.base.profile`, FlopCounterMode): **2.62 M parameters,
3.86 GMACs** at 480×640 (the two heads add 306 parameters in training).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torchvision
from torch import nn

from student.arch import register
from student.arch.base import Prediction, StudentConfig, StudentNet, resize_to, run_encoder

SKIP_LAYERS = (1, 3, 6, 13)  # strides 2, 4, 8, 16 of torchvision's mobilenet_v2.features
ENCODER_END = 18  # features[18] (320 → 1280 for the classifier) is not used
WIDTHS = (208, 96, 48, 24)  # decoder levels at strides 16, 8, 4, 2
REFINE_EXPANSION = (6, 6, 3, 0)  # ir_k3_e{e} after each merge; none at stride 2 (its MACs cost most)
AUX_LEVELS = (0, 1)  # intermediate heads on the stride-16 and stride-8 levels


class InvertedResidual(nn.Module):
    """FBNet ``ir_k{k}_e{e}``: 1×1 expand (skipped when e = 1) → k×k depthwise → 1×1 project,
    BN after each, ReLU6 after the first two; identity shortcut when ``cin == cout``."""

    def __init__(self, cin: int, cout: int, k: int, e: int):
        super().__init__()
        mid = cin * e
        layers: list[nn.Module] = []
        if e != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(mid, mid, k, padding=k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
                   nn.ReLU6(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Level(nn.Module):
    """One decoder level: ×2 up to the skip's size, concatenate, ``ir_k5_e1`` merge, then
    ``ir_k3_e{refine}`` (none when ``refine`` is 0)."""

    def __init__(self, cin: int, cskip: int, cout: int, refine: int):
        super().__init__()
        self.merge = InvertedResidual(cin + cskip, cout, 5, 1)
        self.refine = InvertedResidual(cout, cout, 3, refine) if refine else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.refine(self.merge(torch.cat([resize_to(x, skip.shape[-2:]), skip], dim=1)))


@register("mnv2-fbnet")
class Mnv2FBNet(StudentNet):
    """MobileNetV2 + FBNet-block decoder + intermediate heads for training (module doc)."""

    source = "Yucel et al., CVPRW 2021 (arXiv 2105.12053): MobileNetV2 + FBNet-style decoder, intermediate heads"
    options = frozenset({"aux_heads"})

    def __init__(self, config: StudentConfig = StudentConfig(arch="mnv2-fbnet")):
        super().__init__(config)
        # weights=None: pretrained URLs are unreachable offline (load_encoder_weights reads a local file).
        self.encoder = torchvision.models.mobilenet_v2(weights=None).features[:ENCODER_END]
        skip_widths = [self._width(i) for i in SKIP_LAYERS]
        cins = (self._width(ENCODER_END - 1), *WIDTHS[:-1])
        self.levels = nn.ModuleList(Level(ci, cs, co, e) for ci, cs, co, e
                                    in zip(cins, reversed(skip_widths), WIDTHS, REFINE_EXPANSION))
        self.head = nn.Conv2d(WIDTHS[-1], 1, 1)
        self.aux = nn.ModuleList(nn.Conv2d(WIDTHS[i], 1, 1) for i in AUX_LEVELS) if config.aux_heads else None

    def _width(self, index: int) -> int:
        return [m for m in self.encoder[index].modules() if isinstance(m, nn.Conv2d)][-1].out_channels

    @property
    def prediction_conv(self) -> nn.Conv2d:
        return self.head

    def _decode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, kept = run_encoder(self.encoder, self.normalise(rgb), SKIP_LAYERS)
        feats = dict(zip(SKIP_LAYERS, kept))  # SKIP_LAYERS ascend: kept is in that order
        levels = []
        for level, i in zip(self.levels, reversed(SKIP_LAYERS)):
            x = level(x, feats[i])
            levels.append(x)
        return self.head(x), levels

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` float ``B×3×H×W`` in [0, 1] → disparity ``B×1×H×W`` in [0, 1] (no intermediate heads)."""
        return torch.sigmoid(resize_to(self.logits(rgb), rgb.shape[-2:]))

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """The head's output at stride 2, before upsampling and sigmoid."""
        return self._decode(rgb)[0]

    def forward_train(self, rgb: torch.Tensor, sparse: torch.Tensor | None = None) -> Prediction:
        logits, levels = self._decode(rgb)
        main = torch.sigmoid(resize_to(logits, rgb.shape[-2:]))
        if self.aux is None:
            return Prediction(main)
        size = rgb.shape[-2:]
        return Prediction(main, tuple(torch.sigmoid(resize_to(head(levels[i]), size))
                                      for head, i in zip(self.aux, AUX_LEVELS)))

    def drop_aux_heads(self) -> StudentNet:
        self.aux = None
        self.config = replace(self.config, aux_heads=False)
        return self
