"""Which reader reads which suffix: ``READERS``, filled by ``@register_reader``.

A plain dict rather than ``grainline.registry.Registry``: a suffix may be registered
again to replace its reader, a reader is looked up and removed with dict syntax
(``READERS[".md"]``, ``del READERS[".x"]``), and each entry carries whether its reader
streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from grainline.documents import Document, Failure
from grainline.readers.settings import ReaderSettings

ReaderFn = Callable[[Path, Path, ReaderSettings], Iterator["Document | Failure"]]

READERS: dict[str, ReaderFn] = {}
"""Suffix (lower case, with the dot) -> reader function ``(path, root, settings)``."""

# Readers listed here stream their input, so the whole-file size limit does not apply.
_STREAMING: set[str] = set()


def register_reader(*suffixes: str, streaming: bool = False) -> Callable[[ReaderFn], ReaderFn]:
    """Decorator registering a reader for one or more suffixes (e.g. ``".md"``).

    ``streaming=True`` marks readers that never hold the whole file in memory, which
    exempts them from ``max_file_bytes`` as a whole-file limit.
    """

    def decorate(fn: ReaderFn) -> ReaderFn:
        for suffix in suffixes:
            key = _norm_suffix(suffix)
            READERS[key] = fn
            if streaming:
                _STREAMING.add(key)
            else:
                _STREAMING.discard(key)
        return fn

    return decorate


def _norm_suffix(suffix: str) -> str:
    suffix = suffix.lower()
    return suffix if suffix.startswith(".") else "." + suffix


def streams(suffix: str) -> bool:
    """Whether the reader of ``suffix`` streams its input (``max_file_bytes`` does not
    cap the whole file)."""
    return _norm_suffix(suffix) in _STREAMING


def unsupported_reason(name: str) -> str:
    """Why a file is skipped: its suffix has no reader (and which suffixes do)."""
    suffix = Path(name).suffix.lower()
    what = f"{suffix!r} files" if suffix else "files without a suffix"
    return f"unsupported file type: no reader for {what} (readers: {known_suffixes()})"


def known_suffixes() -> str:
    """The registered suffixes, sorted and comma-separated, for error messages."""
    return ", ".join(sorted(READERS))


def get_reader(suffix: str) -> ReaderFn:
    """The reader for ``suffix`` (case-insensitive, dot optional).

    Raises ValueError listing the known suffixes when there is none.
    """
    key = _norm_suffix(suffix)
    try:
        return READERS[key]
    except KeyError:
        raise ValueError(f"no reader for suffix {suffix!r}; known suffixes: {known_suffixes()}") from None
