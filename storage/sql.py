"""Building LanceDB filter expressions safely from Python values."""

from __future__ import annotations

from typing import Iterable


def quote(value: str) -> str:
    """A SQL string literal; single quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')``; an empty list gives a filter that matches nothing."""
    vals = sorted(set(values))
    if not vals:
        return "false"
    return f"{column} IN ({', '.join(quote(v) for v in vals)})"
