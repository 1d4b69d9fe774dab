"""``completion``: depth completion, RGB + sparse LiDAR in, dense metric depth out (DMD3C student).

Source: the training recipe is DMD3C's (Liang et al., "Distilling Monocular Foundation Model
for Fine-grained Depth Completion", CVPR 2025): a completion network pre-trained on simulated
LiDAR (this store's ``sparse`` field) with a scale-and-shift-invariant loss against the
monocular teacher, then supervised with metric returns. DMD3C's own network (BP-Net) is far too
large for this project; the network here is a light **two-branch encoder** in the manner of
Jaritz et al. ("Sparse and Dense Data with CNNs", 3DV 2018): an RGB branch (MobileNetV3-Small)
and a sparse-depth branch (five stride-2 conv-BN-ReLU layers, 16–64 channels) whose features are
added, scale by scale (strides 4–32), into the FPN decoder of ``fpn-mnv3s`` (32 channels).

Scale: the sparse branch sees ``[m·log(z/s), m]`` (``m`` = return mask, ``s`` = geometric
mean of the image's returns, 1 without any) and the head predicts a log-ratio ``r`` at stride 4,
upsampled bilinearly; the output is ``s·exp(r)`` (``r`` clamped to ±6). The network itself is
therefore scale-free — one model serves rooms and streets — and the returns set the metric
scale; an image without returns gets depth relative to 1 m.

I/O: ``forward(rgb, sparse)``: ``rgb`` float ``B×3×H×W`` in [0, 1], ``sparse`` ``B×1×H×W``
metres with 0 = no return; output metric **depth** ``B×1×H×W`` in metres (> 0).

Size (deployed graph, :func:`~student.arch.base.profile`, FlopCounterMode): **1.04 M parameters,
0.84 GMACs** at 480×640.
"""

from __future__ import annotations

import torch
from torch import nn

from student.arch import register
from student.arch.base import StudentConfig, StudentNet, conv_bn_relu, resize_to, run_encoder
from student.arch.fpn_mnv3s import mobilenet_features, out_channels, stage_ends

DEPTH_WIDTHS = (16, 24, 32, 48, 64)  # sparse branch, strides 2 … 32
DECODER = 32
MAX_LOG_RATIO = 6.0


def log_scale(sparse: torch.Tensor) -> torch.Tensor:
    """Per image, the mean of ``log z`` over the returns (0 without any): ``B×1×1×1``."""
    m = (sparse > 0).to(sparse.dtype)
    logs = torch.log(torch.where(sparse > 0, sparse, torch.ones_like(sparse))) * m
    return logs.sum((1, 2, 3), keepdim=True) / m.sum((1, 2, 3), keepdim=True).clamp_min(1.0)


@register("completion")
class Completion(StudentNet):
    """Two-branch (RGB, sparse depth) encoder + FPN decoder → metric depth (module doc)."""

    source = ("DMD3C recipe (Liang et al. CVPR 2025); two-branch encoder after Jaritz et al. 3DV 2018 "
              "(MobileNetV3-Small RGB branch + light sparse branch, additive fusion, FPN decoder)")
    output = "depth"
    inputs = ("rgb", "sparse")
    options = frozenset({"int8_friendly"})

    def __init__(self, config: StudentConfig = StudentConfig(arch="completion")):
        super().__init__(config)
        self.encoder = mobilenet_features("mobilenet_v3_small", config.int8_friendly)
        self.stage_ends = stage_ends(self.encoder)
        widths = [out_channels(self.encoder[i]) for i in self.stage_ends]
        chans = (2, *DEPTH_WIDTHS)
        self.sparse_branch = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ci, co, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(co),
                          nn.ReLU(inplace=True))
            for ci, co in zip(chans[:-1], chans[1:]))
        self.lateral = nn.ModuleList(nn.Conv2d(w, DECODER, 1) for w in widths)
        # Sparse features at strides 4, 8, 16, 32 (branch outputs 1–4) join the laterals.
        self.sparse_lateral = nn.ModuleList(nn.Conv2d(c, DECODER, 1) for c in DEPTH_WIDTHS[1:])
        self.smooth = nn.ModuleList(conv_bn_relu(DECODER, DECODER, 3) for _ in widths[:-1])
        self.head = nn.Sequential(conv_bn_relu(DECODER, DECODER // 2, 3), nn.Conv2d(DECODER // 2, 1, 1))

    @property
    def prediction_conv(self) -> nn.Conv2d:
        return self.head[-1]

    def forward(self, rgb: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """``rgb`` ``B×3×H×W`` in [0, 1], ``sparse`` ``B×1×H×W`` metres (0 = none) → depth metres."""
        mu = log_scale(sparse)
        m = (sparse > 0).to(sparse.dtype)
        d = torch.cat([m * (torch.log(torch.where(sparse > 0, sparse, torch.ones_like(sparse))) - mu), m], dim=1)
        dfeats = []
        for layer in self.sparse_branch:
            d = layer(d)
            dfeats.append(d)
        _, skips = run_encoder(self.encoder, self.normalise(rgb), self.stage_ends)
        lats = [lat(s) + slat(resize_to(df, s.shape[-2:]))
                for lat, slat, s, df in zip(self.lateral, self.sparse_lateral, skips, dfeats[1:])]
        y = lats[-1]
        for k in range(len(lats) - 2, -1, -1):
            y = self.smooth[k](lats[k] + resize_to(y, lats[k].shape[-2:]))
        r = resize_to(self.head(y), rgb.shape[-2:]).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        return torch.exp(r + mu)
