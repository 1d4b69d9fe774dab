"""Where the flows' log records go: the library's records into the Prefect run that logged them,
Prefect's per-task chatter out of the console, and the build's warnings into its summary.

* **The library's records reach Prefect.** Records of the ``depthdata.*`` loggers logged inside a
  flow run or a task run (planned counts, quarantine reasons, the random-teacher warning, retries
  of a storage fault) are sent to that run's logs, which the UI shows. A handler on the
  ``depthdata`` logger does it, installed by :func:`route_library_logs` in every process that
  runs the flow or one of its tasks, when it runs. Prefect's own ``PREFECT_LOGGING_EXTRA_LOGGERS``
  does the same only in processes whose environment has the setting when Prefect is imported: a
  worker of an external Dask cluster does not, and records logged outside a run then make Prefect
  warn. Records from INFO up are sent whatever the console shows (``depthdata -q``): the
  ``depthdata`` logger is opened to INFO and the console keeps its former level through a filter.
* **The console keeps what a person reads.** Prefect logs "Finished in state Completed()" for
  every task run, which made most of a build's console output; those INFO lines of
  ``prefect.task_runs`` stay in the API (the UI's logs tab) and leave the console. A failed or
  retried task still prints.
* **Warnings go into the summary.** WARNING records of the library in the flow's own process
  (a build lock taken over, a storage fault retried, a consolidation that failed) are collected
  by :func:`collect_warnings` for the build's summary and artifact. Records of tasks are not:
  their quarantines and failures are reported as such.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

#: the library's loggers, ``depthdata.*``
LIBRARY = "depthdata"

_collected: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("depthdata_warnings", default=None)


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _library(record: logging.LogRecord) -> bool:
    return record.name == LIBRARY or record.name.startswith(LIBRARY + ".")


class _ToRunLogs(logging.Handler):
    """Sends a record to the logs of the Prefect run it was logged in (none: nothing is sent), and
    collects the WARNING records of a :func:`collect_warnings` block."""

    def __init__(self) -> None:
        from prefect.logging.handlers import APILogHandler

        super().__init__(logging.INFO)
        self._api = APILogHandler()

    def emit(self, record: logging.LogRecord) -> None:
        collected = _collected.get()
        if collected is not None and record.levelno >= logging.WARNING:
            message = record.getMessage()
            if message not in collected:
                collected.append(message)
        if _in_run():
            self._api.handle(record)


class _Console(logging.Filter):
    """Keeps Prefect's per-task INFO lines, and library records under the level the console had
    before :func:`route_library_logs` opened the library's logger, off a console handler."""

    def __init__(self, library_level: int):
        super().__init__()
        self.library_level = library_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect.task_runs") and record.levelno < logging.WARNING:
            return False
        return not (_library(record) and record.levelno < self.library_level)


_handler: _ToRunLogs | None = None
_console: _Console | None = None


def _is_console(handler: logging.Handler) -> bool:
    from prefect.logging.handlers import PrefectConsoleHandler

    # Prefect's console handler, or a plain StreamHandler (logging.basicConfig, the CLI's); not
    # subclasses such as pytest's capture handlers, which record for tests.
    return isinstance(handler, PrefectConsoleHandler) or type(handler) is logging.StreamHandler


def route_library_logs() -> None:
    """Install the routing above in this process (once; the console filter also goes on console
    handlers added since). Called when the flow starts and by every task."""
    global _handler, _console
    library = logging.getLogger(LIBRARY)
    if _handler is None:
        console_level = library.getEffectiveLevel()
        _handler, _console = _ToRunLogs(), _Console(console_level)
        library.addHandler(_handler)
        if console_level > logging.INFO:
            library.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        if _is_console(handler) and _console not in handler.filters:
            handler.addFilter(_console)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The distinct messages of the library's WARNING (and worse) records logged in this context
    while the block runs (tasks run with :func:`no_collection`)."""
    warnings: list[str] = []
    token = _collected.set(warnings)
    try:
        yield warnings
    finally:
        _collected.reset(token)


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """A task's block: a task run in the flow's process (``workers=0``) inherits its context."""
    token = _collected.set(None)
    try:
        yield
    finally:
        _collected.reset(token)
