"""Exception types. Every user-facing problem is a :class:`DepthdataError`.

The CLI prints a ``DepthdataError`` as one line without a traceback; anything else is a bug
and keeps its traceback.
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


class IntegrityError(StoreError):
    """Stored data does not match its manifest (checksum mismatch, missing data)."""
