"""Files of one record per question (JSONL, a JSON list, CSV, TSV) and the formats
written that way (grainline's own rows, Ragas test sets): the records read with the
line each starts on, each record told apart by the field that marks its format, so a
file that mixes two formats has its odd rows reported rather than misread."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

from ..jsonl import json_lines
from .base import QUERY_FORMATS, FieldError, QueryFileError, QueryFormat, SourceRow

RECORD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".tab")
# Columns that may repeat in a CSV header (several evidence passages), with or without a number.
_REPEATABLE = re.compile(r"^(evidence|reference_contexts)(?:[ _-]?\d+)?$")


class Record(dict):
    """A record's fields; ``from_csv`` when its values are CSV cells (text only)."""

    from_csv = False


def read_records(path: Path) -> Iterator[tuple[str, Record | None, str | None]]:
    """``(where, record, error)`` for each record of a JSONL, JSON-list, CSV or TSV file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for line in json_lines(path):
            where = f"{path.name}:{line.number}"
            if line.error is not None:
                yield where, None, line.error
            elif not isinstance(line.value, dict):
                yield where, None, f"not a JSON object (got {_kind(line.value)})"
            else:
                yield where, Record(line.value), None
        return
    if suffix == ".json":
        data = _load_json(path)
        if not isinstance(data, list):
            raise QueryFileError(f"{path}: a JSON file of records must hold a list (got {_kind(data)})")
        for i, obj in enumerate(data):
            where = f"{path.name}[{i}]"
            yield (where, Record(obj), None) if isinstance(obj, dict) else (where, None, f"not a JSON object (got {_kind(obj)})")
        return
    if suffix not in (".csv", ".tsv", ".tab"):
        raise QueryFileError(f"{path}: unknown query file type {suffix!r}; expected .csv, .tsv, .jsonl or .json")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if suffix in (".tsv", ".tab") else ",")
        try:
            header = next(reader)
        except StopIteration:
            raise QueryFileError(f"{path}: empty file (no header row)") from None
        names = [n.strip().lower() for n in header]
        end = 1
        for cells in reader:
            # A quoted field may hold line breaks: name the line the record starts on.
            start, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            rec = Record()
            rec.from_csv = True
            for name, cell in zip(names, cells):
                m = _REPEATABLE.match(name)
                if m:
                    if cell.strip():
                        rec.setdefault(m.group(1), []).append(cell)
                elif name:
                    rec[name] = cell
            # One evidence column is a cell, not a list of one (it may hold a JSON list).
            for key in ("evidence", "reference_contexts"):
                if isinstance(rec.get(key), list) and len(rec[key]) == 1:
                    rec[key] = rec[key][0]
            yield f"{path.name}:{start}", rec, None


def csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        row = next(csv.reader(fh, delimiter="\t" if path.suffix.lower() in (".tsv", ".tab") else ","), [])
    return [n.strip().lower() for n in row]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QueryFileError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _kind(value: Any) -> str:
    from .base import kind_of

    return kind_of(value)


class RecordFormat(QueryFormat):
    """A format of one record per question, told apart by its ``marker`` field."""

    marker = ""

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return record_format_counts(path).get(cls.name, 0) > 0

    @classmethod
    def from_record(cls, where: str, rec: Record) -> SourceRow:
        raise NotImplementedError

    @classmethod
    def rows(cls, path: Path) -> Iterator[SourceRow]:
        if path.suffix.lower() in (".csv", ".tsv", ".tab"):
            names = csv_header(path)
            if cls.marker not in names:
                raise QueryFileError(f"{path}:1: no {cls.marker!r} column (columns: {', '.join(names) or 'none'}); "
                                     f"expected {cls.describe}")
        for where, rec, error in read_records(path):
            if rec is None:
                yield SourceRow(where, error=error)
                continue
            other = [f for f in record_formats() if f is not cls and f.marker in rec and cls.marker not in rec]
            if other:
                yield SourceRow(where, error=f"a {other[0].name} row ({other[0].marker!r} field) in a file read as "
                                            f"{cls.name} rows ({cls.marker!r} field): two formats mixed in one file")
                continue
            if cls.marker not in rec:
                yield SourceRow(where, error=f"no {cls.marker!r} field (a {cls.name} row needs one)")
                continue
            try:
                yield cls.from_record(where, rec)
            except FieldError as exc:
                doc = rec.get("doc_id")
                yield SourceRow(where, doc_id=doc if isinstance(doc, str) else "", error=str(exc))


def record_formats() -> list[type[RecordFormat]]:
    return [f for f in (QUERY_FORMATS.get(n) for n in QUERY_FORMATS.names()) if issubclass(f, RecordFormat)]


def record_format_counts(path: Path) -> dict[str, int]:
    """How many records of the file each record format's marker field claims."""
    counts: dict[str, int] = {}
    if path.suffix.lower() not in RECORD_SUFFIXES or not path.is_file():
        return counts
    formats = record_formats()
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        names = set(csv_header(path))
        return {f.name: 1 for f in formats if f.marker in names}
    try:
        for _where, rec, _error in read_records(path):
            if rec is None:
                continue
            for f in formats:
                if f.marker in rec:
                    counts[f.name] = counts.get(f.name, 0) + 1
    except QueryFileError:
        return {}
    return counts
