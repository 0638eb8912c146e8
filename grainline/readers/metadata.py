"""Metadata a reader attaches (front matter, record fields): made JSON-safe, and held
to the size limits, since it is copied onto every chunk row of its document."""

from __future__ import annotations

from typing import Any

from grainline.documents import canonical_json
from grainline.readers.settings import ReaderSettings


def _expanded_nodes(value: Any, limit: int) -> int | None:
    """How many values ``value`` holds with every shared (aliased) part counted each
    time it occurs; stops counting past ``limit``. None when a value contains itself.
    Linear in the distinct values: each is sized once and its size reused."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int | None:
        if not isinstance(v, (dict, list, tuple, set, frozenset)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in active:
            return None
        active.add(key)
        total = 1
        for child in (x for kv in v.items() for x in kv) if isinstance(v, dict) else v:
            n = size(child)
            if n is None:
                return None
            total += n
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(value)


def _metadata_too_large(metadata: dict[str, Any], settings: ReaderSettings) -> str | None:
    size = len(canonical_json(metadata).encode("utf-8"))
    if size > settings.max_metadata_bytes:
        return f"metadata too large ({size} bytes as JSON > max_metadata_bytes {settings.max_metadata_bytes})"
    return None


def _json_safe(value: Any) -> Any:
    """Metadata must survive JSON (content hashes, storage): dates, Decimals, bytes
    and the like become str(); mappings and sequences are converted recursively.
    Iterative so deeply nested YAML/JSON cannot exhaust the recursion limit."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    root: list[Any] = [None]
    # (container to fill, key or index, source value)
    todo: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while todo:
        target, key, val = todo.pop()
        if isinstance(val, (str, int, float, bool)) or val is None:
            target[key] = val
        elif isinstance(val, dict):
            new: dict[str, Any] = {}
            target[key] = new
            for k, v in val.items():
                todo.append((new, k if isinstance(k, str) else str(k), v))
        elif isinstance(val, (list, tuple, set, frozenset)):
            items = sorted(val, key=repr) if isinstance(val, (set, frozenset)) else list(val)
            new_list: list[Any] = [None] * len(items)
            target[key] = new_list
            for i, v in enumerate(items):
                todo.append((new_list, i, v))
        else:
            target[key] = str(val)
    return root[0]
