"""Student architectures (student.arch): the registry, every architecture's output at 480×640 and
at odd sizes, the documented parameters and MACs, training-only heads absent from the export,
the completion model's use of its sparse input, pruning and reloading, encoder weights, and
checkpoints written before architectures had names."""

import json
import re

import numpy as np
import onnx
import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

from depthdata.errors import DepthdataError
from student import export
from student.arch import StudentConfig, architectures, build, get, profile
from student.arch.completion import log_scale
from student.checkpoint import load_model, param_count, save_model
from student.model import export_wrapper, load_encoder_weights
from student.prune import prune

NAMES = ["fpn-mnv3s", "lpcvc-mnv3s", "resnet18-unet", "mnv2-fbnet", "completion"]


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build(StudentConfig(arch=name)).eval()


def test_registry_has_every_architecture_and_refuses_unknown_ones():
    assert sorted(architectures()) == sorted(NAMES)
    with pytest.raises(DepthdataError, match="unknown student architecture 'nope'.*fpn-mnv3s"):
        build(StudentConfig(arch="nope"))
    # an option the architecture would silently ignore is refused
    with pytest.raises(DepthdataError, match="resnet18-unet.*int8_friendly"):
        build(StudentConfig(arch="resnet18-unet", int8_friendly=True))


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_range_at_contest_and_odd_sizes(name):
    model = _model(name)
    for size, batch in (((480, 640), 1), ((37, 53), 2), ((65, 97), 1)):
        with torch.no_grad():
            out = model(*model.example_inputs(size, batch))
        assert out.shape == (batch, 1, *size), (size, out.shape)
        assert torch.isfinite(out).all()
        if model.output == "disparity":
            assert out.min() >= 0 and out.max() <= 1
        else:
            assert out.min() > 0


@pytest.mark.parametrize("name", NAMES)
def test_documented_size_matches_the_counted_one(name):
    cls = get(name)
    doc = cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__
    m = re.search(r"\*\*([\d.]+) M parameters,\s*([\d.]+) GMACs\*\* at 480×640", doc)
    assert m, f"{cls.__module__} does not state its size at 480×640"
    p = profile(cls)
    assert p.size == (480, 640)
    assert float(m.group(1)) == round(p.params / 1e6, 2) and float(m.group(2)) == round(p.macs / 1e9, 2)
    # The counter sees every parameter of the deployed graph: the count matches a real model's.
    assert p.params == param_count(_model(name).drop_aux_heads())
    assert cls.source


def test_mac_counter_on_a_single_conv_is_the_hand_count():
    from student.arch.base import StudentNet

    class OneConv(StudentNet):
        name = "one-conv"

        def __init__(self, config):
            super().__init__(config)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        @property
        def prediction_conv(self):
            return self.conv

        def forward(self, rgb):
            return self.conv(rgb)

    p = profile(OneConv, StudentConfig(), size=(10, 20))
    assert p.macs == 10 * 20 * 8 * 3 * 3 * 3  # output pixels × out channels × in channels × kernel
    assert p.params == 8 * 3 * 9 + 8


def test_intermediate_heads_train_only_and_absent_from_the_export(tmp_path):
    model = _model("mnv2-fbnet")
    rgb = torch.rand(2, 3, 64, 96)
    model.train()
    pred = model.forward_train(rgb)
    assert len(pred.aux) == 2 and all(a.shape == (2, 1, 64, 96) for a in pred.aux)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(rgb), model.forward_train(rgb).main)
    heads = [h.weight.detach().numpy() for h in model.aux]
    path = export.export_onnx(model, tmp_path / "m.onnx", (64, 96))
    graph = onnx.load(str(path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - len(heads)
    inits = [onnx.numpy_helper.to_array(t) for t in graph.initializer]
    for h in heads:
        assert not any(a.shape == h.shape and np.allclose(a, h) for a in inits)
    # The exported graph is the one without heads: same outputs after dropping them.
    deployed = model.drop_aux_heads()
    assert deployed.aux is None and not deployed.config.aux_heads
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        ref = export_wrapper(deployed)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(export.run(export.session(path), x), ref, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_torch(name, tmp_path):
    model = _model(name)
    path = export.export_onnx(model, tmp_path / f"{name}.onnx", (48, 80))
    sess = export.session(path)
    inputs = [t.detach() for t in model.example_inputs((48, 80), 2)]
    inputs[0] = inputs[0] * 255
    with torch.no_grad():  # the model as trained: normalisation not folded
        ref = export_wrapper(model, fold_input=False)(*inputs).numpy()
    out = export.run(sess, *(t.numpy() for t in inputs))
    assert out.shape == (2, 1, 48, 80)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
    assert [i.name for i in sess.get_inputs()] == (["input", "sparse"] if name == "completion" else ["input"])


def _calibrated(name: str) -> torch.nn.Module:
    """A student whose batch norms hold the statistics of its own activations (as after
    training): with default statistics the activations of the deeper networks grow layer by
    layer and float rounding alone moves their outputs."""
    model = _model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(*model.example_inputs((64, 96), 4))
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_folded_input_normalisation_gives_the_same_outputs_with_one_full_resolution_pass(name, tmp_path):
    """The export folds ``/255``, ``-mean``, ``/std`` into one subtraction and the first conv's
    weights: the outputs stay those of the model as trained, borders included (the zero padding
    must still mean "the mean colour"), with a fitted shift head too; the model itself is not
    changed, and the exported file reads its input with one Sub before the first Conv."""
    from student.shift import ShiftHead

    model = _calibrated(name)
    if model.output == "disparity":
        model.shift = ShiftHead()
        torch.nn.init.normal_(model.shift.out.weight, std=0.5)  # an eps that depends on the image
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = list(model.example_inputs((64, 96), 2))
    inputs[0] = inputs[0] * 255
    # a frame whose border is far from the mean colour: a wrong padding shows there
    inputs[0][:, :, :3] = 255.0
    inputs[0][:, :, :, :3] = 0.0
    with torch.no_grad():
        ref = export_wrapper(model, fold_input=False)(*inputs)
        folded = export_wrapper(model)(*inputs)
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    path = export.export_onnx(model, tmp_path / "m.onnx", (64, 96))
    nodes = onnx.load(str(path)).graph.node
    # what reads the input besides its shape: the normalisation, and the shift head's Resize
    readers = [n for n in nodes if "input" in n.input and n.op_type != "Shape"]
    assert sorted(n.op_type for n in readers) == (["Resize", "Sub"] if model.output == "disparity" else ["Sub"])
    sub = next(n for n in readers if n.op_type == "Sub")
    assert [n.op_type for n in nodes if sub.output[0] in n.input] == ["Conv"]
    from student.arch.base import fold_input_normalisation

    with pytest.raises(DepthdataError, match="already folded"):
        fold_input_normalisation(fold_input_normalisation(model))


def test_completion_uses_its_sparse_input_and_takes_its_scale_from_it():
    model = _model("completion")
    rgb, sparse = model.example_inputs((64, 96), 2)
    with torch.no_grad():
        out = model(rgb, sparse)
        zeroed = model(rgb, torch.zeros_like(sparse))
        doubled = model(rgb, 2 * sparse)
    assert (out - zeroed).abs().max() > 1e-3
    # The network sees log(z / geometric mean), which doubling z leaves unchanged; the output is
    # the geometric mean times exp(prediction): doubling the returns doubles the depth exactly.
    torch.testing.assert_close(doubled, 2 * out, rtol=1e-5, atol=1e-6)
    # The scale: the geometric mean of the returns, 1 m (log 0) without any.
    z = torch.zeros(2, 1, 4, 4)
    z[0, 0, 0, 0], z[0, 0, 3, 3] = 2.0, 8.0
    torch.testing.assert_close(log_scale(z).flatten(), torch.tensor([np.log(4.0), 0.0], dtype=torch.float32))


@pytest.mark.parametrize("name", ["resnet18-unet", "mnv2-fbnet"])
def test_pruned_architectures_reload_from_their_file(name, tmp_path):
    model = _model(name)
    pruned, report = prune(model, 0.3, input_size=(32, 32))
    assert report.params_after < report.params_before
    assert getattr(pruned, "aux", None) is None  # the heads go before pruning (traced graph lacks them)
    x = pruned.example_inputs((40, 56))
    with torch.no_grad():
        out = pruned(*x)
    reloaded = load_model(save_model(pruned, tmp_path / "p.safetensors"))
    assert param_count(reloaded) == report.params_after
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*x), out)


def test_a_checkpoint_written_before_architectures_had_names_loads_as_fpn_mnv3s(tmp_path):
    model = _model("fpn-mnv3s")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    old_config = json.dumps({"decoder_channels": 32, "encoder": "mobilenet_v3_small", "int8_friendly": False})
    save_file(state, str(tmp_path / "old.safetensors"), metadata={"student_config": old_config,
                                                                  "format": "depthdata-student-1"})
    loaded = load_model(tmp_path / "old.safetensors")
    assert loaded.name == "fpn-mnv3s"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    with safe_open(str(save_model(loaded, tmp_path / "new.safetensors")), "pt") as f:
        assert json.loads(f.metadata()["student_config"])["arch"] == "fpn-mnv3s"


@pytest.mark.parametrize("name,classifier", [("resnet18-unet", "resnet18"), ("mnv2-fbnet", "mobilenet_v2"),
                                             ("lpcvc-mnv3s", "mobilenet_v3_small")])
def test_local_classifier_weights_load_into_each_encoder(name, classifier, tmp_path):
    torch.manual_seed(7)
    ref = getattr(torchvision.models, classifier)(weights=None)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = _model(name)
    load_encoder_weights(model, tmp_path / "w.pth")
    ref_state = ref.state_dict()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, ref_state[model.encoder_prefix + key]), key
    with pytest.raises(DepthdataError, match="w.pth"):
        load_encoder_weights(_model("resnet18-unet"), tmp_path / "w.pth") if name != "resnet18-unet" else \
            load_encoder_weights(_model("mnv2-fbnet"), tmp_path / "w.pth")


def test_the_command_line_names_every_architecture():
    from student.cli import ARCH_HELP

    # The help is written without importing torch (``depthdata --help`` stays light); it must not drift.
    assert all(name in ARCH_HELP for name in architectures())
