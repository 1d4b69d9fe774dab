"""Flows on Dask: LiDAR stage throughput with 1 vs 2 workers, and a full demo build per stage.

1. Scaling. One store of NYU-format samples (analytic room renders, ingest done once) is
   given the ``lidar`` stage through the real flow on a 1-worker and a 2-worker
   ``LocalCluster`` (both started once, outside the timing), alternating, after deleting the
   stage's manifest parts so every repeat redoes every shard. Goal: 2 workers ≥ 1.7× 1 worker.
   Two controls on the same clusters, alternating with it: the same shard function through
   plain Dask (no Prefect), which tells orchestration overhead apart; and a fixed amount of
   pure-Python CPU work in as many tasks as there are shards (no I/O, no libraries), which
   shows what 2 worker processes can get out of this machine's 2 shared cores at that moment.
2. Orchestration cost per task. No-op shard tasks through a flow on the 1-worker cluster,
   with prefect-dask's stock ``DaskTaskRunner`` and with the flows' runner
   (:mod:`flows.dask_runner`, settings shipped as objects), alternating; wall seconds per task
   (every task waits on the worker and the API server one after another) and the CPU seconds
   per task of the flow process, the worker and the API server.
3. The demo. ``depthdata demo``'s data and catalog built once through the ``build`` flow
   (default cluster: one worker per CPU); seconds per sample of each stage, including Prefect
   and Dask overhead, as one measurement (min = median = max).

Run: ``.venv/bin/python -m benchmarks.bench_flows`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np
import yaml
from prefect import task
from prefect.cache_policies import NONE

from benchmarks.harness import alternate, goal, rate, summary, write
from depthdata._system import usable_cpus

#: enough samples that the flow run's fixed cost (~0.2 s of run creation and closing) is
#: amortised as in a real build, where it is paid once for thousands of samples. (Until the
#: temporary server ran flows without heartbeats, every sync flow run also waited 0-1 s at its
#: end for the heartbeat thread, a 10 % step on the ~10 s a 2-worker run of 160 samples takes;
#: benchmarks/NOTES.md gives results at 160 and 320.) An even number of equal shards, so 2 workers can
#: split them evenly (with 5 the best split is 3:2, which caps the 2-worker speed-up at 1.7×
#: whatever the orchestration).
SAMPLES = 320
#: shards of 20 samples: what ``shard_size: auto`` gives a 480×640 build with every field
#: (96 MiB); each shard task costs Prefect/Dask orchestration on top of its LiDAR work
SHARD = 20
#: the stored resolution of NYU / the LPCVC input: LiDAR work per sample as in a real build
RESOLUTION = (480, 640)
REPEATS = 5
#: no-op tasks per flow run in the orchestration comparison
NOOP_TASKS = 40
#: iterations of the CPU control's loop per task: about 1.5 s on one core, near a LiDAR shard task (~2.3 s)
BURN_ITERATIONS = 30_000_000


def cpu_burn(iterations: int) -> int:
    """Pure-Python integer work: one core, no memory traffic, no GIL release, no I/O."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def _nyu_catalog(tmp: Path) -> str:
    from depthdata.demo.data import _rooms
    from depthdata.demo.formats import write_nyu_labeled, write_nyu_splits

    rooms = _rooms(np.random.default_rng(0), SAMPLES, RESOLUTION, "bench rooms")
    root = tmp / "nyu"
    root.mkdir(parents=True)
    write_nyu_labeled(str(root / "nyu_depth_v2_labeled.mat"), np.stack([r.rgb for r in rooms]),
                      np.stack([r.depth for r in rooms]), [f"room_{i}" for i in range(SAMPLES)], ["office"] * SAMPLES)
    write_nyu_splits(str(root / "splits.mat"), list(range(1, SAMPLES + 1)), [])
    cat = {"version": 1, "store": {"url": "store.zarr", "shard_size": SHARD},
           "datasets": {"nyu": {"kind": "nyuv2", "root": "nyu", "resolution": list(RESOLUTION), "splits": ["train"],
                                "options": {"layout": "labeled_mat"}}}}
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(cat))
    return str(path)


def scaling(tmp: Path) -> tuple[list[dict], list[dict]]:
    from distributed import Client, LocalCluster

    from flows import stages
    from flows.build import build, load_run_catalog, with_runner
    from flows.runner import make_task_runner, tune_local_workers

    cat = _nyu_catalog(tmp)
    with_runner(build, workers=0)(cat, stages=["ingest"])
    lidar_parts = tmp / "store.zarr" / "_manifest" / "nyu" / "train" / "lidar"
    tune_local_workers()  # as flows.runner does for the clusters it starts
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
                for n in (1, 2)}
    catalog = load_run_catalog(cat)
    shards = -(-SAMPLES // SHARD)  # ceil: the last shard may be short
    # the stage's own timer (planning, submitting and running the shard tasks) per flow run,
    # without the run's creation and closing artifact, which a build pays once
    stage_seconds: dict[int, list[float]] = {1: [], 2: []}
    try:
        def case(n: int):
            flow_obj = build.with_options(task_runner=make_task_runner(dask_address=clusters[n].scheduler_address))

            def run() -> None:
                shutil.rmtree(lidar_parts, ignore_errors=True)
                s = flow_obj(cat, stages=["lidar"])
                assert s.stages[0].shards_written == shards
                stage_seconds[n].append(s.stages[0].seconds)
            return run

        def plain(n: int):
            # Control: the same shard function on the same cluster without Prefect, to tell
            # orchestration overhead apart from what the machine's free cores allow.
            # The client lives only inside the case (its connection, ~0.1 s, is timed): prefect-dask
            # prefers any live global client over the address it is given.
            def run() -> None:
                shutil.rmtree(lidar_parts, ignore_errors=True)
                with Client(clusters[n], set_as_default=False) as client:
                    futs = [client.submit(stages.run_shard, "lidar", catalog, "nyu", "nyu/train", k, pure=False)
                            for k in range(shards)]
                    assert all(not r.skipped for r in client.gather(futs))
            return run

        def burn(n: int):
            def run() -> None:
                with Client(clusters[n], set_as_default=False) as client:
                    client.gather([client.submit(cpu_burn, BURN_ITERATIONS, pure=False) for _ in range(shards)])
            return run

        times = alternate({"lidar_1_worker": case(1), "lidar_2_workers": case(2),
                           "plain_dask_lidar_1_worker": plain(1), "plain_dask_lidar_2_workers": plain(2),
                           "cpu_control_1_worker": burn(1), "cpu_control_2_workers": burn(2)},
                          repeats=REPEATS, warmup=1)
        orchestration_results = orchestration(clusters[1])
    finally:
        for c in clusters.values():
            c.close()
    results = [rate(name, secs, SAMPLES) for name, secs in times.items() if not name.startswith("cpu_control")]
    results += [rate(name, secs, shards, "tasks/s") for name, secs in times.items() if name.startswith("cpu_control")]
    # alternate() runs a warm-up first: drop it
    results += [rate(f"lidar_stage_only_{n}_worker{'s' if n > 1 else ''}", secs[1:], SAMPLES)
                for n, secs in stage_seconds.items()]

    def speedup(one: str, two: str) -> float:
        return float(np.median(times[one]) / np.median(times[two]))

    ratio = speedup("lidar_1_worker", "lidar_2_workers")
    results.append(summary("control: plain_dask 2 workers / 1 worker",
                           [speedup("plain_dask_lidar_1_worker", "plain_dask_lidar_2_workers")], "ratio"))
    results.append(summary("lidar stage only: 2 workers / 1 worker",
                           [float(np.median(stage_seconds[1][1:]) / np.median(stage_seconds[2][1:]))], "ratio"))
    results.append(summary("control: pure CPU 2 workers / 1 worker (the machine's ceiling)",
                           [speedup("cpu_control_1_worker", "cpu_control_2_workers")], "ratio"))
    return results + orchestration_results, [goal("lidar_2_workers / lidar_1_worker (samples/s)", ratio, ">= 1.7")]


@task(name="noop-shard", cache_policy=NONE)
def noop_shard(stage: str, catalog: dict, dataset: str, group_path: str, shard: int) -> int:
    """A shard task's signature and parameters, no work: what remains is orchestration."""
    return shard


def orchestration(cluster) -> list[dict]:
    """Per-task cost of the stock prefect-dask runner and of the flows' runner, same cluster."""
    import psutil
    from distributed import Client
    from prefect import flow
    from prefect_dask import DaskTaskRunner as StockRunner

    from flows.dask_runner import DaskTaskRunner

    payload = {"data": {"datasets": {f"d{i}": {"root": f"r{i}"} for i in range(4)}}, "base_dir": "/tmp"}
    with Client(cluster, set_as_default=False) as client:
        worker = psutil.Process(next(iter(client.run(os.getpid).values())))
    me = psutil.Process()
    server = [p for p in me.children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
    procs = {"flow_process": [me], "worker": [worker], "api_server": server}
    cpu: dict[str, dict[str, list[float]]] = {}

    def case(name: str, runner_cls):
        @flow(name=f"bench-noop-{name}", task_runner=runner_cls(address=cluster.scheduler_address))
        def noop_flow() -> None:
            futures = [noop_shard.submit("lidar", payload, "nyu", "nyu/train", k) for k in range(NOOP_TASKS)]
            assert [f.result() for f in futures] == list(range(NOOP_TASKS))

        def run() -> None:
            before = {k: sum(sum(p.cpu_times()[:2]) for p in ps) for k, ps in procs.items()}
            noop_flow()
            for k, ps in procs.items():
                used = sum(sum(p.cpu_times()[:2]) for p in ps) - before[k]
                cpu.setdefault(name, {}).setdefault(k, []).append(used / NOOP_TASKS)
        return run

    times = alternate({"stock_prefect_dask": case("stock_prefect_dask", StockRunner),
                       "depthdata_runner": case("depthdata_runner", DaskTaskRunner)}, repeats=REPEATS, warmup=1)
    out = [rate(f"noop_tasks_{name}", secs, NOOP_TASKS, "tasks/s") for name, secs in times.items()]
    for name, per in cpu.items():
        # the warm-up run is the first of each case
        out += [summary(f"cpu_per_noop_task_{name}_{proc}", vals[1:], "s") for proc, vals in per.items()]
    out.append(summary("orchestration: depthdata_runner / stock_prefect_dask (tasks/s)",
                       [float(np.median(times["stock_prefect_dask"]) / np.median(times["depthdata_runner"]))],
                       "ratio"))
    return out


def demo_build(tmp: Path) -> list[dict]:
    from depthdata.demo import write_demo_catalog, write_demo_data
    from flows.build import build
    from depthdata.teacher.checkpoint import default_weights_present

    paths = write_demo_data(tmp / "demo" / "data", seed=0)
    present, _ = default_weights_present()
    cat = write_demo_catalog(tmp / "demo", paths, demo_teacher=True)  # as `make demo` writes it
    s = build(cat, report_dir=str(tmp / "demo" / "report"))
    samples = s.stages[0].samples_written + len(s.stages[0].quarantined)
    out = []
    for st in s.stages:
        per = st.seconds / max(samples, 1)
        out.append(summary(f"demo_{st.stage}{'' if present else '_demo_teacher'}", [per], "s/sample"))
    return out


def main() -> None:
    from flows.runner import prefect_api

    tmp = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    load_before = os.getloadavg()[0]
    try:
        with prefect_api():
            results, goals = scaling(tmp / "scale")
            results += demo_build(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write("flows", {"samples": SAMPLES, "shard_size": SHARD, "resolution": list(RESOLUTION), "repeats": REPEATS,
                    "lidar_beam_model": "hdl64e", "demo": "write_demo_data(seed=0), default workers",
                    # the machine is shared: a 1-minute load average above the core count
                    # means the two workers did not have two free cores
                    "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
          results, goals, cpus_used=str(usable_cpus()))


if __name__ == "__main__":
    main()
