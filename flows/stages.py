"""The stages as the flows run them: the library's shard stages (:data:`depthdata.pipeline.STAGES`,
in pipeline order) followed by the EDA report, which is one task over the whole store.
"""

from __future__ import annotations

import os
from datetime import datetime

from depthdata.catalog import Catalog
from depthdata.errors import DepthdataError
from depthdata.pipeline import STAGES, open_store
from depthdata.stage import ShardResult

#: the report stage: not a shard stage, one task after the others
EDA = "eda"
#: every stage a build can run, in order
STAGE_ORDER = (*STAGES, EDA)


def parse_stages(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"ingest,lidar"`` → ``["ingest", "lidar"]`` in pipeline order; ``None`` → every stage."""
    if text is None:
        return list(STAGE_ORDER)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in STAGE_ORDER]
    if unknown or not names:
        raise DepthdataError(f"--stages: unknown stage(s) {unknown or names!r}; known: {', '.join(STAGE_ORDER)}")
    return [n for n in STAGE_ORDER if n in names]


def written_since(stage: str, catalog: Catalog, group_path: str, shard: int, since: datetime) -> ShardResult | None:
    """What ``stage``'s manifest part of ``shard`` records (:meth:`depthdata.stage.Stage.recorded_result`)
    if it was written at or after ``since`` (an aware UTC time), else ``None`` (also for a part
    without a readable time)."""
    result, written = STAGES[stage].recorded_result(open_store(catalog).group(group_path), shard)
    try:
        return result if datetime.fromisoformat(written) >= since else None
    except ValueError:
        return None


def task_threads() -> int:
    """CPU threads one shard task may use: the worker's ``OMP_NUM_THREADS`` (Dask's nanny sets
    1, as the flows' clusters run one task per core), else 1 — a library left to its own
    choice would take every core in every worker and oversubscribe the machine."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else 1


def run_shard(stage: str, catalog: Catalog, dataset: str, group_path: str, shard: int) -> ShardResult:
    """Run one shard of ``stage`` in this process (called inside a worker's task)."""
    st = STAGES[stage]
    group = open_store(catalog).group(group_path)
    return st.run_shard(group, shard, st.settings(catalog, dataset), threads=task_threads())

