"""Which tables a database holds (the one listing every command and phase uses), and
opening or creating one that several processes may be first to need."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .commits import retry_commit
from .locks import TableLock

# Creating a table takes well under a second; a creator that holds the lock longer
# than this is stuck, and the error names its lock.
CREATE_LOCK_TIMEOUT_S = 120.0


def open_table_if_exists(db: Any, name: str) -> Any | None:
    """The table ``name`` of a LanceDB connection, or None when there is none."""
    try:
        return db.open_table(name)
    except (ValueError, FileNotFoundError):
        return None


def open_or_create(db: Any, db_uri: str, name: str, schema: pa.Schema) -> Any:
    """The table ``name``, created empty with ``schema`` when it does not exist yet.

    Processes that create one table at the same instant take turns on a lock of its own
    (``<db>/_locks/<name>.create``; a lease on an object store): LanceDB's
    ``create_table(exist_ok=True)`` is not safe there, since a creation that loses the
    race is committed as an *overwrite* of the winner's table, which drops rows the
    winner wrote in between and fails its next update."""
    table = open_table_if_exists(db, name)
    if table is not None:
        return table
    with TableLock(db_uri, f"{name}.create", CREATE_LOCK_TIMEOUT_S):
        table = open_table_if_exists(db, name)
        if table is None:
            table = retry_commit(lambda: db.create_table(name, schema=schema, exist_ok=True), f"creating table {name}")
    return table


def table_names(conn: Any) -> list[str]:
    """The names of the tables of a LanceDB connection (whichever listing call this
    LanceDB version has)."""
    res = conn.list_tables() if hasattr(conn, "list_tables") else conn.table_names()
    return list(getattr(res, "tables", res))


def chunk_table_names(conn: Any) -> list[str]:
    """The chunks tables among them (``chunks_<model>...``), in listing order."""
    return [t for t in table_names(conn) if t.startswith("chunks_")]
