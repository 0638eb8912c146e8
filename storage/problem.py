"""What ``grainline check`` reports: one :class:`Problem` per thing wrong (kind, table,
where, reason), shared by the table checks (``check.py``) and the index and file
checks (``index_check.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Lance files end with these four bytes; a file cut short or overwritten has lost them.
LANCE_FOOTER = b"LANC"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind, the table, where in it (row, version, file) and why."""

    kind: str
    table: str
    where: str
    reason: str

    def line(self) -> str:
        """The problem as one printable line."""
        return f"{self.kind}: table {self.table}: {self.where}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        """The problem as a JSON-ready dict."""
        return asdict(self)


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
