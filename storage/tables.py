"""Which tables a database holds: the one listing every command and phase uses."""

from __future__ import annotations

from typing import Any


def table_names(conn: Any) -> list[str]:
    """The names of the tables of a LanceDB connection (whichever listing call this
    LanceDB version has)."""
    res = conn.list_tables() if hasattr(conn, "list_tables") else conn.table_names()
    return list(getattr(res, "tables", res))


def chunk_table_names(conn: Any) -> list[str]:
    """The chunks tables among them (``chunks_<model>...``), in listing order."""
    return [t for t in table_names(conn) if t.startswith("chunks_")]
