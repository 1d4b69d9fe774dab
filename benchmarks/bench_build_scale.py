"""Build throughput at scale: ``ingest`` of 5,000 vs 100,000 tiny images on 2 Dask workers.

The case the orchestration has to survive: 16×16 photos in shards of 8, so 625 and 12,500
shards. Each build runs in its own process (``python -m benchmarks.bench_build_scale run ...``),
the way ``depthdata build`` runs it: the flow on a local 2-worker Dask cluster with a temporary
Prefect server. Reported per build: samples/s over the whole flow run and the flow process's
peak RSS. Baseline in the same run: the 5,000-image build with one shard per task (what builds
did before shards were batched), alternating with the batched one after a warm-up build, so the
batching's effect is measured, not assumed. (100,000 images one shard per task, 12,500 tasks,
would take most of an hour here: not run.)

Goal (issue #14): samples/s at 100,000 ≥ 0.9 × samples/s at 5,000 (cost grows linearly).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness

ROOT = Path(__file__).parent / ".build-scale"
SIZES = {"5k": 5_000, "100k": 100_000}
SIDE = 16
SHARD = 8


def write_images(folder: Path, n: int) -> None:
    import cv2
    import numpy as np

    if (folder / ".complete").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8))
    (folder / ".complete").touch()


def write_catalog(folder: Path, images: Path, store: Path) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(json.dumps({"store": {"url": str(store), "shard_size": SHARD},
                                "datasets": {"photos": {"kind": "images", "root": str(images),
                                                        "resolution": [SIDE, SIDE]}}}))
    return path


def run(catalog: str, max_tasks: int) -> None:
    """Child process: one ingest build; prints its seconds and this process's peak RSS (MiB)."""
    import flows.build as fb

    fb.MAX_TASKS_PER_STAGE = max_tasks
    t0 = time.perf_counter()
    summary = fb.with_runner(fb.build, workers=2)(catalog, stages=["ingest"])
    seconds = time.perf_counter() - t0
    assert summary.ok, summary.to_text()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"seconds": seconds, "samples": summary.stages[0].samples_written, "peak_mib": peak}))


def build(name: str, n: int, max_tasks: int) -> dict[str, float]:
    folder = ROOT / name
    images = ROOT / f"images-{n}"
    write_images(images, n)
    store = folder / "store.zarr"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    catalog = write_catalog(folder, images, store)
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_build_scale", "run", str(catalog), str(max_tasks)],
                         check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["samples"] == n, result
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    import flows.build as fb

    build("warm-up", 1_000, fb.MAX_TASKS_PER_STAGE)  # first build pays cold caches; not counted
    runs: dict[str, list[dict[str, float]]] = {"5k": [], "5k one shard per task": []}
    for _ in range(2):  # alternating, so drift hits both alike
        runs["5k"].append(build("5k", SIZES["5k"], fb.MAX_TASKS_PER_STAGE))
        runs["5k one shard per task"].append(build("5k-unbatched", SIZES["5k"], 10**9))
    runs["100k"] = [build("100k", SIZES["100k"], fb.MAX_TASKS_PER_STAGE)]
    results = []
    rate = {}
    for case, rs in runs.items():
        rates = [r["samples"] / r["seconds"] for r in rs]
        peaks = [r["peak_mib"] for r in rs]
        results += [harness.summary(f"ingest {case}", rates, "samples/s"),
                    harness.summary(f"flow process peak RSS, {case}", peaks, "MiB")]
        rate[case] = results[-2]["median"]
    goals = [harness.goal("samples/s at 100k / at 5k", rate["100k"] / rate["5k"], ">= 0.9"),
             harness.goal("5k: batched / one shard per task (samples/s)", rate["5k"] / rate["5k one shard per task"],
                          ">= 1.0")]
    harness.write("build_scale", {"images": f"{SIDE}x{SIDE} PNG", "shard_size": SHARD, "workers": 2,
                                  "max_tasks_per_stage": fb.MAX_TASKS_PER_STAGE, "stage": "ingest",
                                  "repeats": {"5k": 2, "100k": 1}},
                  results, goals)


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2], int(sys.argv[3]))
    else:
        main()
