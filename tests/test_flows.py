"""The Prefect flows: summaries, retries, failed shards, resume after a kill, S3 stores.

Flows run against Prefect's test harness (a temporary server on a temporary SQLite database,
started once per session). Every PREFECT_* location points into a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="depthdata-prefect-home-")
# Prefect reads its settings when it is first imported: set them before any import of it.
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
os.environ.pop("PREFECT_API_URL", None)

import fsspec
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from depthdata.catalog import load_catalog
from depthdata.errors import DepthdataError
from depthdata.stage import Quarantined, ShardResult
from depthdata.store import Group, Store
from depthdata.store.verify import verify_store
from flows import stages as flow_stages
from flows.build import BuildFailed, build, with_runner
from flows.summary import BuildSummary, ShardFailure, StageSummary
from flows.tasks import is_transient


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # the server takes several seconds to start on a busy 2-core machine
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


# -- fixtures: small datasets written in their real formats -------------------------------------

COLOURS = [(10 * i, 255 - 10 * i, (37 * i) % 256) for i in range(30)]


def write_images(root: Path, n: int, corrupt: tuple[int, ...] = ()) -> list[tuple[int, int, int]]:
    """``n`` uniformly coloured PNGs ``img00.png``...; ``corrupt`` indices get garbage bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = root / f"img{i:02d}.png"
        if i in corrupt:
            path.write_bytes(b"this is not a png")
        else:
            Image.fromarray(np.full((20, 30, 3), COLOURS[i], np.uint8)).save(path)
    return COLOURS[:n]


def write_catalog(path: Path, datasets: dict, store: dict, **extra) -> str:
    path.write_text(yaml.safe_dump({"version": 1, "store": store, "datasets": datasets, **extra}))
    return str(path)


def images_catalog(tmp: Path, n: int = 7, shard_size: int = 3, corrupt: tuple[int, ...] = ()) -> str:
    write_images(tmp / "pics", n, corrupt)
    return write_catalog(tmp / "catalog.yaml",
                         {"pics": {"kind": "images", "root": "pics", "resolution": [10, 12]}},
                         {"url": "store.zarr", "shard_size": shard_size})


def nyu_catalog(tmp: Path, n: int = 12, shard_size: int = 1, store_url: str = "store.zarr") -> str:
    """A labeled-.mat NYU set of fronto-parallel walls at 1, 2, ... metres (exact depth)."""
    from depthdata.demo.formats import write_nyu_labeled, write_nyu_splits

    root = tmp / "nyu"
    root.mkdir(parents=True, exist_ok=True)
    h, w = 24, 32
    rgb = np.stack([np.full((h, w, 3), COLOURS[i], np.uint8) for i in range(n)])
    depth = np.stack([np.full((h, w), 1.0 + i, np.float32) for i in range(n)])
    write_nyu_labeled(str(root / "nyu_depth_v2_labeled.mat"), rgb, depth, [f"room_{i}" for i in range(n)],
                      ["office"] * n)
    write_nyu_splits(str(root / "splits.mat"), list(range(1, n + 1)), [])
    return write_catalog(tmp / "catalog.yaml",
                         {"nyu": {"kind": "nyuv2", "root": "nyu", "resolution": [24, 32], "splits": ["train"],
                                  "options": {"layout": "labeled_mat"}}},
                         {"url": store_url, "shard_size": shard_size},
                         lidar={"beam_model": "vlp16"})


def manifest_rows(url: str, stage: str, storage_options: dict | None = None) -> dict[str, dict]:
    """sample id → that stage's manifest row (checksums included), over every group."""
    store = Store.open(url, storage_options=storage_options)
    rows = {}
    for path in store.group_paths():
        for row in store.group(path).manifest(stage).to_pylist():
            rows[row["sample_id"]] = row
    return rows


# -- plain unit tests ---------------------------------------------------------------------------

def test_summary_counts_written_skipped_quarantined():
    s = StageSummary("ingest")
    s.add(ShardResult("a/train", "ingest", 0, written=3))
    s.add(ShardResult("a/train", "ingest", 1, written=2,
                      quarantined=[Quarantined("a/train/x", "/d/x.png", "cannot decode")]))
    s.add(ShardResult("a/train", "ingest", 2, skipped=True))
    s.failures.append(ShardFailure("a/train", 3, "OSError: disk gone"))
    assert (s.shards_written, s.shards_skipped, s.samples_written, len(s.quarantined)) == (2, 1, 5, 1)
    summary = BuildSummary("/tmp/s.zarr", [s])
    assert not summary.ok
    md = summary.to_markdown()
    assert "| ingest | 2 | 1 | 1 | 5 | 1 |" in md
    assert "| ingest | a/train shard 3 | OSError: disk gone |" in md
    assert "| ingest | a/train/x | /d/x.png | cannot decode |" in md
    text = summary.to_text()
    assert "FAILED a/train shard 3: OSError: disk gone" in text
    assert "quarantined a/train/x (/d/x.png): cannot decode" in text


def test_parse_stages_keeps_pipeline_order_and_rejects_unknown():
    assert flow_stages.parse_stages("lidar,ingest") == ["ingest", "lidar"]
    assert flow_stages.parse_stages(None) == ["ingest", "teacher", "lidar", "eda"]
    with pytest.raises(Exception, match="unknown stage.*teach"):
        flow_stages.parse_stages("ingest,teach")


def test_only_transient_io_errors_are_retried():
    assert is_transient(ConnectionResetError("reset by peer"))
    assert is_transient(TimeoutError("slow bucket"))
    assert is_transient(OSError(5, "I/O error"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(ValueError("bad data"))


def test_object_store_client_errors_are_transient_and_credentials_are_not():
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, NoCredentialsError
    from aiohttp import ServerDisconnectedError

    # what s3fs lets through when the endpoint is down: not OSError, still an outage
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket"))
    assert is_transient(ConnectionClosedError(endpoint_url="http://127.0.0.1:9/bucket"))
    assert is_transient(ServerDisconnectedError())
    assert not is_transient(NoCredentialsError())  # waiting does not bring credentials
    try:  # a library that wraps the outage in its own error
        try:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket")
        except EndpointConnectionError as exc:
            raise RuntimeError("zarr could not read the chunk") from exc
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


def test_serve_reports_a_bad_catalog_before_asking_for_a_server(tmp_path, monkeypatch, capsys):
    from depthdata.cli import main

    cat = Path(images_catalog(tmp_path))
    cat.write_text(cat.read_text() + "\nbogus: 1\n")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve", str(cat), "--cron", "0 3 * * *"]) == 2
    err = capsys.readouterr().err
    assert "bogus: unknown key" in err and "PREFECT_API_URL" not in err


def test_serve_parameters_are_absolute_and_checked(tmp_path, monkeypatch):
    from flows.deploy import deployment_parameters

    images_catalog(tmp_path)
    monkeypatch.chdir(tmp_path)
    params = deployment_parameters("catalog.yaml", only=["pics"], stages="lidar,ingest", store_url="out.zarr",
                                   workers=2)
    assert params["catalog_path"] == str(tmp_path / "catalog.yaml")
    assert (params["workers"], params["dask_address"]) == (2, None)
    assert params["store_url"] == str(tmp_path / "out.zarr")
    assert params["stages"] == ["ingest", "lidar"]
    assert deployment_parameters("catalog.yaml", report_dir="rep")["report_dir"] == str(tmp_path / "rep")
    assert deployment_parameters("catalog.yaml", report_dir="s3://b/rep")["report_dir"] == "s3://b/rep"
    with pytest.raises(Exception, match="--only.*nope"):
        deployment_parameters("catalog.yaml", only=["nope"])
    with pytest.raises(DepthdataError, match="cannot be combined"):
        deployment_parameters("catalog.yaml", dask_address="tcp://h:8786", workers=2)


def test_report_goes_beside_the_store_local_or_remote(tmp_path, monkeypatch):
    from flows.build import load_run_catalog, resolve_report_dir

    images_catalog(tmp_path)
    monkeypatch.chdir(tmp_path)
    local = load_run_catalog("catalog.yaml", "builds/x.zarr")
    # named after the store: two stores in one folder keep their own report
    assert resolve_report_dir(None, local) == str(tmp_path / "builds" / "x-report")
    assert resolve_report_dir(None, load_run_catalog("catalog.yaml", "builds/y.zarr")) == str(tmp_path / "builds" / "y-report")
    assert resolve_report_dir("elsewhere", local) == str(tmp_path / "elsewhere")  # relative to the current folder
    remote = load_run_catalog("catalog.yaml", "s3://bucket/builds/x.zarr/")
    assert resolve_report_dir(None, remote) == "s3://bucket/builds/x-report"
    assert resolve_report_dir("gs://other/rep", remote) == "gs://other/rep"


def test_teacher_is_loaded_once_per_worker_process_with_dask_thread_count(monkeypatch):
    from depthdata.teacher import model
    from depthdata.teacher import stage as teacher_stage
    from depthdata.teacher.config import TeacherConfig

    loaded = []
    monkeypatch.setattr(model, "load_teacher", lambda cfg: loaded.append(cfg) or object())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a Dask nanny gives each worker process
    teacher_stage._load_cached.cache_clear()
    config = TeacherConfig(model="/nonexistent/ckpt")
    threads = flow_stages.task_threads()
    first, second = teacher_stage.loaded_teacher(config, threads), teacher_stage.loaded_teacher(config, threads)
    teacher_stage._load_cached.cache_clear()
    assert first is second and len(loaded) == 1
    assert loaded[0].threads == 1 and loaded[0].model == "/nonexistent/ckpt"


# -- flows in the test harness (tasks in this process) ------------------------------------------

def before_each_shard(monkeypatch, hook):
    """Call ``hook(stage, shard)`` ahead of every shard task's real work (it may raise); works for
    tasks in this process and in in-process Dask workers. Returns the real function."""
    real = flow_stages.run_shard

    def wrapped(stage, catalog, dataset, group_path, shard):
        hook(stage, shard)
        return real(stage, catalog, dataset, group_path, shard)

    monkeypatch.setattr(flow_stages, "run_shard", wrapped)
    return real


def in_process(flow_obj=build):
    return with_runner(flow_obj, workers=0)


def test_build_writes_every_shard_then_rerun_skips_them(prefect_api, tmp_path, monkeypatch):
    cat = images_catalog(tmp_path, n=7, shard_size=3)
    first = in_process()(cat, stages=["ingest"])
    ingest = first.stages[0]
    assert (ingest.shards_written, ingest.shards_skipped, ingest.samples_written) == (3, 0, 7)
    group = Store.open(str(tmp_path / "store.zarr")).group("pics/train")
    rgb = group.array("rgb")[:]
    # uniform images stay uniform whatever the resampling: every pixel is the file's colour
    for i, colour in enumerate(COLOURS[:7]):
        sid = f"pics/train/img{i:02d}.png"
        assert np.all(rgb[group.index_of(sid)] == np.array(colour, np.uint8)), sid
    # the finished stage left a consolidated manifest, which says every part
    index = group.stage_index("ingest")
    assert index.consolidated and sorted(index.parts) == [0, 1, 2] and index.read_from_parts == []
    ran = []
    before_each_shard(monkeypatch, lambda stage, shard: ran.append(shard))
    monkeypatch.setattr(Group, "consolidate", lambda self, stage: ran.append(("consolidate", stage)))
    again = in_process()(cat, stages=["ingest"])
    assert (again.stages[0].shards_written, again.stages[0].shards_skipped) == (0, 3)
    assert ran == []  # planning saw every shard complete: no shard task, nothing to consolidate


def test_flow_called_as_is_takes_its_task_runner_from_the_environment_at_run_time(prefect_api, tmp_path,
                                                                                  monkeypatch):
    # as a served deployment's run does: it imports flows.build anew and calls the flow
    cat = images_catalog(tmp_path, n=3, shard_size=3)
    monkeypatch.setenv("DEPTHDATA_WORKERS", "several")
    with pytest.raises(DepthdataError, match="DEPTHDATA_WORKERS='several' is not an integer"):
        build(cat, stages=["ingest"])
    monkeypatch.setenv("DEPTHDATA_WORKERS", "0")  # tasks in this process
    assert build(cat, stages=["ingest"]).stages[0].shards_written == 1


def test_the_runs_workers_parameter_wins_over_the_environment(prefect_api, tmp_path, monkeypatch):
    """``workers`` / ``dask_address`` are parameters of the run (the UI shows them, a custom run
    changes them): given, they choose the runner whatever the environment says."""
    cat = images_catalog(tmp_path, n=3, shard_size=3)
    pids = []
    before_each_shard(monkeypatch, lambda stage, shard: pids.append(os.getpid()))
    monkeypatch.setenv("DEPTHDATA_DASK_ADDRESS", "tcp://127.0.0.1:9")  # nothing listens there
    assert build(cat, stages=["ingest"], workers=0).stages[0].shards_written == 1
    assert pids == [os.getpid()]
    with pytest.raises(DepthdataError, match="cannot be combined"):
        build(cat, stages=["ingest"], workers=0, dask_address="tcp://127.0.0.1:9")


def test_unreadable_file_is_quarantined_with_its_reason(prefect_api, tmp_path):
    cat = images_catalog(tmp_path, n=5, shard_size=2, corrupt=(3,))
    summary = in_process()(cat, stages=["ingest"])
    s = summary.stages[0]
    assert summary.ok and s.samples_written == 4
    assert [q.sample_id for q in s.quarantined] == ["pics/train/img03.png"]
    assert "img03.png" in s.quarantined[0].source_uri and s.quarantined[0].reason
    assert "pics/train/img03.png" in summary.to_markdown()


def test_failed_shard_fails_the_run_others_complete_and_rerun_redoes_it(prefect_api, tmp_path, monkeypatch):
    cat = images_catalog(tmp_path, n=7, shard_size=3)

    def broken(stage, shard):
        if shard == 1:
            raise ValueError("simulated bug in shard 1")

    real = before_each_shard(monkeypatch, broken)
    with pytest.raises(BuildFailed) as err:
        in_process()(cat, stages=["ingest"])
    summary = err.value.summary
    assert [(f.group, f.shard) for f in summary.stages[0].failures] == [("pics/train", 1)]
    assert "ValueError: simulated bug in shard 1" in summary.stages[0].failures[0].reason
    assert summary.stages[0].shards_written == 2
    group = Store.open(str(tmp_path / "store.zarr")).group("pics/train")
    assert group.complete_shards("ingest") == [0, 2]

    monkeypatch.setattr(flow_stages, "run_shard", real)
    rerun = in_process()(cat, stages=["ingest"])
    assert (rerun.stages[0].shards_written, rerun.stages[0].shards_skipped) == (1, 2)
    assert group.complete_shards("ingest") == [0, 1, 2]


def test_transient_io_error_is_retried(prefect_api, tmp_path, monkeypatch):
    cat = images_catalog(tmp_path, n=4, shard_size=2)
    calls = []

    def flaky(stage, shard):
        calls.append(shard)
        if shard == 0 and calls.count(0) == 1:
            raise ConnectionResetError("connection reset by the object store")

    before_each_shard(monkeypatch, flaky)
    summary = in_process()(cat, stages=["ingest"])
    assert summary.ok and summary.stages[0].shards_written == 2
    assert calls.count(0) == 2 and calls.count(1) == 1


def test_build_publishes_a_markdown_artifact(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.summary import artifact_key

    cat = images_catalog(tmp_path, n=3, shard_size=3)
    in_process()(cat, stages=["ingest"])
    key = artifact_key(str(tmp_path / "store.zarr"))
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert arts, f"no {key} artifact"
    latest = max(arts, key=lambda a: a.created)
    assert latest.type == "markdown"
    assert str(tmp_path / "store.zarr") in latest.data and "| ingest | 1 | 0 | 0 | 3 | 0 |" in latest.data


def test_cli_build_prints_summary_and_exit_status(prefect_api, tmp_path, capsys, monkeypatch):
    from depthdata.cli import main

    cat = images_catalog(tmp_path, n=5, shard_size=2, corrupt=(4,))
    argv = ["build", cat, "--stages", "ingest", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ingest" in out and "4 samples written, 1 quarantined" in out and "3 written, 0 skipped" in out
    assert "quarantined pics/train/img04.png" in out


    def first_shard_breaks(stage, shard):
        if shard == 0:
            raise RuntimeError("boom")

    before_each_shard(monkeypatch, first_shard_breaks)
    (tmp_path / "store.zarr" / "_manifest" / "pics" / "train" / "ingest" / "shard-000000.parquet").unlink()
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "FAILED pics/train shard 0: RuntimeError: boom" in captured.out
    assert "0 written, 2 skipped" in captured.out and "1 failed" in captured.out
    assert main(["build", str(tmp_path / "missing.yaml")]) == 2


# -- end to end: subprocess kill and resume, a 2-worker Dask cluster, an S3 store --------------

def test_teacher_tasks_run_only_on_workers_with_the_gpu_resource(prefect_api, tmp_path, monkeypatch):
    """``--teacher-gpu 1``: teacher shards go to workers that declare a ``GPU`` resource, others
    take the rest. Two in-process workers, one declaring ``GPU=1``; 6 teacher shards."""
    from distributed import Scheduler, SpecCluster, Worker, get_worker
    from prefect_dask import DaskTaskRunner

    cat = nyu_catalog(tmp_path, n=6, shard_size=1)
    doc = yaml.safe_load(Path(cat).read_text())
    doc["teacher"] = {"allow_random_init": True}
    Path(cat).write_text(yaml.safe_dump(doc))
    ran_on: list[tuple[str, str]] = []
    before_each_shard(monkeypatch, lambda stage, shard: ran_on.append((stage, get_worker().name)))
    workers = {"cpu": {"cls": Worker, "options": {"nthreads": 1, "name": "cpu"}},
               "gpu": {"cls": Worker, "options": {"nthreads": 1, "name": "gpu", "resources": {"GPU": 1}}}}
    with SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}, workers=workers) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        summary = build.with_options(task_runner=runner)(cat, stages=["ingest", "teacher"], teacher_gpu=1)
    assert [st.shards_written for st in summary.stages] == [6, 6]
    assert sorted(w for st, w in ran_on if st == "teacher") == ["gpu"] * 6
    assert len([w for st, w in ran_on if st == "ingest"]) == 6


@pytest.mark.slow
def test_serve_registers_a_cron_deployment_and_keeps_serving(prefect_api, tmp_path):
    """``depthdata serve`` in its own process, against the harness's server: the deployment of
    the build flow appears with its cron schedule and absolute parameters; Ctrl-C stops it."""
    from prefect.client.orchestration import get_client

    cat = images_catalog(tmp_path)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen([sys.executable, "-m", "depthdata", "serve", cat, "--cron", "15 3 * * *",
                             "--name", "nightly", "--timezone", "Europe/Paris", "--only", "pics", "--workers", "3"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def deployment():
        import anyio

        async def read():
            async with get_client() as client:
                try:
                    return await client.read_deployment_by_name("depthdata-build/nightly")
                except Exception:  # not registered yet
                    return None
        return anyio.run(read)

    try:
        found, deadline = None, time.monotonic() + 180
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            found = deployment()
        assert found is not None, proc.stdout.read() if proc.poll() is not None else "serve never registered"
        assert [(s.schedule.cron, s.schedule.timezone) for s in found.schedules] == [("15 3 * * *", "Europe/Paris")]
        assert found.parameters["catalog_path"] == str(tmp_path / "catalog.yaml")
        assert found.parameters["only"] == ["pics"]
        # what shapes a run is on the deployment in the UI: the cluster too, and where the flow is
        assert found.parameters["workers"] == 3 and found.parameters["dask_address"] is None
        assert found.entrypoint == "flows.build.build"
        assert {"depthdata", "catalog:catalog", "store:store.zarr"} <= set(found.tags)
        assert proc.poll() is None  # still serving, waiting for the schedule
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_local_cluster_workers_leave_glibc_malloc_dynamic_and_do_not_profile(prefect_api, monkeypatch):
    """Dask's nanny would export MALLOC_TRIM_THRESHOLD_=65536 to every worker (and leaves it in
    this process's environment after starting a cluster): that freezes glibc's mmap threshold
    and made the LiDAR stage 2× slower. Workers of the clusters the flows start do without it,
    and without the dashboard's statistical profiler (they have no dashboard)."""
    from prefect import flow, task

    from flows.runner import make_task_runner

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier default cluster leaves it

    @task
    def worker_environment():
        import dask
        return (os.getpid(), os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
                dask.config.get("distributed.worker.profile.enabled"))

    @flow(task_runner=make_task_runner(workers=1))
    def probe():
        return worker_environment.submit().result()

    pid, trim, omp, profiling = probe()
    assert pid != os.getpid() and trim is None and profiling is False
    assert omp == "1"  # Dask's other settings stay


def test_tasks_on_dask_workers_see_the_flows_prefect_settings(prefect_api, monkeypatch):
    """The flows' runner ships the run's Prefect settings to workers as the models themselves
    (not re-validated per task): a worker in another process, whose environment has neither
    value, still sees the API URL and a setting changed only in this process, and a setting
    changed inside the flow reaches the tasks submitted under it. Submitting gives each task a
    key named after it instead of hashing the call (arguments, settings and all) for one."""
    import distributed.client
    from prefect import flow, task
    from prefect.settings import PREFECT_UI_URL, get_current_settings, temporary_settings

    from flows.runner import make_task_runner

    @task
    def worker_settings():
        from distributed import get_worker

        s = get_current_settings()
        return os.getpid(), str(s.api.url), s.ui_url, os.environ.get("PREFECT_UI_URL"), get_worker().get_current_task()

    @flow(task_runner=make_task_runner(workers=1))
    def probe():
        outer = worker_settings.submit().result()
        with temporary_settings(updates={PREFECT_UI_URL: "http://inner.example"}):
            inner = worker_settings.submit().result()
        return outer, inner

    hashed = []
    monkeypatch.setattr(distributed.client, "tokenize", lambda *a, **k: hashed.append(a) or "h")
    with temporary_settings(updates={PREFECT_UI_URL: "http://outer.example"}):
        (pid, api, ui, env_ui, key), (_, inner_api, inner_ui, _, inner_key) = probe()
    assert hashed == []
    assert pid != os.getpid() and env_ui is None and "PREFECT_API_URL" not in os.environ
    assert api == inner_api == prefect_api
    assert ui == "http://outer.example" and inner_ui == "http://inner.example"
    # Dask keys (what the dashboard shows) name the Prefect task, one key per submission
    assert key.startswith("worker_settings-") and inner_key.startswith("worker_settings-") and key != inner_key


def test_temporary_server_runs_flows_without_heartbeats(prefect_api, tmp_path):
    """Heartbeats let a server mark a run whose process died as crashed. The temporary server a
    build starts without ``PREFECT_API_URL`` dies with the process, so they are off there (a
    sync flow run waits up to 1 s for the heartbeat thread at its end); with a server the user
    runs they stay on. The temporary server is stopped when the block ends, after the run's
    last log lines reached it (stopped first, they were lost and the process retried sending
    them for a minute at exit)."""
    from prefect import flow
    from prefect.settings import get_current_settings

    from flows.runner import prefect_api as run_api

    @flow
    def heartbeat_seconds():
        return get_current_settings().flows.heartbeat_frequency

    with run_api() as url:
        assert url == prefect_api
        assert heartbeat_seconds() is not None

    script = ("import urllib.request\n"
              "from prefect import flow, get_run_logger\n"
              "from prefect.settings import get_current_settings\n"
              "from flows.runner import prefect_api\n"
              "@flow\n"
              "def heartbeat_seconds():\n"
              "    get_run_logger().info('last words of the run')\n"
              "    return get_current_settings().flows.heartbeat_frequency\n"
              "with prefect_api() as url:\n"
              "    print('temporary', url, heartbeat_seconds())\n"
              "try:\n"
              "    urllib.request.urlopen(url + '/health', timeout=5)\n"
              "    print('server still up')\n"
              "except OSError:\n"
              "    print('server stopped')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("temporary"))
    _, url, seconds = line.split()
    assert url.startswith("http://127.0.0.1:") and seconds == "None"
    assert "server stopped" in proc.stdout
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:  # the server's own database
        messages = [m for (m,) in db.execute("SELECT message FROM log")]
    assert "last words of the run" in messages


def test_a_server_started_before_the_imports_is_used_or_stopped_unused(prefect_api, monkeypatch):
    """``depthdata build`` starts a temporary server before it imports Prefect (when
    ``PREFECT_API_URL`` is not in the environment); when the settings name a server after all
    (here the test harness's), that one is used and the speculative one is stopped."""
    from flows.local_server import TemporaryServer, start_early
    from flows.runner import prefect_api as run_api

    server = TemporaryServer.start()
    process = server.process
    with run_api(server) as url:
        assert url == prefect_api
    assert process.poll() is not None and server.process is None

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    assert start_early() is None  # a server the user runs: nothing is started


def test_the_temporary_server_writes_to_its_own_log_not_the_terminal(tmp_path, monkeypatch, capfd, caplog):
    """The server's output (Prefect's, e.g. a traceback of its event recorder cancelled by the
    stop) goes to a file: kept and named in the log when it has something, removed when empty;
    a server that cannot start raises with the end of that file."""
    from flows.local_server import TemporaryServer

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "DEBUG")  # so that the server says something
    server = TemporaryServer.start()
    server.wait(120)
    path = server.log_path
    with caplog.at_level("INFO", logger="flows.local_server"):
        server.stop()
    assert "Started server process" in path.read_text()
    assert str(path) in caplog.text
    assert "Started server process" not in capfd.readouterr().err
    path.unlink()

    monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://nobody:x@127.0.0.1:1/none")
    server = TemporaryServer.start()
    with pytest.raises(RuntimeError, match=r"(?s)exited with code .*the end of its log .*Connect call failed"):
        server.wait(120)
    server.stop()
    server.log_path.unlink()


def _parts(store: Path, stage: str) -> int:
    return len(list((store / "_manifest").glob(f"*/*/{stage}/shard-*.parquet")))


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_store_as_an_uninterrupted_one(prefect_api, tmp_path):
    from depthdata.store.verify import verify_store

    n = 12
    cat = nyu_catalog(tmp_path, n=n, shard_size=1)
    store = tmp_path / "store.zarr"
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    cmd = [str(Path(sys.executable).parent / "depthdata"), "-q", "build", cat, "--stages", "ingest,lidar", "--workers", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        # kill once some shards are complete and others are not
        while _parts(store, "ingest") < n // 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0].decode(errors="replace")
    done_at_kill = _parts(store, "ingest") + _parts(store, "lidar")
    assert 0 < done_at_kill < 2 * n, f"the kill did not land mid-build ({done_at_kill} parts):\n{out[-3000:]}"

    resumed = with_runner(build, workers=2)(cat, stages=["ingest", "lidar"])  # a 2-worker LocalCluster
    assert resumed.ok
    ingest, lidar = resumed.stages
    assert ingest.shards_skipped >= n // 3 and ingest.shards_written + ingest.shards_skipped == n
    assert lidar.shards_written + lidar.shards_skipped == n

    clean = in_process()(cat, stages=["ingest", "lidar"], store_url=str(tmp_path / "clean.zarr"))
    assert clean.ok
    report = verify_store(str(store))
    assert report.ok, report.to_dict()
    for stage in ("ingest", "lidar"):
        got, want = manifest_rows(str(store), stage), manifest_rows(str(tmp_path / "clean.zarr"), stage)
        assert sorted(got) == sorted(want) and len(got) == n
        for sid, row in want.items():
            checks = [k for k in row if k.startswith("checksum_")]
            assert checks and {k: got[sid][k] for k in checks} == {k: row[k] for k in checks}, sid


@pytest.mark.slow
def test_build_into_s3_store_served_by_moto(prefect_api, tmp_path, s3_bucket):
    from depthdata.store.verify import verify_store

    opts = s3_bucket
    write_images(tmp_path / "pics", 5)
    cat = write_catalog(tmp_path / "catalog.yaml",
                        {"pics": {"kind": "images", "root": "pics", "resolution": [10, 12]}},
                        {"url": "s3://depth/build.zarr", "shard_size": 2, "storage_options": opts})
    summary = in_process()(cat, stages=["ingest", "eda"])
    assert summary.ok and summary.stages[0].samples_written == 5
    # the report goes beside the store, in the bucket, written with the store's options
    assert summary.stages[1].outputs == ["s3://depth/build-report/stats.parquet", "s3://depth/build-report/report.html"]
    with fsspec.open("s3://depth/build-report/stats.parquet", "rb", **opts) as f:
        assert len(pd.read_parquet(f)) == 5
    rows = manifest_rows("s3://depth/build.zarr", "ingest", opts)
    assert sorted(rows) == [f"pics/train/img{i:02d}.png" for i in range(5)]
    assert verify_store("s3://depth/build.zarr", storage_options=opts).ok
    again = in_process()(cat, stages=["ingest"])
    assert again.stages[0].shards_skipped == 3


def test_many_shards_are_batched_into_a_bounded_number_of_tasks():
    from flows.build import batches

    jobs = [("d", "d/a", k) for k in range(10_000)] + [("d", "d/b", k) for k in range(7)]
    out = batches(jobs, max_tasks=256)
    per_task = -(-len(jobs) // 256)  # 40 shards per task
    assert len(out) <= 257 and all(len(shards) <= per_task for _, _, shards in out)
    # every job exactly once, in order, and a task never mixes groups
    assert [(ds, p, k) for ds, p, shards in out for k in shards] == jobs
    assert {p for _, p, _ in out if len(out)} == {"d/a", "d/b"}
    # few shards: one per task, as before
    assert batches(jobs[:5], max_tasks=256) == [("d", "d/a", [k]) for k in range(5)]


def test_a_batch_reports_each_shard_and_retries_only_transient_errors(monkeypatch):
    from flows import tasks

    calls = []

    def run_shard(stage, catalog, dataset, group_path, shard):
        calls.append(shard)
        if shard == 1:
            raise ValueError("bad shard")
        if shard == 2 and calls.count(2) < 3:
            raise ConnectionResetError("object store reset")
        return ShardResult(group_path, stage, shard, written=4)

    monkeypatch.setattr(flow_stages, "run_shard", run_shard)
    slept = []
    outcomes = tasks.run_shards("ingest", None, "d", "d/a", [0, 1, 2, 3], sleep=slept.append)
    assert [(o.shard, o.result.written if o.result else o.error) for o in outcomes] == [
        (0, 4), (1, "ValueError: bad shard"), (2, 4), (3, 4)]
    assert calls == [0, 1, 2, 2, 2, 3] and len(slept) == 2  # two retries of shard 2, none of shard 1


def test_a_retry_that_finds_the_shard_its_own_attempt_wrote_reports_it_written(prefect_api, tmp_path, monkeypatch):
    """An attempt can land every write and lose only the last reply (seen in CI: a connection
    reset after the manifest part's PUT). Its retry finds the shard complete; the build must
    count it as written by this run, with its quarantined sample, not as done before it. A shard
    that was complete before the run stays "skipped" when its own first try meets a fault."""
    from flows import tasks

    cat = images_catalog(tmp_path, n=4, shard_size=2, corrupt=(3,))
    monkeypatch.setattr(tasks, "RETRY_BACKOFF_S", 0.01)
    real, calls = flow_stages.run_shard, []

    def reply_lost(stage, catalog, dataset, group_path, shard):
        calls.append(shard)
        result = real(stage, catalog, dataset, group_path, shard)
        if shard == 1 and calls.count(1) == 1:
            raise ConnectionResetError("connection reset after the write landed")
        return result

    monkeypatch.setattr(flow_stages, "run_shard", reply_lost)
    ingest = in_process()(cat, stages=["ingest"]).stages[0]
    assert calls == [0, 1, 1]
    assert (ingest.shards_written, ingest.shards_skipped, ingest.samples_written) == (2, 0, 3)
    assert [q.sample_id for q in ingest.quarantined] == ["pics/train/img03.png"]
    assert "img03.png" in ingest.quarantined[0].source_uri and ingest.quarantined[0].reason

    # no pause: parts record their time to the microsecond, so a shard completed a moment
    # before the task started, within the same second, still counts as done before it
    calls.clear()

    def fault_first(stage, catalog, dataset, group_path, shard):
        calls.append(shard)
        if shard == 1 and calls.count(1) == 1:
            raise ConnectionResetError("connection reset before anything was read")
        return real(stage, catalog, dataset, group_path, shard)

    monkeypatch.setattr(flow_stages, "run_shard", fault_first)
    # straight to the task's loop: a build's plan would not give complete shards a task at all
    again = tasks.run_shards("ingest", load_catalog(cat), "pics", "pics/train", [0, 1], sleep=lambda s: None)
    assert calls == [0, 1, 1]
    assert [(o.shard, o.result.skipped) for o in again] == [(0, True), (1, True)]


def test_a_storage_outage_while_planning_is_retried_then_reported_not_raised(prefect_api, tmp_path, monkeypatch):
    """The flow process's own store calls (planning a stage) get the shards' retry policy, and a
    persistent outage ends in the summary (a failed dataset with its reason), not a traceback."""
    from botocore.exceptions import EndpointConnectionError

    import flows.build as fb

    cat = images_catalog(tmp_path, n=4, shard_size=2)
    monkeypatch.setattr(fb, "RETRY_BACKOFF_S", 0.01)
    real, calls = fb.open_store, []

    def flaky(catalog, create=False):
        calls.append(1)
        if len(calls) <= 2:  # an endpoint that comes back after two tries
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/depth")
        return real(catalog, create)

    monkeypatch.setattr(fb, "open_store", flaky)
    assert in_process()(cat, stages=["ingest"]).stages[0].shards_written == 2

    def down(catalog, create=False):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/depth")

    monkeypatch.setattr(fb, "open_store", down)
    with pytest.raises(BuildFailed) as err:
        in_process()(cat, stages=["ingest"])
    [failure] = err.value.summary.stages[0].failures
    assert failure.group == "pics" and "planning failed: EndpointConnectionError" in failure.reason


def test_build_reports_user_errors_without_a_traceback(tmp_path):
    """A bad catalog is refused before Prefect starts; a build whose shards fail prints its
    summary and an ``error:`` line — neither prints a traceback."""
    import subprocess
    import sys

    cat = images_catalog(tmp_path, n=3, shard_size=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(cat).read_text() + "\nbogus: 1\n")
    run = subprocess.run([sys.executable, "-m", "depthdata", "build", str(bad), "--workers", "0", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "error: " in run.stderr and "bogus: unknown key" in run.stderr
    assert "Traceback" not in run.stderr and "prefect" not in run.stderr.lower()


def test_demo_into_an_unusable_folder_is_one_error_line(tmp_path, capsys):
    from depthdata.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {blocker}: cannot make the output folder") and "Traceback" not in err


@pytest.mark.slow
def test_a_failed_build_prints_its_summary_and_error_without_a_traceback(tmp_path):
    cat = images_catalog(tmp_path, n=3, shard_size=3)
    # the teacher stage before any ingest: every dataset fails to plan, the build fails
    run = subprocess.run([sys.executable, "-m", "depthdata", "build", cat, "--stages", "teacher", "--workers", "0",
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "build FAILED" in run.stdout and "error: " in run.stderr
    assert "Traceback" not in run.stderr



# -- storage outages: a real moto server behind a TCP proxy the test stops (tests/netfaults.py) ---

#: botocore's own retries make one attempt per call, so the outage is bridged (or not) by the
#: build's retry policy alone (flows.tasks.RETRIES, RETRY_BACKOFF_S) and a failed call fails fast
ONE_ATTEMPT = {"config_kwargs": {"retries": {"total_max_attempts": 1}}}


def s3_images_catalog(tmp: Path, opts: dict, n: int, shard_size: int, **extra) -> str:
    write_images(tmp / "pics", n)
    return write_catalog(tmp / "catalog.yaml", {"pics": {"kind": "images", "root": "pics", "resolution": [10, 12]}},
                         {"url": "s3://depth/build.zarr", "shard_size": shard_size,
                          "storage_options": {**opts, **ONE_ATTEMPT}}, **extra)


def committed_view(url: str, storage_options: dict | None = None) -> dict:
    """What a reader of the store's newest committed version sees: per group, the sample ids in
    slot order, every field's bytes per sample, and each stage's checksums per sample."""
    store = Store.open(url, storage_options=storage_options)
    assert store.latest_version() is not None, f"{url}: no committed version"
    view = {}
    for path in store.group_paths():
        g = store.group(path)
        ids = [r["sample_id"] for r in g.manifest("ingest").to_pylist()]
        view[path] = {
            "ids": ids,
            "data": {f: {sid: g.read(sid, [f])[f].tobytes() for sid in ids} for f in g.fields()},
            "checksums": {st: {r["sample_id"]: {k: v for k, v in r.items() if k.startswith("checksum_")}
                               for r in g.manifest(st).to_pylist()} for st in g.stages()},
        }
    return view


def test_a_build_that_cannot_reach_its_store_ends_in_a_summary_and_runs_once_it_is_back(
        prefect_api, tmp_path, s3_behind_proxy, monkeypatch):
    """The endpoint is down when the build starts: taking the build lock is retried, then the
    build fails with the reason in its summary (it raised out of the flow before, issue #15);
    once the endpoint is back the same build runs."""
    import flows.build as fb

    proxy, opts, _ = s3_behind_proxy
    monkeypatch.setattr(fb, "RETRY_BACKOFF_S", 0.01)  # in-process: the policy's shape, not its waits
    cat = s3_images_catalog(tmp_path, opts, n=3, shard_size=3)
    proxy.stop()
    with pytest.raises(BuildFailed) as err:
        in_process()(cat, stages=["ingest"])
    [(stage, failure)] = err.value.summary.failures
    assert stage == "lock" and failure.group == "(whole store)"
    assert failure.reason.startswith("cannot take the build lock: EndpointConnectionError")
    assert "FAILED (whole store): cannot take the build lock" in err.value.summary.to_text()
    proxy.start()
    summary = in_process()(cat, stages=["ingest"])
    assert summary.ok and summary.stages[0].samples_written == 3


@pytest.mark.slow
def test_after_an_outage_fails_an_ingest_shard_the_teacher_labels_every_complete_one(
        prefect_api, tmp_path, s3_behind_proxy, monkeypatch):
    """Issue #15, item 2: an outage that outlasts the retries fails ingest shard 1; the endpoint
    is back before the teacher stage, which labels the complete shards 0 and 2 and reports
    shard 1 as waiting for ingest (it once failed the complete shards with an internal
    'call prepare_group' error). A re-run completes the store as an uninterrupted build does."""
    import flows.build as fb
    import flows.tasks as ft

    proxy, opts, _ = s3_behind_proxy
    monkeypatch.setattr(ft, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(fb, "RETRY_BACKOFF_S", 0.01)
    cat = s3_images_catalog(tmp_path, opts, n=6, shard_size=2, teacher={"allow_random_init": True, "tta": False})
    down = []

    def outage(stage, shard):  # before every attempt of every shard
        if (stage, shard) == ("ingest", 1):
            if not down:
                proxy.stop()  # the endpoint goes away as shard 1 starts, for all its attempts
                down.append(1)
        elif down:
            proxy.start()  # and is back for the next shard
            down.clear()

    real = before_each_shard(monkeypatch, outage)
    with pytest.raises(BuildFailed) as err:
        in_process()(cat, stages=["ingest", "teacher"])
    ingest, teacher = err.value.summary.stages
    assert (ingest.shards_written, [(f.shard, f.reason.split(":")[0]) for f in ingest.failures]) == (
        2, [(1, "EndpointConnectionError")])
    assert teacher.shards_written == 2 and teacher.samples_written == 4
    assert [(f.shard, f.reason) for f in teacher.failures] == [(1, "ingest is not complete for this shard")]
    assert "prepare" not in err.value.summary.to_text()

    monkeypatch.setattr(flow_stages, "run_shard", real)
    resumed = in_process()(cat, stages=["ingest", "teacher"])
    assert resumed.ok and resumed.committed
    assert [(s.shards_written, s.shards_skipped) for s in resumed.stages] == [(1, 2), (1, 2)]
    from depthdata.store.verify import verify_store

    report = verify_store("s3://depth/build.zarr", storage_options=opts)
    assert report.ok, report.to_dict()
    clean = in_process()(cat, stages=["ingest", "teacher"], store_url=str(tmp_path / "clean.zarr"))
    assert clean.ok
    assert committed_view("s3://depth/build.zarr", opts) == committed_view(str(tmp_path / "clean.zarr"))


class BuildProcess:
    """``depthdata build`` in its own process against the harness's Prefect server, its stderr
    read line by line as it comes (so a test can wait for what the build says)."""

    def __init__(self, prefect_api: str, cwd: Path, *args: str):
        import threading

        env = {**os.environ, "PREFECT_API_URL": prefect_api}
        self.proc = subprocess.Popen([sys.executable, "-m", "depthdata", "build", *args, "--no-progress"], env=env,
                                     cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, done, what: str, timeout: float = 240) -> None:
        """Poll ``done()`` until it is true; fails naming ``what`` if the build ends first."""
        deadline = time.monotonic() + timeout
        while not done():
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                f"the build ended before {what}:\n{''.join(self.lines)[-3000:]}"
            time.sleep(0.02)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        """``(exit status, stdout, stderr)`` once the process has ended."""
        # stderr is the reader thread's until its end of file: communicate() would read and
        # close it under the thread (ValueError: I/O operation on closed file, now and then)
        self._reader.join(timeout)
        out = self.proc.communicate(timeout=timeout)[0]
        return self.proc.returncode, out, "".join(self.lines)


def part_count(fs, store: str, stage: str) -> int:
    fs.invalidate_cache()  # s3fs keeps listings: a watcher must list again
    return len(fs.glob(f"{store}/_manifest/*/*/{stage}/shard-*.parquet"))


def expected_images(n: int, h: int = 10, w: int = 12) -> dict[str, np.ndarray]:
    """sample id → the rgb a build of :func:`write_images` stores (a flat colour stays flat)."""
    return {f"pics/train/img{i:02d}.png": np.full((h, w, 3), COLOURS[i], np.uint8) for i in range(n)}


@pytest.mark.slow
def test_a_short_storage_outage_during_ingest_is_bridged_by_the_retries(prefect_api, tmp_path, s3_behind_proxy):
    """Issue #15, item 1: the endpoint of an S3 store goes away for 6 s while ``depthdata build``
    ingests (a separate process; the proxy refuses and resets its connections). The shard that
    meets the outage is retried and the build completes; the store verifies and holds every image.

    6 s, not the issue's 8 s: the shortest retry window is 1 + 2 + 4 = 7 s (back-off 2, 4 s ×
    the jitter's low end 0.5, ...), so 6 s is bridged whatever the jitter draws, while 8 s would
    fail in a small fraction of runs; botocore's own retries are off (ONE_ATTEMPT), so the
    build's policy is what bridges it (without it the shard failed at once)."""
    proxy, opts, direct = s3_behind_proxy
    n = 6
    cat = s3_images_catalog(tmp_path, opts, n=n, shard_size=1)
    watch = fsspec.filesystem("s3", skip_instance_cache=True, **direct)  # the bucket, not through the proxy
    build_ = BuildProcess(prefect_api, tmp_path, cat, "--stages", "ingest", "--workers", "0")
    build_.wait_for(lambda: part_count(watch, "depth/build.zarr", "ingest") >= 1, "the first ingest shard")
    proxy.stop()
    time.sleep(6)  # the outage itself, not a wait for a result
    proxy.start()
    code, out, err = build_.finish()
    assert code == 0, out + err[-3000:]
    # the outage met a shard in flight, which said so and retried
    assert re.search(r"ingest pics/train shard \d+: EndpointConnectionError: .*; retrying in", err), err[-3000:]
    assert f"{n} samples written, 0 quarantined; shards: {n} written" in out
    assert "Traceback" not in err + out
    report = verify_store("s3://depth/build.zarr", storage_options=opts)
    assert report.ok, report.to_dict()
    view = committed_view("s3://depth/build.zarr", opts)["pics/train"]
    want = expected_images(n)
    assert view["ids"] == sorted(want)
    assert view["data"]["rgb"] == {sid: rgb.tobytes() for sid, rgb in want.items()}


@pytest.mark.slow
def test_a_long_storage_outage_ends_the_build_in_a_summary_and_a_rerun_completes_it(prefect_api, tmp_path,
                                                                                  s3_behind_proxy):
    """Issue #15, items 1 and 3: the endpoint goes away during ingest and stays away until the
    build process has ended (about 40-80 s here: longer than any retry window, 21 s at most).
    Everything the outage meets outlasts its retries: the ingest shard in flight, the
    consolidation, the planning of the LiDAR stage (the build process's own calls) and the lock's
    release. The build still ends as builds end: exit status 1, the summary naming each failure
    and its reason, no traceback. With the endpoint back, running the same command again
    completes the store: it verifies and equals an uninterrupted build's."""
    proxy, opts, direct = s3_behind_proxy
    n, shards = 6, 3
    cat = nyu_catalog(tmp_path, n=n, shard_size=2, store_url="s3://depth/build.zarr")
    doc = yaml.safe_load(Path(cat).read_text())
    doc["store"]["storage_options"] = {**opts, **ONE_ATTEMPT}
    Path(cat).write_text(yaml.safe_dump(doc))
    args = (cat, "--stages", "ingest,lidar", "--workers", "0")
    watch = fsspec.filesystem("s3", skip_instance_cache=True, **direct)
    build_ = BuildProcess(prefect_api, tmp_path, *args)
    build_.wait_for(lambda: part_count(watch, "depth/build.zarr", "ingest") >= 1, "the first ingest shard")
    proxy.stop()
    t0 = time.monotonic()
    code, out, err = build_.finish()
    outage_s = time.monotonic() - t0
    proxy.start()
    # the shards run one after another (--workers 0): those done before the outage stay done (one,
    # or two on a machine slow to notice the first), the rest fail; three shards so some do
    done = part_count(watch, "depth/build.zarr", "ingest")
    assert 1 <= done < shards, done
    assert code == 1, out + err[-3000:]
    assert out.startswith("build FAILED"), out
    # The watcher sees a part once the bucket has stored it, which can be before the build has
    # the PUT's reply: the outage may then cut that reply, and the build rightly reports the
    # last stored shard as failed too (it cannot know the PUT took effect; the re-run finds the
    # part and skips it). So the summary's failures are the shards after the stored ones, or
    # those and the last stored one.
    m = re.search(r"ingest .* (\d+) failed.*\n +FAILED (.*?): EndpointConnectionError: Could not connect", out)
    assert m, out
    n_failed = int(m.group(1))
    assert n_failed in (shards - done, shards - done + 1), out
    first = shards - n_failed
    failed = f"nyu/train shard {first}" if n_failed == 1 else \
        f"{n_failed} shards: nyu/train shards {first}-{shards - 1}"  # the summary groups one reason's shards
    assert m.group(2) == failed, out
    assert "FAILED nyu: planning failed: EndpointConnectionError: Could not connect" in out  # the LiDAR stage
    assert "no version committed" in out
    # (whether the lock's release also met the outage depends on timing: the release is retried
    # for ~20 s, and a loaded machine may reach it after the outage; tests/test_lock.py covers it)
    assert "Traceback" not in out + err, err[-5000:]
    print(f"outage {outage_s:.0f} s")  # shown with -s: how long the build carried on without its store

    again = BuildProcess(prefect_api, tmp_path, *args)
    code, out, err = again.finish()
    assert code == 0, out + err[-3000:]
    assert re.search(rf"ingest +{2 * (shards - done)} samples written, 0 quarantined; shards: {shards - done} "
                     rf"written, {done} skipped", out), out
    from depthdata.cli import main

    assert main(["verify", "s3://depth/build.zarr", "--storage-options", json.dumps(opts)]) == 0
    clean = in_process()(cat, stages=["ingest", "lidar"], store_url=str(tmp_path / "clean.zarr"))
    assert clean.ok
    assert committed_view("s3://depth/build.zarr", opts) == committed_view(str(tmp_path / "clean.zarr"))


def store_files(store: Path) -> int:
    """Files a build has written so far (its lock aside): how far along it is."""
    return sum(len([f for f in files if f != "_build.lock"]) for _, _, files in os.walk(store))


@pytest.mark.slow
def test_builds_killed_at_random_points_resume_to_the_store_of_an_uninterrupted_build(prefect_api, tmp_path):
    """``depthdata build`` killed with SIGKILL at 5 random points (seeded), each followed by the
    same build again: every resumed store verifies, has committed, skips exactly the shards that
    were complete at the kill and equals an uninterrupted build's store (every sample once, the
    same bytes and checksums). The kill points are drawn over the build's progress: the number of
    files it has written, from the store's creation to its commit."""
    n = 4
    cat = nyu_catalog(tmp_path, n=n, shard_size=1)
    stages_ = ["ingest", "lidar"]
    assert in_process()(cat, stages=stages_, store_url=str(tmp_path / "clean.zarr")).ok
    want = committed_view(str(tmp_path / "clean.zarr"))
    total = store_files(tmp_path / "clean.zarr")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    rng = np.random.default_rng(15)
    landed = []
    for point in range(5):
        store = tmp_path / f"killed{point}.zarr"
        target, delay = int(rng.integers(1, total + 1)), float(rng.uniform(0, 0.1))
        proc = subprocess.Popen([sys.executable, "-m", "depthdata", "build", cat, "--stages", ",".join(stages_),
                                 "--store", str(store), "--workers", "0", "--no-progress"], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        try:
            while (not store.exists() or store_files(store) < target) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            with contextlib.suppress(ProcessLookupError):  # a build that finished first is a kill point too
                os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0].decode(errors="replace")
        assert proc.returncode in (-signal.SIGKILL, 0), out[-3000:]
        done = (_parts(store, "ingest"), _parts(store, "lidar"))
        landed.append((target, *done, proc.returncode))

        resumed = in_process()(cat, stages=stages_, store_url=str(store))
        assert resumed.ok and resumed.committed, (target, done)
        for stage, complete_at_kill in zip(resumed.stages, done):
            assert (stage.shards_skipped, stage.shards_written) == (complete_at_kill, n - complete_at_kill), \
                (stage.stage, target, done)
        report = verify_store(str(store))
        assert report.ok, (target, done, report.to_dict())
        assert committed_view(str(store)) == want, (target, done)
    print("kill points (files written of", total, ", ingest parts, lidar parts, exit):", landed)
    # the points spread over the build: most kills left it unfinished, at different stages of it
    assert sum(code != 0 for *_, code in landed) >= 3 and len({(i, li) for _, i, li, _ in landed}) >= 3, landed


#: a build that SIGKILLs itself inside zarr's atomic write of its ``KILL_AT``-th file: the
#: temporary file is written and flushed, the rename into place never happens
DIE_MID_WRITE = textwrap.dedent("""
    import contextlib, os, runpy, signal, sys
    import zarr.storage._local as local

    real, writes = local._atomic_write, [0]

    @contextlib.contextmanager
    def dying(path, *args, **kwargs):
        with real(path, *args, **kwargs) as f:
            yield f
            writes[0] += 1
            if writes[0] == int(os.environ["KILL_AT"]):
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    local._atomic_write = dying
    sys.argv = ["depthdata", *sys.argv[1:]]
    runpy.run_module("depthdata", run_name="__main__")
""")


def test_temporary_files_of_a_build_killed_mid_write_are_removed_by_the_next_build(prefect_api, tmp_path, caplog):
    """A build killed inside a zarr write leaves ``<name>.<uuid>.partial`` files in the store; the next
    build takes the dead build's lock over and, its work done, removes them (and only
    that: a user's file named ``*.partial`` stays), and the store verifies."""
    import logging

    cat = nyu_catalog(tmp_path, n=4, shard_size=1)
    store = tmp_path / "store.zarr"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "KILL_AT": "12"}
    proc = subprocess.run([sys.executable, "-c", DIE_MID_WRITE, "-q", "build", cat, "--stages", "ingest",
                           "--workers", "0", "--no-progress"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    # zarr writes some files concurrently, so the kill can catch more than one mid-write
    debris = sorted(store.rglob("*.partial"))
    assert debris and all(re.fullmatch(r".+\.[0-9a-f]{32}\.partial", p.name) for p in debris), debris
    assert (store / "_build.lock").exists()  # the killed build's
    mine = store / "notes.partial"
    mine.write_text("not zarr's")
    old = time.time() - 3600
    os.utime(mine, (old, old))

    with caplog.at_level(logging.INFO):
        resumed = in_process()(cat, stages=["ingest"])
    assert resumed.ok and resumed.committed
    assert [p for p in store.rglob("*.partial")] == [mine]
    assert not (store / "_build.lock").exists()
    assert f"removed {len(debris)} temporary file(s) the killed build left" in caplog.text
    assert str(debris[0].relative_to(store)) in caplog.text
    assert verify_store(str(store)).ok


# -- a corpus of bad inputs, one file per case, among good ones ---------------------------------

def _png(path: Path, array: np.ndarray) -> bytes:
    """Write ``array`` as a PNG with Pillow (not the OpenCV the readers use); returns its bytes."""
    Image.fromarray(array).save(path)
    return path.read_bytes()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width×height`` RGB pixels, with a single row of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width)))
            + chunk(b"IEND", b""))


def bad_input_corpus(tmp: Path) -> tuple[str, dict[str, dict[str, np.ndarray]], dict[str, tuple[str, str]]]:
    """A catalog over five sources in their real layouts, each folder holding good files and
    bad ones (one file per problem). Returns the catalog, ``{good sample id: {field: what the
    store must hold}}`` (computed here, not by the readers) and ``{bad sample id: (what the
    reason must name, the problem it must state)}``."""
    from depthdata.demo.formats import write_nyu_labeled

    good: dict[str, dict[str, np.ndarray]] = {}
    bad: dict[str, tuple[str, str]] = {}
    h, w = 20, 30
    flat = lambda colour: np.full((h, w, 3), colour, np.uint8)  # noqa: E731

    # images: every file under the root that is named like an image
    pics = tmp / "pics"
    pics.mkdir()
    _png(pics / "good.png", flat((200, 30, 90)))
    good["pics/train/good.png"] = {"rgb": flat((200, 30, 90))}
    Image.fromarray(flat((40, 160, 220))).save(pics / "good.jpg", quality=95)
    decoded = np.asarray(Image.open(pics / "good.jpg").convert("RGB"))  # Pillow's decoder, not OpenCV's
    assert (decoded == decoded[0, 0]).all()  # a flat colour stays flat through JPEG
    good["pics/train/good.jpg"] = {"rgb": np.broadcast_to(decoded[0, 0], (h, w, 3))}
    _png(pics / "gray.png", np.full((h, w), 77, np.uint8))
    good["pics/train/gray.png"] = {"rgb": flat((77, 77, 77))}
    _png(pics / "alpha.png", np.dstack([flat((200, 100, 50)), np.full((h, w), 128, np.uint8)]))
    good["pics/train/alpha.png"] = {"rgb": flat((200 * 128 // 255, 100 * 128 // 255, 50 * 128 // 255))}  # over black
    (pics / "png_named.jpg").write_bytes((pics / "good.png").read_bytes())  # known by content, not by name
    good["pics/train/png_named.jpg"] = {"rgb": flat((200, 30, 90))}
    jpeg = (pics / "good.jpg").read_bytes()
    png = (pics / "good.png").read_bytes()
    cases = {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "JPEG end marker missing"),
        "truncated.png": (png[: len(png) // 2], "cannot decode image (truncated or corrupt)"),
        "empty.png": (b"", "file is empty (0 bytes)"),
        "text.png": (b"not an image, just text\n", "not a recognised image file"),
        "crc.png": (png[:-20] + bytes([png[-20] ^ 0xFF]) + png[-19:], "cannot decode image"),
    }
    for name, (data, problem) in cases.items():
        (pics / name).write_bytes(data)
        bad[f"pics/train/{name}"] = (name, problem)
    (pics / "huge.png").write_bytes(png_declaring(100_000, 100_000))  # 10^10 pixels: never allocated
    bad["pics/train/huge.png"] = ("huge.png", "its header declares more pixels than OpenCV decodes")
    _png(pics / "depth16.png", np.full((h, w), 4000, np.uint16))  # a depth map among the photos
    bad["pics/train/depth16.png"] = ("depth16.png", "expected an 8-bit colour image, got 16-bit samples")
    (pics / "dangling.png").symlink_to(pics / "moved-away.png")
    bad["pics/train/dangling.png"] = ("dangling.png", "file not found")
    if os.geteuid() != 0:  # root reads whatever the permissions say
        _png(pics / "unreadable.png", flat((1, 2, 3)))
        (pics / "unreadable.png").chmod(0)
        bad["pics/train/unreadable.png"] = ("unreadable.png", "cannot read file: Permission denied")
    (pics / "folder.png").mkdir()  # a folder named like an image is a folder, not a sample
    _png(pics / "folder.png" / "inside.png", flat((5, 6, 7)))
    good["pics/train/folder.png/inside.png"] = {"rgb": flat((5, 6, 7))}

    # images from a list file, which names a missing file and a folder
    (pics / "list.txt").write_text("good.png\nmissing.png\nfolder.png\n")
    good["listed/train/good.png"] = {"rgb": flat((200, 30, 90))}
    bad["listed/train/missing.png"] = ("missing.png", "file not found")
    bad["listed/train/folder.png"] = ("folder.png", "expected a file, found a folder")

    # SYNTHIA (rand): 16-bit depth in centimetres beside each RGB frame
    rgb_dir, depth_dir = tmp / "synthia" / "RGB", tmp / "synthia" / "Depth" / "Depth"
    rgb_dir.mkdir(parents=True)
    depth_dir.mkdir(parents=True)
    cm = np.full((h, w), 250, np.uint16)
    frames = {  # frame: (rgb bytes writer, depth writer or None, problem or None)
        "0000000": (cm, None),
        "0000001": (None, "file not found"),
        "0000002": (np.full((h // 2, w // 2), 250, np.uint16), f"depth is {h // 2}×{w // 2} but its RGB image"),
        "0000003": (np.full((h, w), 250, np.uint8), "wrong bit depth"),
        "0000004": (np.zeros((h, w), np.uint16), "depth has no valid pixel"),
    }
    for frame, (depth, problem) in frames.items():
        _png(rgb_dir / f"{frame}.png", flat((10, 20, 30)))
        if depth is not None:
            _png(depth_dir / f"{frame}.png", depth)
        if problem is None:
            good[f"synth/train/{frame}"] = {"rgb": flat((10, 20, 30)), "depth": np.full((h, w), 2.5, np.float32)}
        else:
            bad[f"synth/train/{frame}"] = (f"Depth/{frame}.png", problem)
    (rgb_dir / "0000005.png").write_bytes(png[:40])  # a broken RGB frame whose depth is fine
    _png(depth_dir / "0000005.png", cm)
    bad["synth/train/0000005"] = ("RGB/0000005.png", "cannot decode image")

    # NYU scene folders: N.jpg + N.png, 8-bit depth where 0-255 spans 0-10 m
    scene = tmp / "nyuf" / "kitchen_0001_out"
    scene.mkdir(parents=True)
    for i in range(1, 6):
        Image.fromarray(flat((40, 160, 220))).save(scene / f"{i}.jpg", quality=95)
    _png(scene / "1.png", np.full((h, w), 51, np.uint8))
    good["nyuf/train/kitchen_0001_out/1"] = {"rgb": np.broadcast_to(decoded[0, 0], (h, w, 3)),
                                             "depth": np.full((h, w), 51 * 10 / 255, np.float32)}
    bad["nyuf/train/kitchen_0001_out/2"] = ("kitchen_0001_out/2.png", "file not found")  # no depth file
    _png(scene / "3.png", np.full((h, w), 5100, np.uint16))
    bad["nyuf/train/kitchen_0001_out/3"] = ("kitchen_0001_out/3.png", "wrong bit depth")
    _png(scene / "4.png", np.full((h + 2, w), 51, np.uint8))
    bad["nyuf/train/kitchen_0001_out/4"] = ("kitchen_0001_out/4.png", f"depth is {h + 2}×{w}")
    (scene / "5.jpg").write_text("not a photo")
    _png(scene / "5.png", np.full((h, w), 51, np.uint8))
    bad["nyuf/train/kitchen_0001_out/5"] = ("kitchen_0001_out/5.jpg", "not a recognised image file")

    # NYU labeled .mat, raw depth in metres: one good sample, then one bad value per sample
    raw = np.full((4, h, w), 3.0, np.float32)
    raw[1, 5, 5], raw[2, 7, 7], raw[3] = -1.0, np.inf, 0.0
    (tmp / "nyum").mkdir()
    write_nyu_labeled(str(tmp / "nyum" / "nyu_depth_v2_labeled.mat"), np.stack([flat((90, 90, 90))] * 4),
                      np.full((4, h, w), 3.0, np.float32), ["room"] * 4, ["office"] * 4, raw_depth=raw)
    good["nyum/all/00000"] = {"rgb": flat((90, 90, 90)), "depth": np.full((h, w), 3.0, np.float32)}
    for i, problem in ((1, "depth has negative values"), (2, "depth has infinite values"),
                       (3, "depth has no valid pixel")):
        bad[f"nyum/all/{i:05d}"] = (f"[rawDepths][{i}]", problem)

    # DIW: two lines per record (image path, then y_A,x_A,y_B,x_B,ord,width,height, 1-based)
    diw = tmp / "diw"
    diw.mkdir()
    for name in ("good", "fields", "letters", "outside", "order", "last"):
        _png(diw / f"{name}.png", flat((60, 70, 80)))
    records = [("good.png", f"10,5,2,7,>,{w},{h}", None),
               ("fields.png", "10,5,2", "expected 7 fields"),
               ("letters.png", f"ten,5,2,7,>,{w},{h}", "must be integers"),
               ("outside.png", f"{h + 1},5,2,7,>,{w},{h}", f"y_A={h + 1} outside 1..{h}"),
               ("order.png", f"10,5,2,7,=,{w},{h}", "unknown order symbol '='"),
               ("missing.png", f"10,5,2,7,<,{w},{h}", "file not found")]
    lines = []
    for k, (image, record, problem) in enumerate(records):
        lines += [image, record]
        stem = image[:-4]
        if problem is None:  # 1-based (y, x) → 0-based pixel centres; '>' (A farther) → +1
            good[f"diw/train/{stem}"] = {"rgb": flat((60, 70, 80)), "pairs": np.array([[9, 4, 1, 6, 1]], np.float32)}
        else:
            bad[f"diw/train/{stem}"] = (image if problem == "file not found" else f"DIW_train_val.csv:{2 * k + 2}",
                                        problem)
    lines.append("last.png")  # a record cut off after its first line
    bad["diw/train/last"] = (f"DIW_train_val.csv:{len(lines)}", "record lacks its second line")
    (diw / "DIW_train_val.csv").write_text("\n".join(lines) + "\n")

    size = {"resolution": [h, w]}  # the stored size is the files' size: values are compared as they are
    datasets = {
        "pics": {"kind": "images", "root": "pics", **size},
        "listed": {"kind": "images", "root": "pics", **size, "options": {"list_file": "list.txt"}},
        "synth": {"kind": "synthia", "root": "synthia", **size},
        "nyuf": {"kind": "nyuv2", "root": "nyuf", **size, "options": {"layout": "scene_folders"}},
        "nyum": {"kind": "nyuv2", "root": "nyum", **size, "options": {"layout": "labeled_mat", "raw_depth": True}},
        "diw": {"kind": "diw", "root": "diw", **size},
    }
    cat = write_catalog(tmp / "catalog.yaml", datasets, {"url": "store.zarr", "shard_size": 4})
    return cat, good, bad


def test_a_corpus_of_bad_inputs_quarantines_each_with_its_reason_and_stores_every_good_one(prefect_api, tmp_path):
    """Held-out style check over every source kind: each bad file is quarantined with a reason
    naming it and its problem, each good one is stored with exactly the values computed here,
    and no item of any source is missing from the manifest or counted twice."""
    (tmp_path / "corpus").mkdir()
    cat, good, bad = bad_input_corpus(tmp_path / "corpus")
    summary = in_process()(cat, stages=["ingest"])
    assert summary.ok and summary.committed
    ingest = summary.stages[0]
    assert ingest.samples_written == len(good)
    reasons = {q.sample_id: q.reason for q in ingest.quarantined}
    assert sorted(reasons) == sorted(bad)
    for sid, (names, problem) in bad.items():
        assert names in reasons[sid] and problem in reasons[sid], (sid, reasons[sid])

    store = Store.open(str(tmp_path / "corpus" / "store.zarr"))
    seen = []
    for path in store.group_paths():
        g = store.group(path)
        rows = g.manifest("ingest").to_pylist()
        seen += [r["sample_id"] for r in rows]
        for r in rows:
            sid = r["sample_id"]
            assert r["status"] == ("ok" if sid in good else "quarantined"), (sid, r["reason"])
            if sid in bad:
                assert r["reason"] == reasons[sid]
                continue
            stored = g.read(sid, list(good[sid]))
            for field, want in good[sid].items():
                np.testing.assert_allclose(stored[field][: len(want)] if field == "pairs" else stored[field], want,
                                           rtol=1e-6, err_msg=f"{sid} {field}")
    assert sorted(seen) == sorted([*good, *bad])  # nothing lost, nothing twice
    assert verify_store(str(tmp_path / "corpus" / "store.zarr")).ok


# -- the operator's view: run names and tags, task states, logs, the artifact (#21) -------------

def test_artifact_groups_identical_failures_shortens_paths_and_links_outputs():
    from flows.summary import group_failures

    store, root = "/data/builds/nyu.zarr", "/data/raw/nyu"
    long_reason = f"TeacherError: no weights for 'depth-anything/x' under {store}/_cache: " + "details " * 70
    teacher = StageSummary("teacher", failures=[ShardFailure(ds, -1, f"planning failed: {long_reason}")
                                                 for ds in ("a", "b", "c", "d", "e")])
    lidar = StageSummary("lidar", failures=[ShardFailure("a/train", k, "ValueError: boom") for k in (0, 1, 2, 5)])
    ingest = StageSummary("ingest")
    ingest.add(ShardResult("nyu/train", "ingest", 0, written=1, quarantined=[
        Quarantined("nyu/train/x.png", f"{root}/rooms/x.png", f"{root}/rooms/x.png: not a recognised image file"),
        Quarantined("nyu/train/y.png", f"{root}/rooms/y.png", f"{root}/rooms/y.png: not a recognised image file")]))
    eda = StageSummary("eda", outputs=[f"/data/builds/nyu-report/{n}" for n in ("stats.parquet", "report.html")],
                       note="report up to date (version 3)")
    summary = BuildSummary(store, [ingest, teacher, lidar, eda], version=3, committed=True,
                           catalog="/etc/depthdata/nightly.yaml", roots={"nyu": root},
                           warnings=["teacher: tiny RANDOMLY INITIALISED teacher"])
    md = summary.to_markdown()
    assert md.startswith("# depthdata build of catalog `nightly`: FAILED")
    # five identical 600-character reasons: one row with a count, the path under the store shortened
    assert md.count("TeacherError") == 1 and "| teacher | 5 datasets: a, b, c, d, e |" in md
    assert f"{store}/_cache" not in md and "{store}/_cache" in md
    assert "| lidar | 4 shards: a/train shards 0-2, 5 | ValueError: boom |" in md
    # the source relative to its dataset's root, the reason without the path it repeated
    assert "| ingest | 2: nyu/train/x.png, nyu/train/y.png | rooms/x.png, rooms/y.png | not a recognised image file |" in md
    assert "[`/data/builds/nyu.zarr`](file:///data/builds/nyu.zarr)" in md
    assert "[`report.html`](file:///data/builds/nyu-report/report.html)" in md
    assert "- **EDA report** report up to date (version 3)" in md and "| eda |" not in md  # no row of zeros
    assert "## Warnings\n\n- teacher: tiny RANDOMLY INITIALISED teacher" in md
    assert "`{store}` = `/data/builds/nyu.zarr`" in md
    assert group_failures([("x", ShardFailure("g", 1, "r"))], {}) == [("x", "g shard 1", "r")]
    text = summary.to_text()
    assert "FAILED 4 shards: a/train shards 0-2, 5: ValueError: boom" in text
    assert "eda     report up to date (version 3)" in text and "warning: teacher: tiny" in text
    assert "      kept /data/builds/nyu-report/report.html" in text


def test_artifact_key_is_one_per_store_and_valid():
    import re

    from flows.summary import artifact_key

    a, b = artifact_key("/data/a/store.zarr"), artifact_key("/data/b/store.zarr")
    assert a != b and a == artifact_key("/data/a/store.zarr/")
    assert a.startswith("depthdata-build-store-") and artifact_key("s3://Bkt/My_Build.zarr").startswith(
        "depthdata-build-my-build-")
    for key in (a, b, artifact_key("s3://Bkt/My_Build.zarr"), artifact_key("/x/.zarr")):
        assert re.fullmatch(r"[a-z0-9-]+", key), key


def test_task_state_message_says_written_skipped_quarantined_failed():
    from flows.tasks import ShardOutcome, outcome_message

    q = Quarantined("pics/train/b.png", "/d/pics/b.png", "/d/pics/b.png: not a recognised image file")
    outcomes = [ShardOutcome(0, ShardResult("pics/train", "ingest", 0, written=2)),
                ShardOutcome(1, ShardResult("pics/train", "ingest", 1, written=1, quarantined=[q])),
                ShardOutcome(2, ShardResult("pics/train", "ingest", 2, skipped=True)),
                ShardOutcome(3, error="ValueError: boom")]
    assert outcome_message(outcomes, "/d/pics") == (
        "3 samples written in 2 shards; 1 shard skipped (already complete); 1 quarantined: pics/train/b.png: "
        "not a recognised image file; 1 of 4 shards FAILED: shard 3: ValueError: boom")
    assert outcome_message([ShardOutcome(0, ShardResult("g", "lidar", 0, skipped=True))]) == \
        "1 shard skipped (already complete)"


def test_run_names_say_catalog_store_and_stages():
    import datetime as dt

    from flows.build import run_name

    now = dt.datetime(2026, 11, 22, 3, 15, 0)
    assert run_name("build", {"catalog_path": "/c/nightly.yaml", "store_url": "s3://b/x.zarr"}, now) == \
        "build-nightly-x.zarr-all-20261122-031500"
    assert run_name("build", {"catalog_path": "/c/nightly.yaml", "store_url": "/s/y.zarr", "only": ["nyu", "diw"],
                              "stages": ["lidar", "ingest"]}, now) == \
        "build-nightly-nyu+diw-y.zarr-ingest+lidar-20261122-031500"
    assert run_name("lidar", {"catalog_path": "/c/nightly.yaml", "store_url": "/s/y.zarr"}, now) == \
        "lidar-nightly-y.zarr-20261122-031500"


def _flow_run(client, name_prefix: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name_prefix)))
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


def _send_logs():
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)


def test_ui_shows_run_tags_task_outcomes_and_library_logs(prefect_api, tmp_path):
    """What the UI reads back through the API after a build with a corrupt image: the run's name
    and tags, the task that quarantined saying so in its state, and the library's own log line
    (``depthdata.ingest``) among the run's logs, attached to that task run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId

    (tmp_path / "cat").mkdir()
    cat = images_catalog(tmp_path / "cat", n=5, shard_size=2, corrupt=(3,))
    store = tmp_path / "cat" / "tagged-store.zarr"
    in_process()(cat, stages=["ingest"], store_url=str(store))
    _send_logs()
    with get_client(sync_client=True) as client:
        run = _flow_run(client, "build-catalog-tagged-store.zarr-ingest-%")
        assert {"depthdata", "catalog:catalog", "store:tagged-store.zarr", "stage:ingest", "manual"} <= set(run.tags)
        tasks = {t.name: t for t in client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))}
        # shard 1 holds img02 (written) and img03 (garbage bytes)
        bad = tasks["ingest pics/train shard 1"]
        assert bad.state.is_completed() and bad.state.message == (
            "1 sample written in 1 shard; 1 quarantined: pics/train/img03.png: not a recognised image file "
            "(expected JPEG, PNG or WebP)")
        assert tasks["ingest pics/train shard 0"].state.message == "2 samples written in 1 shard"
        assert "stage:ingest" in bad.tags
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    quarantine = [lg for lg in logs if lg.name == "depthdata.ingest" and "quarantined pics/train/img03.png" in lg.message]
    assert [lg.task_run_id for lg in quarantine] == [bad.id]
    assert any(lg.name == "depthdata.ingest" and lg.message == "planned pics/train: 5 samples in 3 shards of 2"
               and lg.task_run_id is None for lg in logs)  # planning, in the flow's own process


def test_console_leaves_out_per_task_lines_that_stay_in_the_api(prefect_api, tmp_path):
    """``depthdata build``'s console: the library's lines and the run's own, not one "Finished in
    state Completed()" per task run; those stay in the run's logs in the API (the UI)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    cat = images_catalog(tmp_path, n=4, shard_size=2)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    run = subprocess.run([sys.executable, "-m", "depthdata", "build", cat, "--stages", "ingest", "--workers", "0",
                          "--no-progress", "--store", str(tmp_path / "console.zarr")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "planned pics/train: 4 samples in 2 shards of 2" in run.stderr
    assert not [line for line in run.stderr.splitlines() if "Task run" in line or "task_runs" in line]
    _send_logs()
    with get_client(sync_client=True) as client:
        flow_run = _flow_run(client, "build-catalog-console.zarr-%")
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    finished = sorted(lg.message for lg in logs if lg.task_run_id is not None and "Finished in state" in lg.message)
    # the two shard tasks and the consolidation of the group, with their state messages
    assert finished == ["Finished in state Completed('2 samples written in 1 shard')"] * 2 + [
        "Finished in state Completed('consolidated into consolidated-000001.parquet')"], finished


def test_library_logs_of_a_task_on_a_dask_worker_reach_its_run(prefect_api, tmp_path):
    """On a worker process of a local cluster (which did not import Prefect with any extra
    logging setting), a task's ``depthdata.*`` records still reach its task run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    cat = images_catalog(tmp_path, n=3, shard_size=3, corrupt=(1,))
    with_runner(build, workers=1)(cat, stages=["ingest"], store_url=str(tmp_path / "worker-logs.zarr"))
    with get_client(sync_client=True) as client:
        run = _flow_run(client, "build-catalog-worker-logs.zarr-%")
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    [record] = [lg for lg in logs if lg.name == "depthdata.ingest" and "quarantined pics/train/img01.png" in lg.message]
    assert record.task_run_id is not None


def test_failed_shard_turns_its_task_red_with_the_reason(prefect_api, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    cat = images_catalog(tmp_path, n=4, shard_size=2)

    def broken(stage, shard):
        if shard == 1:
            raise ValueError("simulated bug in shard 1")

    before_each_shard(monkeypatch, broken)
    with pytest.raises(BuildFailed):
        in_process()(cat, stages=["ingest"], store_url=str(tmp_path / "red.zarr"))
    with get_client(sync_client=True) as client:
        run = _flow_run(client, "build-catalog-red.zarr-%")
        tasks = {t.name: t for t in client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))}
    assert tasks["ingest pics/train shard 1"].state.is_failed()
    assert tasks["ingest pics/train shard 1"].state.message == \
        "1 of 1 shard FAILED: shard 1: ValueError: simulated bug in shard 1"
    assert tasks["ingest pics/train shard 0"].state.is_completed()


def test_random_teacher_is_a_warning_of_the_summary(prefect_api, tmp_path):
    cat = nyu_catalog(tmp_path, n=2, shard_size=2)
    doc = yaml.safe_load(Path(cat).read_text())
    doc["teacher"] = {"allow_random_init": True}
    Path(cat).write_text(yaml.safe_dump(doc))
    summary = in_process()(cat, stages=["ingest", "teacher"])
    [warning] = summary.all_warnings
    assert "RANDOMLY INITIALISED" in warning and "random-init:tiny(seed=0)" in warning
    assert "## Warnings" in summary.to_markdown()


def test_noop_rerun_submits_no_task_and_keeps_the_report(prefect_api, tmp_path, monkeypatch):
    """A re-run with nothing to do: no task at all (planning reads the manifest) and the EDA
    report, already written from the same committed version, is not written again. When the
    store changes, the next build writes the report of the new version."""
    import json

    import flows.build as fb
    from depthdata.eda.written import MARKER_NAME

    cat = images_catalog(tmp_path, n=4, shard_size=2)
    first = in_process()(cat, stages=["ingest", "eda"])
    report = tmp_path / "store-report"
    assert first.version == 1 and first.stages[1].outputs == [str(report / "stats.parquet"),
                                                              str(report / "report.html")]
    assert json.loads((report / MARKER_NAME).read_text())["store_version"] == 1
    mtimes = {p.name: p.stat().st_mtime_ns for p in report.iterdir()}

    submitted = []
    real_submit = fb.shards_task.submit, fb.eda_task.submit, fb.consolidate_task.submit
    monkeypatch.setattr(fb.shards_task, "submit", lambda *a, **k: submitted.append("shards") or real_submit[0](*a, **k))
    monkeypatch.setattr(fb.eda_task, "submit", lambda *a, **k: submitted.append("eda") or real_submit[1](*a, **k))
    monkeypatch.setattr(fb.consolidate_task, "submit",
                        lambda *a, **k: submitted.append("consolidate") or real_submit[2](*a, **k))
    again = in_process()(cat, stages=["ingest", "eda"])
    assert submitted == []
    assert again.version == 1 and again.stages[1].note == "report up to date (version 1)"
    assert again.stages[1].outputs == first.stages[1].outputs
    assert {p.name: p.stat().st_mtime_ns for p in report.iterdir()} == mtimes
    assert "report up to date (version 1)" in again.to_markdown()

    write_images(tmp_path / "pics", 6)  # two more images: a new version, a new report
    grown = in_process()(cat, stages=["ingest", "eda"])
    assert grown.version == 2 and submitted.count("eda") == 1
    assert grown.stages[1].note == "report written (version 2)"
    assert json.loads((report / MARKER_NAME).read_text())["store_version"] == 2
    assert len(pd.read_parquet(report / "stats.parquet")) == 6


def test_planning_a_random_teacher_build_builds_the_tiny_model_once_per_machine(tmp_path, monkeypatch):
    """The teacher stage's settings hash names the weights' SHA-256. For the tiny random teacher
    (the offline demo) that took building the model, ~5 s of every planning; the hash is kept
    under XDG_CACHE_HOME and later plannings read it, with the same lineage."""
    from depthdata.teacher import checkpoint, tiny
    from depthdata.teacher.config import TeacherConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = TeacherConfig(allow_random_init=True, random_init_seed=3)
    cold = checkpoint.checkpoint_lineage(config)
    with tempfile.TemporaryDirectory() as tmp:  # what the teacher stage loads and hashes
        tiny.save_tiny_teacher(tmp, seed=3)
        assert cold["weights_sha256"] == checkpoint.weights_sha256(tmp)
    assert len(list((tmp_path / "cache" / "depthdata").glob("tiny-teacher-*.sha256"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the tiny teacher was built again")

    monkeypatch.setattr(tiny, "save_tiny_teacher", no_model)
    assert checkpoint.checkpoint_lineage(config) == cold
    with pytest.raises(AssertionError, match="built again"):  # another seed is another model
        checkpoint.checkpoint_lineage(TeacherConfig(allow_random_init=True, random_init_seed=4))


def test_the_flow_runs_state_message_sums_up_the_build(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client

    cat = images_catalog(tmp_path, n=5, shard_size=2, corrupt=(3,))
    summary = in_process()(cat, stages=["ingest"], store_url=str(tmp_path / "headline.zarr"))
    assert isinstance(summary, BuildSummary)  # calling the flow still returns the summary
    with get_client(sync_client=True) as client:
        run = _flow_run(client, "build-catalog-headline.zarr-%")
    assert run.state.is_completed()
    # the version counts the quarantined sample among its 5 (it has a slot, marked as such)
    assert run.state.message == "ingest: 4 samples written, 1 quarantined; version 1: 5 sample(s) added, 0 removed"


class _SlowTeardown:
    """Stands in for the C extensions whose destructors slow a worker's interpreter teardown."""

    def __del__(self):
        time.sleep(6)  # longer than the nanny's 4 s wait before it SIGKILLs a closing worker


def _hold_slow_teardown() -> None:
    import types

    module = types.ModuleType("slow_teardown")
    module.obj = _SlowTeardown()
    sys.modules["slow_teardown"] = module  # torn down (and the 6 s __del__ run) at interpreter exit


def test_local_workers_close_without_being_killed_by_their_nanny(monkeypatch):
    # #15: every build ended with "Worker process still alive after 4.0 seconds, killing": the
    # workers' interpreter teardown (torch, transformers, Open3D) outlasted the nanny's wait
    import copy
    import logging

    import dask
    from distributed import Client, LocalCluster

    from flows.runner import tune_local_workers

    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    nanny_log = logging.getLogger("distributed.nanny")
    nanny_log.addHandler(handler)
    saved = copy.deepcopy(dask.config.config)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    try:
        tune_local_workers()
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(_hold_slow_teardown)
            assert client.submit(sum, [1, 2], pure=False).result() == 3
    finally:
        nanny_log.removeHandler(handler)
        dask.config.config.clear()
        dask.config.config.update(saved)
    assert not [r for r in records if "still alive" in r], records
