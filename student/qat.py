"""Quantization-aware fine-tuning with PyTorch 2 Export (PT2E) quantization, exported as QDQ ONNX.

PT2E lives in ``torchao`` for torch 2.14 (``torch.ao.quantization.quantize_pt2e`` is gone):
extra ``compress`` (``pip install -e '.[compress]'``). Steps (:func:`quantization_aware`):

1. ``torch.export`` the student's deployed graph (intermediate heads dropped) at ``size``, each
   call of a module called twice renamed apart (:func:`_split_call_sites`);
2. ``prepare_qat_pt2e`` with torchao's ``X86InductorQuantizer`` QAT config — int8 symmetric
   per-channel weights, uint8 per-tensor activations, the scheme onnxruntime's static QDQ uses —
   which inserts fake-quantize observers (batch norms stay, folded at conversion). The same
   recipe for every architecture;
3. fine-tune with the student's loss on store batches (:func:`fine_tune`; ``steps`` steps);
4. ``convert_pt2e`` → quantize/dequantize ops around int8 weights;
5. wrap with the contest I/O (÷255, disparity → relative depth, float) and export with the
   dynamo ONNX exporter (needs ``onnxscript``, also in the extra): QuantizeLinear/DequantizeLinear
   pairs that onnxruntime fuses into integer kernels.

A completion student (RGB and sparse LiDAR in, metres out) trains and exports one graph,
:class:`~student.model.CompletionWrapper` (inputs ``input`` and ``sparse``, as its ONNX export).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from depthdata.errors import DepthdataError
from student.arch.base import StudentNet
from student.model import DEFAULT_EPS, CompletionWrapper, ContestWrapper

log = logging.getLogger(__name__)


def _pt2e():
    try:
        import torchao.quantization.pt2e as pt2e
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    except ImportError as exc:
        raise DepthdataError(f"quantization-aware training needs torchao (pip install -e '.[compress]'): {exc}") from None
    return pt2e, prepare_qat_pt2e, convert_pt2e, X86InductorQuantizer, get_default_x86_inductor_quantization_config


class Disparity255(nn.Module):
    """The trained graph: RGB 0–255 in (as the export), disparity out (what the loss reads). Its
    parameters sit under ``student.`` as in :class:`student.model.ContestWrapper`, so the two
    traced graphs share their state-dict keys."""

    def __init__(self, student: StudentNet):
        super().__init__()
        self.student = student

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        return self.student(rgb255 / 255.0)


def _split_call_sites(graph: torch.fx.GraphModule) -> None:
    """Give each call of a module called more than once its own name in the nodes' module stack.

    The x86 quantizer groups nodes into "source partitions" by the module they came from, read
    (non-strict ``torch.export`` leaves no ``source_fn_stack``) from the innermost
    ``nn_module_stack`` entry's module path. torchvision's ``BasicBlock`` (``resnet18-unet``'s
    encoder) calls its one ``relu`` twice, so both calls land in one partition with two outputs,
    and the QAT conv-BN-ReLU fusion annotation raises "Input partition has more than one output
    node" (pytorch/ao#4478: any module with several call sites). The stack's *key* is unique per
    call (``…relu``, ``…relu@1``); copying its ``@N`` suffix onto the path splits the partition
    per call, which is what the annotation assumes. Only metadata changes: the graph, its
    parameters and the quantization recipe stay as for the other students."""
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            key, (path, cls) = next(reversed(stack.items()))
            if "@" in key:
                stack[key] = (path + key[key.index("@"):], cls)


def prepare(model: StudentNet, size: tuple[int, int], batch: int = 1, contest: bool = False,
            eps: float = DEFAULT_EPS) -> torch.fx.GraphModule:
    """Steps 1–2 of the module doc: a trainable graph with fake-quantize observers, specialised
    to inputs of ``batch × 3 × size`` (RGB 0–255): :class:`Disparity255`, or with ``contest`` the
    exported graph :class:`~student.model.ContestWrapper` (same observers, then the float tail)."""
    _, prepare_qat_pt2e, _, quantizer_cls, config = _pt2e()
    # A copy: the exported graph shares its parameter tensors with the module it was traced
    # from, so fine-tuning it would otherwise train (and switch to train mode) the caller's model.
    model = copy.deepcopy(model).drop_aux_heads().train()
    if "sparse" in model.inputs:  # trained as exported: metres out, nothing after the student
        net = CompletionWrapper(model)
    else:
        net = ContestWrapper(model, eps) if contest else Disparity255(model)
    example = _example(model, size, batch)
    graph = torch.export.export(net.train(), example).module()
    _split_call_sites(graph)
    quantizer = quantizer_cls().set_global(config(is_qat=True))
    try:
        return prepare_qat_pt2e(graph, quantizer)
    except ValueError as exc:
        raise DepthdataError(f"{model.name}: PT2E QAT preparation failed ({exc})") from None


def _example(model: StudentNet, size: tuple[int, int], batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of the wrapped graph: RGB 0–255 (and sparse metres for completion)."""
    example = list(model.example_inputs(tuple(size), batch=batch))
    example[0] = example[0] * 255
    return tuple(example)


def fine_tune(prepared: torch.fx.GraphModule, store_url: str, groups: Sequence[str], steps: int, batch_size: int = 4,
              lr: float = 1e-4, size: tuple[int, int] | None = None, seed: int = 0,
              version: int | None = None, inputs: Sequence[str] = ("rgb",), kind: str = "disparity") -> list[float]:
    """Step 3: ``steps`` AdamW steps of the default student loss on shuffled store batches (resized
    to ``size``) through the fake-quantized graph. Returns the losses. ``inputs`` and ``kind``:
    the student's (:attr:`~student.arch.base.StudentNet.inputs`, ``output``)."""
    from student.data import training_fields, training_loader
    from student.losses import LossConfig, total_loss

    plan = training_fields(store_url, groups, version, inputs=inputs)
    _, loader = training_loader(store_url, groups, batch_size, seed, size, hflip=False, streams=1, version=version,
                                fields=plan)
    _pt2e()[0].move_exported_model_to_train(prepared)
    opt = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr)
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        for batch in loader:
            feeds = [batch["rgb"] * 255, *(batch[name] for name in inputs[1:])]
            loss, _ = total_loss(prepared(*feeds), batch, LossConfig(), kind)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) >= steps:
                break
        epoch += 1
        loader.set_epoch(epoch)
    return losses


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Step 4: the quantized graph (evaluation mode)."""
    pt2e, _, convert_pt2e, _, _ = _pt2e()
    pt2e.move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)


def float_twin(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of a prepared graph with fake quantization off (evaluation mode): the same
    fine-tuned weights and batch-norm statistics in float — the FP32 reference the quantized
    graph is compared with, so that the comparison measures quantization alone."""
    pt2e = _pt2e()[0]
    twin = copy.deepcopy(prepared)
    twin.apply(pt2e.disable_fake_quant)
    twin.apply(pt2e.disable_observer)
    pt2e.move_exported_model_to_eval(twin)
    return twin


def export_onnx(converted: torch.fx.GraphModule, path: str | Path, example: tuple[torch.Tensor, ...]) -> Path:
    """Step 5: QDQ ONNX of a converted contest graph (:func:`prepare` with ``contest``) traced on
    ``example`` (batch 1; the graph is fixed-shape): input ``input`` (and ``sparse`` for a
    completion student), output ``depth``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["input", "sparse"][:len(example)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(converted, example)
        # external_data=False: one self-contained file like every other export (the default
        # writes the weights to a ``.onnx.data`` file beside it, which a copied model would lose)
        torch.onnx.export(program, example, str(path), dynamo=True, input_names=names, output_names=["depth"],
                          verbose=False, external_data=False)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def quantization_aware(model: StudentNet, out_path: str | Path, store_url: str, groups: Sequence[str], steps: int,
                       train_size: tuple[int, int], export_size: tuple[int, int], batch_size: int = 4,
                       lr: float = 1e-4, eps: float = DEFAULT_EPS, seed: int = 0,
                       version: int | None = None) -> dict:
    """The whole path (module doc): returns the ONNX path (``onnx``), the converted graph
    (``converted``), its float twin (:func:`float_twin`), the fine-tuning losses and settings. The graph is
    traced at ``batch_size × train_size`` for training and re-traced at ``1 × export_size`` for
    the ONNX file, with the fine-tuned weights and observer ranges loaded into it."""
    prepared = prepare(model, train_size, batch_size)
    losses = fine_tune(prepared, store_url, groups, steps, batch_size, lr, train_size, seed, version, model.inputs,
                       model.output)
    # The exported graph is specialised to its input shape; the same model traced at batch 1 and
    # the export size has the same nodes, so the fine-tuned weights and observer ranges load into it.
    resized = prepare(model, export_size, contest=True, eps=eps)
    missing, unexpected = resized.load_state_dict(prepared.state_dict(), strict=False)
    if unexpected or any("student" in k for k in missing):
        raise DepthdataError(f"{model.name}: the QAT graph at the export size does not match the trained one "
                             f"(unexpected {unexpected[:3]}, missing {missing[:3]})")
    twin = float_twin(resized)
    converted = convert(resized)
    path = export_onnx(converted, out_path, _example(model, tuple(export_size)))
    return {"onnx": path, "converted": converted, "float_twin": twin, "losses": losses, "steps": steps, "lr": lr, "batch_size": batch_size,
            "train_size": list(train_size), "quantizer": "torchao X86InductorQuantizer (QAT config)"}
