"""Exception types. Every user-facing problem is a :class:`DepthdataError`.

The CLI prints a ``DepthdataError`` as one line without a traceback; anything else is a bug
and keeps its traceback. The whole tree, with where a class lives when it is not in this
module (``tests/test_errors.py`` keeps it in step with the code)::

    DepthdataError         the user's input, data or settings are wrong (raised as is where no subclass fits)
    ├── SampleError        a record breaks the canonical-sample contract; names the sample
    ├── SourceError        a source file is missing, unreadable or malformed; names the file
    ├── CatalogError       the catalog is invalid; quotes the YAML path (``datasets.nyu.root``)
    ├── StoreError         a store cannot be opened or written, or lacks the group, field or stage asked for
    │   └── StoreLocked    [depthdata.store.lock] another build holds the store's build lock
    ├── MetricError        [depthdata.metrics] inputs cannot be evaluated (shapes, predictions, pairs)
    │   └── EmptyMaskError [depthdata.metrics] no pixel is left to evaluate after masking
    ├── LidarInputError    [depthdata.lidar.synth] the depth map given to the synthesiser is unusable
    ├── TeacherError       [depthdata.teacher.checkpoint] the teacher cannot be found, loaded or run
    └── BuildFailed        [flows.build] some shards of a build failed (the others completed)

Checksum mismatches found by ``depthdata verify`` are findings in its report, not exceptions.
"""

from __future__ import annotations


class DepthdataError(Exception):
    """A problem with the user's input, data or configuration (not a bug)."""


class SampleError(DepthdataError):
    """A record violates the canonical-sample contract. Names the sample and the problem."""

    def __init__(self, sample_id: str, problem: str):
        self.sample_id = sample_id
        self.problem = problem
        super().__init__(f"sample {sample_id!r}: {problem}")


class SourceError(DepthdataError):
    """A source file cannot be read or is malformed. Names the file and the problem."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CatalogError(DepthdataError):
    """The catalog is invalid; the message quotes the YAML path (e.g. ``datasets.nyu.root``)."""


class StoreError(DepthdataError):
    """A store cannot be opened or written (foreign path, unknown schema version, ...)."""
