"""The JSONL line reader under every JSONL input of the evaluation (datasets, query
files): each non-blank line parsed, or the reason it does not parse, with its line
number; what a bad line means (an error, a row reported back) is the caller's call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line: its number (from 1), its value, or why it is not JSON."""

    number: int
    value: Any = None
    error: str | None = None


def json_lines(path: Path) -> Iterator[JsonLine]:
    """Each non-blank line of a UTF-8 JSONL file, parsed."""
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield JsonLine(number, json.loads(raw))
            except json.JSONDecodeError as exc:
                yield JsonLine(number, error=f"malformed JSON ({exc.msg} at column {exc.colno})")
