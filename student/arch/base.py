"""What every student architecture shares: its configuration, its base class, and how its size is
counted.

Conventions (every architecture of :mod:`student.arch`):

* input ``rgb``: float ``B×3×H×W`` RGB in **[0, 1]** (ImageNet normalisation happens inside);
  completion models also take ``sparse``: ``B×1×H×W`` LiDAR depth in metres, 0 = no return;
* output ``B×1×H×W`` at the input resolution, any ``H×W`` (multiples of 32 waste nothing):
  relative **disparity** in [0, 1], larger = nearer (the store's ``teacher`` convention), for
  :attr:`StudentNet.output` ``"disparity"``; metric **depth** in metres for ``"depth"``;
* :meth:`StudentNet.forward` is the deployed graph (what is exported and evaluated);
  :meth:`StudentNet.forward_train` also returns the intermediate predictions some architectures
  are trained with (deep supervision); those heads never run in :meth:`~StudentNet.forward`, so
  they are absent from the exported graph.

Size: :func:`profile` counts parameters of the deployed graph and multiply-accumulates with
:class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, transposed convolutions and
matrix products; ``MACs = FLOPs / 2``; element-wise ops, batch norm and resampling are not
counted) on the meta device, so counting a 480×640 forward pass costs no arithmetic.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from depthdata.errors import DepthdataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the LPCVC 2025 Track 3 input size, at which each architecture documents its size
CONTEST_SIZE = (480, 640)


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a student (saved beside every checkpoint as JSON). Options an
    architecture does not read must keep their defaults (:func:`student.arch.build` says so)."""

    #: registered architecture name (:data:`student.arch.ARCHITECTURES`)
    arch: str = "fpn-mnv3s"
    #: torchvision MobileNet of ``fpn-mnv3s``: mobilenet_v3_small, mobilenet_v3_large, mobilenet_v2
    encoder: str = "mobilenet_v3_small"
    #: decoder width of ``fpn-mnv3s``
    decoder_channels: int = 32
    #: MobileNetV3 "minimalistic" style (as TF's Small-Minimalistic): ReLU for Hardswish and no
    #: squeeze-excitation, so every conv fuses with its activation into one int8 kernel instead of
    #: dequantize → HardSigmoid → Mul → quantize. Encoder-only pretrained weights no longer fit.
    int8_friendly: bool = False
    #: build the intermediate prediction heads of architectures trained with deep supervision
    #: (``mnv2-fbnet``); ``False`` is the deployed graph alone (pruned models drop them)
    aux_heads: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> StudentConfig:
        # Checkpoints written before ``arch`` existed hold the fpn-mnv3s options only: defaults fill in.
        return StudentConfig(**json.loads(text))

    def non_default(self) -> set[str]:
        """Names of the options set to something other than their default (``arch`` excluded)."""
        return {f.name for f in fields(self) if f.name != "arch" and getattr(self, f.name) != f.default}


@dataclass(frozen=True)
class Prediction:
    """What :meth:`StudentNet.forward_train` returns: the main output and the intermediate ones
    (each already at the input resolution and in the main output's convention)."""

    main: torch.Tensor
    aux: tuple[torch.Tensor, ...] = ()


class StudentNet(nn.Module, ABC):
    """Base class of the student architectures (see the module doc for the I/O convention).

    A subclass sets the class attributes below, builds its layers in ``__init__(config)`` and
    implements :meth:`forward`; :func:`student.arch.register` makes it buildable by name.
    """

    #: registry name, set by :func:`student.arch.register`
    name: ClassVar[str] = ""
    #: the design followed (paper / report)
    source: ClassVar[str] = ""
    #: ``"disparity"`` (relative, [0, 1], larger = nearer) or ``"depth"`` (metres)
    output: ClassVar[str] = "disparity"
    #: inputs of :meth:`forward`, in order: ``("rgb",)`` or ``("rgb", "sparse")``
    inputs: ClassVar[tuple[str, ...]] = ("rgb",)
    #: :class:`StudentConfig` options the architecture reads (besides ``arch``)
    options: ClassVar[frozenset[str]] = frozenset()
    #: keys of a torchvision classifier's state dict that belong to :attr:`encoder` start with this
    encoder_prefix: ClassVar[str] = "features."

    config: StudentConfig
    #: the part that ImageNet classifier weights load into (:func:`student.model.load_encoder_weights`)
    encoder: nn.Module

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        #: full scale of the ``rgb`` input: 1 (RGB in [0, 1], the convention) or 255 in the
        #: export-only copies made by :func:`fold_input_normalisation`
        self.input_scale = 1.0

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.input_scale != 1.0:
            # folded: the 1/(scale · std) factors are in the first conv's weights
            return rgb - self.mean
        return (rgb - self.mean) / self.std

    @property
    @abstractmethod
    def prediction_conv(self) -> nn.Conv2d:
        """The final convolution that makes the one-channel prediction (never pruned; it and
        everything after it stay float in INT8 exports)."""

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """The prediction conv's output at its own resolution (stride 2 or 4), before the bilinear
        upsampling to the input size and the sigmoid: an architecture whose :meth:`forward` is
        ``sigmoid(resize_to(logits(rgb), rgb size))`` implements it, so the export can finish the
        depth mapping at low resolution (:class:`student.model.ContestWrapper`). Others raise
        :class:`NotImplementedError` (:meth:`has_logits` is then ``False``)."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no low-resolution logits")

    @property
    def has_logits(self) -> bool:
        """Whether the architecture implements :meth:`logits`."""
        return type(self).logits is not StudentNet.logits

    def forward_train(self, rgb: torch.Tensor, sparse: torch.Tensor | None = None) -> Prediction:
        """The main prediction and the intermediate ones (none unless the architecture has them)."""
        return Prediction(self(rgb) if sparse is None else self(rgb, sparse))

    def drop_aux_heads(self) -> StudentNet:
        """The deployed graph alone: remove intermediate heads (in place) and record it in
        :attr:`config`, so the weights reload without them. No-op without heads."""
        return self

    def example_inputs(self, size: tuple[int, int], batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Random inputs of ``size = (height, width)`` for tracing (export, pruning, counting),
        on the device and dtype of the model's parameters."""
        p = next(self.parameters())
        rgb = torch.rand(batch, 3, *size, device=p.device, dtype=p.dtype)
        if "sparse" not in self.inputs:
            return (rgb,)
        sparse = torch.rand(batch, 1, *size, device=p.device, dtype=p.dtype) * 9 + 1
        keep = torch.rand(batch, 1, *size, device=p.device) < 0.05
        return rgb, torch.where(keep, sparse, torch.zeros_like(sparse))


def first_conv(model: StudentNet) -> nn.Conv2d:
    """The convolution that reads the normalised RGB: the encoder's first (every architecture's
    encoder starts with its stem conv, in registration order as in execution order); for a
    network without an ``encoder``, its own first (the fitted ``shift`` head aside)."""
    root = getattr(model, "encoder", None) or model
    conv = next((m for name, m in root.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("shift")),
                None)
    if conv is None or conv.in_channels != 3:
        raise DepthdataError(f"{model.name}: the encoder does not start with a 3-channel convolution")
    return conv


def fold_input_normalisation(model: StudentNet, scale: float = 255.0) -> StudentNet:
    """A copy of ``model`` that takes RGB in ``0..scale`` (the export's 0–255) and computes the
    same outputs with one full-resolution pass before its first conv instead of three.

    ``(rgb/scale − mean)/std`` becomes ``rgb − scale·mean`` with the per-channel factors
    ``1/(scale·std)`` multiplied into the first conv's weights. Exact, padding included: the
    conv zero-pads ``rgb − scale·mean``, which is zero exactly where the normalised input is.
    The gain is small: 1.03–1.05× on ``lpcvc-mnv3s`` in onnxruntime FP32, none measurable on
    ``mnv2-fbnet`` (``benchmarks/NOTES.md``, export). A :class:`student.shift.ShiftHead`
    (``shift``) gets the same input scale (it divides after its own downsampling)."""
    if model.input_scale != 1.0:
        raise DepthdataError(f"{model.name}: the input normalisation is already folded")
    folded = copy.deepcopy(model)
    conv = first_conv(folded)
    with torch.no_grad():
        conv.weight.mul_((1.0 / (scale * folded.std)).view(1, 3, 1, 1).to(conv.weight))
        folded.mean.mul_(scale)
    folded.input_scale = float(scale)
    shift = getattr(folded, "shift", None)
    if shift is not None:
        shift.input_scale = float(scale)
    return folded


def run_encoder(blocks: nn.Module, x: torch.Tensor, keep: Iterable[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x`` through ``blocks`` in order: the last output, and the outputs of the blocks whose
    0-based index is in ``keep``, in block order (the skips a decoder takes)."""
    keep = set(keep)
    kept = []
    for i, block in enumerate(blocks):
        x = block(x)
        if i in keep:
            kept.append(x)
    return x, kept


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling to ``size`` (no-op when it already has it): the one upsampling every
    decoder uses, so odd input sizes (not multiples of 32) line up with their skips."""
    h, w = (int(v) for v in x.shape[-2:])
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return x
    if size[0] % h == 0 and size[1] % w == 0 and size[0] // h == size[1] // w:
        # The same sampling as ``size=`` when the factor is a whole number, but exported to ONNX
        # as a Resize with constant scales instead of sizes computed from Shape/Slice/Concat:
        # onnxruntime then runs the INT8 model's Resize on uint8 between its Q/DQ pair.
        return F.interpolate(x, scale_factor=float(size[0] // h), mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn_relu(cin: int, cout: int, k: int, relu: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), relu(inplace=True))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Profile:
    """Size of an architecture's deployed graph at ``size``."""

    params: int
    macs: int
    size: tuple[int, int]


def profile(cls: type[StudentNet], config: StudentConfig | None = None,
            size: tuple[int, int] = CONTEST_SIZE) -> Profile:
    """Parameters and MACs of the deployed graph of ``cls`` (intermediate heads dropped) for a
    batch-1 input of ``size``, counted on the meta device (module doc)."""
    config = config or StudentConfig(arch=cls.name)
    with torch.device("meta"):
        model = cls(config).drop_aux_heads().eval()
        inputs = model.example_inputs(size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return Profile(count_params(model), counter.get_total_flops() // 2, tuple(size))


def count_macs(model: StudentNet, size: tuple[int, int] = CONTEST_SIZE) -> int:
    """Multiply-accumulates of ``model``'s forward pass (as it is now: pruned or not) for a batch-1
    input of ``size``, counted like :func:`profile` on a meta-device copy (no arithmetic)."""
    meta = copy.deepcopy(model).to("meta").eval()
    inputs = meta.example_inputs(tuple(size))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(*inputs)
    return counter.get_total_flops() // 2


def check_options(cls: type[StudentNet], config: StudentConfig) -> None:
    """Refuse options the architecture would silently ignore."""
    unused = sorted(config.non_default() - cls.options)
    if unused:
        raise DepthdataError(f"student architecture {cls.name!r} does not use option(s) {', '.join(unused)} "
                             f"(it reads: {', '.join(sorted(cls.options)) or 'none'})")
