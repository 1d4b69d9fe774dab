"""Incremental builds (issue #20): a store of 20,000 tiny samples gains 1 %.

The source is a folder of 16×16 PNGs (``images`` source, shards of 8: 2,500 shards), built with
the real ``depthdata-build`` Prefect flow on 2 Dask workers, each build in its own process. A
build's time is measured inside its process from just before the Prefect server would start to
the flow's return (imports excluded, the same for every case); the process also reports where
the time went (server start, flow start, planning, the shard tasks, consolidation, the commit)
by wrapping those library functions. Two modes, each with all three cases:

* ``scheduled`` (the issue's case, and where its goals are judged): what a scheduled deployment
  runs against — a ``prefect server start`` and a 2-worker Dask cluster that outlive the builds
  (``PREFECT_API_URL`` set, ``--dask-address``; :class:`Services`).
* ``temporary``: ``depthdata build --workers 2`` on a laptop — each build starts a temporary
  Prefect server (``flows.local_server``, spawned before the imports as the command spawns it,
  and waited for by ``flows.runner.prefect_api``; one the workers share) and a new
  ``LocalCluster`` whose workers import the stages afresh. Those seconds are the same for 200
  samples and for 20,200, so they bound what any incremental build can gain here.

Stage: ``ingest`` only. ``ingest,teacher`` with the tiny random teacher was measured once: a
full 20,000-image build took 281 s (ingest 84 s, teacher 187 s) on this shared machine, too
long to repeat in a benchmark meant to stay under about 10 minutes.

Cases, measured side by side:

* ``incremental``: a copy (``shutil.copytree``, modification times kept, so the consolidated
  manifests still match their parts) of the cached 20,000-sample store, built once and kept
  under ``benchmarks/.incremental/``, whose source folder then gains 200 images (hard links
  added before the build, removed after): the re-run finds them new, appends 25 shards and
  commits version 2.
* ``alone_200``: the same 200 images built into an empty store.
* ``full_20200``: all 20,200 images built into an empty store (a full rebuild; 2 repetitions).

Per mode, after a warm-up build of each of the first two, the cases alternate (incremental,
alone, full, …) and medians are compared.

Requests: what a reader's opening costs on an object store, counted at moto's S3 server on
127.0.0.1 (every HTTP request it answers, ``benchmarks.bench_scale.CountingMoto``), each
opening in a fresh process: ``Store.open(url)``, then per group ``store.group(path)``,
``len(group)``, ``group.stage_index(stage)`` for each stage and
``depthdata.stream.servable.scan`` (what ``ShardDataset`` plans from); and, separately, a
``ShardDataset`` construction. (a) the 20,000-sample store as first built (one committed
version), then (b) the same bucket brought up to date with the store of the last incremental
build (two versions), both opened at their newest version; (b)'s working state
(``version="working"``) is counted for context, after compacting the store in the bucket (what
``bench_scale`` does: a copied store's consolidated manifests record local mtimes, which an S3
listing does not repeat). Counting at the server is the simplest sound method: it sees every
request whatever client layer (s3fs, zarr's ``FsspecStore``) makes it, and needs no change to
the library. Only what an opening may read is uploaded: never the arrays' data shards, and for
(a) not the manifest parts either (opening a version reads neither; a read of a missing file
would still be counted). That keeps the upload to about 2,500 files, once.

``BENCH_INCREMENTAL_REPEATS`` (3) and ``BENCH_INCREMENTAL_FULL_REPEATS`` (2) set the
repetitions of the scheduled mode, ``BENCH_INCREMENTAL_TEMPORARY_REPEATS`` (2; one full
rebuild) those of the temporary mode.

Goals (issue #20), per mode: incremental ≤ 2× ``alone_200``; incremental ≤ 10 % of
``full_20200``; and requests to open the latest version of (b) ≤ those of (a).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from flows.local_server import terminate

ROOT = Path(__file__).parent / ".incremental"
BASE = 20_000
NEW = 200
SIDE = 16
SHARD = 8
STAGES = "ingest"
REPEATS = int(os.environ.get("BENCH_INCREMENTAL_REPEATS", "3"))
FULL_REPEATS = int(os.environ.get("BENCH_INCREMENTAL_FULL_REPEATS", "2"))
TEMPORARY_REPEATS = int(os.environ.get("BENCH_INCREMENTAL_TEMPORARY_REPEATS", "2"))
FIELDS = ("rgb",)

IMAGES = ROOT / "images"  # the 20,000 base images; the incremental case adds the 200 here
EXTRA = ROOT / "extra"  # the 200 new images
WORK = ROOT / "work"


def write_images(folder: Path, start: int, n: int, seed: int) -> None:
    import cv2
    import numpy as np

    done = folder.parent / f"{folder.name}.complete"
    if done.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8))
    done.touch()


def write_catalog(name: str, images: Path, store: Path) -> Path:
    doc: dict[str, Any] = {"store": {"url": str(store), "shard_size": SHARD},
                           "datasets": {"photos": {"kind": "images", "root": str(images), "resolution": [SIDE, SIDE]}}}
    if "teacher" in STAGES:
        doc["teacher"] = {"allow_random_init": True}
    path = ROOT / "catalogs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


# -- the build, in its own process ---------------------------------------------------------
def _timed(spent: dict[str, float], key: str, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
    return wrapper


def run(catalog: str, dask_address: str = "") -> None:
    """Child process: one build as ``depthdata build --workers 2`` runs it (or, with
    ``dask_address``, as ``depthdata build --dask-address`` against a running cluster, with
    ``PREFECT_API_URL`` naming a running server); prints ``RESULT {json}`` with its seconds and
    where they went."""
    from flows.local_server import start_early

    server = start_early()  # as `depthdata build` does, before its imports
    import depthdata.ingest as ing
    import flows.build as fb
    from flows import dask_runner as dr
    from flows.runner import prefect_api
    from flows.summary import StageSummary

    spent: dict[str, float] = {}
    marks: dict[str, float] = {}
    for name, st in fb.STAGES.items():
        st.prepare = _timed(spent, f"{name} planning", st.prepare)  # run_stage calls it in this process
    ing.plan_changes = _timed(spent, "ingest plan_changes", ing.plan_changes)
    fb._consolidate = _timed(spent, "consolidation", fb._consolidate)
    fb._commit = _timed(spent, "commit", fb._commit)
    fb.run_stage = _timed(spent, "stage runs", fb.run_stage)
    pipeline = fb.run_pipeline

    def run_pipeline(*args, **kwargs):
        marks["pipeline start"] = time.perf_counter()
        try:
            return pipeline(*args, **kwargs)
        finally:
            marks["pipeline end"] = time.perf_counter()

    fb.run_pipeline = run_pipeline
    # the local cluster starts on the first task submitted (prefect-dask's client property)
    client = dr.DaskTaskRunner.client

    def cluster_client(self):
        if self._client:
            return client.fget(self)
        return _timed(spent, "cluster start", client.fget)(self)

    dr.DaskTaskRunner.client = property(cluster_client)
    add = StageSummary.add

    def add_result(self, result):
        spent["shard work (sum over workers)"] = spent.get("shard work (sum over workers)", 0.0) + result.seconds
        return add(self, result)

    StageSummary.add = add_result
    flow_obj = (fb.with_runner(fb.build, dask_address=dask_address) if dask_address
                else fb.with_runner(fb.build, workers=2))
    t0 = time.perf_counter()
    with prefect_api(server):  # what `depthdata build` does: one temporary server the workers share
        marks["server up"] = time.perf_counter()
        summary = flow_obj(catalog_path=catalog, stages=STAGES.split(","))
    t1 = time.perf_counter()
    assert summary.ok, summary.to_text()
    spent["server start"] = marks["server up"] - t0
    spent["flow start"] = marks["pipeline start"] - marks["server up"]
    spent["flow end and server stop"] = t1 - marks["pipeline end"]
    spent["shard tasks"] = spent["stage runs"] - sum(spent.get(k, 0.0) for k in (
        *(f"{name} planning" for name in fb.STAGES), "cluster start", "consolidation"))
    print("RESULT " + json.dumps({"seconds": t1 - t0, "spent": spent, "version": summary.version,
                                  "samples": {s.stage: s.samples_written for s in summary.stages}}), flush=True)


#: the long-lived services of the ``scheduled`` mode (:class:`Services`), when it runs
SERVICES: Services | None = None


def build(catalog: Path) -> dict[str, Any]:
    # Prefect gives its temporary server 20 s to answer, which a loaded shared machine exceeds
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "benchmarks.bench_incremental", "run", str(catalog)]
    if SERVICES:
        env["PREFECT_API_URL"] = SERVICES.api_url
        args.append(SERVICES.dask_address)
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"build of {catalog} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])


class Services:
    """The ``scheduled`` mode's long-lived services, as a scheduled deployment runs against them:
    a ``prefect server start`` on 127.0.0.1 (its own PREFECT_HOME and SQLite database) and a
    2-worker Dask ``LocalCluster`` (one thread per worker, tuned as :func:`flows.runner.
    make_task_runner` tunes its own) held by a child process. Builds then start neither."""

    def __init__(self, home: Path) -> None:
        import urllib.request

        from flows.local_server import free_port

        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        port = free_port()
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "false", "PYTHONWARNINGS": "ignore"}
        env.pop("PREFECT_API_URL", None)
        self.api_url = f"http://127.0.0.1:{port}/api"
        self._log = open(home / "server.log", "wb")
        self._server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(port)], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._cluster = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_incremental", "cluster"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self.dask_address = self._cluster.stdout.readline().strip()
        if not self.dask_address.startswith("tcp://"):
            self.close()
            raise RuntimeError(f"the Dask cluster did not start: {self.dask_address!r}")
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or self._server.poll() is not None:
                    self.close()
                    raise RuntimeError(f"the Prefect server did not start (log: {home / 'server.log'})") from None
                time.sleep(0.5)

    def close(self) -> None:
        self._cluster.stdin.close()  # the cluster process closes its cluster and exits
        self._cluster.wait(timeout=60)
        terminate(self._server, 30)
        self._log.close()


def hold_cluster() -> None:
    """Child process of :class:`Services`: a 2-worker local Dask cluster until stdin closes."""
    from distributed import LocalCluster

    from flows.runner import tune_local_workers

    tune_local_workers()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()


# -- the source folder and the cached store ------------------------------------------------
def add_new_images() -> None:
    for p in sorted(EXTRA.glob("*.png")):
        os.link(p, IMAGES / p.name)  # same inode: same size and mtime every time


def remove_new_images() -> None:
    for p in EXTRA.glob("*.png"):
        (IMAGES / p.name).unlink(missing_ok=True)


def base_store() -> Path:
    """The 20,000-sample store, built once into ``WORK/incremental.zarr`` (the path every
    incremental case builds at, so its recorded catalog is the same) and kept; its name carries
    what would make it stale."""
    import depthdata
    from depthdata.store.store import SCHEMA_VERSION

    cached = ROOT / f"base-{BASE}-{STAGES.replace(',', '+')}-{depthdata.__version__}-schema{SCHEMA_VERSION}.zarr"
    done = cached.with_suffix(".complete")
    if done.exists():
        return cached
    for old in ROOT.glob("base-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    shutil.rmtree(WORK, ignore_errors=True)
    r = build(write_catalog("incremental", IMAGES, WORK / "incremental.zarr"))
    assert r["samples"]["ingest"] == BASE and r["version"] == 1, r
    print(f"built the {BASE}-sample base store in {r['seconds']:.0f} s (cached: {cached})", flush=True)
    os.rename(WORK / "incremental.zarr", cached)
    done.touch()
    return cached


def incremental(base: Path) -> dict[str, Any]:
    shutil.rmtree(WORK / "incremental.zarr", ignore_errors=True)
    shutil.copytree(base, WORK / "incremental.zarr")  # copy2: mtimes kept
    add_new_images()
    try:
        r = build(ROOT / "catalogs" / "incremental.yaml")
    finally:
        remove_new_images()
    # a re-run that redid old shards would be a rebuild, not an incremental build
    assert r["samples"]["ingest"] == NEW and r["version"] == 2, r
    return r


def from_scratch(name: str, n: int) -> dict[str, Any]:
    shutil.rmtree(WORK / f"{name}.zarr", ignore_errors=True)
    if n > NEW:
        add_new_images()
    try:
        r = build(ROOT / "catalogs" / f"{name}.yaml")
    finally:
        remove_new_images()
    assert r["samples"]["ingest"] == n and r["version"] == 1, r
    shutil.rmtree(WORK / f"{name}.zarr", ignore_errors=True)
    return r


# -- requests to open a store --------------------------------------------------------------
def open_reader(url: str, version: str, how: str, options: str) -> None:
    """Child process: open ``url`` as a reader (``how``: ``scan`` or ``ShardDataset``)."""
    opts = json.loads(options)
    v = None if version == "latest" else version
    if how == "ShardDataset":
        from depthdata.stream import ShardDataset

        ds = ShardDataset(url, fields=FIELDS, streams=1, storage_options=opts, version=v)
        print("RESULT " + json.dumps({"version": ds.version, "samples": sum(len(r.indices) for r in ds.shards)}))
        return
    from depthdata.store import Store
    from depthdata.stream.servable import scan

    store = Store.open(url, storage_options=opts, version=v)
    groups = [store.group(p) for p in store.group_paths()]
    samples = 0
    for g in groups:
        samples += len(g)
        for st in g.stages():
            g.stage_index(st)
    refs = scan(groups, FIELDS)
    assert sum(len(r.indices) for r in refs) == samples
    print("RESULT " + json.dumps({"version": store.version.number if store.version else None, "samples": samples}))


def count_requests(moto: Any, url: str, version: str, how: str) -> tuple[int, dict[str, Any], dict[str, int]]:
    before = len(moto.requests)
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_incremental", "open", url, version, how,
                          json.dumps(moto.options)], check=True, capture_output=True, text=True,
                         env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONWARNINGS": "ignore"})
    made = moto.requests[before:]
    kinds: dict[str, int] = {}
    for r in made:
        method, path = r.split(" ", 1)
        name = path.rstrip("/").rsplit("/", 1)[-1]
        name = "(listing)" if name in ("", "incremental") else name.split("-")[0] if name.startswith(
            ("_plan-", "consolidated-", "shard-")) else name
        kinds[f"{method} {name}"] = kinds.get(f"{method} {name}", 0) + 1
    return len(made), json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:]), kinds


def metadata_files(store: Path, parts: bool) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime ns) of the files of a local store that opening it may read:
    all but the arrays' data shards (``<dataset>/<split>/<field>/c/...``), and without the
    stages' manifest parts (``_manifest/.../shard-*.parquet``) unless ``parts``."""
    out = {}
    for folder, _, files in os.walk(store):
        for f in files:
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, store).replace(os.sep, "/")
            top = rel.split("/")
            if not top[0].startswith("_") and len(top) > 4 and top[3] == "c":
                continue
            if not parts and top[0] == "_manifest" and f.startswith("shard-"):
                continue
            st = os.stat(path)
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def sync(moto: Any, local: Path, url: str, known: dict[str, tuple[int, int]], parts: bool
         ) -> dict[str, tuple[int, int]]:
    """Make ``url`` hold ``local``'s :func:`metadata_files`, given that it holds ``known`` (what
    an earlier call put there): upload what is new or changed, delete what is gone. With
    ``parts``, then compact the store where it now lives, as ``CountingMoto.upload`` does: a
    copied store's consolidated manifests record its parts' local mtimes, which an S3 listing
    does not repeat, so its working state would read every part."""
    import fsspec

    from depthdata.store import Store

    fs = fsspec.filesystem("s3", **moto.options)
    files = metadata_files(local, parts)
    put = [rel for rel, stat in files.items() if known.get(rel) != stat]
    if put:
        fs.put([str(local / rel) for rel in put], [f"{url}/{rel}" for rel in put])
    gone = [f"{url}/{rel}" for rel in known if rel not in files]
    if gone:
        fs.rm(gone)
    if parts:
        Store.open(url, mode="r+", storage_options=moto.options).consolidate()
    return files


def requests_to_open(one_version: Path, two_versions: Path) -> dict[tuple[str, str, str], int]:
    """Requests to open the single-version store at its latest version, then (the same bucket
    brought up to date with the incremental build's files) the two-version store at its latest
    version and its working state."""
    import boto3

    from benchmarks.bench_scale import CountingMoto

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto = CountingMoto()
    url = "s3://incremental/store.zarr"
    boto3.client("s3", endpoint_url=moto.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="incremental")
    cases = {"one version": (one_version, False, (("scan", "latest"), ("ShardDataset", "latest"))),
             "two versions": (two_versions, True, (("scan", "latest"), ("ShardDataset", "latest"),
                                                   ("scan", "working")))}
    out = {}
    known: dict[str, tuple[int, int]] = {}
    try:
        for name, (local, parts, openings) in cases.items():
            t = time.perf_counter()
            known = sync(moto, local, url, known, parts)
            print(f"S3: the {name} store in place in {time.perf_counter() - t:.0f} s", flush=True)
            for how, version in openings:
                n, seen, kinds = count_requests(moto, url, version, how)
                print(f"S3 requests, {name} store, {version}, {how}: {n} {dict(sorted(kinds.items()))} "
                      f"(version {seen['version']}, {seen['samples']} samples)", flush=True)
                out[(name, version, how)] = n
    finally:
        threading.Thread(target=moto.server.stop, daemon=True).start()
    return out


# -- the benchmark -------------------------------------------------------------------------
#: where a build's time goes, as reported (the keys the build's process measures)
BREAKDOWN = {
    "temporary Prefect server start": ("server start",),
    "planning (listing, a stat per item, plan changes, plan segment)": ("ingest planning",),
    "Dask cluster start": ("cluster start",),
    "shard tasks": ("shard tasks",),
    "shard work in the workers (sum over both)": ("shard work (sum over workers)",),
    "consolidation and commit": ("consolidation", "commit"),
    "flow run start and end, server stop": ("flow start", "flow end and server stop"),
}


def measure(cases: dict[str, Any], repeats: int, full_repeats: int) -> dict[str, list[dict[str, Any]]]:
    """After a warm-up build of ``alone_200`` and ``incremental`` (the first builds pay cold
    caches, and a new cluster's first tasks its workers' imports), the cases alternate."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    cases["alone_200"](), cases["incremental"]()
    for i in range(repeats):
        for name, fn in cases.items():
            if name == "full_20200" and i >= full_repeats:
                continue
            r = fn()
            print(f"{MODE}/{name}: {r['seconds']:.1f} s "
                  f"{json.dumps({k: round(v, 2) for k, v in r['spent'].items()})}", flush=True)
            runs[name].append(r)
    return runs


#: the mode :func:`build` runs in (printed with each result)
MODE = ""


def main() -> None:
    global MODE, SERVICES
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    write_images(IMAGES, 0, BASE, seed=0)
    write_images(EXTRA, BASE, NEW, seed=1)
    remove_new_images()  # a run killed mid-way may have left them
    write_catalog("incremental", IMAGES, WORK / "incremental.zarr")
    write_catalog("alone_200", EXTRA, WORK / "alone_200.zarr")
    write_catalog("full_20200", IMAGES, WORK / "full_20200.zarr")
    base = base_store()

    cases = {"incremental": lambda: incremental(base), "alone_200": lambda: from_scratch("alone_200", NEW),
             "full_20200": lambda: from_scratch("full_20200", BASE + NEW)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    MODE = "scheduled"
    SERVICES = Services(ROOT / "services")
    try:
        runs[MODE] = measure(cases, REPEATS, FULL_REPEATS)
    finally:
        SERVICES.close()
        SERVICES = None
    MODE = "temporary"
    runs[MODE] = measure(cases, TEMPORARY_REPEATS, 1)
    # the last incremental build's store (two versions) is the one whose opening is counted
    reqs = requests_to_open(base, WORK / "incremental.zarr")

    results, goals = [], []
    for mode, mode_runs in runs.items():
        med = {}
        for name, rs in mode_runs.items():
            seconds = [r["seconds"] for r in rs]
            med[name] = statistics.median(seconds)
            results.append(harness.summary(f"{mode}: build time, {name}", seconds, "s"))
            for part, keys in BREAKDOWN.items():
                if mode == "scheduled" and keys == ("server start",):
                    continue
                vals = [sum(r["spent"].get(k, 0.0) for k in keys) for r in rs]
                results.append(harness.summary(f"{mode}: {name}: {part}", vals, "s"))
        goals += [
            harness.goal(f"{mode}: incremental build (20,000 + 200) / the 200 alone into an empty store (time)",
                         med["incremental"] / med["alone_200"], "<= 2.0"),
            harness.goal(f"{mode}: incremental build (20,000 + 200) / full rebuild of 20,200 (time)",
                         med["incremental"] / med["full_20200"], "<= 0.10"),
        ]
    for (name, version, how), n in reqs.items():
        results.append({"case": f"S3 requests to open, {name} store, {version}, {how}", "median": n, "min": n,
                        "max": n, "unit": "HTTP requests"})
    goals.append(harness.goal("S3 requests to open the latest version: two-version store / single-version store "
                              "(Store.open + group + stage indexes + scan)",
                              reqs[("two versions", "latest", "scan")] / reqs[("one version", "latest", "scan")],
                              "<= 1.0"))
    wall = time.perf_counter() - t_start
    print(f"benchmark wall time {wall:.0f} s")
    harness.write("incremental", {"images": f"{SIDE}x{SIDE} PNG", "base_samples": BASE, "new_samples": NEW,
                                  "shard_size": SHARD, "workers": 2, "stages": STAGES,
                                  "repeats": {"scheduled": {"incremental": REPEATS, "alone_200": REPEATS,
                                                            "full_20200": min(FULL_REPEATS, REPEATS)},
                                              "temporary": {"incremental": TEMPORARY_REPEATS,
                                                            "alone_200": TEMPORARY_REPEATS, "full_20200": 1}},
                                  "modes": {"scheduled": "a running `prefect server start` and a running 2-worker "
                                                         "Dask cluster (PREFECT_API_URL, --dask-address), as a "
                                                         "scheduled deployment runs",
                                            "temporary": "`depthdata build --workers 2` with no PREFECT_API_URL: "
                                                         "a temporary Prefect server and a new LocalCluster per build"},
                                  "timing": "in the build's process: from before the (temporary) server start to "
                                            "flow return",
                                  "requests": "counted at moto's S3 server, fresh process per opening",
                                  "benchmark_wall_s": round(wall),
                                  "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
                  results, goals)


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(*sys.argv[2:4])
    elif sys.argv[1:2] == ["cluster"]:
        hold_cluster()
    elif sys.argv[1:2] == ["open"]:
        open_reader(*sys.argv[2:6])
    else:
        main()
