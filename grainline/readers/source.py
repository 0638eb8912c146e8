"""Reading what a source names: ``read_file`` for one file (every problem a Failure,
never an exception), ``open_source``/``iter_documents`` for a whole source, lazily,
one doc id read once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from grainline.documents import Document, Failure
from grainline.readers.discovery import _inside, _scan, _Skip
from grainline.readers.errors import OUTSIDE_ROOT, _os_reason, _ReadError
from grainline.readers.ids import _rel, _with_global_id, file_id
from grainline.readers.registry import get_reader
from grainline.readers.settings import ReaderSettings


def read_file(path: Path, root: Path, settings: ReaderSettings | None = None) -> Iterator[Document | Failure]:
    """Read one file under ``root``: yields its Document(s), with ids made by
    :func:`file_doc_id`, or Failures saying why not (``where`` relative to ``root``)."""
    rel = None
    fid = ""
    for item in _read_file(path, root, settings):
        if rel is None:
            try:
                rel = _rel(Path(path), Path(root))
                fid = file_id(path)
            except (ValueError, OSError):
                rel = ""
        yield _with_global_id(item, fid, rel) if rel else item


def _read_file(path: Path, root: Path, settings: ReaderSettings | None = None) -> Iterator[Document | Failure]:
    """Read one file under ``root``: yields its Document(s), or Failures saying why not.

    Never raises for a bad file: OS errors (permission denied, file vanished), a
    symlink escaping ``root``, oversized files and even crashes inside a parsing
    library are reported as ``Failure(where=<path relative to root>, reason=...)``.
    """
    settings = settings or ReaderSettings()
    path = Path(path)
    root = Path(root)
    try:
        rel = _rel(path, root)
    except ValueError:
        yield Failure(str(path), f"outside the ingested root {root}")
        return
    # Lexically under root but resolving elsewhere can only happen through a symlink
    # (the file itself or a folder on the way).
    if not _inside(os.path.realpath(path), os.path.realpath(root)):
        yield Failure(rel, OUTSIDE_ROOT)
        return
    suffix = path.suffix.lower()
    try:
        reader = get_reader(suffix)
    except ValueError as exc:
        yield Failure(rel, str(exc))
        return
    try:
        yield from reader(path, root, settings)
    except _ReadError as exc:
        yield Failure(rel, str(exc))
    except OSError as exc:
        yield Failure(rel, _os_reason(exc))
    except Exception as exc:  # noqa: BLE001 - a library crash on one file must not end the run
        yield Failure(rel, f"reader crashed: {type(exc).__name__}: {exc}")


def _where(doc: Document, rel: str) -> str:
    """Human location of a Document, recovered from the fragment of its source URI."""
    fragment = doc.source.partition("#")[2]
    if fragment.startswith("L"):
        return f"{rel}:{fragment[1:]}"
    if fragment:
        return f"{rel}#{fragment}"
    return rel


def iter_documents(
    source: str | os.PathLike[str], settings: ReaderSettings | None = None
) -> Iterator[Document | Failure]:
    """Documents (and Failures) from every file a source names, lazily, in sorted order.

    Discovery runs immediately, so a missing source raises FileNotFoundError at call
    time; reading then happens one file at a time as the iterator is consumed. A
    doc_id seen a second time yields a Failure instead of a second Document.
    """
    return open_source(source, settings)[1]


def open_source(
    source: str | os.PathLike[str], settings: ReaderSettings | None = None
) -> tuple[Path, Iterator[Document | Failure]]:
    """Discover once: the source's root and its documents as a lazy iterator, so a
    caller that needs the root does not walk the tree a second time to read it."""
    settings = settings or ReaderSettings()
    root, entries = _scan(source, settings)
    return root, _iter_entries(root, entries, settings)


def _iter_entries(root: Path, entries: list[Path | _Skip], settings: ReaderSettings) -> Iterator[Document | Failure]:
    seen: dict[str, str] = {}
    files: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, _Skip):
            yield Failure(_rel(entry.path, root), entry.reason, entry.stage)
            continue
        rel = _rel(entry, root)
        fid = file_id(entry)
        if fid in files:
            # A followed symlink to a file already read: one file, one document.
            yield Failure(rel, f"same file as {files[fid]} (read once)", "skip")
            continue
        files[fid] = rel
        for item in read_file(entry, root, settings):
            if isinstance(item, Document):
                where = _where(item, rel)
                first = seen.get(item.doc_id)
                if first is not None:
                    yield Failure(where, f"duplicate doc_id, first seen in {first}")
                    continue
                seen[item.doc_id] = where
            yield item
