"""Which storage errors are worth a retry, whatever library raised them.

Object stores fail in their own client library's types: botocore's ``EndpointConnectionError``
and ``ConnectionClosedError`` and aiohttp's ``ClientConnectionError`` are not ``OSError``, so a
filter on ``OSError`` alone never retries an S3 outage (issue #15). Libraries in between (zarr,
s3fs) sometimes wrap the error, so its causes are looked at too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# Missing or forbidden files do not appear by waiting: retrying them only delays the report.
_PERMANENT_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


@functools.cache
def _client_errors() -> tuple[type[BaseException], ...]:
    """Connection-level error types of the object-store clients installed here."""
    found: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore import exceptions as bc

        # ConnectionError covers endpoint, connect-timeout and proxy errors; HTTPClientError
        # covers closed connections and read timeouts. Not BotoCoreError as a whole: missing
        # credentials or a bad parameter do not heal by waiting.
        found += [bc.ConnectionError, bc.HTTPClientError]
    with contextlib.suppress(ImportError):
        import aiohttp

        found += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    return tuple(found)


def is_transient(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a storage fault worth a retry: a network,
    object-store or disk ``OSError`` that is not a missing or forbidden path, or a connection
    error of botocore or aiohttp."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and not isinstance(error, _PERMANENT_OS_ERRORS):
            return True
        if isinstance(error, _client_errors()):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def with_retries(call: Callable[[], T], what: str, retries: int = 3, backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried after a transient storage fault (:func:`is_transient`) up to
    ``retries`` times with exponential backoff (``backoff_s``, twice that, ...; ±50 % jitter).
    The last fault is raised as it came; ``what`` names the call in the log."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            delay = backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            log.warning("%s: %s: %s; retrying in %.1f s", what, type(exc).__name__, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
