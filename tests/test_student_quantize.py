"""INT8 paths (student.quantize, student.qat): what dynamic quantization covers, static and
quantization-aware INT8 against FP32 within stated tolerances, and the quantize command."""

import argparse
import json

import numpy as np
import onnx
import pytest
import torch
from student_fixtures import H, W, build_store, scene

from depthdata.cli import main as cli_main
from depthdata.errors import DepthdataError
from student import export, quantize
from student.arch import StudentConfig, architectures, build
from student.checkpoint import save_model

pytest.importorskip("onnxruntime")


def _model(name="lpcvc-mnv3s"):
    torch.manual_seed(0)
    return build(StudentConfig(arch=name)).eval()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return export.export_onnx(_model(), tmp_path_factory.mktemp("q") / "fp32.onnx", (H, W))


def _inputs(n=3):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_dynamic_quantization_leaves_conv_nets_unchanged(fp32, tmp_path):
    """MatMul/Gemm only: these students have none, so nothing is quantized and outputs are equal."""
    out = quantize.quantize_dynamic_onnx(fp32, tmp_path / "dyn.onnx")
    cov = quantize.coverage(out)
    convs = quantize.op_counts(fp32)["Conv"]
    assert not cov["quantized"] and cov["float_convs"] == convs
    assert quantize.drift(fp32, out, _inputs())["abs_rel"] < 1e-6


def test_dynamic_conv_quantization_turns_every_conv_into_conv_integer(fp32, tmp_path):
    out = quantize.quantize_dynamic_onnx(fp32, tmp_path / "dync.onnx", convs=True)
    cov = quantize.coverage(out)
    assert cov["integer_ops"]["ConvInteger"] == quantize.op_counts(fp32)["Conv"] and cov["float_convs"] == 0
    # Stated tolerance for random weights (outputs min-max stretched per image): AbsRel < 0.1.
    assert quantize.drift(fp32, out, _inputs())["abs_rel"] < 0.1


def test_static_ptq_is_qdq_with_a_float_tail_and_agrees_with_fp32(fp32, tmp_path):
    out = export.quantize_int8(fp32, tmp_path / "s.onnx", _inputs(4))
    cov = quantize.coverage(out)
    assert cov["integer_ops"]["QuantizeLinear"] > 0
    # per-channel weights: the first conv's weight scale has one entry per output channel
    graph = onnx.load(str(out)).graph
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    conv_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and scales.get(n.input[1]) is not None
               and scales[n.input[1]].ndim == 1 and scales[n.input[1]].size > 1]
    assert conv_dq
    assert quantize.drift(fp32, out, _inputs())["abs_rel"] < 0.1


def test_int8_scheme_follows_the_architecture_recorded_in_the_file(fp32, tmp_path, monkeypatch):
    """The exported file names its architecture; quantize_int8 applies that architecture's scheme
    (export.INT8_SCHEMES): QDQ pairs by default, integer QOperator nodes where the table says so."""
    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    assert props[export.ARCH_KEY] == "lpcvc-mnv3s"
    assert export.scheme_for(fp32) == export.DEFAULT_SCHEME
    qdq = quantize.op_counts(export.quantize_int8(fp32, tmp_path / "qdq.onnx", _inputs(2)))
    assert "QLinearConv" not in qdq and qdq["DequantizeLinear"] > 0
    monkeypatch.setitem(export.INT8_SCHEMES, "lpcvc-mnv3s", export.Int8Scheme(quant_format="qoperator"))
    out = export.quantize_int8(fp32, tmp_path / "qop.onnx", _inputs(4))
    ops = quantize.op_counts(out)
    # QOperator: the convs are written as QLinearConv; only the float tail's prediction conv is
    # left float, and the output agrees with FP32 within the stated bound.
    assert ops["QLinearConv"] > 0 and ops.get("Conv", 0) == 1
    assert quantize.drift(fp32, out, _inputs())["abs_rel"] < 0.1
    # An explicit scheme wins over the architecture's.
    again = export.quantize_int8(fp32, tmp_path / "qdq2.onnx", _inputs(2), scheme=export.Int8Scheme())
    assert "QLinearConv" not in quantize.op_counts(again)


def test_unknown_int8_scheme_is_refused():
    with pytest.raises(DepthdataError, match="unknown INT8 scheme"):
        export.Int8Scheme(quant_format="qint4")
    with pytest.raises(DepthdataError, match="calibration one of minmax, percentile"):
        export.Int8Scheme(calibration="entropy")


# resnet18-unet (the case pytorch/ao#4478 broke) in the quick suite, the others ~4 s each with the slow ones
ARCHS = [a if a == "resnet18-unet" else pytest.param(a, marks=pytest.mark.slow) for a in sorted(architectures())]


@pytest.mark.parametrize("arch", ARCHS)
def test_qat_preparation_works_for_every_architecture(arch):
    """The x86 quantizer's QAT annotation accepts every student of the registry, including
    resnet18-unet, whose torchvision blocks call one ReLU module twice, and the two-input
    completion student."""
    pytest.importorskip("torchao")
    from student import qat

    prepared = qat.prepare(_model(arch), (H, W), batch=1)
    assert any("FakeQuantize" in type(m).__name__ for m in prepared.modules())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lpcvc-mnv3s", "resnet18-unet", "completion"])
def test_quantization_aware_fine_tuning_exports_qdq_that_agrees_with_its_float_twin(tmp_path, arch):
    """~40-60 s each: 60 float training steps, torch.export + PT2E prepare/convert + dynamo ONNX
    export on 2 CPUs. The completion student (two inputs, metres out) takes the same path."""
    pytest.importorskip("torchao")
    pytest.importorskip("onnxscript")
    from student import qat
    from student.train import TrainConfig, train

    store = build_store(str(tmp_path / "s.zarr"), n=8, shard_size=4)
    # QAT fine-tunes a trained student: a random one's output hardly depends on its input, so
    # "agrees with" would say little
    cfg = TrainConfig(store_url=store, out_dir=str(tmp_path / "fp32"), steps=60, batch_size=4,
                      model=StudentConfig(arch=arch))
    trained = train(cfg, progress=False).model.eval()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    r = qat.quantization_aware(trained, tmp_path / "qat" / "qat.onnx", store, ["synth/train"], steps=3,
                               train_size=(H, W), export_size=(H, W), batch_size=2)
    assert len(r["losses"]) == 3 and all(np.isfinite(r["losses"]))
    # the caller's model is left as it was: QAT fine-tunes a copy
    assert not trained.training and all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert quantize.coverage(r["onnx"])["integer_ops"]["QuantizeLinear"] > 0
    # one self-contained file: its weights inside, nothing beside it
    assert sorted(p.name for p in r["onnx"].parent.iterdir()) == ["qat.onnx"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in onnx.load(str(r["onnx"]), load_external_data=False).graph.initializer)
    # a scene of the kind the student trained on, not one of its 8 (depth grows from bottom to top),
    # with a return every 8 pixels for the completion student
    rgb, depth, _ = scene(50, H, W)
    sparse = np.zeros_like(depth)
    sparse[::8, ::8] = depth[::8, ::8]
    feed = export.feed(rgb, (H, W), sparse if arch == "completion" else None)
    sess = export.session(r["onnx"])
    assert [i.name for i in sess.get_inputs()] == list(feed)
    with torch.no_grad():
        q = r["converted"](*map(torch.from_numpy, feed.values())).numpy()[0, 0]
        f = r["float_twin"](*map(torch.from_numpy, feed.values())).numpy()[0, 0]
    o = sess.run(None, feed)[0][0, 0]
    assert o.shape == (H, W)
    # Stated tolerances (60 float steps, then 3 QAT steps): quantization alone (same weights)
    # AbsRel < 0.06, and onnxruntime's integer kernels against PyTorch's reference quantized ops
    # < 0.06 (measured: lpcvc-mnv3s 0.030 and 0.033, resnet18-unet 0.003 and 0.003, completion
    # 0.002 and 0.002). The same output with its rows reversed scores 0.74, 1.75 and 0.18 (the
    # completion student's metres span only 3.4-5.1 m after 60 steps): the bound tells right from
    # misplaced.
    assert export.agreement([f], [q])["abs_rel"] < 0.06
    assert export.agreement([q], [o])["abs_rel"] < 0.06
    assert export.agreement([f], [f[::-1].copy()])["abs_rel"] > 0.15


def test_static_quantization_of_a_completion_student_calibrates_on_its_sparse_input(tmp_path, capsys):
    """The two-input completion student: calibration and the INT8-against-FP32 drift feed each
    image with its sparse LiDAR map (the ONNX file's second input)."""
    store = build_store(str(tmp_path / "s.zarr"), n=4, shard_size=4)
    build_store(store, n=4, shard_size=4, group=("synth", "val"), add=True)
    model = save_model(_model("completion"), tmp_path / "m.safetensors")
    rc = cli_main(["student", "quantize", "--store", store, "--groups", "synth/train", "--held-out", "synth/val",
                   "--out", str(tmp_path / "out"), "--model", str(model), "--method", "static",
                   "--size", f"{H}x{W}", "--calibration", "4", "--limit", "2"])
    assert rc == 0
    r = json.loads((tmp_path / "out" / "quantize.json").read_text())
    assert r["coverage"]["quantized"] and r["calibration_images"] == 4 and r["int8_vs_fp32"]["images"] == 2
    # Stated tolerance: INT8 metres within AbsRel 0.05 of FP32 (random weights, median-aligned)
    assert r["int8_vs_fp32"]["abs_rel"] < 0.05
    sess = export.session(r["onnx_int8"])
    assert [i.name for i in sess.get_inputs()] == ["input", "sparse"]
    capsys.readouterr()


def test_quantize_command_writes_coverage_drift_and_held_out_metrics(tmp_path, capsys):
    store = build_store(str(tmp_path / "s.zarr"), n=4, shard_size=4)
    build_store(store, n=4, shard_size=4, group=("synth", "val"), add=True)
    model = save_model(_model(), tmp_path / "m.safetensors")
    rc = cli_main(["student", "quantize", "--store", store, "--groups", "synth/train", "--held-out", "synth/val",
                   "--out", str(tmp_path / "out"), "--model", str(model), "--method", "static",
                   "--size", f"{H}x{W}", "--calibration", "4", "--limit", "2"])
    assert rc == 0
    r = json.loads((tmp_path / "out" / "quantize.json").read_text())
    assert r["coverage"]["quantized"] and r["calibration_images"] == 4
    assert r["held_out_groups"] == ["synth/val"] and r["int8_vs_fp32"]["images"] == 2
    assert set(r["eval"]["fp32"]) == set(r["eval"]["int8"]) == {"synth/val"}
    capsys.readouterr()


def _activation_scales(path) -> dict[str, float]:
    """Scale of each activation's QuantizeLinear (per-tensor: a scalar) in a QDQ file."""
    graph = onnx.load(str(path)).graph
    init = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: float(init[n.input[1]]) for n in graph.node
            if n.op_type == "QuantizeLinear" and init[n.input[1]].ndim == 0}


def test_percentile_calibration_keeps_rare_outliers_from_stretching_the_ranges(tmp_path, caplog):
    """The default calibration clips each activation's range at the 99.99th percentile of its
    magnitude, inside the min-max range: a few extreme pixels among thousands must not widen
    the input's quantization step as they do with minmax."""
    model = _model()
    for m in model.modules():  # batch norms holding their own activations' statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(*model.example_inputs((H, W), 4))
    fp32 = export.export_onnx(model.eval(), tmp_path / "fp32.onnx", (H, W))
    rng = np.random.default_rng(0)
    images = [rng.integers(100, 157, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    images[0][0, 0], images[1][0, 0] = 255, 0  # 2 outlying pixels of 4 × H × W
    assert export.DEFAULT_SCHEME.calibration == "percentile"
    with caplog.at_level("WARNING", logger="student.export"):
        pct = _activation_scales(export.quantize_int8(fp32, tmp_path / "pct.onnx", images))
    assert "calibrating with minmax instead" not in caplog.text
    assert export.calibration_of(tmp_path / "pct.onnx") == "percentile"
    mm = _activation_scales(export.quantize_int8(fp32, tmp_path / "mm.onnx", images,
                                                 scheme=export.Int8Scheme(calibration="minmax")))
    assert pct.keys() == mm.keys()
    assert all(pct[k] <= mm[k] * (1 + 1e-6) for k in mm)
    # the normalised input: minmax spans pixel values 0..255 over 255 steps; the percentile range
    # covers the bulk, 100..156, so its step is about 4.5x finer (the folded normalisation and
    # the zero ORT always includes put the ratio between 2 and 4.6)
    first = next(iter(mm))
    assert mm[first] / pct[first] > 2, (first, mm[first], pct[first])
    assert quantize.drift(fp32, tmp_path / "pct.onnx", images)["abs_rel"] < 0.1


def test_calibration_falls_back_to_minmax_where_a_histogram_cannot_be_built(fp32, tmp_path, caplog):
    """An untrained model's activations decay into subnormal floats that onnxruntime's histograms
    cannot bin: the export still succeeds, with min-max ranges, and says so."""
    with caplog.at_level("WARNING", logger="student.export"):
        out = export.quantize_int8(fp32, tmp_path / "s.onnx", _inputs(2))
    assert "percentile calibration failed" in caplog.text and "calibrating with minmax instead" in caplog.text
    same = export.quantize_int8(fp32, tmp_path / "m.onnx", _inputs(2), calibration="minmax")
    assert _activation_scales(out) == _activation_scales(same)
    assert export.calibration_of(out) == export.calibration_of(same) == "minmax"  # the file says what was used


def test_cli_calibration_methods_are_the_exports():
    """`student export` and `student quantize` offer exactly the calibrations the export knows
    (the CLI restates them so that --help need not import onnxruntime)."""
    from depthdata.cli import build_parser

    student = next(a for a in build_parser()._subparsers._group_actions[0].choices["student"]._actions
                   if isinstance(a, argparse._SubParsersAction))
    for command in ("export", "quantize"):
        [option] = [a for a in student.choices[command]._actions if a.dest == "calibration_method"]
        assert sorted(option.choices) == sorted(export.CALIBRATIONS), command
