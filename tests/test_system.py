"""``depthdata._system``: the one CPU count every worker and thread default uses."""

from __future__ import annotations

import os

from depthdata._system import usable_cpus


def test_usable_cpus_is_the_affinity_mask_else_the_machine_count(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert usable_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # undeterminable
    assert usable_cpus() == 1
