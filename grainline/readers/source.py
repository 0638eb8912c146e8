"""Reading what a source names: ``read_file`` for one file (every problem a Failure,
never an exception), ``open_source``/``iter_documents`` for a whole source, lazily,
one doc id read once; with an ``unchanged`` predicate (the source manifest's), files
whose stat says they are unchanged are not read at all."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from grainline.documents import Document, Failure, FileRead, FileStat, Unchanged
from grainline.readers.discovery import _inside, _scan, _Skip
from grainline.readers.errors import OUTSIDE_ROOT, _os_reason, _ReadError
from grainline.readers.ids import _rel, _with_global_id, file_id
from grainline.readers.object_store import is_object_uri, open_object_source
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
    return open_source(source, settings)[1]  # type: ignore[return-value]


# ``unchanged(file_id, stat)``: how many documents a file whose stat is ``stat`` gave
# when it was last read, all stored unchanged; None to read it.
UnchangedPredicate = Callable[[str, FileStat], "int | None"]
SourceItem = Document | Failure | Unchanged | FileRead


def open_source(
    source: str | os.PathLike[str], settings: ReaderSettings | None = None, unchanged: UnchangedPredicate | None = None,
) -> tuple[Path | str, Iterator[SourceItem]]:
    """Discover once: the source's root and its documents as a lazy iterator, so a
    caller that needs the root does not walk the tree a second time to read it.

    With ``unchanged`` (the ingestion passes the source manifest's), each file is
    stat'ed once before reading and the predicate asked: a file it vouches for is not
    read, an :class:`Unchanged` marker stands for its documents; a file that is read is
    followed by a :class:`FileRead` marker carrying that stat (taken before reading)
    and its documents' hashes. A file whose size, modification time or inode moved
    while it was read is read once more; moved again, it fails as "changed while being
    read" and its documents are not yielded (one that streams its documents, a big
    text file in parts or a big record file, fails after them). Without ``unchanged``
    the iterator yields Documents and Failures only, as before.

    An object-store prefix (``s3://bucket/prefix``) is read the same way, its root the
    prefix's URI (a string), its objects decided by their ETags
    (``readers/object_store.py``)."""
    settings = settings or ReaderSettings()
    if is_object_uri(source):
        return open_object_source(str(source), _read_file, settings, unchanged)
    root, entries = _scan(source, settings)
    return root, _iter_entries(root, entries, settings, unchanged)


def _iter_entries(root: Path, entries: list[str | _Skip], settings: ReaderSettings,
                  unchanged: UnchangedPredicate | None = None) -> Iterator[SourceItem]:
    # Only a followed symlink makes two listed paths one file (one real path, one file
    # id): without following, each file is listed once and its id is not held (a run
    # over a million files held a million of them). Doc ids: see ``_checked``.
    seen: dict[str, str] = {}
    files: dict[str, str] | None = {} if settings.follow_symlinks else None
    real_dirs: dict[str, str] = {}
    prefix = os.path.join(os.fspath(root), "")
    n = len(prefix)
    posix = os.sep == "/"
    # Most files of a scheduled run are unchanged, and each is only what this loop does
    # (100,000 of them: 2.6 us a file in ``lstat`` alone on a 2-core AMD EPYC), so it
    # is kept to names bound once, one ``lstat`` and one question to the manifest.
    lstat, time_ns, is_link, sep, str_ = os.lstat, time.time_ns, stat.S_ISLNK, os.sep, str
    # Taken from the end of the reversed listing: each path is let go once handled, so
    # the listing of a million files shrinks as the run goes rather than staying whole.
    entries.reverse()
    pop = entries.pop
    while entries:
        path = pop()
        if path.__class__ is not str_:
            yield Failure(_rel(path.path, root), path.reason, path.stage)  # type: ignore[union-attr]
            continue
        # Discovery built every path as the root's, then the relative parts: cut, not computed.
        if path.startswith(prefix):
            rel = path[n:] if posix else path[n:].replace(os.sep, "/")
        else:
            rel = _rel(Path(path), root)
        # The file's id and stat from one ``lstat``: a file that is no symlink is its
        # folder's real path (resolved once per folder) plus its name, and its lstat is
        # its stat. Resolving every path component by component cost an unchanged
        # re-run of 100,000 files 3 s.
        taken = time_ns()
        try:
            st = lstat(path)
        except OSError:
            fid, before = file_id(path), None  # read_file says why the file cannot be read
        else:
            if is_link(st.st_mode):
                fid, before = file_id(path), _stat(Path(path))
            else:
                parent, _, name = path.rpartition(sep)
                folder = real_dirs.get(parent)
                if folder is None:
                    folder = real_dirs[parent] = os.path.join(file_id(parent or os.curdir), "")
                fid = folder + name
                before = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, taken)
        if files is not None:
            if fid in files:
                # A followed symlink to a file already read: one file, one document.
                yield Failure(rel, f"same file as {files[fid]} (read once)", "skip")
                continue
            files[fid] = rel
        if unchanged is None:
            yield from _checked(read_file(Path(path), root, settings), rel, seen, {})
            continue
        if before is None:
            yield from _read_watched(Path(path), root, rel, fid, settings, seen, unchanged)
            continue
        n_docs = unchanged(fid, before)
        if n_docs is not None:
            yield Unchanged(fid, rel, n_docs)
            continue
        yield from _read_watched(Path(path), root, rel, fid, settings, seen, None, before)


def _checked(items: Iterator[Document | Failure], rel: str, seen: dict[str, str],
             mine: dict[str, str]) -> Iterator[Document | Failure]:
    """The items of one file, a doc id seen before (in another file: ``seen``; in this
    one: ``mine``, which collects this file's) turned into a Failure.

    A file's documents have its id, or its id, a '#' and more; files have different
    ids. So two files' documents share an id only if it holds a '#' (one file's id
    extends the other's with a '#'): only such ids are kept in ``seen``, and a run over
    a million plain files keeps none."""
    for item in items:
        if isinstance(item, Document):
            where = _where(item, rel)
            first = seen.get(item.doc_id) or mine.get(item.doc_id)
            if first is not None:
                yield Failure(where, f"duplicate doc_id, first seen in {first}")
                continue
            mine[item.doc_id] = where
        yield item
    seen.update((d, w) for d, w in mine.items() if "#" in d)


def _stat(path: Path) -> FileStat | None:
    try:
        return FileStat.of(path)
    except OSError:
        return None  # read_file says why the file cannot be read


CHANGED_WHILE_READ = "changed while being read (size, modification time or inode moved); read again next run"


def _read_watched(entry: Path, root: Path, rel: str, fid: str, settings: ReaderSettings, seen: dict[str, str],
                  unchanged: UnchangedPredicate | None, before: FileStat | None = None) -> Iterator[SourceItem]:
    """One file with the source manifest: skipped when ``unchanged`` vouches for its
    stat, else read between two stats. Its documents are held back while they stay
    under ``part_bytes`` of text (every small file), so one that moved is read again
    rather than half stored; a file that streams more than that is yielded as read.
    ``before`` is the file's stat when the caller took it already; ``unchanged`` is
    None when the caller asked it already."""
    if before is None:
        before = _stat(entry)
    if before is not None and unchanged is not None:
        n_docs = unchanged(fid, before)
        if n_docs is not None:
            yield Unchanged(fid, rel, n_docs)
            return
    for attempt in (1, 2):
        held: list[Document | Failure] = []
        held_chars = 0
        streaming = False
        docs: list[tuple[str, str]] = []
        complete = True
        mine: dict[str, str] = {}
        for item in _checked(read_file(entry, root, settings), rel, seen, mine):
            if isinstance(item, Failure):
                complete = False
            else:
                docs.append((item.doc_id, item.content_hash))
                held_chars += len(item.text)
            if streaming:
                yield item
                continue
            held.append(item)
            if held_chars > settings.part_bytes:
                streaming = True
                yield from held
                held = []
        after = _stat(entry)
        if before is None or after is None or before.same_file(after):
            yield from held
            yield FileRead(fid, rel, before, tuple(docs), complete and before is not None)
            return
        if not streaming:
            # Nothing of this reading was yielded: its ids are free for the next one.
            for d in mine:
                seen.pop(d, None)
        if streaming or attempt == 2:
            yield Failure(rel, CHANGED_WHILE_READ, doc_id=fid)
            yield FileRead(fid, rel, before, (), False)
            return
        before = after
