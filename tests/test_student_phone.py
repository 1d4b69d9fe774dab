"""ExecuTorch + XNNPACK export (student.phone): FP32 agrees with PyTorch to float rounding, INT8
within a stated tolerance; skipped where ExecuTorch (extra ``phone``) is not installed."""

import numpy as np
import pytest
import torch
from torch import nn

from depthdata.errors import DepthdataError
from student import export, phone
from student.arch import StudentConfig, build
from student.arch.base import StudentNet
from student.model import export_wrapper

pytestmark = pytest.mark.skipif(not phone.available(), reason="ExecuTorch not installed (pip install -e '.[phone]')")


class Tiny(StudentNet):
    """Two convs with hard-swish and a ×2 upsampling: the operators the students use, lowered fast."""

    name = "tiny"

    def __init__(self):
        super().__init__(StudentConfig())
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish())
        self.head = nn.Conv2d(8, 1, 1)

    @property
    def prediction_conv(self):
        return self.head

    def forward(self, rgb):
        x = self.head(self.conv(self.normalise(rgb)))
        return torch.sigmoid(nn.functional.interpolate(x, size=rgb.shape[-2:], mode="bilinear"))


def _x(seed=0, size=(32, 48)):
    return np.random.default_rng(seed).uniform(0, 255, (1, 3, *size)).astype(np.float32)


def test_fp32_program_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = Tiny().eval()
    path = phone.export_pte(model, tmp_path / "m.pte", (32, 48))
    pte = phone.PteModel(path)
    assert pte(_x()).shape == (1, 1, 32, 48)
    assert phone.max_abs_diff(model, pte, [_x(0), _x(1)]) < 1e-4


def test_int8_program_agrees_with_fp32_within_tolerance(tmp_path):
    torch.manual_seed(0)
    model = Tiny().eval()
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    path = phone.export_pte(model, tmp_path / "q.pte", (32, 48), calibration=images)
    x = _x(3)
    with torch.no_grad():
        ref = export_wrapper(model)(torch.from_numpy(x)).numpy()[0, 0]
    # Stated tolerance: AbsRel < 0.05 of the INT8 output against FP32 PyTorch (random weights).
    assert export.agreement([ref], [phone.run_pte(path, x)[0, 0]])["abs_rel"] < 0.05
    with pytest.raises(DepthdataError, match="at least one image"):
        phone.export_pte(model, tmp_path / "e.pte", (32, 48), calibration=[])


@pytest.mark.slow
def test_a_registry_student_exports_and_matches(tmp_path):
    """~60 s: lowering a whole MobileNetV3 student to XNNPACK."""
    torch.manual_seed(0)
    model = build(StudentConfig(arch="lpcvc-mnv3s")).eval()
    pte = phone.PteModel(phone.export_pte(model, tmp_path / "l.pte", (64, 96)))
    assert phone.max_abs_diff(model, pte, [_x(0, (64, 96))]) < 1e-3


@pytest.mark.slow
def test_export_command_with_phone_writes_both_programs_into_the_card(tmp_path, capsys):
    """~2 min: the export command with --phone on a registry student."""
    import json

    from student_fixtures import H, W, build_store

    from depthdata.cli import main as cli_main
    from student.checkpoint import save_model

    store = build_store(str(tmp_path / "s.zarr"), n=4, shard_size=4)
    torch.manual_seed(0)
    model = save_model(build(StudentConfig(arch="lpcvc-mnv3s")).eval(), tmp_path / "m.safetensors")
    assert cli_main(["student", "export", "--store", store, "--out", str(tmp_path / "out"), "--model", str(model),
                     "--size", f"{H}x{W}", "--calibration", "2", "--phone"]) == 0
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert {"student_fp32.pte", "student_int8.pte"} <= {a["path"] for a in card["artefacts"]}
    assert card["phone_max_abs_diff_vs_pytorch"]["student_fp32.pte"] < 1e-3
    capsys.readouterr()


@pytest.mark.slow
def test_a_completion_student_exports_fp32_and_int8_programs_with_its_sparse_input(tmp_path):
    """~2 min: the two-input completion student (RGB 0–255, sparse metres) lowered in FP32 and in
    INT8 calibrated on images with their sparse maps; both agree with PyTorch's exported graph."""
    from student_fixtures import scene

    torch.manual_seed(0)
    model = build(StudentConfig(arch="completion")).eval()
    size = (64, 96)
    samples = [scene(i, *size) for i in range(4)]
    images = [s[0] for s in samples]
    sparse = [np.where(np.indices(size).sum(0) % 7 == 0, s[1], 0).astype(np.float32) for s in samples]
    x = tuple(export.feed(images[0], size, sparse[0]).values())
    fp32 = phone.PteModel(phone.export_pte(model, tmp_path / "c.pte", size))
    assert fp32(*x).shape == (1, 1, *size)
    assert phone.max_abs_diff(model, fp32, [x]) < 1e-3
    int8 = phone.PteModel(phone.export_pte(model, tmp_path / "cq.pte", size, calibration=images, sparse=sparse))
    with torch.no_grad():
        ref = export_wrapper(model)(*(torch.from_numpy(a) for a in x)).numpy()[0, 0]
    # Stated tolerance: AbsRel < 0.05 of the INT8 metres against FP32 PyTorch (random weights)
    assert export.agreement([ref], [int8(*x)[0, 0]])["abs_rel"] < 0.05
    with pytest.raises(DepthdataError, match="one sparse map per image"):
        phone.export_pte(model, tmp_path / "e.pte", size, calibration=images, sparse=sparse[:2])
