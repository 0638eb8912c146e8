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
from grainline.storage.ledger import Ledger
from grainline.storage.manifest import RACY_MARGIN_NS, EntryStats, ManifestEntry, SourceManifest, docs_hash

from .hashed_ids import HashedIds
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
        # Every entry, and the stat of those found true at load (the only ones that let
        # a file be skipped), compact: one row per file of the source.
        self.entries = EntryStats()
        self.pending: list[FileRead] = []
        # What the run met, as hashes (a full sync asks them at its end): files skipped
        # unread, and every file seen, skipped or read.
        self.unchanged_files = HashedIds()
        self.files_seen = HashedIds()
        # Files with an entry that were read and have not had it written again: at the
        # end their old entry is dropped (it no longer says what the table holds). Only
        # files with an entry are held: a first ingestion holds none.
        self.read_unwritten: set[str] = set()
        # How the entries were found true at load: "vouched" (the last run left the
        # table and the manifest as they are now, and vouched for every entry), "checked"
        # (against every document's state), or "" (not all of them were true).
        self.trust = ""
        # What the last run's ledger row said of the manifest, when this run trusts it.
        self.vouched_by: dict[str, Any] = {}
        self.failed = False
        self._last_flush = time.monotonic()

    def load(self, ctx: Any) -> None:
        """Read the manifest of the run's table once and keep the entries the table
        agrees with. A manifest that cannot be read skips nothing (a warning).

        When the table and the manifest are at the versions the last completed run left
        them at, and that run vouched for every entry (:meth:`vouch`) under these chunker
        keys and this reader signature, every entry of this signature is true without
        looking at a document; otherwise each is checked against the table's document
        states (:func:`trusted_entries`, which reads every document's state)."""
        self.keys = [p.key for p in ctx.plans]
        self.sig = reader_signature(ctx.settings)
        try:
            self.store = SourceManifest(ctx.settings.db, ctx.store.table_name)
            vouched_at = self._vouched_version(ctx)
            if vouched_at is not None:
                # Every entry of this signature is true: their stats are all it needs.
                stats = self.store.stats(self.sig)
                if self.store.loaded_version == vouched_at:
                    self.entries, self.trust = stats, "vouched"
                    return
            entries = self.store.load()
            self.trust_entries(entries, trusted_entries(entries, ctx.states, self.keys, self.sig))
            mine = sum(1 for e in entries.values() if e.reader_sig == self.sig)
            self.trust = "checked" if self.entries.trusted == mine else ""
        except Exception as exc:  # noqa: BLE001 - an optimisation: without it every file is read
            self.failed = True
            log.warning("could not read the source manifest of %s, every file is read: %s: %s",
                        ctx.store.table_name, type(exc).__name__, exc)

    def trust_entries(self, entries: Mapping[str, ManifestEntry], trusted: Mapping[str, ManifestEntry] | None = None) -> None:
        """Know these entries, and let the files of those in ``trusted`` (default: all)
        be skipped when their stat matches."""
        self.entries = EntryStats.of(entries.values(), entries if trusted is None else trusted)

    def _vouched_version(self, ctx: Any) -> int | None:
        """The manifest version at which the run that last completed on the table, with
        the table at its current version, vouched for every entry under (at least) this
        run's chunker keys and this reader signature; None when no run did."""
        version = ctx.store.version()
        if version is None:
            return None
        ledger = ctx.ledger if ctx.ledger is not None else Ledger(ctx.settings.db)
        last = ledger.last_run_ending_at(ctx.store.table_name, version)
        v = (last or {}).get("parameters", {}).get("source_manifest") or {}
        ok = v.get("sig") == self.sig and set(self.keys) <= set(v.get("keys") or ())
        if ok:
            self.vouched_by = v
        return v.get("manifest_version") if ok else None

    def no_legacy_ids(self, root: str) -> bool:
        """Whether the table, as the run found it, holds no ids an older grainline made
        relative to ``root``: the last run vouched for it (it found none there, and
        wrote none) and the table is still at the version it left. Saves the run a
        filtered scan of the whole table."""
        return self.trust == "vouched" and self.vouched_by.get("no_legacy_ids_under") == root

    def vouch(self) -> dict[str, Any] | None:
        """What the run's ledger row says of the manifest when the run completes: that
        every entry of this signature is true of the table under these chunker keys at
        the version the run leaves it (and the manifest at ``manifest_version``). Only
        when it is so: every entry was true at load, every entry written was checked
        against the commits, every file read without a new entry lost its old one, and
        nothing about the manifest failed. Else None, and the next run checks."""
        if not (self.writable and self.store is not None and self.trust and not self.failed):
            return None
        try:
            version = self.store.version()
        except Exception:  # noqa: BLE001 - not vouched: the next run checks every entry
            return None
        if version is None:
            return None
        return {"sig": self.sig, "keys": sorted(self.keys), "manifest_version": version, "trust": self.trust}

    def unchanged(self, fid: str, stat: FileStat) -> int | None:
        """The reader's predicate: the number of documents of a file to count as
        unchanged without reading it, or None to read it."""
        e = None if self.rehash else self.entries.get(fid)
        if e is None:
            return None
        size, mtime_ns, ino, stat_ns, n_docs, etag = e
        if stat.etag:
            # An object: its ETag (of the bytes read last time) decides, never a time.
            return n_docs if stat.size == size and stat.etag == etag else None
        if stat.size != size or stat.mtime_ns != mtime_ns or stat.ino != ino:
            return None
        if mtime_ns >= stat_ns - RACY_MARGIN_NS:
            return None  # racy: modified within a clock tick of the stat that recorded it
        return n_docs

    def note(self, item: Unchanged | FileRead) -> None:
        """A file skipped or read (triage's markers)."""
        self.files_seen.add(item.file_id)
        if isinstance(item, Unchanged):
            self.unchanged_files.add(item.file_id)
        else:
            if self.entries.knows(item.file_id):
                self.read_unwritten.add(item.file_id)
            if item.complete and item.stat is not None and self.collects:
                self.pending.append(item)

    @property
    def collects(self) -> bool:
        """Whether the run writes entries (and so checks each read file's documents
        against their states before its entry is written)."""
        return self.writable and self.store is not None

    def covers(self, doc_id: str) -> bool:
        """Whether a stored document belongs to a file skipped unread this run."""
        return bool(self.covers_many([doc_id])[0])

    def covers_many(self, doc_ids: list[str]) -> Any:
        """For each stored document, whether it belongs to a file skipped unread this
        run (the document is the file's, or a part or record of it: ``fid#...``)."""
        import numpy as np

        out = np.zeros(len(doc_ids), dtype=bool)
        if not self.unchanged_files:
            return out
        keys: list[str] = []
        owner: list[int] = []
        for i, d in enumerate(doc_ids):
            keys.append(d)
            owner.append(i)
            if "#" in d:
                for j, ch in enumerate(d):
                    if ch == "#":
                        keys.append(d[:j])
                        owner.append(i)
        hit = self.unchanged_files.contains_many(keys)
        out[np.asarray(owner, dtype=np.int64)[hit]] = True
        return out

    def flush(self, ctx: Any, force: bool = False) -> None:
        """Write the entries of the files whose documents are all committed now, when
        due (``force``: now). A file whose documents are still in flight waits; one
        that never gets them all committed (a chunking failure) never gets an entry."""
        if not (self.writable and self.pending and self.store is not None):
            return
        if not force and len(self.pending) < FLUSH_EVERY_FILES and time.monotonic() - self._last_flush < FLUSH_EVERY_S:
            return
        done: list[FileRead] = []
        waiting: list[FileRead] = []
        for m in self.pending:
            (done if _committed(m, ctx.states, self.keys) else waiting).append(m)
        self.pending = waiting if not force else []
        self._last_flush = time.monotonic()
        ready = [_entry(m, self.sig) for m in done]
        self._guarded("write", lambda: self.store.write(ready, ctx.run_id))
        for e in ready:
            self.read_unwritten.discard(e.file_id)
        # No one asks for these documents' states again in this run: a run that reads a
        # million documents holds the states of those in flight, not of all it wrote.
        ctx.states.evict(d for m in done for d, _ in m.docs)

    def close(self, ctx: Any, gone_scope: Callable[[str], bool] | None = None) -> None:
        """At the run's end: write what is committed; with ``gone_scope`` (a full sync
        that saw the whole source), drop the entries of files in scope it did not see;
        compact the manifest when due. Never raises: a warning says what failed."""
        if not self.writable or self.store is None:
            return
        self.flush(ctx, force=True)
        # A file read again without its entry written (a document failed, or it moved
        # while read): the old entry no longer says what the table holds of it.
        stale = sorted(self.read_unwritten)
        if gone_scope is not None and len(self.entries):
            # The entries' ids are read again, a batch at a time, rather than held all run.
            def gone() -> None:
                for ids in self.store.file_ids():
                    seen = self.files_seen.contains_many(ids)
                    stale.extend(fid for fid, s in zip(ids, seen) if not s and gone_scope(fid))
            self._guarded("read", gone)
        if stale:
            self._guarded("delete from", lambda: self.store.delete(stale))
        self._guarded("compact", self.store.compact_if_due)

    def let_go(self) -> None:
        """Drop the run's sets of file ids and the entries' stats once nothing asks for
        them (after :meth:`close` and the full sync's deletions); :meth:`vouch` needs
        none of them."""
        self.entries, self.pending, self.read_unwritten = EntryStats(), [], set()
        self.unchanged_files, self.files_seen = HashedIds(), HashedIds()

    def _guarded(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the table is whole; the next run reads those files again
            self.failed = True
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
