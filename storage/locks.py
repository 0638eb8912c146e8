"""Writers of one table take turns: :class:`TableLock` for any database, backed by an
inter-process OS file lock per (database, table) for local databases
(:class:`FileTableLock`, here).

Object stores (s3://, gs://, az://, ...) have no file to lock; there a lease object,
renewed while its holder lives and lapsing within a TTL when it dies, keeps writers of
one table apart (``storage/lease.py``). Both follow ``storage/lock_protocol.py``."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .lease import Lease
from .lock_protocol import LOCK_DIR, TableLockTimeout, WriteLock, is_local

log = logging.getLogger("grainline.storage")

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


class FileTableLock:
    """The write lock of one table of a local database: an OS lock (``flock`` on
    ``<db>/_locks/<table>.lock``). The kernel drops it the moment its holder dies,
    however it dies, so a killed run can never strand the table. (Prefect's global
    concurrency limits were used before; a slot of a run that died stayed occupied, and
    later runs waited for hours.) A waiter says once which table it waits for and who
    holds it."""

    def __init__(self, db_uri: str, table: str, timeout_s: float, run_id: str | None = None) -> None:
        self.db_uri, self.table, self.timeout_s, self.run_id = db_uri, table, timeout_s, run_id
        self.path = lock_path(db_uri, table)
        self._lock = None
        self.waited_s = 0.0

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    @property
    def where(self) -> str:
        return str(self.path)

    def check(self) -> None:
        """An OS lock cannot be lost while we live: nothing to check."""

    def acquire(self) -> "FileTableLock":
        """Wait (up to ``timeout_s``) for the table; raise :class:`TableLockTimeout` naming it."""
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
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class TableLock:
    """Exclusive write access to one table, for any database: a :class:`FileTableLock`
    for a local one, a lease (:class:`grainline.storage.lease.Lease`, which a killed
    writer leaves behind for at most one TTL) for an object store. The one entry point
    writers use; both implementations follow ``storage.lock_protocol.WriteLock``."""

    def __init__(self, db_uri: str, table: str, timeout_s: float, run_id: str | None = None) -> None:
        self.db_uri, self.table, self.timeout_s, self.run_id = db_uri, table, timeout_s, run_id
        self.path = lock_path(db_uri, table) if is_local(db_uri) else None
        self._impl: WriteLock | None = None

    @property
    def waited_s(self) -> float:
        return self._impl.waited_s if self._impl is not None else 0.0

    @property
    def held(self) -> bool:
        return self._impl is not None and self._impl.held

    @property
    def where(self) -> str:
        """The lock file, or the lease object (its URI, credentials never shown)."""
        return self._impl.where if self._impl is not None else str(self.path)

    def check(self) -> None:
        """Before a commit: raise :class:`grainline.storage.lease.LeaseLost` when an
        object-store lease was lost (an OS lock cannot be lost while we live)."""
        if self._impl is not None:
            self._impl.check()

    def acquire(self) -> "TableLock":
        """Wait (up to ``timeout_s``) for the table; raise :class:`TableLockTimeout` naming it."""
        if self.path is None:
            impl: WriteLock = Lease(self.db_uri, self.table, self.timeout_s, run_id=self.run_id)
        else:
            impl = FileTableLock(self.db_uri, self.table, self.timeout_s, run_id=self.run_id)
        self._impl = impl.acquire()
        return self

    def release(self) -> None:
        if self._impl is not None:
            self._impl.release()
            self._impl = None

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
