"""Commits to LanceDB: its errors told apart once (the one module that reads their
messages), and the retry of a commit that lost a race.

LanceDB reports a lost commit race, and an object store that was briefly unreachable
or throttled, as plain ``OSError`` or ``RuntimeError`` (the Python type differs between
releases; the wording does not). Everything above storage decides on types, so storage
translates those errors here, as it calls LanceDB, into :class:`CommitConflict` or
:class:`StoreUnavailable` (both :class:`grainline.errors.TransientError`). The message
stays the library's own."""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from grainline.errors import TransientError

log = logging.getLogger("grainline.storage")

T = TypeVar("T")

# A missing file or a denied permission never passes, whatever its message says.
_TERMINAL_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_CONFLICT_WORDS = ("commit conflict", "write contention", "incompatible transaction")
_UNAVAILABLE_WORDS = ("timed out", "timeout", "temporarily", "connection reset", "try again", "throttl", "slow down")


class CommitConflict(TransientError, RuntimeError):
    """A commit lost a race with another writer of the same table (LanceDB's 'commit
    conflict', 'write contention' or 'incompatible transaction'); the write can be
    made again. A RuntimeError too, as LanceDB's own error was for callers that catch
    that."""


class StoreUnavailable(TransientError, OSError):
    """The store under a table timed out, dropped the connection or throttled a request
    (an object store's ordinary weather); the same call may succeed shortly."""


def typed(exc: BaseException) -> BaseException:
    """``exc`` as one of the types above when its message says it is one, else ``exc``
    itself (already typed errors pass through unchanged)."""
    if isinstance(exc, (TransientError, TimeoutError, ConnectionError, *_TERMINAL_OS_ERRORS)):
        return exc  # typed already: by grainline, or by the standard library
    if not isinstance(exc, (OSError, RuntimeError)):
        return exc
    msg = str(exc).lower()
    if any(w in msg for w in _CONFLICT_WORDS):
        return CommitConflict(str(exc))
    if any(w in msg for w in _UNAVAILABLE_WORDS):
        return StoreUnavailable(str(exc))
    return exc


@contextmanager
def lance_errors() -> Iterator[None]:
    """Around calls into LanceDB: its transient errors leave as typed ones (chained to
    the original), every other error unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        t = typed(exc)
        if t is exc:
            raise
        raise t from exc


def retry_commit(fn: Callable[[], T], what: str, attempts: int = 8, base_s: float = 0.05, max_s: float = 5.0) -> T:
    """Run a write, retrying it with jittered exponential backoff while it loses commit
    races (:class:`CommitConflict`); after the last attempt the conflict is raised, typed,
    so a caller's own retry sees it as transient. Only for writes that are safe to repeat
    (upserts on a key, appends of rows that failed as a whole)."""
    for attempt in range(1, attempts + 1):
        try:
            with lance_errors():
                return fn()
        except CommitConflict as exc:
            if attempt == attempts:
                raise
            delay = min(max_s, base_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s lost a commit race (attempt %d of %d), retrying in %.2fs: %s", what, attempt, attempts, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")
