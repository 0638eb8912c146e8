"""The source manifest within a run (:class:`ManifestRun`, ``ctx.manifest``): which
files the reader skips unread (the predicate it is given), which entries are written
(once every document of the file is committed), which dropped (files gone, on a full
sync). When an entry is trusted, and why that is safe: ``storage/manifest.py``."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from grainline.documents import FileRead, FileStat, Unchanged, canonical_json, sha256_hex
from grainline.storage.chunks import DocState
from grainline.storage.manifest import RACY_MARGIN_NS, ManifestEntry, SourceManifest, docs_hash

from .settings import IngestSettings

log = logging.getLogger("grainline.ingest")

# Entries wait in memory until their documents are committed; they are written at the
# first triage after this long (or this many files), and at the run's end, so a killed
# run loses at most that much of the manifest (those files are read once more).
FLUSH_EVERY_S = 60.0
FLUSH_EVERY_FILES = 5000


def reader_signature(settings: IngestSettings) -> str:
    """What turns a file's bytes into documents: grainline's version and the reader
    settings. An entry written under another signature is not trusted."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("grainline")
    except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        v = "unknown"
    return sha256_hex(v, canonical_json(settings.reader.model_dump(mode="json")), length=16)


def trusted_entries(entries: Mapping[str, ManifestEntry], states: Mapping[str, DocState], keys: list[str],
                    sig: str) -> dict[str, ManifestEntry]:
    """The entries whose files the table holds exactly as recorded: under this reader
    signature, and for each one every stored document of the file (``fid``,
    ``fid#...``) has the recorded hash under every one of ``keys``. A file's own
    document is looked up by its id; only the documents of files that hold several
    (``fid#part``, ``fid#record``) are gathered in a pass over the doc states, which
    the run has in memory anyway."""
    cand = {fid: e for fid, e in entries.items() if e.reader_sig == sig}
    if not cand or not keys:
        return {}
    first, rest = keys[0], keys[1:]

    def same_hash(st: DocState) -> str | None:
        # The document's hash when every key holds it, else None (not trusted).
        h = st.hashes.get(first)
        return None if h is None or any(st.hashes.get(k) != h for k in rest) else h

    parts: dict[str, list[tuple[str, str | None]]] = {}
    for d, st in states.items():
        if "#" not in d or d in cand:
            continue
        fid = next((d[:i] for i, ch in enumerate(d) if ch == "#" and d[:i] in cand), None)
        if fid is not None:
            parts.setdefault(fid, []).append((d, same_hash(st)))
    out = {}
    for fid, e in cand.items():
        st = states.get(fid)
        docs = parts.get(fid, [])
        if st is not None:
            docs = [(fid, same_hash(st)), *docs]
        if len(docs) == e.n_docs and all(h is not None for _, h in docs) and docs_hash(docs) == e.docs_hash:
            out[fid] = e
    return out


class ManifestRun:
    """A run's use of the source manifest. ``unchanged`` is the reader's predicate;
    :meth:`load` fills what it consults once the table's state is known (the reader
    is lazy, so nothing is asked before); triage hands it the markers (:meth:`note`)
    and flushes (:meth:`flush`); ``finish`` closes it (:meth:`close`)."""

    def __init__(self, rehash: bool = False, writable: bool = True) -> None:
        self.rehash = rehash
        self.writable = writable
        self.store: SourceManifest | None = None
        self.keys: list[str] = []
        self.sig = ""
        self.known: set[str] = set()
        self.trusted: dict[str, ManifestEntry] = {}
        self.pending: list[FileRead] = []
        self.unchanged_files: set[str] = set()
        self.files_seen: set[str] = set()
        self._last_flush = time.monotonic()

    def load(self, ctx: Any) -> None:
        """Read the manifest of the run's table once and keep the entries the table
        agrees with. A manifest that cannot be read skips nothing (a warning)."""
        self.keys = [p.key for p in ctx.plans]
        self.sig = reader_signature(ctx.settings)
        try:
            self.store = SourceManifest(ctx.settings.db, ctx.store.table_name)
            entries = self.store.load()
            self.trusted = trusted_entries(entries, ctx.states, self.keys, self.sig)
            self.known = set(entries)
        except Exception as exc:  # noqa: BLE001 - an optimisation: without it every file is read
            log.warning("could not read the source manifest of %s, every file is read: %s: %s",
                        ctx.store.table_name, type(exc).__name__, exc)

    def unchanged(self, fid: str, stat: FileStat) -> int | None:
        """The reader's predicate: the number of documents of a file to count as
        unchanged without reading it, or None to read it."""
        e = None if self.rehash else self.trusted.get(fid)
        if e is None:
            return None
        if stat.etag:
            # An object: its ETag (of the bytes read last time) decides, never a time.
            return e.n_docs if (stat.size, stat.etag) == (e.size, e.etag) else None
        if (stat.size, stat.mtime_ns, stat.ino) != (e.size, e.mtime_ns, e.ino):
            return None
        if e.mtime_ns >= e.stat_ns - RACY_MARGIN_NS:
            return None  # racy: modified within a clock tick of the stat that recorded it
        return e.n_docs

    def note(self, item: Unchanged | FileRead) -> None:
        """A file skipped or read (triage's markers)."""
        self.files_seen.add(item.file_id)
        if isinstance(item, Unchanged):
            self.unchanged_files.add(item.file_id)
        elif item.complete and item.stat is not None:
            self.pending.append(item)

    def covers(self, doc_id: str) -> bool:
        """Whether a stored document belongs to a file skipped unread this run."""
        u = self.unchanged_files
        return bool(u) and (doc_id in u or ("#" in doc_id and any(doc_id[:i] in u for i, ch in enumerate(doc_id) if ch == "#")))

    def flush(self, ctx: Any, force: bool = False) -> None:
        """Write the entries of the files whose documents are all committed now, when
        due (``force``: now). A file whose documents are still in flight waits; one
        that never gets them all committed (a chunking failure) never gets an entry."""
        if not (self.writable and self.pending and self.store is not None):
            return
        if not force and len(self.pending) < FLUSH_EVERY_FILES and time.monotonic() - self._last_flush < FLUSH_EVERY_S:
            return
        ready: list[ManifestEntry] = []
        waiting: list[FileRead] = []
        for m in self.pending:
            (ready.append(_entry(m, self.sig)) if _committed(m, ctx.states, self.keys) else waiting.append(m))
        self.pending = waiting if not force else []
        self._last_flush = time.monotonic()
        self._guarded("write", lambda: self.store.write(ready, ctx.run_id))

    def close(self, ctx: Any, gone_scope: Callable[[str], bool] | None = None) -> None:
        """At the run's end: write what is committed; with ``gone_scope`` (a full sync
        that saw the whole source), drop the entries of files in scope it did not see;
        compact the manifest when due. Never raises: a warning says what failed."""
        if not self.writable or self.store is None:
            return
        self.flush(ctx, force=True)
        if gone_scope is not None:
            gone = [fid for fid in self.known if fid not in self.files_seen and gone_scope(fid)]
            self._guarded("delete from", lambda: self.store.delete(gone))
        self._guarded("compact", self.store.compact_if_due)

    def _guarded(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the table is whole; the next run reads those files again
            log.warning("could not %s the source manifest %s (the next run reads those files again): %s: %s",
                        what, self.store.table_name if self.store else "", type(exc).__name__, exc)


def _committed(m: FileRead, states: Mapping[str, DocState], keys: list[str]) -> bool:
    for d, h in m.docs:
        st = states.get(d)
        if st is None or any(st.hashes.get(k) != h for k in keys):
            return False
    return True


def _entry(m: FileRead, sig: str) -> ManifestEntry:
    s = m.stat
    assert s is not None
    return ManifestEntry(file_id=m.file_id, size=s.size, mtime_ns=s.mtime_ns, ino=s.ino, ctime_ns=s.ctime_ns,
                         stat_ns=s.taken_ns, n_docs=len(m.docs), docs_hash=docs_hash(m.docs), reader_sig=sig, etag=s.etag)
