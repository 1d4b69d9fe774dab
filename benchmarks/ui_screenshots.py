"""Screenshots of what an operator sees of a build in the Prefect UI (issue #21), taken by a
headless Chromium against a real ``prefect server start``.

It starts a server on 127.0.0.1 (its own PREFECT_HOME and SQLite database, in a temporary
folder), runs ``depthdata build`` twice against it (a catalog of photos, one of them a truncated
PNG, into two stores of the same folder: two runs the runs list must tell apart, one task that
quarantined), finds the runs through the API and saves, under ``OUT``:

* ``runs.png`` — the runs list: names and tags;
* ``flow-run.png`` — the first build's flow run (its task runs and their states);
* ``flow-run-logs.png`` — its logs (the library's own lines included);
* ``flow-run-details.png`` — its details: the state message sums the build up;
* ``task-run-quarantined.png`` — the task run that quarantined the truncated file (state message);
* ``artifact.png`` — the build's summary artifact;
* ``artifacts.png`` — the artifacts page: one key per store.

Needs Chromium (Debian: ``apt-get install chromium``). Run:
``.venv/bin/python -m benchmarks.ui_screenshots [OUT]`` (default ``ui-screenshots/``; about two
minutes). Nothing here is timed. With ``UI_SCREENSHOTS_KEEP=1`` the server stays up until Enter,
to look around by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from flows.local_server import free_port

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")
WINDOW = "1500,1000"
#: milliseconds of page time Chromium lets the UI's scripts run before the screenshot
SETTLE_MS = 30000


def _chromium() -> str:
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium found (Debian: apt-get install chromium)")


def _catalog(root: Path) -> str:
    """Six photos of flat colours, ``img03.png`` truncated (cut after its first 60 bytes)."""
    pics = root / "pics"
    pics.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((40, 60, 3), (40 * i, 200 - 30 * i, 90), np.uint8)).save(pics / f"img{i:02d}.png")
    data = (pics / "img03.png").read_bytes()
    (pics / "img03.png").write_bytes(data[:60])
    path = root / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "store": {"url": "nightly.zarr", "shard_size": 2},
                                    "datasets": {"photos": {"kind": "images", "root": "pics",
                                                            "resolution": [32, 48]}}}))
    return str(path)


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"prefect server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"prefect server did not answer at {url}")


def _shoot(chromium: str, url: str, out: Path) -> None:
    # without the last flag a page can be captured mid-way through a fade or before its log list
    # has drawn
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--run-all-compositor-stages-before-draw",
                    f"--window-size={WINDOW}", f"--virtual-time-budget={SETTLE_MS}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"wrote {out}  ({url})")


def main(out_dir: str = "ui-screenshots") -> None:
    chromium = _chromium()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ui-screenshots-"))
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_URL=f"{ui}/api", PREFECT_UI_API_URL=f"{ui}/api")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        _wait_for(f"{ui}/api/health", server)
        catalog = _catalog(tmp / "work")
        for store in ("nightly.zarr", "nightly-copy.zarr"):
            subprocess.run([sys.executable, "-m", "depthdata", "-q", "build", catalog, "--workers", "1",
                            "--no-progress", "--stages", "ingest,eda", "--store", str(tmp / "work" / store)],
                           env=env, check=True, timeout=600)
        os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")})
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, \
            TaskRunFilterFlowRunId

        with get_client(sync_client=True) as client:
            [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(
                like_="build-catalog-nightly.zarr-")))
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
            [bad] = [t for t in tasks if "quarantined" in (t.state.message or "")]
            artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
        _shoot(chromium, f"{ui}/runs", out / "runs.png")
        _shoot(chromium, f"{ui}/runs/flow-run/{run.id}", out / "flow-run.png")
        _shoot(chromium, f"{ui}/runs/flow-run/{run.id}?tab=Logs", out / "flow-run-logs.png")
        _shoot(chromium, f"{ui}/runs/flow-run/{run.id}?tab=Details", out / "flow-run-details.png")
        _shoot(chromium, f"{ui}/runs/task-run/{bad.id}", out / "task-run-quarantined.png")
        _shoot(chromium, f"{ui}/artifacts/artifact/{artifacts[0].id}", out / "artifact.png")
        _shoot(chromium, f"{ui}/artifacts", out / "artifacts.png")
        print(f"quarantined task: {bad.name!r}: {bad.state.message}")
        if os.environ.get("UI_SCREENSHOTS_KEEP"):  # look around by hand: the server stays until Enter
            input(f"server at {ui}; Enter stops it ")
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
