"""A trainer process that has run a Prefect flow can still use forked DataLoader workers."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from prefect import flow
    from torch.utils.data import DataLoader
    from depthdata.store import Store
    from depthdata.stream import ShardDataset
    import flows  # noqa: F401  (registers the fork hook that keeps forked workers alive, flows/forksafe.py)

    @flow
    def hello():
        return 1

    url = sys.argv[1]
    store = Store.create(url)
    g = store.create_group("a", "train", [f"a/train/{i}" for i in range(8)], ["-"] * 8, 4, 4, 2)
    g.ensure_fields(["rgb"])
    for k in range(4):
        g.write_shard(k, "ingest", {"rgb": np.zeros((2, 4, 4, 3), np.uint8)}, [{"status": "ok"}] * 2)
    assert hello() == 1
    ds = ShardDataset(url, fields=("rgb",), batch_size=2, streams=2, seed=0)
    print("samples", sum(len(b["sample_id"]) for b in DataLoader(ds, batch_size=2, num_workers=2)))
    """
)


@pytest.mark.slow
def test_forked_workers_survive_a_prefect_flow_in_the_same_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "s.zarr")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "samples 8" in proc.stdout
