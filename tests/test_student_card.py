"""Model card (student.card, student.release): every number recomputed independently from the
files (parameters from the tensors, MACs from conv shapes, bytes and SHA-256 of each file), the
data lineage read back from the manifest rows written here, and the check command."""

import hashlib
import json

import numpy as np
import pytest
from student_fixtures import H, W, build_store, scene
from student_fixtures import hand_macs as _hand_macs

from depthdata.cli import main as cli_main
from depthdata.store import Store
from student import card as cards
from student import openvino_runtime
from student.checkpoint import load_model
from student.train import TrainConfig, train

TEACHER = ("org/teacher-x", "ab" * 32)


def _store(path):
    """Two groups; teacher rows carry a teacher id and weights hash, lidar rows a preset and seeds."""
    url = build_store(path, n=4, shard_size=4, teacher=False, sparse=False)
    g = Store.open(url, mode="r+").group("synth/train")
    g.ensure_fields(["teacher", "teacher_conf", "sparse"])
    scenes = [scene(i) for i in range(4)]
    rows = [{"status": "ok", "teacher_id": TEACHER[0], "weights_sha256": TEACHER[1]} for _ in range(4)]
    g.write_shard(0, "teacher", {"teacher": np.stack([s[2] for s in scenes]),
                                 "teacher_conf": np.ones((4, H, W), np.float32)}, rows)
    g.write_shard(0, "lidar", {"sparse": np.zeros((4, H, W), np.float32)},
                  [{"status": "ok", "beam_model": "hdl64e", "seed": 100 + i} for i in range(4)])
    return url


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("card")
    store = _store(str(d / "s.zarr"))
    cfg = TrainConfig.from_dict({"store_url": store, "out_dir": str(d / "train"), "groups": ["synth/train"],
                                 "steps": 1, "batch_size": 2, "streams": 1, "size": [H, W],
                                 "model": {"arch": "lpcvc-mnv3s"}}, source="test")
    result = train(cfg, progress=False)
    out = d / "export"
    rc = cli_main(["student", "export", "--store", store, "--out", str(out), "--model", str(result.checkpoint),
                   "--size", f"{H}x{W}", "--calibration", "2", "--held-out", "synth/train", "--limit", "2",
                   "--latency", "--repeats", "1"])
    assert rc == 0
    return out, store, result.checkpoint


def test_card_numbers_equal_those_recomputed_from_the_files(exported):
    out, store, _ = exported
    card = json.loads((out / "model_card.json").read_text())
    model = load_model(out / "model.safetensors")
    assert card["params"] == sum(p.detach().numpy().size for p in model.parameters())
    assert card["macs"] == _hand_macs(model, (H, W)) and card["input_size"] == [H, W]
    names = {a["path"] for a in card["artefacts"]}
    assert names == {"model.safetensors", "student_fp32.onnx", "student_int8.onnx"}
    for a in card["artefacts"]:
        data = (out / a["path"]).read_bytes()
        assert a["bytes"] == len(data) and a["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(card["latency"]["median_ms"]) == {"student_fp32.onnx", "student_int8.onnx"}
    assert set(card["metrics"]["by_artefact"]) == {"student_fp32.onnx", "student_int8.onnx"}
    assert "affine_invariant" in card["metrics"]["protocols"]
    assert card["architecture"]["name"] == "lpcvc-mnv3s"
    assert [s["kind"] for s in card["steps"]] == ["quantization"]


def test_card_lineage_and_training_config(exported):
    out, store, _ = exported
    card = json.loads((out / "model_card.json").read_text())
    lin = card["lineage"]
    assert lin["store"] == store and list(lin["groups"]) == ["synth/train"]
    g = lin["groups"]["synth/train"]
    assert g["samples"] == 4
    assert g["teacher"] == [{"teacher_id": TEACHER[0], "weights_sha256": TEACHER[1]}]
    assert g["lidar_presets"] == ["hdl64e"] and g["lidar_sample_seeds"] == {"count": 4, "min": 100, "max": 103}
    assert card["training"]["steps"] == 1 and card["training"]["model"]["arch"] == "lpcvc-mnv3s"
    md = (out / "model_card.md").read_text()
    assert TEACHER[1] in md and f"{card['params']:,}" in md


def test_check_finds_a_changed_file_and_the_command_says_so(exported, tmp_path, capsys):
    out, _, _ = exported
    assert cards.check(out / "model_card.json") == []
    assert cli_main(["student", "card", "--dir", str(out), "--check"]) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with open(copy / "student_int8.onnx", "ab") as f:
        f.write(b"\0")
    problems = cards.check(copy / "model_card.json")
    assert any("student_int8.onnx" in p and "bytes" in p for p in problems)
    assert cli_main(["student", "card", "--dir", str(copy), "--check"]) == 1
    # rebuilding the card over the changed folder makes it consistent again, keeping the steps
    assert cli_main(["student", "card", "--dir", str(copy)]) == 0
    assert cards.check(copy / "model_card.json") == []
    assert [s["kind"] for s in json.loads((copy / "model_card.json").read_text())["steps"]] == ["quantization"]
    # held-out metrics read the store recorded in the weights when --store is not given
    (copy / "student_int8.onnx").write_bytes((out / "student_int8.onnx").read_bytes())
    assert cli_main(["student", "card", "--dir", str(copy), "--held-out", "synth/train", "--limit", "1"]) == 0
    rebuilt = json.loads((copy / "model_card.json").read_text())
    assert set(rebuilt["metrics"]["by_artefact"]) == {"student_fp32.onnx", "student_int8.onnx"}
    assert cards.check(copy / "model_card.json") == []
    capsys.readouterr()


def test_bench_ratios_from_a_fake_clock(exported, monkeypatch):
    """bench_folder times every artefact alternating and derives its ratios from the medians: a fake
    clock advances only when a fake run runs (ms per file below), so the ratios are exact."""
    from student import release

    out, _, _ = exported
    cost = {"model.safetensors": 40.0, "student_fp32.onnx": 10.0, "student_int8.onnx": 4.0}
    now = [0.0]
    order = []

    def fake_runner(path, size, threads):
        def run():
            order.append(path.name)
            now[0] += cost[path.name] / 1000.0
        return run

    monkeypatch.setattr(release, "_runner", fake_runner)
    result = release.bench_folder(out, repeats=3, warmup=1, clock=lambda: now[0])
    ms = {r["file"]: r["ms"] for r in result["rows"]}
    assert ms == pytest.approx(cost)
    # alternating: each round runs every file once, in the same order
    assert order[:3] == order[3:6] == order[6:9] and sorted(order[:3]) == sorted(cost)
    assert result["fp32_over_int8"] == {"onnxruntime": pytest.approx(2.5)}
    assert {r["file"]: r["speedup_vs_reference"] for r in result["rows"]} == pytest.approx(
        {"model.safetensors": 0.25, "student_fp32.onnx": 1.0, "student_int8.onnx": 2.5})
    assert result["best"] == {"fp32": "student_fp32.onnx", "int8": "student_int8.onnx",
                              "fp32_over_int8": pytest.approx(2.5)}
    assert result["input_size"] == [H, W] and result["repeats"] == 3


def test_bench_command_prints_each_file_and_writes_json(exported, tmp_path, capsys):
    out, _, _ = exported
    rc = cli_main(["student", "bench", "--dir", str(out), "--repeats", "1", "--warmup", "0",
                   "--json", str(tmp_path / "b.json")])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("model.safetensors", "student_fp32.onnx", "student_int8.onnx", "onnxruntime: FP32 / INT8",
                 "best FP32"):
        assert name in text
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {(r["runtime"], r["precision"]) for r in doc["rows"]} == {
        ("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    by = {r["file"]: r["ms"] for r in doc["rows"]}
    assert doc["fp32_over_int8"]["onnxruntime"] == pytest.approx(by["student_fp32.onnx"] / by["student_int8.onnx"])


def test_bench_openvino_without_the_extra_says_how_to_install_it(exported, monkeypatch):
    from depthdata.errors import DepthdataError
    from student.release import bench_folder

    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    with pytest.raises(DepthdataError, match=r"openvino extra.*pip install"):
        bench_folder(exported[0], openvino=True)


@pytest.mark.skipif(not openvino_runtime.available(), reason="OpenVINO (extra openvino) not installed")
def test_openvino_runs_the_exported_files_as_onnxruntime_does_and_bench_times_them(exported, tmp_path, capsys):
    """OpenVINO reads the exported ONNX files as they are: in float32 it gives onnxruntime's
    outputs (bf16, its default on such CPUs, would not), its INT8 run drifts from FP32 about as
    little as onnxruntime's INT8; ``student bench --openvino`` adds a row per ONNX file and its
    FP32/INT8 ratio, ``student card --latency --openvino`` their latencies; the ``openvino``
    latency runner times the FP32 export of a model."""
    from student import export
    from student.latency import LatencyMeter
    from student.openvino_runtime import OpenVinoModel

    out, _, checkpoint = exported
    x = np.random.default_rng(3).uniform(0, 255, (1, 3, H, W)).astype(np.float32)
    fp32 = export.run(export.session(out / "student_fp32.onnx"), x)
    got = OpenVinoModel(out / "student_fp32.onnx")(x)
    assert got.shape == fp32.shape == (1, 1, H, W)
    # float32 kernels differ in rounding only (bf16, OpenVINO's default on such CPUs, was 5e-3 off)
    np.testing.assert_allclose(got, fp32, rtol=0, atol=1e-3)
    # int8 kernels round differently from onnxruntime's, pixel by pixel; what must hold is that
    # OpenVINO's INT8 drifts from FP32 about as little as onnxruntime's INT8 does
    ort_drift = np.abs(export.run(export.session(out / "student_int8.onnx"), x) - fp32).mean()
    ov_drift = np.abs(OpenVinoModel(out / "student_int8.onnx")(x) - fp32).mean()
    assert 0 < ort_drift < 0.05 and ov_drift <= 2 * ort_drift

    rc = cli_main(["student", "bench", "--dir", str(out), "--repeats", "1", "--warmup", "0", "--openvino",
                   "--json", str(tmp_path / "b.json")])
    assert rc == 0
    assert "openvino: FP32 / INT8" in capsys.readouterr().out
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {(r["run"], r["runtime"], r["precision"]) for r in doc["rows"] if r["runtime"] == "openvino"} == {
        ("student_fp32.onnx (openvino)", "openvino", "fp32"), ("student_int8.onnx (openvino)", "openvino", "int8")}
    by = {r["run"]: r["ms"] for r in doc["rows"]}
    assert doc["fp32_over_int8"]["openvino"] == pytest.approx(
        by["student_fp32.onnx (openvino)"] / by["student_int8.onnx (openvino)"])

    card_dir = tmp_path / "card"
    card_dir.mkdir()
    for f in out.iterdir():
        (card_dir / f.name).write_bytes(f.read_bytes())
    assert cli_main(["student", "card", "--dir", str(card_dir), "--latency", "--repeats", "1", "--openvino"]) == 0
    card = json.loads((card_dir / "model_card.json").read_text())
    assert {"student_fp32.onnx (openvino)", "student_int8.onnx (openvino)"} <= set(card["latency"]["median_ms"])
    assert "student_int8.onnx (openvino)" in (card_dir / "model_card.md").read_text()
    capsys.readouterr()

    ticks = iter(range(1000))  # a clock that advances 1 s per reading: every timed run takes 1 s
    meter = LatencyMeter("openvino", (H, W), repeats=3, warmup=1, clock=lambda: float(next(ticks)))
    assert meter(load_model(checkpoint)) == pytest.approx(1000.0)


def test_bench_feeds_a_completion_student_its_sparse_map(tmp_path):
    """A completion export takes RGB and a sparse LiDAR map: every runtime of ``student bench``
    gets both (it fed RGB alone and onnxruntime refused the missing input)."""
    from student.arch.base import StudentConfig
    from student.checkpoint import save_model
    from student.export import export_onnx
    from student.model import build_student
    from student.release import bench_folder

    model = build_student(StudentConfig(arch="completion")).eval()
    export_onnx(model, tmp_path / "student_fp32.onnx", (H, W))
    save_model(model, tmp_path / "model.safetensors")
    result = bench_folder(tmp_path, repeats=1, warmup=0, openvino=openvino_runtime.available())
    runs = {r["run"] for r in result["rows"]}
    assert {"student_fp32.onnx", "model.safetensors"} <= runs
    assert all(r["ms"] > 0 for r in result["rows"])


def test_bench_refuses_a_folder_without_models(tmp_path):
    from depthdata.errors import DepthdataError
    from student.release import bench_folder

    with pytest.raises(DepthdataError, match="no exported model"):
        bench_folder(tmp_path)
