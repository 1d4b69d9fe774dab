"""The build lock: a second build of a store is refused naming the first; a lock left by a
killed build does not block the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import fsspec
import pytest

from depthdata.store.lock import LOCK_FILE, BuildLock, StoreLocked


def test_a_second_holder_is_refused_naming_the_first_until_it_releases(tmp_path):
    fs = fsspec.filesystem("file")
    first = BuildLock(fs, str(tmp_path), "store")
    first.acquire()
    with pytest.raises(StoreLocked, match=rf"another build is writing this store: pid {os.getpid()} on"):
        BuildLock(fs, str(tmp_path), "store").acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with BuildLock(fs, str(tmp_path), "store"):
        assert (tmp_path / LOCK_FILE).exists()


def test_a_lock_without_heartbeat_for_longer_than_its_ttl_is_taken_over(tmp_path, caplog):
    fs = fsspec.filesystem("file")
    (tmp_path / LOCK_FILE).write_text(json.dumps({"token": "dead", "host": "another-host", "pid": 1,
                                                  "command": "depthdata build", "started": 0,
                                                  "heartbeat": time.time() - 121}))
    with BuildLock(fs, str(tmp_path), "store", ttl_s=120):
        held = json.loads((tmp_path / LOCK_FILE).read_text())
        assert held["pid"] == os.getpid()
    assert "no heartbeat for 121 s" in caplog.text
    # a live holder on another host with a fresh heartbeat is not taken over
    (tmp_path / LOCK_FILE).write_text(json.dumps({"token": "alive", "host": "another-host", "pid": 1,
                                                  "heartbeat": time.time()}))
    with pytest.raises(StoreLocked, match="pid 1 on another-host"):
        BuildLock(fs, str(tmp_path), "store", ttl_s=120).acquire()


def test_the_heartbeat_renews_the_lock(tmp_path):
    fs = fsspec.filesystem("file")
    with BuildLock(fs, str(tmp_path), "store", heartbeat_s=0.05):
        first = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] > first


def test_exclusive_on_an_object_store(s3_bucket):
    fs = fsspec.filesystem("s3", **s3_bucket)
    with BuildLock(fs, "depth/s.zarr", "s3://depth/s.zarr"):
        with pytest.raises(StoreLocked):
            BuildLock(fs, "depth/s.zarr", "s3://depth/s.zarr").acquire()
    assert not fs.exists(f"depth/s.zarr/{LOCK_FILE}")


@pytest.mark.slow
def test_a_build_of_a_locked_store_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    """Real processes: one holds the store's lock (as a running build does), a ``depthdata
    build`` of the same store is refused naming it; after the holder is killed (SIGKILL, no
    clean-up) the next build runs."""
    from test_flows import images_catalog

    catalog = images_catalog(tmp_path, n=3, shard_size=3)
    store = str(tmp_path / "store.zarr")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fsspec, os, sys, time
        from depthdata.store.lock import BuildLock
        os.makedirs({store!r}, exist_ok=True)
        BuildLock(fsspec.filesystem("file"), {store!r}, {store!r}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = subprocess.run([sys.executable, "-m", "depthdata", "build", catalog, "--stages", "ingest",
                                  "--workers", "0", "--no-progress"], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert f"another build is writing this store: pid {holder.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    ok = subprocess.run([sys.executable, "-m", "depthdata", "build", catalog, "--stages", "ingest", "--workers", "0",
                         "--no-progress"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "process" in ok.stderr and "is gone" in ok.stderr  # it said why it took the lock over


def test_the_heartbeat_rides_out_a_storage_outage_and_a_retried_acquire_keeps_its_lock(s3_behind_proxy, caplog,
                                                                                       monkeypatch):
    """A real endpoint outage (moto behind a proxy the test stops): the heartbeat thread logs
    each missed beat and renews the lock again once the store is back, instead of dying with a
    traceback and letting the lock expire under a running build."""
    import threading

    proxy, opts, direct = s3_behind_proxy
    # one attempt per call: a missed beat is then seen at once instead of after botocore's retries
    fs = fsspec.filesystem("s3", skip_instance_cache=True, config_kwargs={"retries": {"total_max_attempts": 1}},
                           **opts)
    watcher = fsspec.filesystem("s3", skip_instance_cache=True, **direct)  # not through the proxy
    path = f"depth/s.zarr/{LOCK_FILE}"
    crashed = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    lock = BuildLock(fs, "depth/s.zarr", "s3://depth/s.zarr", heartbeat_s=0.05)
    lock.acquire()
    try:
        proxy.stop()
        deadline = time.monotonic() + 60
        while "could not renew the build lock" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "could not renew the build lock: EndpointConnectionError" in caplog.text
        before = json.loads(watcher.cat_file(path))["heartbeat"]
        proxy.start()
        while json.loads(watcher.cat_file(path))["heartbeat"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(watcher.cat_file(path))["heartbeat"] > before, "the heartbeat stopped after the outage"
        assert crashed == []
        # an acquire retried after an outage that swallowed the answer to its PUT finds its own lock
        lock.acquire()
    finally:
        lock.release()
    assert not watcher.exists(path)


def test_only_zarr_temporary_files_older_than_the_taker_are_removed_and_only_after_a_takeover(tmp_path):
    """What a killed build leaves (``<stem>.<32 hex>.partial``, written before the next holder
    started) goes; a live writer's newer temporary file and files named otherwise stay; a lock
    that was free removes nothing."""
    from depthdata.store.debris import clean_after_takeover

    fs = fsspec.filesystem("file")
    hexname = "0123456789abcdef" * 2
    array = tmp_path / "g" / "rgb"
    (array / "c").mkdir(parents=True)
    old, newer = array / f"zarr.{hexname}.partial", array / "c" / f"0.{hexname}.partial"
    others = [tmp_path / "notes.partial", tmp_path / f"zarr.{hexname[:31]}.partial", tmp_path / "g" / "zarr.json"]
    for p in [old, newer, *others]:
        p.write_text("x")
    stamp = time.time() - 3600
    for p in [old, *others]:
        os.utime(p, (stamp, stamp))

    with BuildLock(fs, str(tmp_path), "store") as free:
        assert free.taken_over == "" and clean_after_takeover(free) == []
    # a build that died holding the lock
    (tmp_path / LOCK_FILE).write_text(json.dumps({"token": "dead", "host": "another-host", "pid": 1,
                                                  "heartbeat": time.time() - 121}))
    taker = BuildLock(fs, str(tmp_path), "store", ttl_s=120)
    written_meanwhile = taker.holder["started"] + 1
    os.utime(newer, (written_meanwhile, written_meanwhile))
    with taker:
        assert "pid 1 on another-host" in taker.taken_over
        assert clean_after_takeover(taker) == [os.path.join("g", "rgb", old.name)]
    assert not old.exists() and newer.exists() and all(p.exists() for p in others)
