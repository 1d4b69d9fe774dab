"""ShardDataset's optional fields: groups lacking one are served without it (mixed-field training)."""

import pytest
from student_fixtures import build_store

from depthdata.stream import ShardDataset


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("optional") / "s.zarr")
    build_store(url, n=4, shard_size=2, h=16, w=24, sparse=False, pairs=False, group=("nyu", "train"))
    build_store(url, n=4, shard_size=2, h=16, w=24, sparse=False, pairs=True, teacher=False, depth=False,
                group=("diw", "train"), add=True)
    return url


def test_optional_fields_are_read_where_a_group_has_them(mixed):
    ds = ShardDataset(mixed, fields=["rgb"], optional_fields=["teacher", "pairs"], shuffle=False, streams=1,
                      batch_size=1)
    assert ds.group_fields == [("rgb", "pairs"), ("rgb", "teacher")]  # groups in path order: diw, nyu
    samples = list(ds)
    assert len(samples) == 8
    for s in samples:
        if s["group"] == "diw/train":
            assert "pairs" in s and "teacher" not in s
        else:
            assert "teacher" in s and "teacher_valid" in s and "pairs" not in s


def test_a_required_field_still_skips_groups_without_it(mixed):
    ds = ShardDataset(mixed, fields=["rgb", "teacher"], shuffle=False, streams=1, batch_size=1)
    assert {s["group"] for s in ds} == {"nyu/train"}


def test_resume_with_optional_fields_continues_the_same_order(mixed):
    kw = dict(fields=["rgb"], optional_fields=["teacher", "pairs"], shuffle=True, seed=4, streams=1, batch_size=2)
    full = [s["sample_id"] for s in ShardDataset(mixed, **kw)]
    first = ShardDataset(mixed, **kw)
    it = iter(first)
    head = [next(it)["sample_id"] for _ in range(4)]  # two full batches
    resumed = ShardDataset(mixed, **kw)
    resumed.load_state_dict(first.state_dict())
    assert head + [s["sample_id"] for s in resumed] == full
    # another set of optional fields is another stream: its state does not resume this one
    other = ShardDataset(mixed, fields=["rgb"], optional_fields=["pairs"], shuffle=True, seed=4, streams=1,
                         batch_size=2)
    with pytest.raises(Exception, match="other settings"):
        other.load_state_dict(first.state_dict())
