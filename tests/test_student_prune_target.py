"""Pruning to a target (student.prune_target), latency measured through a fake clock
(student.latency), and unstructured magnitude pruning (student.sparsity): targets are checked
against parameters counted by hand from the pruned tensors, MACs counted by hand from conv
shapes, and a latency table the fake runner plays back — never against timings."""

import json
import zlib

import numpy as np
import pytest
import torch
from student_fixtures import H, W, build_store
from student_fixtures import hand_macs as _hand_macs

from depthdata.cli import main as cli_main
from depthdata.errors import DepthdataError
from student import export
from student.arch import StudentConfig, build
from student.checkpoint import load_model, save_model
from student.latency import LatencyMeter, median_ms
from student.prune_target import Target, prune_to_target
from student.sparsity import magnitude_prune

NAMES = ["fpn-mnv3s", "lpcvc-mnv3s", "resnet18-unet", "mnv2-fbnet", "completion"]
SIZE = (32, 48)


def _model(name):
    torch.manual_seed(0)
    return build(StudentConfig(arch=name)).eval()


def _hand_params(model):
    return sum(p.detach().numpy().size for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_params_target_is_met_for_every_architecture(name):
    model = _model(name)
    start = _hand_params(model.drop_aux_heads())
    target = int(start * 0.6)
    pruned, report = prune_to_target(model, Target("params", target), input_size=SIZE, step=0.25, bisections=3)
    params = _hand_params(pruned)
    assert report.met and params == report.final.params <= target
    # it stopped at the first step under the target: the step before was still above it
    before_last = report.steps[-2].params if len(report.steps) > 1 else report.start.params
    assert before_last > target
    assert getattr(pruned, "aux", None) is None
    for m in pruned.modules():  # depthwise convs stay depthwise: pruned only with their input channels
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels == m.weight.shape[0]
    with torch.no_grad():
        out = pruned(*pruned.example_inputs((37, 53)))
    assert out.shape == (1, 1, 37, 53) and torch.isfinite(out).all()


def test_macs_target_is_met_and_counted_by_hand(tmp_path):
    model = _model("lpcvc-mnv3s")
    start = _hand_macs(model, SIZE)
    target = int(start * 0.5)
    calls = []
    pruned, report = prune_to_target(model, Target("macs", target), input_size=SIZE, step=0.2, bisections=3,
                                     fine_tune=lambda m: calls.append(1) or m)
    assert report.start.macs == start
    assert _hand_macs(pruned, SIZE) == report.final.macs <= target < (report.steps[-2].macs if len(report.steps) > 1
                                                                       else start)
    assert len(calls) == len(report.steps)  # the short fine-tune runs after every accepted step
    # the pruned model reloads and runs in the ONNX export with the contest I/O
    reloaded = load_model(save_model(pruned, tmp_path / "p.safetensors"))
    path = export.export_onnx(reloaded, tmp_path / "p.onnx", (64, 96))
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)
    assert export.run(export.session(path), x).shape == (1, 1, 64, 96)


class FakeClock:
    """Seconds that advance only when the fake runner 'runs' a model."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_median_of_a_fake_clock():
    clock = FakeClock()
    durations = iter([0.5, 0.003, 0.001, 0.002, 0.100, 0.002])  # warm-up first, then five timed runs

    def run():
        clock.now += next(durations)

    assert median_ms(run, repeats=5, warmup=1, clock=clock) == pytest.approx(2.0)


def test_latency_target_with_a_fake_clock_and_table():
    """Latency table: 1 ms per 10 000 parameters, plus one slow outlier run per measurement that the
    median must ignore."""
    clock = FakeClock()

    def runner(model, size, threads):
        ms = sum(p.numel() for p in model.parameters()) / 1e4
        calls = iter(range(10**6))

        def run():
            clock.now += (ms + (50.0 if next(calls) == 1 else 0.0)) / 1000
        return run

    meter = LatencyMeter("fake", size=SIZE, repeats=5, warmup=0, clock=clock, runner=runner)
    model = _model("fpn-mnv3s")
    start_ms = _hand_params(model) / 1e4
    target = start_ms * 0.7
    pruned, report = prune_to_target(model, Target("latency_ms", target), input_size=SIZE, step=0.2,
                                     measure=meter, bisections=3)
    assert report.start.latency_ms == pytest.approx(start_ms)
    assert report.met and report.final.latency_ms == pytest.approx(_hand_params(pruned) / 1e4)
    assert report.final.latency_ms <= target
    assert report.latency["runtime"] == "fake" and report.latency["statistic"] == "median"


def test_unreachable_and_invalid_targets_are_clear_errors():
    with pytest.raises(DepthdataError, match="unknown pruning target"):
        Target("flops", 1)
    with pytest.raises(DepthdataError, match="latency target needs a measure"):
        prune_to_target(_model("fpn-mnv3s"), Target("latency_ms", 1.0), input_size=SIZE)
    with pytest.raises(DepthdataError, match="cannot prune"):
        prune_to_target(_model("lpcvc-mnv3s"), Target("params", 10), input_size=SIZE, step=0.5, bisections=1)


def test_magnitude_pruning_reports_sparsity_compressed_size_and_latency():
    model = _model("lpcvc-mnv3s")
    ms = iter([10.0, 10.0])
    pruned, report = magnitude_prune(model, 0.6, measure=lambda m: next(ms))
    convs = [m.weight.detach().numpy() for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    n = sum(w.size for w in convs)
    assert report.weights_pruned == n
    assert report.sparsity == pytest.approx(sum(int((w == 0).sum()) for w in convs) / n)
    assert report.sparsity == pytest.approx(0.6, abs=1e-4)
    raw = b"".join(p.detach().numpy().astype(np.float32).tobytes() for p in pruned.parameters())
    assert report.bytes_raw == len(raw) and report.bytes_zlib_after == len(zlib.compress(raw, 9))
    assert report.bytes_zlib_after < 0.8 * report.bytes_zlib_before
    # the smallest surviving |w| is at least the largest zeroed one's: a global magnitude ranking
    assert report.latency_ms_before == report.latency_ms_after == 10.0 and "no speed-up" in report.note
    for m in pruned.modules():  # masks made permanent: no forward pre-hooks or weight_orig left
        assert not hasattr(m, "weight_orig")


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune_cli")
    torch.manual_seed(0)
    return str(save_model(build(StudentConfig(arch="lpcvc-mnv3s")).eval(), d / "m.safetensors")), d


def test_cli_prune_to_a_parameter_target(trained_model, capsys):
    path, d = trained_model
    store = build_store(str(d / "s.zarr"), n=4, shard_size=4)
    target = 600_000
    rc = cli_main(["student", "prune", "--store", store, "--out", str(d / "out"), "--model", path,
                   "--target-params", str(target), "--step", "0.25", "--count-size", f"{H}x{W}", "--steps", "1",
                   "--batch-size", "2", "--step-finetune-steps", "1"])
    assert rc == 0
    report = json.loads((d / "out" / "prune.json").read_text())
    model = load_model(d / "out" / "checkpoint" / "model.safetensors")
    assert report["method"] == "structured_to_target" and report["met"]
    assert _hand_params(model) == report["params_after"] <= target
    assert len(list((d / "out" / "steps").iterdir())) == len(report["steps"])
    capsys.readouterr()
