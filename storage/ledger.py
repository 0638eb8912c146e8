"""The run ledger: one row per ingestion or evaluation run, written when the run
starts and updated when it ends, so a run that died still shows as 'running'."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar

import pyarrow as pa

from .chunks import connect
from .commits import retry_commit
from .locks import TableLock
from .schema import RUNS_SCHEMA, add_missing_columns
from .sql import quote
from .tables import open_or_create, open_table_if_exists

RUNS_TABLE = "runs"

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(kind: str) -> str:
    """A run id: its kind, the UTC time to the second and six random hex digits
    (``ingest-20261206T101500-3f9c1a``), so ids sort by start and never collide."""
    return f"{kind}-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunCounts:
    """What one ingestion run did."""

    docs_seen: int = 0
    docs_added: int = 0
    docs_updated: int = 0
    docs_unchanged: int = 0
    docs_deleted: int = 0
    docs_failed: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    # Files the source holds that no reader reads (report.docx): named, not failed.
    docs_skipped: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Files of the source read, and skipped unread because the source manifest vouched
    # for their stat (their documents count as seen and unchanged).
    files_read: int = 0
    files_unchanged: int = 0

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + seconds, 4)

    def merge(self, other: "RunCounts") -> None:
        for k, v in asdict(other).items():
            if k == "stage_seconds":
                for s, sec in v.items():
                    self.add_time(s, sec)
            elif k in ("failures", "skipped"):
                getattr(self, k).extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    run_id: str
    flow: str
    source: str
    table_name: str
    model_id: str
    parameters: dict[str, Any]
    started: datetime = field(default_factory=utcnow)
    status: str = "running"
    finished: datetime | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    version_before: int | None = None
    version_after: int | None = None
    error: str | None = None
    # Table figures after maintenance (storage/maintenance.py), when it ran.
    fragments: int | None = None
    versions: int | None = None
    unindexed_rows: int | None = None
    maintenance: dict[str, Any] | None = None

    def to_row(self) -> dict[str, Any]:
        c = self.counts
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "source": self.source,
            "table_name": self.table_name,
            "model_id": self.model_id,
            "parameters": json.dumps(self.parameters, sort_keys=True, default=str),
            **{k: getattr(c, k) for k in RunCounts.__dataclass_fields__ if k not in ("stage_seconds", "failures", "skipped")},
            "stage_seconds": json.dumps(c.stage_seconds, sort_keys=True),
            "failures": json.dumps(c.failures),
            "skipped": json.dumps(c.skipped),
            "version_before": self.version_before,
            "version_after": self.version_after,
            "error": self.error,
            "fragments": self.fragments,
            "versions": self.versions,
            "unindexed_rows": self.unindexed_rows,
            "maintenance": json.dumps(self.maintenance, sort_keys=True, default=str) if self.maintenance is not None else None,
        }


class Ledger:
    """The ``runs`` table of a database."""

    def __init__(self, db_uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.db_uri = db_uri
        self.db = connect(db_uri, storage_options)
        self._migrated = False

    def _table(self):
        t = open_or_create(self.db, self.db_uri, RUNS_TABLE, RUNS_SCHEMA)
        if not self._migrated:
            # A runs table from an older grainline lacks the newer columns: add them
            # (null for old rows) before writing a row in the current schema.
            add_missing_columns(t, RUNS_SCHEMA)
            self._migrated = True
        return t

    def write(self, record: RunRecord) -> None:
        """Insert or update the run's row (upsert on run_id). Runs on other tables write
        this table at the same time, so a lost commit race is retried."""
        data = pa.Table.from_pylist([record.to_row()], schema=RUNS_SCHEMA)
        retry_commit(
            lambda: self._table().merge_insert("run_id").when_matched_update_all().when_not_matched_insert_all().execute(data),
            f"ledger row {record.run_id}",
        )

    def mark_interrupted(self, table_name: str, current_run_id: str) -> list[str]:
        """Rows of ``table_name`` still 'running' that are not ``current_run_id`` become
        'interrupted'. Only call this while holding the table's write lock: then no
        other run on the table is alive, so those runs died without a word (SIGKILL,
        power loss). Returns their run ids."""
        t = open_table_if_exists(self.db, RUNS_TABLE)
        if t is None:
            return []
        where = f"table_name = {quote(table_name)} AND status = 'running' AND run_id != {quote(current_run_id)}"
        stale = [r["run_id"] for r in t.search().where(where).select(["run_id"]).limit(None).to_list()]
        if stale:
            msg = f"interrupted: the process ended without finishing (killed or crashed); run {current_run_id} found it still running"
            retry_commit(lambda: t.update(where=where, values={"status": "interrupted", "error": msg}), "marking interrupted runs")
        return stale

    def last_run_ending_at(self, table_name: str, version: int, flow: str = "ingest") -> dict[str, Any] | None:
        """The completed ``flow`` run of ``table_name`` that finished last with the table
        at ``version`` (its ``parameters`` decoded), or None: one filtered read of the
        ledger, which holds a row per run, never the table's rows."""
        t = open_table_if_exists(self.db, RUNS_TABLE)
        if t is None or "version_after" not in t.schema.names:
            return None
        where = (f"table_name = {quote(table_name)} AND flow = {quote(flow)} AND status = 'completed' "
                 f"AND version_after = {int(version)}")
        rows = t.search().where(where).select(["run_id", "finished", "parameters"]).limit(None).to_list()
        if not rows:
            return None
        last = max(rows, key=lambda r: (r["finished"] is not None, r["finished"] or 0))
        last["parameters"] = json.loads(last["parameters"]) if last.get("parameters") else {}
        return last

    def last_run_of(self, table_name: str, flows: tuple[str, ...]) -> dict[str, Any] | None:
        """The latest completed run of one of ``flows`` that wrote ``table_name``, with
        its parameters decoded, or None. A filtered read of the ledger, not of the table."""
        t = open_table_if_exists(self.db, RUNS_TABLE)
        if t is None:
            return None
        where = (f"table_name = {quote(table_name)} AND status = 'completed' AND flow IN ("
                 + ", ".join(quote(f) for f in flows) + ")")
        rows = t.search().where(where).select(["run_id", "flow", "started", "model_id", "parameters"]).limit(None).to_list()
        if not rows:
            return None
        row = max(rows, key=lambda r: r["started"])
        row["parameters"] = json.loads(row["parameters"]) if row.get("parameters") else {}
        return row

    def runs(self, flow: str | None = None) -> list[dict[str, Any]]:
        """All runs, oldest first, with JSON columns decoded."""
        t = open_table_if_exists(self.db, RUNS_TABLE)
        if t is None:
            return []
        rows = t.to_arrow().to_pylist()
        if flow:
            rows = [r for r in rows if r["flow"] == flow]
        for r in rows:
            for k in ("parameters", "stage_seconds", "failures", "skipped"):
                r[k] = json.loads(r[k]) if r.get(k) else ({} if k not in ("failures", "skipped") else [])
            r["maintenance"] = json.loads(r["maintenance"]) if r.get("maintenance") else None
        rows.sort(key=lambda r: r["started"])
        return rows


@contextmanager
def recorded_run(db_uri: str, record: RunRecord, open_target: Callable[[], T], version: Callable[[T], int | None],
                 lock_timeout_s: float) -> Iterator[T]:
    """A run that writes one table (``record.table_name``): under the table's write
    lock, the target is opened (``open_target``: what it holds now is what the run
    changes) and the run recorded in the ledger as 'running'; when the block ends, as
    'completed', or 'failed' with the error (then re-raised), each time with the
    table's ``version`` before and after. Yields the opened target."""
    with TableLock(db_uri, record.table_name, lock_timeout_s, run_id=record.run_id):
        target = open_target()
        record.version_before = version(target)
        ledger = Ledger(db_uri)
        ledger.write(record)
        try:
            yield target
        except BaseException as exc:
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            record.finished, record.version_after = utcnow(), version(target)
            ledger.write(record)
            raise
        record.status = "completed"
        record.finished, record.version_after = utcnow(), version(target)
        ledger.write(record)
