"""Writers of one table take turns: an inter-process file lock per (database, table)
for local databases, and a retry with backoff for commits that lose a race.

Object stores (s3://, gs://, az://, ...) have no file to lock; there a lease object,
renewed while its holder lives and lapsing within a TTL when it dies, keeps writers of
one table apart (``storage/lease.py``)."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger("grainline.storage")

T = TypeVar("T")

LOCK_DIR = "_locks"


class TableLockTimeout(TimeoutError):
    """Another process kept writing the table for longer than we were willing to wait."""


def is_local(db_uri: str) -> bool:
    """A database on this machine's file system (a plain path or file://)."""
    return "://" not in db_uri or db_uri.startswith("file://")


def lock_path(db_uri: str, table: str) -> Path:
    """``<db>/_locks/<table>.lock``: beside the tables, so every process that opens the
    same database folder finds the same lock."""
    return Path(db_uri.removeprefix("file://")) / LOCK_DIR / f"{table}.lock"


def holder_path(db_uri: str, table: str) -> Path:
    """``<db>/_locks/<table>.holder.json``: who holds the table's lock (pid, host, run),
    written by the holder after it took the OS lock; only ever informative."""
    return lock_path(db_uri, table).with_suffix(".holder.json")


def read_holder(db_uri: str, table: str) -> dict | None:
    """What the last holder of a local table's lock wrote about itself, or None."""
    try:
        return json.loads(holder_path(db_uri, table).read_text())
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    run = f" (run {holder['run_id']})" if holder.get("run_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{run} since {holder.get('since')}"


class TableLock:
    """Exclusive write access to one table of a local database, across processes.

    Backed by an OS lock (``flock`` on ``<db>/_locks/<table>.lock``): the kernel drops it
    the moment its holder dies, however it dies, so a killed run can never strand the
    table. (Prefect's global concurrency limits were used before; a slot of a run that
    died stayed occupied, and later runs waited for hours.) A waiter says once which
    table it waits for and who holds it. An object-store database: a lease object
    (:class:`grainline.storage.lease.Lease`) that a killed writer leaves behind for at
    most one TTL."""

    def __init__(self, db_uri: str, table: str, timeout_s: float, run_id: str | None = None) -> None:
        self.db_uri, self.table, self.timeout_s, self.run_id = db_uri, table, timeout_s, run_id
        self.path = lock_path(db_uri, table) if is_local(db_uri) else None
        self._lock = None
        self._lease = None
        self.waited_s = 0.0

    @property
    def held(self) -> bool:
        if self._lease is not None:
            return self._lease.held
        return self._lock is not None and self._lock.is_locked

    @property
    def where(self) -> str:
        """The lock file, or the lease object (its URI, credentials never shown)."""
        return self._lease.where if self._lease is not None else str(self.path)

    def check(self) -> None:
        """Before a commit: raise :class:`grainline.storage.lease.LeaseLost` when an
        object-store lease was lost (an OS lock cannot be lost while we live)."""
        if self._lease is not None:
            self._lease.check()

    def acquire(self) -> "TableLock":
        """Wait (up to ``timeout_s``) for the table; raise :class:`TableLockTimeout` naming it."""
        if self.path is None:
            from .lease import Lease

            self._lease = Lease(self.db_uri, self.table, self.timeout_s, run_id=self.run_id).acquire()
            self.waited_s = self._lease.waited_s
            return self
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the flow may finish a run in another thread than the one
        # that started it.
        lock = FileLock(str(self.path), timeout=self.timeout_s, thread_local=False)
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = describe_holder(read_holder(self.db_uri, self.table))
            log.warning("waiting for the write lock of table %s in %s: held by %s (it is released when that "
                        "run ends or dies; waiting up to %gs)", self.table, self.db_uri, holder, self.timeout_s)
            try:
                lock.acquire(timeout=max(0.0, self.timeout_s - (time.monotonic() - t0)))
            except Timeout:
                raise TableLockTimeout(
                    f"table {self.table!r} in {self.db_uri!r} is being written by {holder}: "
                    f"waited {self.timeout_s:g}s for the lock {self.path}"
                ) from None
        self.waited_s = time.monotonic() - t0
        if self.waited_s > 1:
            log.info("waited %.1fs for the write lock of table %s", self.waited_s, self.table)
        self._lock = lock
        self._write_holder()
        return self

    def _write_holder(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            tmp = holder_path(self.db_uri, self.table).with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(info))
            os.replace(tmp, holder_path(self.db_uri, self.table))
        except OSError:  # informative only: a full disk must not fail the run here
            pass

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "TableLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_status(db_uri: str, table: str) -> tuple[bool, dict | None]:
    """(is the table's write lock held right now, what its holder wrote) for a local
    database: probes the OS lock without waiting."""
    from filelock import FileLock, Timeout

    path = lock_path(db_uri, table)
    if not path.exists():
        return False, None
    probe = FileLock(str(path), timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return True, read_holder(db_uri, table)
    probe.release()
    return False, read_holder(db_uri, table)


def break_local_lock(db_uri: str, table: str) -> bool:
    """Remove a local table's lock file so the next writer takes a fresh one, even while
    a process still holds the old one (for a person who knows that process is stuck and
    will not write again). Returns whether there was a file to remove."""
    removed = False
    for p in (lock_path(db_uri, table), holder_path(db_uri, table)):
        try:
            p.unlink()
            removed = True
        except FileNotFoundError:
            pass
    return removed


def is_commit_conflict(exc: BaseException) -> bool:
    """LanceDB reports a lost commit race as an error whose message says 'commit
    conflict' (retryable or not after its own retries) or 'write contention'; the
    Python type differs between releases (OSError, RuntimeError), the wording does not."""
    msg = str(exc).lower()
    return "commit conflict" in msg or "write contention" in msg


def retry_commit(fn: Callable[[], T], what: str, attempts: int = 8, base_s: float = 0.05, max_s: float = 5.0) -> T:
    """Run a write, retrying it with jittered exponential backoff while it loses commit
    races. Only for writes that are safe to repeat (upserts on a key, appends of rows
    that failed as a whole)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by message just below
            if attempt == attempts or not is_commit_conflict(exc):
                raise
            delay = min(max_s, base_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s lost a commit race (attempt %d of %d), retrying in %.2fs: %s", what, attempt, attempts, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")
