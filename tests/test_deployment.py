"""Scheduled builds as data engineers run them: the ``prefect.yaml`` at the repository root,
registered with ``prefect deploy`` on a work pool of type ``process`` and executed by a
``prefect worker`` (docs/operations.md, "Scheduled builds on a work pool").

The slow tests start a real ``prefect server`` (its own PREFECT_HOME and SQLite database) and
a real worker on 127.0.0.1, deploy the repository's ``prefect.yaml`` as it is, and trigger runs
with ``prefect deployment run``, as the documentation says to.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
POOL = "depthdata"
DEPLOYMENT = "depthdata-build/nightly"
#: every stage, in order: the teacher is the tiny random one (no weights offline)
STAGES = ["ingest", "teacher", "lidar", "eda"]
N_FIRST, N_MORE = 7, 3
#: the source has N_FIRST images for the first run and gains N_MORE before the second
RUN_TIMEOUT_S = 240


def nightly() -> dict:
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    return next(d for d in doc["deployments"] if d["name"] == "nightly")


# -- the file itself (fast) ----------------------------------------------------------------------

def test_prefect_yaml_deploys_the_build_flow_with_its_parameters_on_a_process_pool():
    from flows.build import build

    doc = yaml.safe_load(PREFECT_YAML.read_text())
    dep = nightly()
    path, func = dep["entrypoint"].split(":")
    assert (ROOT / path).is_file() and func == "build"
    assert set(dep["parameters"]) == set(inspect.signature(build.fn).parameters)
    assert dep["parameters"]["catalog_path"] == "{{ $DEPTHDATA_CATALOG }}"
    assert dep["work_pool"]["name"] == POOL
    assert [list(s) for s in dep["schedules"]] == [["cron", "timezone"]]
    assert doc["pull"] == [{"prefect.deployments.steps.set_working_directory":
                            {"directory": "{{ $DEPTHDATA_PROJECT_DIR }}"}}]


def test_the_environment_variables_of_prefect_yaml_are_documented():
    from flows.runner import ENV_ADDRESS, ENV_WORKERS

    text = PREFECT_YAML.read_text()
    ops = (ROOT / "docs" / "operations.md").read_text()
    placeholders = set(re.findall(r"\{\{ \$(\w+) \}\}", json.dumps(yaml.safe_load(text))))  # not the comments
    assert placeholders == {"DEPTHDATA_CATALOG", "DEPTHDATA_PROJECT_DIR"}
    for var in placeholders | {ENV_ADDRESS, ENV_WORKERS}:
        assert var in text and var in ops, var
    assert "prefect work-pool create depthdata --type process" in ops
    assert "prefect worker start --pool depthdata" in ops


# -- a real server and worker (slow) -------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    """``python -m prefect ARGS`` in a process group of its own, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """The process group of ``proc``, and every process it started (a flow run's process runs in
    a group of its own)."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=10)


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@dataclass
class Deployed:
    api_url: str
    env: dict[str, str]
    catalog: Path
    pics: Path
    store: Path
    tmp: Path
    worker_log: Path

    def cli(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=self.tmp, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def run(self, **job_env: str) -> str:
        """``prefect deployment run`` of the deployment: the id of the flow run it created."""
        out = self.cli("deployment", "run", DEPLOYMENT, "--param", f"stages={json.dumps(STAGES)}",
                       "--job-variable", f"env={json.dumps(job_env)}")
        return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

    @contextlib.contextmanager
    def client(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as client:
            yield client

    def wait(self, flow_run_id: str, timeout: float = RUN_TIMEOUT_S):
        """The final state of a flow run (the worker's log in the message if it never ends)."""
        with self.client() as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                state = client.read_flow_run(flow_run_id).state
                if state is not None and state.is_final():
                    return state
                time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s; worker:\n{tail(self.worker_log)}")


def write_images_catalog(root: Path, n: int) -> Path:
    from test_flows import write_catalog, write_images

    write_images(root / "pics", n)
    return Path(write_catalog(root / "catalog.yaml",
                              {"pics": {"kind": "images", "root": "pics", "resolution": [10, 12]}},
                              {"url": "store.zarr", "shard_size": 3}, teacher={"allow_random_init": True}))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A Prefect server, the work pool, ``prefect deploy --name nightly`` of the repository's
    ``prefect.yaml`` with ``DEPTHDATA_CATALOG`` naming a catalog of a small images folder, and
    a worker of the pool."""
    tmp = tmp_path_factory.mktemp("deployment")
    catalog = write_images_catalog(tmp / "data", N_FIRST)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "COLUMNS": "200",  # the CLI's rich output unwrapped
    })
    procs: list[subprocess.Popen] = []
    try:
        # no scheduler service: the cron must not start a run of its own while the tests run
        procs.append(start(["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui",
                            "--no-scheduler"], env, tmp / "server.log", tmp))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert procs[0].poll() is None and time.monotonic() < deadline, \
                f"the Prefect server did not start:\n{tail(tmp / 'server.log')}"
            time.sleep(0.5)
        d = Deployed(api_url, env, catalog, catalog.parent / "pics", catalog.parent / "store.zarr", tmp,
                     tmp / "worker.log")
        d.cli("work-pool", "create", POOL, "--type", "process")
        deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "nightly"],
                                cwd=ROOT, env={**env, "DEPTHDATA_CATALOG": str(catalog)},
                                capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        # the worker's environment: the checkout (pull step), and Python finds the project in
        # every process it starts (the flow run's, and its Dask workers)
        procs.append(start(["worker", "start", "--pool", POOL], {
            **env, "DEPTHDATA_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1",
        }, d.worker_log, tmp))
        yield d
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def first_run(deployed):
    """The first run of the deployment, by the worker: the final state."""
    # DEPTHDATA_WORKERS through the run's job variables: a local Dask cluster of one worker
    state = deployed.wait(deployed.run(DEPTHDATA_WORKERS="1"))
    return state


def store_sample_count(store_url: str, group: str) -> int:
    """The samples of one group of a store."""
    from depthdata.store import Store

    return len(Store.open(store_url).group(group))


@pytest.mark.slow
def test_prefect_deploy_registers_the_yaml_with_the_catalog_from_the_environment(deployed):
    with deployed.client() as client:
        dep = client.read_deployment_by_name(DEPLOYMENT)
    spec = nightly()
    assert dep.work_pool_name == POOL and dep.entrypoint == spec["entrypoint"]
    assert dep.parameters["catalog_path"] == str(deployed.catalog)  # {{ $DEPTHDATA_CATALOG }} at deploy time
    assert [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules] == \
        [(s["cron"], s["timezone"]) for s in spec["schedules"]]
    # the pull step's placeholder is kept for the worker's environment, read when a run starts
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                               {"directory": "{{ $DEPTHDATA_PROJECT_DIR }}"}}]


@pytest.mark.slow
def test_a_worker_runs_the_deployment_and_writes_the_store(deployed, first_run):
    from depthdata.store.verify import verify_store

    assert first_run.is_completed(), f"{first_run}\nworker:\n{tail(deployed.worker_log)}"
    assert store_sample_count(str(deployed.store), "pics/train") == N_FIRST
    assert verify_store(str(deployed.store)).ok
    assert (deployed.store.parent / "store-report" / "report.html").is_file()  # <store name>-report


@pytest.mark.slow
def test_two_scheduled_runs_of_a_growing_source_commit_two_versions(deployed, first_run):
    from depthdata.store import Store
    from test_flows import write_images

    assert first_run.is_completed(), f"{first_run}\nworker:\n{tail(deployed.worker_log)}"
    total = N_FIRST + N_MORE
    write_images(deployed.pics, total)  # the first N_FIRST are rewritten as they were (new mtimes)
    second = deployed.wait(deployed.run(DEPTHDATA_WORKERS="1"))
    assert second.is_completed(), f"{second}\nworker:\n{tail(deployed.worker_log)}"
    assert store_sample_count(str(deployed.store), "pics/train") == total
    history = Store.open(str(deployed.store)).history()
    # the rewritten files were re-read, found unchanged and kept: only the new ones were added
    assert [(v.number, v.kind, v.added, v.removed, v.samples) for v in history] == \
        [(1, "build", N_FIRST, 0, N_FIRST), (2, "build", N_MORE, 0, total)]
    assert len(Store.open(str(deployed.store), version=1).group("pics/train")) == N_FIRST
