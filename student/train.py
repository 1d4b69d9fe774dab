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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from depthdata.errors import DepthdataError
from depthdata.store import Store, select_groups
from student.checkpoint import load_model, save_model
from student.data import training_fields, training_loader
from student.losses import LossConfig, total_loss
from student.model import StudentConfig, StudentNet, build_student, load_encoder_weights

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"


@dataclass
class TrainConfig:
    """Settings of one training run. ``size`` is ``(height, width)`` pixels to resample samples to
    (default: the store's; groups of different sizes need it). ``steps`` counts optimizer steps
    in total, including steps done before a resume."""

    store_url: str
    out_dir: str
    groups: Sequence[str] | None = None
    steps: int = 200
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    size: tuple[int, int] | None = None
    hflip: bool = True
    streams: int = 2
    num_workers: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    model: StudentConfig = field(default_factory=StudentConfig)
    encoder_weights: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    #: the committed store version to train on (default: the newest when training starts); a
    #: resumed run keeps the version it started on, even after a later build committed more
    store_version: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


@dataclass
class TrainResult:
    model: StudentNet
    checkpoint: Path
    losses: list[float]
    steps: int
    #: the committed store version trained on (``None``: the store had none)
    store_version: int | None = None


def _save(model: StudentNet, opt: torch.optim.Optimizer, loader_state: dict, step: int, losses: list[float],
          cfg: TrainConfig, ckpt: Path) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    save_model(model, ckpt / MODEL_FILE, trained_on={"store": cfg.store_url, "version": cfg.store_version,
                                                     "groups": list(cfg.groups or [])})
    state = {"step": step, "optimizer": opt.state_dict(), "data": loader_state, "torch_rng": torch.get_rng_state(),
             "losses": losses, "config": cfg.to_json()}
    tmp = ckpt / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    # Atomic rename so a crash mid-save leaves the previous checkpoint usable.
    tmp.replace(ckpt / STATE_FILE)


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoint"


def train(cfg: TrainConfig, model: StudentNet | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train (or continue training) a student; returns it in eval mode with its loss history.

    ``model`` starts from given weights (e.g. a pruned student to fine-tune); otherwise a new
    student of ``cfg.model`` is seeded from ``cfg.seed``. With ``resume`` an existing
    checkpoint in ``cfg.out_dir`` takes precedence over both.
    """
    if cfg.steps < 0 or cfg.batch_size < 1:
        raise DepthdataError(f"steps must be >= 0 and batch size >= 1, got {cfg.steps}, {cfg.batch_size}")
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
                                 cfg.streams, cfg.num_workers, cfg.store_version, plan)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, losses = 0, []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"])  # switches to the store version the run started on
        torch.set_rng_state(state["torch_rng"])
        step, losses = int(state["step"]), list(state["losses"])
    # recorded in every checkpoint (and from there in the report): what this model was trained on
    cfg = replace(cfg, store_version=ds.version, groups=list(groups))
    log.info("training on %s version %s", cfg.store_url, ds.version)
    model.train()
    batches = None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not progress)
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
        pred = model.forward_train(*(batch[name] for name in model.inputs))
        loss, terms = total_loss(pred, batch, cfg.loss, model.output)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info("step %d/%d loss %.5f (%s) epoch %d", step, cfg.steps, losses[-1],
                     ", ".join(f"{k} {float(v):.4f}" for k, v in terms.items()), ds.epoch)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(model, opt, loader.state_dict(), step, losses, cfg, ckpt)
    bar.close()
    if state is None and step == 0:
        _save(model, opt, loader.state_dict(), step, losses, cfg, ckpt)
    return TrainResult(model.eval(), ckpt / MODEL_FILE, losses, step, cfg.store_version)
