"""Training recipes (student.optim, student.train): learning-rate schedules against torch's own
schedulers, the weight average and loss rebalancing against hand values, YAML configs with
command-line overrides, exact resume of a run using all of them, and DDP under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from student_fixtures import build_store

from depthdata.errors import DepthdataError
from student.arch import StudentConfig
from student.losses import LossConfig, LossTerm
from student.optim import LossRebalancer, WeightEMA, lr_at, make_optimizer
from student.train import CONFIG_FILE, STATE_FILE, TrainConfig, checkpoint_dir, load_config, train

ROOT = Path(__file__).resolve().parent.parent


def _torch_lrs(make_scheduler, steps, lr=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_follow_torchs_schedulers():
    steps = 20
    onecycle = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=steps), steps)
    np.testing.assert_allclose([lr_at(s, 0.1, "onecycle", steps) for s in range(steps)], onecycle, rtol=1e-9)
    cosine = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.01), steps)
    np.testing.assert_allclose([lr_at(s, 0.1, "cosine", steps, min_ratio=0.1) for s in range(steps)], cosine,
                               rtol=1e-9)
    # warm-up: linear to lr over 4 steps, then the cosine over the remaining 16
    assert [lr_at(s, 0.1, "cosine", steps, warmup=4) for s in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert lr_at(12, 0.1, "cosine", steps, warmup=4) == pytest.approx(0.05)  # half-way: cos(π/2)
    assert lr_at(7, 0.1, "constant", steps) == 0.1
    with pytest.raises(DepthdataError, match="schedule"):
        lr_at(0, 0.1, "linear", steps)
    with pytest.raises(DepthdataError, match="optimizer"):
        make_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], 0.1, 0.0)


def test_weight_ema_hand_values():
    model = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 2.0]))
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([3.0, 0.0]))
        model.running_mean.copy_(torch.tensor([5.0, 6.0]))
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 0]))
    torch.testing.assert_close(ema.model.running_mean, torch.tensor([5.0, 6.0]))  # buffers are copied
    assert not ema.model.weight.requires_grad


def test_loss_rebalancing_hand_values():
    r = LossRebalancer({"a": 1.0, "b": 1.0}, every=2)
    for _ in range(2):
        r.observe({"a": 4.0, "b": 1.0})
    # first period: every term contributes equally (λ·L̄ equal), weights still sum to 2
    assert r.weights == pytest.approx({"a": 0.4, "b": 1.6})
    r.observe({"a": 2.0, "b": 0.25})
    assert r.weights == pytest.approx({"a": 0.4, "b": 1.6})  # mid-period: unchanged
    r.observe({"a": 2.0, "b": 0.25, "c": 9.0})  # unknown terms are ignored
    # a kept 1/2 of its initial value, b 1/4: a's weighted contribution is twice b's
    wa, wb = r.weights["a"] * 2.0, r.weights["b"] * 0.25
    assert wa / wb == pytest.approx(2.0) and r.weights["a"] + r.weights["b"] == pytest.approx(2.0)
    again = LossRebalancer({"a": 1.0, "b": 1.0}, every=2)
    again.load_state_dict(r.state_dict())
    assert again.weights == r.weights and again.initial == r.initial


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(str(tmp_path_factory.mktemp("recipes") / "s.zarr"), n=6, shard_size=3, h=32, w=48)


RECIPE = dict(model=StudentConfig(arch="lpcvc-mnv3s"), optimizer="sgd", lr=0.05, schedule="onecycle",
              schedule_steps=4, clip_grad_norm=0.5, ema_decay=0.9, rebalance_every=2,
              loss=LossConfig((LossTerm("ssi", 1.0), LossTerm("rank", 0.5),
                               LossTerm("distill", 0.5, {"mode": "rmse"}))))


def _cfg(store, out, steps, **kw):
    return TrainConfig(store_url=store, out_dir=str(out), steps=steps, batch_size=2, streams=1, checkpoint_every=100,
                       seed=5, **kw)


def test_resume_with_sgd_onecycle_clipping_ema_and_rebalancing_equals_an_uninterrupted_run(store, tmp_path):
    full = train(_cfg(store, tmp_path / "a", 4, **RECIPE), progress=False)
    part = train(_cfg(store, tmp_path / "b", 2, **RECIPE), progress=False)
    resumed = train(_cfg(store, tmp_path / "b", 4, **RECIPE), progress=False)
    assert resumed.losses == full.losses and resumed.losses[:2] == part.losses
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    state = torch.load(checkpoint_dir(tmp_path / "a") / STATE_FILE, weights_only=True)
    # the saved and returned model is the average, the raw weights are kept to resume
    raw = state["raw_model"]
    assert any(not torch.equal(raw[k], v) for k, v in full.model.state_dict().items() if v.is_floating_point())
    assert set(state["rebalance"]["weights"]) == {"ssi", "rank", "distill"}
    assert state["rebalance"]["weights"] != {"ssi": 1.0, "rank": 0.5, "distill": 0.5}


def test_yaml_config_with_command_line_overrides_and_the_resolved_config_saved(store, tmp_path):
    from depthdata.cli import main

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "steps": 50, "batch_size": 2, "streams": 1, "lr": 0.01, "schedule": "cosine", "warmup_steps": 1,
        "model": {"arch": "lpcvc-mnv3s"}, "loss": {"terms": [{"name": "ssi"}, {"name": "grad", "weight": 0.25}]}}))
    assert main(["student", "train", "--store", store, "--out", str(tmp_path / "o"), "--config",
                 str(tmp_path / "run.yaml"), "--steps", "1", "--lr", "0.002"]) == 0
    saved = load_config(checkpoint_dir(tmp_path / "o") / CONFIG_FILE)
    cfg = TrainConfig.from_dict(saved)
    assert (cfg.steps, cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.batch_size) == (1, 0.002, "cosine", 1, 2)
    assert cfg.model == StudentConfig(arch="lpcvc-mnv3s")
    assert cfg.loss.terms == (LossTerm("ssi", 1.0), LossTerm("grad", 0.25))
    assert cfg.store_url == store and cfg.groups == ["synth/train"] and cfg.store_version is None
    (tmp_path / "bad.yaml").write_text("steps: 3\nstepz: 4\n")
    with pytest.raises(DepthdataError, match="bad.yaml: unknown setting.*stepz"):
        TrainConfig.from_dict(load_config(tmp_path / "bad.yaml"), source=str(tmp_path / "bad.yaml"))
    assert main(["student", "train", "--store", store, "--out", str(tmp_path / "p"), "--config",
                 str(tmp_path / "bad.yaml")]) == 2


@pytest.mark.slow
def test_ddp_with_gloo_on_two_cpu_processes(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_train_script.py"), store, str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "o" / f"rank{r}.json").read_text()) for r in (0, 1)]
    # DDP keeps the replicas' parameters identical, and both report the mean loss over the ranks
    assert ranks[0] == ranks[1] and len(ranks[0]["losses"]) == 3
    state = torch.load(checkpoint_dir(tmp_path / "o") / STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and len(state["data_ranks"]) == 2
    # each rank read its own share: the stream states differ (rank is part of their fingerprint)
    assert state["data_ranks"][0]["fingerprint"] != state["data_ranks"][1]["fingerprint"]
    with pytest.raises(DepthdataError, match="2 process"):
        train(TrainConfig(store_url=store, out_dir=str(tmp_path / "o"), steps=4, batch_size=2, streams=1,
                          model=StudentConfig(arch="lpcvc-mnv3s")), progress=False)


def test_student_run_takes_the_config_file_and_given_flags_win(tmp_path, monkeypatch):
    import student.pipeline
    from depthdata.cli import main

    calls = []

    def fake_run(store, out, **kwargs):
        calls.append(kwargs)
        return {"paths": {}, "int8_vs_fp32": {}, "prune": {}}

    monkeypatch.setattr(student.pipeline, "run", fake_run)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"steps": 90, "batch_size": 3, "ema_decay": 0.99,
                                                       "model": {"arch": "resnet18-unet"}}))
    assert main(["student", "run", "--store", "s.zarr", "--out", "o", "--config", str(tmp_path / "run.yaml"),
                 "--steps", "7", "--arch", "lpcvc-mnv3s"]) == 0
    kw = calls[0]
    assert (kw["steps"], kw["batch_size"], kw["seed"], kw["ema_decay"]) == (7, 3, 0, 0.99)
    assert kw["model"] == StudentConfig(arch="lpcvc-mnv3s")
    assert main(["student", "run", "--store", "s.zarr", "--out", "o"]) == 0
    assert (calls[1]["steps"], calls[1]["batch_size"], calls[1]["seed"]) == (40, 4, 0) and "model" not in calls[1]
