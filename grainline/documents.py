"""The two values that flow through grainline: a Document read from a source and
the Chunks cut from it.

May import: nothing of grainline.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple


def sha256_of(*parts: str) -> "hashlib._Hash":
    """A SHA-256 hasher fed the parts joined by a separator that cannot occur in normal
    text (``\x1f``); ``copy()`` it to hash many texts that share these parts first."""
    h = hashlib.sha256()
    for i, part in enumerate(parts):
        if i:
            h.update(b"\x1f")
        h.update(part.encode("utf-8", "surrogatepass"))
    return h


def sha256_hex(*parts: str, length: int = 32) -> str:
    """Hash of the parts joined by a separator that cannot occur in normal text."""
    return sha256_of(*parts).hexdigest()[:length]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Document:
    """One source document.

    ``doc_id`` is stable across runs and names one document whatever path it was
    ingested through: a file's resolved real path (``/data/notes/a.txt``), with
    ``#part-0003`` for a part of a big text file and ``#<record id>`` for a JSONL or
    Parquet record (see ``grainline.readers.file_doc_id``); documents passed in
    directly keep the id they were given. ``content_hash`` covers everything that ends
    up in stored rows (text, title, metadata), so an unchanged hash means nothing to do.
    """

    doc_id: str
    text: str
    source: str = ""
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def content_hash(self) -> str:
        # Cached: the reader (for the source manifest) and triage both need it.
        return sha256_hex(self.text, self.title, canonical_json(self.metadata))


@dataclass(frozen=True)
class Chunk:
    """A span of a Document: ``doc.text[start:end] == text``.

    ``handling`` says how the embedding treats the chunk: ``plain`` (fits the model),
    ``split`` (was cut further to fit the model), ``pool`` (windows embedded and
    averaged) or ``truncate`` (first window only).
    """

    chunk_id: str
    doc_id: str
    strategy: str
    chunker_key: str
    params: str
    ordinal: int
    start: int
    end: int
    text: str
    n_tokens: int
    n_model_tokens: int = -1
    exceeds_model_limit: bool = False
    handling: str = "plain"

    @property
    def content_hash(self) -> str:
        """What decides whether a vector can be reused: the text and how it is embedded."""
        mode = self.handling if self.handling in ("pool", "truncate") else "plain"
        return sha256_hex(mode, self.text)


@dataclass(frozen=True)
class Failure:
    """A document or record that could not be ingested, and why."""

    where: str
    reason: str
    stage: str = "read"
    # The id of the document that failed as a whole (a file), when there is one: a
    # full sync keeps what the table holds of it instead of deleting it as gone.
    doc_id: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason, "stage": self.stage}


class FileStat(NamedTuple):
    """What ``os.stat`` said of a file, and when it was asked (``taken_ns``, wall clock,
    read just before the call): what the source manifest compares to skip a file. An
    object of an object store has its ``etag`` (inode and ctime 0, its last-modified
    time as ``mtime_ns``, kept, not compared): the ETag alone decides there. A named
    tuple, not a dataclass: a scheduled run makes one per file of the source (a third
    of the cost of a frozen dataclass)."""

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    taken_ns: int
    etag: str = ""

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "FileStat":
        """Stat ``path`` (following symlinks) now; raises OSError as ``os.stat`` does."""
        taken = time.time_ns()
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, taken)

    def same_file(self, other: "FileStat") -> bool:
        """Same size, modification time and inode (ctime is kept, not compared)."""
        return (self.size, self.mtime_ns, self.ino) == (other.size, other.mtime_ns, other.ino)


class Unchanged(NamedTuple):
    """A file of the source not read: its stat matches the source manifest, which says
    it gave ``n_docs`` documents, all stored unchanged (``readers.open_source`` yields it
    only when given an ``unchanged`` predicate). One per unchanged file of a run: a
    named tuple, as :class:`FileStat`."""

    file_id: str
    where: str
    n_docs: int


@dataclass(frozen=True)
class FileRead:
    """Follows the documents of a file that was read (``readers.open_source`` yields it
    only when given an ``unchanged`` predicate): ``stat`` as taken *before* reading (None
    when the file could not be stat'ed), ``docs`` the ``(doc_id, content_hash)`` of each
    document it gave, ``complete`` False when any part of it failed (then the source
    manifest gets no entry for it, and it is read again next run)."""

    file_id: str
    where: str
    stat: FileStat | None
    docs: tuple[tuple[str, str], ...]
    complete: bool
