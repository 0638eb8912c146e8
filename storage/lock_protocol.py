"""What every table write lock is, whatever backs it: one protocol, two implementations.

A local database locks a table with an OS file lock (``storage/locks.py``); an object
store, which has no file to lock, with a lease object written by conditional puts
(``storage/lease.py``). Both live under ``<db>/_locks/`` and time out the same way;
``storage.locks.TableLock`` picks one for a database. This module imports neither."""

from __future__ import annotations

from typing import Protocol

from grainline.errors import TransientError

LOCK_DIR = "_locks"


class TableLockTimeout(TransientError, TimeoutError):
    """Another process kept writing the table for longer than we were willing to wait.
    Transient: the table is free again once that run ends."""


def is_local(db_uri: str) -> bool:
    """A database on this machine's file system (a plain path or file://)."""
    return "://" not in db_uri or db_uri.startswith("file://")


class WriteLock(Protocol):
    """Exclusive write access to one table, across processes and machines."""

    table: str
    # How long acquire() waited for another writer.
    waited_s: float

    @property
    def held(self) -> bool:
        """Whether this process may write the table now."""

    @property
    def where(self) -> str:
        """The lock file or lease object (credentials never shown)."""

    def acquire(self) -> "WriteLock":
        """Wait up to the lock's timeout; raise :class:`TableLockTimeout` naming the table."""

    def check(self) -> None:
        """Before a commit: raise when the lock was lost (only a lease can be)."""

    def release(self) -> None:
        """Give the table up; harmless when not held."""
