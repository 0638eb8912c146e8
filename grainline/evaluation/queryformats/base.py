"""What every query-file format reads into: one :class:`SourceRow` per question (its
passages, document and answers, or why the row cannot be used), the registry of
formats, and the typed field readers that never turn a number, a mapping or a nested
list into its printed form where text is expected."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from grainline.errors import TerminalError
from grainline.registry import Registry


class QueryFileError(TerminalError, ValueError):
    """A query file that cannot be read at all (not a row of it): the message names the
    file and why."""


@dataclass(frozen=True)
class Passage:
    """One evidence passage: its text and, when the file gives them, its offsets into
    the document; ``label`` names it in messages (``evidence[2]``)."""

    text: str
    start: int | None = None
    end: int | None = None
    label: str = "evidence"


@dataclass
class SourceRow:
    """One question as a format reads it; ``error`` set when the row is unusable."""

    where: str
    question: str = ""
    qid: str = ""
    doc_id: str = ""
    answers: list[str] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    # Document-level labels (BEIR qrels): doc id -> grade.
    judged: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class QueryFormat:
    """A query-file format: ``sniff`` says whether a path looks like one (for
    detection), ``rows`` reads it."""

    name = ""
    describe = ""

    @classmethod
    def sniff(cls, path: Path) -> bool:
        raise NotImplementedError

    @classmethod
    def rows(cls, path: Path) -> Iterator[SourceRow]:
        raise NotImplementedError


QUERY_FORMATS: Registry[type[QueryFormat]] = Registry("query file format")


def register(name: str, describe: str):
    """Class decorator: a :class:`QueryFormat` known as ``name`` to ``--format``."""

    def deco(cls: type[QueryFormat]) -> type[QueryFormat]:
        cls.name, cls.describe = name, describe
        return QUERY_FORMATS.register(name)(cls)

    return deco


# --------------------------------------------------------------------------- typed fields


def kind_of(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class FieldError(ValueError):
    """A field of a row holds the wrong kind of value; the message names the field."""


def text(row: dict[str, Any], name: str, *, required: bool = False) -> str:
    """A text field, stripped; missing or null is ''. Anything but a string is an error."""
    value = row.get(name)
    if value is None:
        if required:
            raise FieldError(f"no {name!r} field")
        return ""
    if not isinstance(value, str):
        raise FieldError(f"field {name!r} is {kind_of(value)}, expected text")
    return value.strip()


def ident(row: dict[str, Any], name: str) -> str:
    """An identifier field (``id``, ``doc_id``): text, or an integer written as one."""
    value = row.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(row, name)


def texts(value: Any, name: str) -> list[str]:
    """A text or a list of texts (answers): each item text, stripped, empty ones dropped."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            where = f"{name}[{i}]" if isinstance(value, list) else name
            raise FieldError(f"field {where!r} is {kind_of(item)}, expected text")
        if item.strip():
            out.append(item.strip())
    return out


def _offset(obj: dict[str, Any], key: str, label: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise FieldError(f"{label}.{key} is {kind_of(v)}, expected a character offset (an integer)")
    return v


def passages(value: Any, name: str = "evidence") -> list[Passage]:
    """Evidence as passages: a text, an object ``{text, start?, end?}``, or a list of
    either. An empty list, an empty text, a nested list, a number or an object without
    ``text`` is an error naming the item."""
    if isinstance(value, (str, dict)):
        items, labels = [value], [name]
    elif isinstance(value, list):
        if not value:
            raise FieldError(f"{name} list is empty")
        items, labels = value, [f"{name}[{i}]" for i in range(len(value))]
    else:
        raise FieldError(f"field {name!r} is {kind_of(value)}, expected text, {{text, start, end}} or a list of them")
    out = []
    for item, label in zip(items, labels):
        if isinstance(item, str):
            if not item.strip():
                raise FieldError(f"{label} is empty")
            out.append(Passage(item, label=label))
            continue
        if not isinstance(item, dict):
            raise FieldError(f"{label} is {kind_of(item)}, expected text or {{text, start, end}}")
        body = item.get("text")
        if not isinstance(body, str):
            raise FieldError(f"{label}.text is {kind_of(body)}, expected text" if "text" in item
                             else f"{label} is an object without 'text'")
        if not body.strip():
            raise FieldError(f"{label}.text is empty")
        start, end = _offset(item, "start", label), _offset(item, "end", label)
        if (start is None) != (end is None):
            raise FieldError(f"{label} gives {'start' if end is None else 'end'} without "
                             f"{'end' if end is None else 'start'}")
        if start is not None and end is not None and not 0 <= start < end:
            raise FieldError(f"{label} offsets {start}-{end} are not a span (need 0 <= start < end)")
        out.append(Passage(body, start, end, label))
    return out


def cell_list(cell: str) -> Any:
    """A CSV cell that holds a list: JSON (``["a", "b"]``), or the Python form that
    pandas and csv.DictWriter write for a list (``['a', 'b']``, read as a literal,
    never evaluated). Any other cell is returned as it is (a passage may start with
    ``[``, as a Markdown link does)."""
    s = cell.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return cell
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return cell
    return value if isinstance(value, list) else cell
