"""Exclusive write access to one table of an object-store database (s3://, gs://,
az://): a lease object ``<db>/_locks/<table>.lease`` written only with conditional puts.

An object store has no file to ``flock``, and a lock whose holder can die without a
word must expire on its own. So the holder writes a small JSON record (who holds it,
until when) with *create-if-absent*, and a background thread rewrites it every
``ttl/3`` with *update-if-the-ETag-is-still-mine*. A waiter takes the lease over, with
the same conditional update on the ETag it saw, once the holder released it or stopped
renewing it: the record unchanged for a whole TTL of the waiter's own clock, or (when
arriving late) an ``expires`` more than a TTL in the past. Two waiters racing for an
expired lease cannot both win: only one conditional put matches the ETag.

A run killed at any moment therefore blocks the table for at most one TTL (plus one
poll); the TTL defaults to 60 s and can never exceed 120 s. The clocks of different
machines are not trusted beyond a TTL of skew: the "unchanged for a TTL" rule needs
none. A holder that could not renew for a whole TTL (the store unreachable, the
process stopped) counts its lease as lost and refuses to commit (:class:`LeaseLost`).

Credentials and the endpoint come from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``, ``AWS_REGION``:
the names LanceDB's object_store reads too), never from the URI."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from grainline.errors import TerminalError
from grainline.redact import redact_uri

from .lock_protocol import LOCK_DIR, TableLockTimeout

log = logging.getLogger("grainline.storage")

TTL_ENV = "GRAINLINE_LEASE_TTL_S"
# The brief of the lock: a dead run blocks a table for at most two minutes.
MAX_TTL_S = 120.0
INSTALL_HINT = 'pip install "grainline[s3]"  (obstore, for object-store databases)'


class LeaseSettings(BaseModel):
    """How long a lease lives without renewal, and how often it is renewed and polled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_s: float = Field(default=60.0, gt=0, le=MAX_TTL_S)
    # Default ttl/3: two renewals may fail (a slow request, a blip) before it lapses.
    renew_every_s: float | None = Field(default=None, gt=0)
    # How often a waiter looks at the lease; default min(2 s, ttl/10).
    poll_s: float | None = Field(default=None, gt=0)

    @property
    def renew_s(self) -> float:
        return min(self.renew_every_s or self.ttl_s / 3, self.ttl_s / 2)

    @property
    def poll_every_s(self) -> float:
        return self.poll_s or min(2.0, self.ttl_s / 10)

    @classmethod
    def from_env(cls) -> "LeaseSettings":
        """Defaults, with the TTL from ``GRAINLINE_LEASE_TTL_S`` when set."""
        raw = os.environ.get(TTL_ENV)
        if raw is None or not raw.strip():
            return cls()
        try:
            return cls(ttl_s=float(raw))
        except ValueError as exc:
            raise ValueError(f"{TTL_ENV}={raw!r}: the lease TTL must be seconds in (0, {MAX_TTL_S:g}]") from exc


class LeaseError(TerminalError, RuntimeError):
    """The object-store write lease could not be used. Terminal."""


class LeaseUnavailable(LeaseError):
    """obstore, which writes the lease, is not installed."""


class LeaseLost(LeaseError):
    """This process no longer holds the table's lease (taken over after it lapsed, or
    broken with ``grainline unlock``): it must not commit again. Terminal."""


class LeaseTimeout(TableLockTimeout):
    """Another live run kept the table's lease for longer than we were willing to wait."""

    def __init__(self, message: str, table: str, holder: "Holder | None") -> None:
        super().__init__(message)
        self.table, self.holder = table, holder


@dataclass(frozen=True)
class Holder:
    """The lease record, as stored (JSON)."""

    holder: str
    host: str
    pid: int
    run_id: str | None
    table: str
    acquired: str
    expires: str
    ttl_s: float
    released: bool = False

    def describe(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        return f"pid {self.pid} on {self.host}{run} (holder {self.holder[:8]}, since {self.acquired}, lease expires {self.expires})"

    def expires_ts(self) -> float:
        return datetime.fromisoformat(self.expires).timestamp()

    @classmethod
    def parse(cls, data: bytes) -> "Holder | None":
        """The record, or None when it is not one of ours (damaged, foreign)."""
        try:
            d = json.loads(data)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError):
            return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _store(db_uri: str) -> Any:
    """An obstore store rooted at the database; its configuration comes from the
    environment (obstore reads the AWS_*/GOOGLE_*/AZURE_* variables itself)."""
    try:
        from obstore.store import from_url
    except ImportError as exc:
        raise LeaseUnavailable(f"a write lease on {redact_uri(db_uri)} needs obstore: {INSTALL_HINT}") from exc
    return from_url(db_uri.rstrip("/"))


def lease_key(table: str) -> str:
    """``_locks/<table>.lease`` under the database."""
    return f"{LOCK_DIR}/{table}.lease"


def _prefect_run_id() -> str | None:
    """The Prefect flow run this process is executing, if any (never imports Prefect)."""
    import sys

    if "prefect.context" not in sys.modules:
        return None
    try:
        ctx = sys.modules["prefect.context"].FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    except Exception:  # noqa: BLE001 - the record is informative only
        return None


class Lease:
    """The write lease of one table of an object-store database (see the module doc)."""

    def __init__(self, db_uri: str, table: str, timeout_s: float, settings: LeaseSettings | None = None,
                 run_id: str | None = None) -> None:
        self.db_uri, self.table, self.timeout_s = db_uri, table, timeout_s
        self.settings = settings or LeaseSettings.from_env()
        self.run_id = run_id or _prefect_run_id()
        self.key = lease_key(table)
        self.id = uuid.uuid4().hex
        self.waited_s = 0.0
        self._store = _store(db_uri)
        self._etag: str | None = None
        self._acquired: str | None = None
        self._renewed = 0.0  # monotonic time of the last successful write
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"{redact_uri(self.db_uri.rstrip('/'))}/{self.key}"

    def _record(self, released: bool = False) -> bytes:
        now = time.time()
        rec = Holder(holder=self.id, host=socket.gethostname(), pid=os.getpid(), run_id=self.run_id, table=self.table,
                     acquired=self._acquired or _iso(now), expires=_iso(now if released else now + self.settings.ttl_s),
                     ttl_s=self.settings.ttl_s, released=released)
        return json.dumps(asdict(rec)).encode()

    def _read(self) -> tuple[str, Holder | None] | None:
        from obstore import get
        from obstore.exceptions import NotFoundError

        try:
            res = get(self._store, self.key)
            return res.meta["e_tag"], Holder.parse(bytes(res.bytes()))
        except (NotFoundError, FileNotFoundError):  # obstore's get raises the builtin one
            return None

    def _expired(self, cur: Holder | None, seen_since: float) -> bool:
        ttl = min(cur.ttl_s if cur is not None else MAX_TTL_S, MAX_TTL_S)
        if cur is not None and cur.released:
            return True
        # Unchanged for a whole TTL of our own clock: its holder stopped renewing.
        if time.monotonic() - seen_since >= ttl:
            return True
        # Expired a TTL ago by our clock: dead long before we came (tolerates a TTL of skew).
        return cur is not None and time.time() > cur.expires_ts() + ttl

    def acquire(self) -> "Lease":
        """Take the lease, waiting up to ``timeout_s`` for its holder to release it or
        die; raise :class:`LeaseTimeout` naming the table and the holder."""
        from obstore import put
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        seen: tuple[str | None, float] = (None, t0)
        announced = False
        holder: Holder | None = None
        while True:
            self._acquired = _iso(time.time())
            try:
                res = put(self._store, self.key, self._record(), mode="create")
                return self._won(res, None, t0)
            except AlreadyExistsError:
                pass
            found = self._read()
            if found is None:
                continue  # released and deleted (grainline unlock) since: create again
            etag, holder = found
            if etag != seen[0]:
                seen = (etag, time.monotonic())
            if self._expired(holder, seen[1]):
                try:
                    res = put(self._store, self.key, self._record(), mode={"e_tag": etag})
                    return self._won(res, holder, t0)
                except (PreconditionError, NotFoundError, FileNotFoundError):
                    continue  # another waiter won it, or its holder was alive after all
            if not announced:
                announced = True
                who = holder.describe() if holder is not None else "an unreadable lease record"
                log.warning("table %s in %s is being written by %s; waiting for its write lease %s (up to %gs; "
                            "a dead holder's lease lapses %gs after its last renewal)",
                            self.table, redact_uri(self.db_uri), who, self.where, self.timeout_s,
                            holder.ttl_s if holder is not None else MAX_TTL_S)
            left = deadline - time.monotonic()
            if left <= 0:
                who = holder.describe() if holder is not None else "an unreadable lease record"
                raise LeaseTimeout(
                    f"table {self.table!r} in {redact_uri(self.db_uri)!r} is being written by {who}: waited "
                    f"{self.timeout_s:g}s for its write lease {self.where}; if that run is dead: grainline unlock "
                    f"--db {redact_uri(self.db_uri)} --table {self.table}", self.table, holder)
            time.sleep(min(self.settings.poll_every_s, left))

    def _won(self, res: Any, taken_from: Holder | None, t0: float) -> "Lease":
        self._etag, self._renewed = res["e_tag"], time.monotonic()
        self.waited_s = self._renewed - t0
        if taken_from is not None and not taken_from.released:
            log.warning("took over the write lease of table %s from %s: it was not renewed for a whole TTL",
                        self.table, taken_from.describe())
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.table}", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        from obstore import put
        from obstore.exceptions import NotFoundError, PreconditionError

        wait = self.settings.renew_s
        while not self._stop.wait(wait):
            try:
                res = put(self._store, self.key, self._record(), mode={"e_tag": self._etag})
                self._etag, self._renewed, wait = res["e_tag"], time.monotonic(), self.settings.renew_s
                continue
            except (PreconditionError, NotFoundError, FileNotFoundError):
                # Our last renewal may have landed with its reply lost: still ours?
                try:
                    found = self._read()
                except Exception:  # noqa: BLE001 - unknown: retry the renewal soon
                    wait = min(1.0, self.settings.renew_s)
                    continue
                if found is not None and found[1] is not None and found[1].holder == self.id and not found[1].released:
                    self._etag, wait = found[0], 0.0
                    continue
                self._lose("it was taken over or broken (grainline unlock)")
                return
            except Exception as exc:  # noqa: BLE001 - a transient store error: retry soon
                if time.monotonic() - self._renewed >= self.settings.ttl_s:
                    self._lose(f"it could not be renewed for {self.settings.ttl_s:g}s")
                    return
                log.warning("renewing the write lease of table %s failed, retrying: %s", self.table, type(exc).__name__)
                wait = min(1.0, self.settings.renew_s)

    def _lose(self, why: str) -> None:
        self._lost = why
        log.error("lost the write lease of table %s in %s: %s; this run will not commit again",
                  self.table, redact_uri(self.db_uri), why)

    @property
    def held(self) -> bool:
        """Whether this process may write: acquired, not lost, renewed within a TTL."""
        return (self._etag is not None and self._lost is None
                and time.monotonic() - self._renewed < self.settings.ttl_s)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still held: called before commits."""
        if self._etag is not None and not self.held:
            why = self._lost or f"it was not renewed for {self.settings.ttl_s:g}s"
            raise LeaseLost(f"the write lease of table {self.table!r} in {redact_uri(self.db_uri)!r} was lost: {why}")

    def release(self) -> None:
        """Stop renewing and mark the lease released (a conditional put, so a lease
        already taken over is left alone)."""
        from obstore import put
        from obstore.exceptions import NotFoundError, PreconditionError

        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            # A renewal in flight finishes first, so the ETag below is the latest one.
            self._thread.join(timeout=30)
        self._thread = None
        if self._etag is not None and self._lost is None:
            try:
                put(self._store, self.key, self._record(released=True), mode={"e_tag": self._etag})
            except (PreconditionError, NotFoundError, FileNotFoundError):
                pass  # no longer ours: nothing to release
            except Exception as exc:  # noqa: BLE001 - it lapses by itself within a TTL
                log.warning("could not release the write lease of table %s (%s); it lapses within %gs",
                            self.table, type(exc).__name__, self.settings.ttl_s)
        self._etag = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lease(db_uri: str, table: str) -> Holder | None:
    """The table's current lease record, or None when there is none (or it was released)."""
    lease = Lease(db_uri, table, 0, LeaseSettings())
    found = lease._read()
    if found is None or found[1] is None or found[1].released:
        return None
    return found[1]


def break_lease(db_uri: str, table: str) -> Holder | None:
    """Delete the table's lease whoever holds it (``grainline unlock``); returns the
    record that was broken, or None when nothing held it. The broken holder finds out
    at its next renewal and stops committing."""
    from obstore import delete

    current = read_lease(db_uri, table)
    if current is not None:
        delete(_store(db_uri), lease_key(table))
    return current
