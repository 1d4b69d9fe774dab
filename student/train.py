"""Distillation training from a store: AdamW on :func:`student.losses.total_loss`, a step
budget, and checkpoints that resume exactly.

The architecture (``model.arch``) and the loss terms (``loss``) come from the config. Each batch
may mix samples of groups with different fields: every loss term applies to the samples that have
its fields (:func:`student.data.training_fields`, :class:`student.data.MixedCollate`).

A checkpoint directory holds ``model.safetensors`` (weights + architecture, see
:mod:`student.checkpoint`) and ``state.pt`` (step, optimizer state, stream position, torch RNG
state, loss history; plain tensors and numbers, loadable with ``torch.load(weights_only=True)``).
Resuming restores all of them, so the next step sees the same batch and the same parameters as
an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from depthdata.errors import DepthdataError
from depthdata.store import Store, select_groups
from student.checkpoint import load_model, save_model
from student.data import augmentations, training_fields, training_loader
from student.arch import Prediction
from student.losses import LossConfig, total_loss
from student.model import StudentConfig, StudentNet, build_student, load_encoder_weights
from student.optim import LossRebalancer, WeightEMA, lr_at, make_optimizer

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"


@dataclass
class TrainConfig:
    """Settings of one training run (the keys of a run's YAML file, :func:`load_config`)."""

    #: store URL (local path or fsspec URL)
    store_url: str
    #: output folder; the checkpoint goes to ``out_dir/checkpoint``
    out_dir: str
    #: ``dataset/split`` groups to train on (default: all)
    groups: Sequence[str] | None = None
    #: optimizer steps in total, including steps done before a resume
    steps: int = 200
    #: samples per step (per process under DDP)
    batch_size: int = 4
    #: (peak) learning rate
    lr: float = 1e-3
    #: weight decay (decoupled for AdamW)
    weight_decay: float = 1e-4
    #: ``adamw`` or ``sgd`` (Nesterov momentum)
    optimizer: str = "adamw"
    #: SGD momentum
    momentum: float = 0.9
    #: learning-rate schedule: ``constant``, ``cosine`` (warm-up, then cosine to ``lr·min_lr_ratio``)
    #: or ``onecycle`` (torch's OneCycleLR curve peaking at ``lr``)
    schedule: str = "constant"
    #: steps the schedule spans (default: ``steps``); set it when a run may be stopped early and
    #: resumed with more steps, so that both follow one curve
    schedule_steps: int | None = None
    #: linear warm-up steps of the cosine schedule
    warmup_steps: int = 0
    #: the cosine schedule's final learning rate, as a fraction of ``lr``
    min_lr_ratio: float = 0.0
    #: clip the gradients' global L2 norm to this (``null``: no clipping)
    clip_grad_norm: float | None = None
    #: exponential moving average of the weights with this decay, e.g. 0.999 (``null``: off); the
    #: averaged weights are what is saved, exported and returned
    ema_decay: float | None = None
    #: rebalance the loss-term weights every this many steps (Lee & Kim ECCV 2020 as adapted by
    #: Yucel et al.; 0: the configured weights throughout)
    rebalance_every: int = 0
    #: seed of model initialisation, data order and augmentation
    seed: int = 0
    #: ``[height, width]`` to resample samples to (default: the store's; groups of different sizes need it)
    size: tuple[int, int] | None = None
    #: random horizontal flips
    hflip: bool = True
    #: random zoom: crop each side to a fraction in ``[zoom_min, 1]`` and resample back (1: off)
    zoom_min: float = 1.0
    #: brightness, contrast and saturation jitter of ± this fraction (0: off)
    color_jitter: float = 0.0
    #: probability of a Gaussian blur of the input (σ 0.1–2 px; 0: off)
    blur: float = 0.0
    #: interleaved shard streams per process
    streams: int = 2
    #: DataLoader worker processes (must divide ``streams``)
    num_workers: int = 0
    #: save a checkpoint every this many steps (and at the end)
    checkpoint_every: int = 50
    #: log the loss terms every this many steps
    log_every: int = 10
    #: the architecture and its options (:class:`student.arch.StudentConfig`)
    model: StudentConfig = field(default_factory=StudentConfig)
    #: local torchvision classifier weights for the encoder (``.pth`` or ``.safetensors``)
    encoder_weights: str | None = None
    #: loss terms and weights (:class:`student.losses.LossConfig`)
    loss: LossConfig = field(default_factory=LossConfig)
    #: the committed store version to train on (default: the newest when training starts); a
    #: resumed run keeps the version it started on, even after a later build committed more
    store_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON): nested ``model`` and ``loss`` mappings, ``size`` a list."""
        d = asdict(self)
        d["loss"] = self.loss.to_dict()
        d["size"] = list(self.size) if self.size is not None else None
        d["groups"] = list(self.groups) if self.groups is not None else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @staticmethod
    def from_dict(d: Mapping[str, Any], source: str = "training config") -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error naming ``source``."""
        d = dict(d)
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DepthdataError(f"{source}: unknown setting(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(known))})")
        try:
            if isinstance(d.get("model"), Mapping):
                d["model"] = StudentConfig(**d["model"])
            if isinstance(d.get("loss"), Mapping):
                d["loss"] = LossConfig.from_dict(d["loss"])
            if d.get("size") is not None:
                d["size"] = tuple(int(v) for v in d["size"])
            return TrainConfig(**d)
        except TypeError as exc:
            raise DepthdataError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings mapping of a run's YAML file (keys of :class:`TrainConfig`; see the docs)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DepthdataError(f"{path}: cannot read the training config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise DepthdataError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DepthdataError(f"{path}: a training config is a mapping of settings, got {type(data).__name__}")
    return data


@dataclass
class TrainResult:
    model: StudentNet
    checkpoint: Path
    losses: list[float]
    steps: int
    #: the committed store version trained on (``None``: the store had none)
    store_version: int | None = None



class _TrainForward(nn.Module):
    """``forward`` = the student's ``forward_train``, as a tuple: DistributedDataParallel
    synchronises gradients only through the wrapped module's ``forward``."""

    def __init__(self, student: StudentNet):
        super().__init__()
        self.student = student

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred = self.student.forward_train(*inputs)
        return (pred.main, *pred.aux)


def _distributed() -> tuple[int, int]:
    """``(rank, world size)``: from an initialised process group, else from torchrun's environment
    (then the gloo group, or NCCL on GPUs, is initialised here), else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mean_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return values
    import torch.distributed as dist

    values = values.detach().clone()
    dist.all_reduce(values)
    return values / world


def _term_means(terms: dict[str, torch.Tensor], names: list[str], world: int) -> dict[str, float]:
    """Each term's mean over the processes that computed it this step (the same on every rank,
    so rebalanced weights stay in step)."""
    packed = torch.zeros(2 * len(names))
    for i, k in enumerate(names):
        if k in terms:
            packed[2 * i], packed[2 * i + 1] = float(terms[k]), 1.0
    packed = _mean_over_ranks(packed, world) * world
    return {k: float(packed[2 * i] / packed[2 * i + 1]) for i, k in enumerate(names) if packed[2 * i + 1] > 0}


def _save(model: StudentNet, raw: StudentNet, opt: torch.optim.Optimizer, data_states: list[dict], step: int,
          losses: list[float], cfg: TrainConfig, ckpt: Path, extra: dict[str, Any]) -> None:
    """``model`` (the EMA weights when averaging) to ``model.safetensors``; optimizer, stream
    position per rank, RNG, losses and ``extra`` (EMA/raw weights, rebalancer) to ``state.pt``;
    the resolved settings to ``config.yaml``."""
    ckpt.mkdir(parents=True, exist_ok=True)
    save_model(model, ckpt / MODEL_FILE, trained_on={"store": cfg.store_url, "version": cfg.store_version,
                                                     "groups": list(cfg.groups or [])})
    state = {"step": step, "optimizer": opt.state_dict(), "data": data_states[0], "data_ranks": data_states,
             "torch_rng": torch.get_rng_state(), "losses": losses, "config": cfg.to_json(), **extra}
    if raw is not model:  # with EMA the file holds the average; resuming needs the raw weights too
        state["raw_model"] = {k: v.detach().clone() for k, v in raw.state_dict().items()}
    tmp = ckpt / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    # Atomic rename so a crash mid-save leaves the previous checkpoint usable.
    tmp.replace(ckpt / STATE_FILE)
    (ckpt / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoint"


def train(cfg: TrainConfig, model: StudentNet | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train (or continue training) a student; returns it in eval mode with its loss history.

    ``model`` starts from given weights (e.g. a pruned student to fine-tune); otherwise a new
    student of ``cfg.model`` is seeded from ``cfg.seed``. With ``resume`` an existing
    checkpoint in ``cfg.out_dir`` takes precedence over both. Under ``torchrun`` (``WORLD_SIZE``
    > 1) every process trains on its share of each epoch with DistributedDataParallel (gloo on
    CPU); rank 0 writes the checkpoint, which keeps every rank's stream position.
    """
    if cfg.steps < 0 or cfg.batch_size < 1:
        raise DepthdataError(f"steps must be >= 0 and batch size >= 1, got {cfg.steps}, {cfg.batch_size}")
    rank, world = _distributed()
    torch.manual_seed(cfg.seed)
    groups = select_groups(Store.open(cfg.store_url, version=cfg.store_version), cfg.groups)
    ckpt = checkpoint_dir(cfg.out_dir)
    state = None
    if resume and (ckpt / STATE_FILE).is_file():
        model = load_model(ckpt / MODEL_FILE)
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        log.info("resuming from %s at step %d", ckpt, state["step"])
    elif model is None:
        model = build_student(cfg.model)
        if cfg.encoder_weights:
            load_encoder_weights(model, cfg.encoder_weights)
    cfg.loss.validate(model.output)
    plan = training_fields(cfg.store_url, groups, cfg.store_version, cfg.loss.term_fields(), model.inputs)
    ds, loader = training_loader(cfg.store_url, groups, cfg.batch_size, cfg.seed, cfg.size, cfg.hflip,
                                 cfg.streams, cfg.num_workers, cfg.store_version, plan, rank, world,
                                 augmentations(cfg.zoom_min, cfg.color_jitter, cfg.blur))
    ema = None
    if cfg.ema_decay is not None:
        ema = WeightEMA(model, cfg.ema_decay)
        if state is not None:  # the file holds the average; the raw weights are in the state
            model.load_state_dict(state["raw_model"])
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum)
    base_weights = {t.name: t.weight for t in cfg.loss.terms}
    balancer = LossRebalancer(base_weights, cfg.rebalance_every) if cfg.rebalance_every else None
    step, losses = 0, []
    if state is not None:
        if state.get("world_size", 1) != world:
            raise DepthdataError(f"{ckpt}: saved by {state.get('world_size', 1)} process(es); resume it with as many "
                                 f"(this run has {world})")
        opt.load_state_dict(state["optimizer"])
        # switches to the store version the run started on
        loader.load_state_dict(state.get("data_ranks", [state["data"]])[rank])
        torch.set_rng_state(state["torch_rng"])
        step, losses = int(state["step"]), list(state["losses"])
        if balancer is not None:
            balancer.load_state_dict(state["rebalance"])
    # recorded in every checkpoint (and from there in the report): what this model was trained on
    cfg = replace(cfg, store_version=ds.version, groups=list(groups))
    log.info("training %s on %s version %s (process %d of %d)", model.name, cfg.store_url, ds.version, rank, world)
    model.train()
    net: nn.Module = _TrainForward(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    horizon = cfg.schedule_steps or cfg.steps
    names = list(base_weights)

    def save() -> None:
        data_states = _gather(loader.state_dict(), world)
        if rank == 0:
            extra = {"world_size": world}
            if balancer is not None:
                extra["rebalance"] = balancer.state_dict()
            _save(ema.model if ema else model, model, opt, data_states, step, losses, cfg, ckpt, extra)

    batches = None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not progress or rank != 0)
    while step < cfg.steps:
        if batches is None:
            if ds.delivered >= len(ds):  # the checkpoint was taken at an epoch's end
                loader.set_epoch(ds.epoch + 1)
            batches = iter(loader)
        try:
            batch = next(batches)
        except StopIteration:
            loader.set_epoch(ds.epoch + 1)
            batches = None
            continue
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.schedule, horizon, cfg.warmup_steps, cfg.min_lr_ratio)
        main, *aux = net(*(batch[name] for name in model.inputs))
        weights = balancer.weights if balancer is not None else None
        loss, terms = total_loss(Prediction(main, tuple(aux)), batch, cfg.loss, model.output, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        losses.append(float(_mean_over_ranks(loss.detach().reshape(1), world)))
        if balancer is not None:
            balancer.observe(_term_means(terms, names, world))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            log.info("step %d/%d loss %.5f (%s) epoch %d", step, cfg.steps, losses[-1],
                     ", ".join(f"{k} {float(v):.4f}" for k, v in terms.items()), ds.epoch)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save()
    bar.close()
    if state is None and step == 0:
        save()
    out = ema.model if ema is not None else model
    return TrainResult(out.eval(), ckpt / MODEL_FILE, losses, step, cfg.store_version)


def _gather(state: dict, world: int) -> list[dict]:
    """Every rank's stream state, in rank order (each rank reads its own share of an epoch)."""
    if world == 1:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * world
    dist.all_gather_object(states, state)
    return states
