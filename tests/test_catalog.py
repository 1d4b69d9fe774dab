import textwrap

import pytest
from pydantic import BaseModel, ConfigDict

from depthdata.catalog import load_catalog
from depthdata.cli import main as cli_main
from depthdata.errors import CatalogError
from depthdata import sources
from depthdata.sources import registry


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: str = "flat"


class _FakeSource(registry.Source):
    kind = "fake-test-kind"
    Options = _Opts

    def splits(self):
        return ["train"]

    def items(self, split):
        return []

    def load(self, split, item):
        raise AssertionError("not used")


@pytest.fixture(autouse=True)
def fake_kind(monkeypatch):
    sources.source_kinds()  # load the built-in kinds first
    monkeypatch.setitem(registry._REGISTRY, "fake-test-kind", _FakeSource)


def write(tmp_path, text):
    p = tmp_path / "catalog.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
store:
  url: out/store.zarr
  shard_size: 16
datasets:
  nyu:
    kind: fake-test-kind
    root: data/nyu
    resolution: [240, 320]
    resize: fit_pad
    options: {layout: flat}
teacher:
  batch_size: 2
lidar:
  beam_model: vlp16
"""


def test_valid_catalog_resolves_paths_against_its_folder(tmp_path):
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    cat = load_catalog(write(tmp_path, GOOD))
    assert cat.store_url == str(tmp_path / "out" / "store.zarr")
    assert cat.dataset_root("nyu") == str(tmp_path / "data" / "nyu")
    assert cat.datasets["nyu"].resolution == (240, 320)
    assert cat.teacher.batch_size == 2 and cat.teacher.model.endswith("Small-hf")
    assert cat.lidar.beam_model == "vlp16"
    assert isinstance(cat.source("nyu"), _FakeSource)


def test_teacher_folder_next_to_the_catalog_is_a_path_and_hub_ids_stay(tmp_path):
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    (tmp_path / "weights" / "tiny").mkdir(parents=True)
    cat = load_catalog(write(tmp_path, GOOD.replace("  batch_size: 2", "  batch_size: 2\n  model: weights/tiny")))
    assert cat.teacher.model == str(tmp_path / "weights" / "tiny")
    cat = load_catalog(write(tmp_path, GOOD))
    assert cat.teacher.model == "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.mark.parametrize(
    "patch, expected",
    [
        (("resize: fit_pad", "resize: stretch"), "datasets.nyu.resize:"),
        (("shard_size: 16", "shard_size: many"), "store.shard_size"),
        (("shard_size: 16", "shard_size: 0"), "store.shard_size"),
        (("  batch_size: 2", "  batch_size: 2\n  colour: red"), "teacher.colour: unknown key"),
        (("kind: fake-test-kind", "kind: kitti"), "datasets.nyu.kind: unknown kind 'kitti'"),
        (("options: {layout: flat}", "options: {layuot: flat}"), "datasets.nyu.options.layuot: unknown key"),
        (("    root: data/nyu\n", ""), "datasets.nyu.root: required key is missing"),
        (("resolution: [240, 320]", "resolution: [2, 320]"), "datasets.nyu.resolution"),
    ],
)
def test_errors_quote_the_yaml_path(tmp_path, patch, expected):
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    with pytest.raises(CatalogError) as err:
        load_catalog(write(tmp_path, GOOD.replace(*patch)))
    assert expected in str(err.value)
    assert str(tmp_path / "catalog.yaml") in str(err.value)


def test_every_problem_is_reported_at_once_nested_and_source_options_included(tmp_path):
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    text = (GOOD.replace("shard_size: 16", "shard_size: 16\n  colour: red")
            .replace("options: {layout: flat}", "options: {layuot: flat}")
            .replace("  beam_model: vlp16", "  beam_model: vlp16\n  beams: 3"))
    with pytest.raises(CatalogError) as err:
        load_catalog(write(tmp_path, text))
    lines = str(err.value).splitlines()[1:]
    assert sorted(line.strip() for line in lines) == [
        "datasets.nyu.options.layuot: unknown key", "lidar.beams: unknown key", "store.colour: unknown key"]


def test_missing_root_is_reported_unless_not_checked(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(CatalogError, match=r"datasets\.nyu\.root: path does not exist: .*data/nyu"):
        load_catalog(path)
    assert load_catalog(path, check_roots=False).datasets["nyu"].kind == "fake-test-kind"


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(write(tmp_path, "datasets: [unclosed"))
    with pytest.raises(CatalogError, match="top level must be a mapping"):
        load_catalog(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_cli_validate(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert cli_main(["catalog", "validate", str(path)]) == 2
    assert "datasets.nyu.root" in capsys.readouterr().err
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    assert cli_main(["catalog", "validate", str(path)]) == 0
    assert "valid — 1 dataset(s): nyu (fake-test-kind)" in capsys.readouterr().out
