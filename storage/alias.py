"""The alias: the one stable name through which readers (search, related, the Python
API, the Parquet export's consumers, a scheduled ingestion that pins no model) find
the chunks table in production, whatever model and settings made it.

It is a small pointer per database, ``<db>/_alias.json``: the target table, how to
load the model that made its vectors (so a reader embeds its queries with that model
without being told), the vector dimension, the stack of earlier targets (what
``promote --undo`` moves back to) and a short history of switches. Readers read it
with one small file read (O(1), never a table scan). A switch writes a temporary file
and ``os.replace``-s it over the old one, so a reader sees the old pointer or the new
one, never a half-written one; tables are never deleted or renamed by a switch, so
the table a reader just resolved still exists.

Switches take turns on a lock of their own (``<db>/_locks/_alias.lock``, the same OS
lock as a table's write lock): the promotion reads the pointer, checks, and writes it
back while holding it, so two promotions at once run one after the other. Only local
databases have an alias for now: an object store has no atomic rename, and a
conditional put for it is not written yet (``read_alias`` answers None there, so
readers keep reading the model's own table)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grainline.errors import TerminalError

from .lock_protocol import is_local
from .locks import TableLock

ALIAS_FILE = "_alias.json"
EXPORT_LINK = "_production"
# The lock's name among the tables' locks; no table name starts with an underscore.
ALIAS_LOCK = "_alias"
FORMAT = 1
# Switches kept in the file's own history (the ledger keeps all of them).
HISTORY_KEPT = 50


class AliasError(TerminalError, ValueError):
    """The alias cannot be read, switched or undone; the message says why."""


@dataclass(frozen=True)
class AliasTarget:
    """A chunks table and how to load the model whose vectors it holds."""

    table: str
    model: str  # what EmbedderSettings(model=...) takes: a name or a local path
    model_id: str  # name@weights hash, as stored in the table's model_id column
    dim: int
    precision: str = "auto"  # int8 tables are their own model variant
    head: str | None = None  # a tuned head folder, for a head's table

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AliasTarget":
        return cls(table=str(raw["table"]), model=str(raw["model"]), model_id=str(raw["model_id"]), dim=int(raw["dim"]),
                   precision=str(raw.get("precision") or "auto"), head=raw.get("head"))


@dataclass
class Alias:
    """What ``<db>/_alias.json`` holds."""

    target: AliasTarget
    previous: list[AliasTarget] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "target": asdict(self.target),
                           "previous": [asdict(p) for p in self.previous], "history": self.history},
                          indent=1, sort_keys=True)


def alias_path(db: str) -> Path:
    """``<db>/_alias.json`` of a local database."""
    return Path(db.removeprefix("file://")) / ALIAS_FILE


def read_alias(db: str) -> Alias | None:
    """The database's alias, or None when it has none (or is an object store). A
    damaged file is an :class:`AliasError` naming it, never a silent fallback: readers
    would otherwise switch tables without a word."""
    if not is_local(db):
        return None
    path = alias_path(db)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
        return Alias(AliasTarget.from_dict(raw["target"]), [AliasTarget.from_dict(p) for p in raw.get("previous", [])],
                     list(raw.get("history", [])))
    except (ValueError, KeyError, TypeError) as exc:
        raise AliasError(f"{path}: the alias file is damaged ({type(exc).__name__}: {exc}); "
                         f"restore it or delete it to read the model's own table") from None


def _write(db: str, alias: Alias) -> None:
    path = alias_path(db)
    tmp = path.with_name(f"{ALIAS_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(alias.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: a reader sees the old pointer or the new one
    _link_export(db, alias.target.table)


def export_link(db: str) -> Path:
    """``<db>/parquet/_production``: a symbolic link to the alias target's Parquet
    export folder, the stable path for the export's consumers (the underscore keeps it
    out of a discovery of ``<db>/parquet/`` by pyarrow)."""
    return Path(db.removeprefix("file://")) / "parquet" / EXPORT_LINK


def _link_export(db: str, table: str) -> None:
    link = export_link(db)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f"{EXPORT_LINK}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    # Relative, so the database folder can be moved; swapped atomically like the pointer.
    os.symlink(table, tmp)
    os.replace(tmp, link)


def _check_local(db: str) -> None:
    if not is_local(db):
        raise AliasError(f"--db {db}: promotion needs a local database (an object store has no atomic rename; "
                         f"see docs/promotion.md)")
    if not Path(db.removeprefix("file://")).is_dir():
        raise AliasError(f"--db {db}: no such database folder")


def alias_lock(db: str, timeout_s: float, run_id: str | None = None) -> TableLock:
    """The lock every switch of ``db``'s alias holds while it reads, checks and writes."""
    _check_local(db)
    return TableLock(db, ALIAS_LOCK, timeout_s, run_id=run_id)


def _event(kind: str, frm: AliasTarget | None, to: AliasTarget, run_id: str) -> dict[str, Any]:
    return {"kind": kind, "from": frm.table if frm else None, "to": to.table, "run_id": run_id,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def switch(db: str, current: AliasTarget, to: AliasTarget, run_id: str, lock: TableLock) -> Alias:
    """Point the alias at ``to``; ``current`` (what readers read until now) goes on the
    stack ``--undo`` pops. Call while holding ``lock`` (:func:`alias_lock`): the pointer
    is read again here, and a pointer that moved since the caller checked is refused."""
    if not lock.held:
        raise AliasError("internal: the alias is switched only under its lock")
    alias = read_alias(db)
    now = alias.target if alias is not None else None
    if now is not None and now.table != current.table:
        raise AliasError(f"the alias moved to {now.table!r} meanwhile (expected {current.table!r}); run promote again")
    if current.table == to.table:
        raise AliasError(f"{to.table!r} already is the production table; nothing to promote")
    previous = (alias.previous if alias is not None else []) + [current]
    history = (alias.history if alias is not None else []) + [_event("promote", current, to, run_id)]
    new = Alias(to, previous, history[-HISTORY_KEPT:])
    _write(db, new)
    return new


def undo(db: str, run_id: str, lock: TableLock) -> tuple[AliasTarget, Alias]:
    """Point the alias back at the target before the last promotion; returns (the
    target moved away from, the new alias). Call while holding ``lock``."""
    if not lock.held:
        raise AliasError("internal: the alias is switched only under its lock")
    alias = read_alias(db)
    if alias is None or not alias.previous:
        raise AliasError(f"nothing to undo: {db!r} has " + ("no alias (no promotion yet)" if alias is None
                                                            else "no promotion left to undo"))
    back = alias.previous[-1]
    new = Alias(back, alias.previous[:-1], (alias.history + [_event("undo", alias.target, back, run_id)])[-HISTORY_KEPT:])
    _write(db, new)
    return alias.target, new
