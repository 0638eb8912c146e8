"""Reading a damaged table without a traceback: what a reader does when Lance trips on
a damaged file.

An index is derived data, so a reader can do without it: dense search scans exactly
instead of a damaged vector index, BM25 is answered densely instead of through a
damaged full-text index, a filter scans instead of using a damaged scalar index. Each
such fallback is said once, as an :class:`IndexDamagedWarning` (one line naming the
table, the index and the repair command). Damage a reader cannot do without (a data
file, the manifest) is raised as :class:`TableDamaged`, one line naming the table, the
damage and the commands that find and mend it."""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from grainline.errors import TerminalError

T = TypeVar("T")

# Lance's errors reach Python as RuntimeError/OSError/ValueError (and Arrow's) whose text
# carries one of these; grainline's own errors never do.
_LANCE_MARKS = ("lance error", "LanceError", "Lance file", "External error", "Not found:", "Invalid range",
                "failed to fill whole buffer", "lance-io", "lance-file", "lance-index")
# A path inside a table's folder: what follows ``<table>.lance/`` names the file.
# (Lance writes some paths without their leading "/": the whole path token goes.)
_IN_TABLE = re.compile(r"(?<![^\s(:'\"])[^\s,'\"]*?/([^/\s,'\"]+\.lance)/(?=[^\s,])")


class TableDamaged(TerminalError, ValueError):
    """A table's data or manifest is damaged where a reader cannot do without it."""


class IndexDamagedWarning(UserWarning):
    """An index is damaged; the reader did without it (said once per table and index)."""


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` is Lance failing on a damaged (missing, cut short, foreign) file."""
    if isinstance(exc, TerminalError):
        return False
    text = str(exc)
    return isinstance(exc, (RuntimeError, OSError, ValueError)) and any(m in text for m in _LANCE_MARKS) or \
        type(exc).__module__.startswith("pyarrow") and any(m in text for m in _LANCE_MARKS)


def damage_line(exc: BaseException) -> str:
    """Lance's error as one short line: its first line, the source location dropped,
    a file inside the table named from the table's folder (its absolute path would
    push the file's own name past the end of a shortened line)."""
    text = " ".join(str(exc).split())
    text = re.sub(r",? /(?:rustc|root|home)/\S+", "", text)
    text = _IN_TABLE.sub(r"\1/", text)
    return text[:300]


def repair_hint(db: str | None) -> str:
    at = f" --db {db}" if db else ""
    return f"`grainline check{at}` names it, `grainline check --repair{at}` rebuilds a damaged index"


def table_damaged(table: str, exc: BaseException, db: str | None = None) -> TableDamaged:
    """The one-line error for damage a reader cannot do without."""
    return TableDamaged(f"table {table} is damaged: {damage_line(exc)}; {repair_hint(db)} "
                        "(a damaged data file needs `grainline restore`)")


_said: set[tuple[str, str]] = set()


def warn_index(table: str, index: str, exc: BaseException, instead: str, db: str | None = None) -> None:
    """Say once per process that ``index`` of ``table`` is damaged and what was done instead."""
    if (table, index) in _said:
        return
    _said.add((table, index))
    warnings.warn(f"index {index} of table {table} is damaged ({damage_line(exc)[:160]}); {instead}; "
                  f"{repair_hint(db).split(', ')[1]}", IndexDamagedWarning, stacklevel=3)


@contextmanager
def reading(table: str, db: str | None = None) -> Iterator[None]:
    """Around a read of ``table``: Lance's damage errors leave as :class:`TableDamaged`,
    and so does any error of a table whose manifest is damaged (a zeroed one opens as
    an empty version, whose missing columns raise KeyError far from the cause)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, TerminalError):
            raise
        manifest = _damaged_manifest(table, db)
        if manifest is not None:
            raise TableDamaged(f"table {table} is damaged: {manifest}") from None
        if is_damage(exc):
            raise table_damaged(table, exc, db) from None
        raise


def _damaged_manifest(table: str, db: str | None) -> str | None:
    """The line of ``table``'s damaged manifest, if one is."""
    if not db:
        return None
    from .index_check import check_manifests

    try:
        found = check_manifests(db, table)
    except OSError:
        return None
    return f"{found[0].where}: {found[0].reason}" if found else None


def index_named(table: Any, kind: str, where: str = "") -> str:
    """The name of ``table``'s index of ``kind`` (``vector``, ``full-text``, ``scalar``)
    on a column the filter ``where`` names (any, without one), or ``kind``."""
    from .index_check import index_kind

    try:
        found = [d for d in table.to_lance().describe_indices() if index_kind(d) == kind]
        for d in sorted(found, key=lambda d: not any(re.search(rf"\b{re.escape(c)}\b", where) for c in d.field_names)):
            return d.name
    except Exception:  # noqa: BLE001 - the name is only for the message
        pass
    return f"the {kind} index"


def without_scalar_index(table: Any, query: Callable[[], T], where: str, columns: list[str], db: str | None = None) -> Any:
    """``query()`` (a filtered read that a scalar index serves); when a damaged index
    makes it fail, the same rows read by a scan (as a list of dicts) and the damage said once."""
    try:
        return query()
    except Exception as exc:
        if not is_damage(exc):
            raise
        first = exc
    try:
        rows = table.to_lance().to_table(columns=columns, filter=where, use_scalar_index=False).to_pylist()
    except Exception as exc:
        if is_damage(exc):
            raise table_damaged(table.name, exc, db) from None
        raise
    warn_index(table.name, index_named(table, "scalar", where), first, "rows found by a scan instead", db)
    return rows


def preflight(db_uri: str, table: Any, needs_fts: bool = False) -> None:
    """Before a long read of a whole table (an evaluation), in a moment: a damaged data
    file, or a damaged full-text index when BM25 needs it, raises :class:`TableDamaged`
    (one line); another damaged index is said once (the reader does without it)."""
    from .problem import Problem
    from .index_check import check_data_files, check_indexes

    bad: list[Problem] = list(check_data_files(db_uri, table.name, table.to_lance()))
    if bad:
        raise TableDamaged(f"table {table.name} is damaged: {bad[0].where}: {bad[0].reason}; "
                           f"`grainline check --repair --db {db_uri}` names the version to restore")
    for d in check_indexes(db_uri, table.name, table):
        if d.kind == "full-text" and needs_fts:
            raise TableDamaged(f"index {d.index} of table {table.name} is damaged ({d.file}: {d.reason}) and BM25 needs it; "
                               f"`grainline check --repair --db {db_uri}` rebuilds it")
        warn_index(table.name, d.index, RuntimeError(f"{d.file}: {d.reason}"), "the evaluation does without it", db_uri)
