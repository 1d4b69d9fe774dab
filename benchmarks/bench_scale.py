"""Opening a store at scale: 10,000 vs 1,000,000 samples, local disk and S3 (moto on loopback).

Stores of tiny (8×8) samples with all three stages' manifests, written by
``benchmarks/scale_store.py`` through the store API (the files and rows a build writes, then the
consolidation a finished stage does), shards of 1,024 samples: 10 and 977 shards per stage.

Cases, alternating, after a warm-up (the stores are on local disk, re-read through the page cache):

* ``ShardDataset`` construction (planning: group, plan, three stages' manifests), and
  construction + the first 8 samples (which reads one whole shard of three fields);
* ``inspect_store`` in process, and ``depthdata inspect --json`` as a command (what users run,
  interpreter start-up and imports included);
* requests a ``ShardDataset`` construction makes to an S3 API (moto's server on 127.0.0.1, every
  HTTP request counted at the server), per group and stage.

Goals (issue #14): construction + first batch ≤ 3 s and inspect ≤ 5 s at 1M samples; open time at
1M ≤ 3× at 10K; ≤ 10 requests per group and stage to open a stream on S3.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks import harness

ROOT = Path(__file__).parent / ".scale-stores"
SHARD = 1024
SIZES = {"10k": 10_000, "1m": 1_000_000}
FIELDS = ("rgb", "teacher", "sparse")


def ensure_store(n: int) -> str:
    """The store of ``n`` samples, written once and kept under ``benchmarks/.scale-stores``."""
    path = ROOT / f"scale-{n}-{SHARD}.zarr"
    done = ROOT / f"scale-{n}-{SHARD}.complete"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        ROOT.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "benchmarks.scale_store", str(path), str(n), str(SHARD)], check=True)
        done.touch()
    return str(path)


def open_stream(url: str, first: bool, storage_options: dict | None = None) -> None:
    from depthdata.stream import ShardDataset

    ds = ShardDataset(url, fields=FIELDS, streams=1, storage_options=storage_options)
    if first:
        it = iter(ds)
        for _ in range(8):
            next(it)


def inspect_cli(url: str) -> None:
    subprocess.run([sys.executable, "-m", "depthdata", "inspect", "--json", url], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})


class CountingMoto:
    """moto's S3 server on 127.0.0.1 with every HTTP request it answers counted."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app
        from werkzeug.serving import make_server

        self.requests: list[str] = []
        outer = self

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                app = DomainDispatcherApplication(create_backend_app)

                def counting(environ, start_response):
                    outer.requests.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}")
                    return app(environ, start_response)

                self._server = make_server(self._ip_address, self._port, counting, True)
                self._server_ready_event.set()
                self._server.serve_forever()

        self.server = Server(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.server.get_host_and_port()[1]}"
        self.options = {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}

    def upload(self, local: str, url: str) -> None:
        import boto3
        import fsspec

        bucket = url.split("/")[2]
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        fsspec.filesystem("s3", **self.options).put(local, url, recursive=True)
        # A copied store's consolidated manifests name the parts' local fingerprints (size and
        # mtime), which S3's listing does not repeat (size and ETag): readers would read every
        # part. What a user does after copying a store: compact it where it now lives.
        from depthdata.store import Store

        Store.open(url, mode="r+", storage_options=self.options).consolidate()


def s3_requests(moto: CountingMoto, url: str) -> tuple[int, dict[str, int]]:
    """HTTP requests one ``ShardDataset`` construction makes, in a fresh process (no caches)."""
    code = ("import json, sys; from depthdata.stream import ShardDataset; "
            f"ShardDataset({url!r}, fields={FIELDS!r}, streams=1, storage_options=json.loads(sys.argv[1]))")
    import json

    before = len(moto.requests)
    subprocess.run([sys.executable, "-c", code, json.dumps(moto.options)], check=True,
                   env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
    made = moto.requests[before:]
    kinds: dict[str, int] = {}
    for r in made:
        method, path = r.split(" ", 1)
        name = path.rstrip("/").rsplit("/", 1)[-1]
        key = f"{method} {'consolidated' if name.startswith('consolidated-') else 'part' if name.startswith('shard-') else name or '(bucket)'}"
        kinds[key] = kinds.get(key, 0) + 1
    return len(made), kinds


def main() -> None:
    from depthdata.store.verify import inspect_store

    urls = {k: ensure_store(n) for k, n in SIZES.items()}
    results, goals = [], []
    construct = harness.alternate({k: (lambda u=u: open_stream(u, False)) for k, u in urls.items()}, repeats=5)
    first = harness.alternate({k: (lambda u=u: open_stream(u, True)) for k, u in urls.items()}, repeats=5)
    inspect = harness.alternate({k: (lambda u=u: inspect_store(u)) for k, u in urls.items()}, repeats=5)
    cli = harness.alternate({k: (lambda u=u: inspect_cli(u)) for k, u in urls.items()}, repeats=3)
    for k in urls:
        results += [harness.summary(f"ShardDataset construction, {k} samples", construct[k], "s"),
                    harness.summary(f"construction + first 8 samples, {k} samples", first[k], "s"),
                    harness.summary(f"inspect_store, {k} samples", inspect[k], "s"),
                    harness.summary(f"depthdata inspect (command), {k} samples", cli[k], "s")]
    med = {name: {k: sorted(v)[len(v) // 2] for k, v in d.items()}
           for name, d in (("construct", construct), ("first", first), ("inspect", inspect), ("cli", cli))}
    goals += [
        harness.goal("construction + first batch at 1M samples, seconds", med["first"]["1m"], "<= 3"),
        harness.goal("depthdata inspect at 1M samples (command), seconds", med["cli"]["1m"], "<= 5"),
        harness.goal("open time (construction + first batch): 1M / 10K", med["first"]["1m"] / med["first"]["10k"],
                     "<= 3"),
    ]

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto = CountingMoto()
    stages = 3
    for k, local in urls.items():
        url = f"s3://scale-{k}/store.zarr"
        moto.upload(local, url)
        n, kinds = s3_requests(moto, url)
        print(f"S3 requests to open the {k} store: {n}: {dict(sorted(kinds.items()))}")
        results.append({"case": f"S3 requests to construct a ShardDataset, {k} samples", "median": n, "min": n,
                        "max": n, "unit": "HTTP requests"})
        goals.append(harness.goal(f"S3 requests per group and stage to open a stream, {k} samples",
                                  n / stages, "<= 10"))
    threading.Thread(target=moto.server.stop, daemon=True).start()
    harness.write("scale", {"samples": SIZES, "shard_size": SHARD, "sample": "8x8, rgb+depth+teacher+"
                            "teacher_conf+sparse", "fields_streamed": list(FIELDS), "groups": 1, "stages": stages},
                  results, goals)


if __name__ == "__main__":
    main()
