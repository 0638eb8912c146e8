"""Object-store sources: ``s3://bucket/prefix`` read like a folder.

The prefix is listed page by page (never held whole); each object with a reader's
suffix is a file whose id is its URI (``s3://bucket/prefix/notes/a.txt``, as a local
file's id is its real path), read by the same readers as a local file of that suffix,
from a temporary copy that is deleted once read. With the source manifest's
``unchanged`` predicate, an object whose listed ETag (and size) equal those of the
bytes read last time is not downloaded at all: ETags decide, never times, so a clock
skewed between the store and this machine changes nothing.

Credentials and the endpoint come from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
``AWS_REGION``, ...), which obstore reads; a URI carrying them is refused. Access goes
through obstore (the ``s3`` extra, as for object-store databases)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

from grainline.documents import Document, Failure, FileRead, FileStat, Unchanged
from grainline.readers.ids import _uri, file_doc_id
from grainline.readers.registry import READERS, streams, unsupported_reason
from grainline.readers.settings import ReaderSettings
from grainline.redact import check_uri, redact_uri

SCHEMES = ("s3://",)
INSTALL_HINT = 'pip install "grainline[s3]"  (obstore, for object-store sources and databases)'
# Objects per listing request (S3 returns at most 1,000): one page at a time is held.
LIST_PAGE = 1000
# A store that does not answer is one clear error within seconds, not ten retries
# over three minutes (obstore's defaults); a download may take its time.
_RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}
# A download is a series of ranged GETs of this size, each pinned to the first one's
# ETag: every request stays far inside obstore's per-request timeout (30 s by default,
# which a whole big PDF on a slow link would exceed), and the bytes are one version.
RANGE_BYTES = 8 * 1024 * 1024
CHANGED_WHILE_DOWNLOADED = "changed while being downloaded (its ETag moved between two ranges); read again next run"


class ObjectSourceError(ValueError):
    """An object-store source that cannot be used: a malformed or credential-carrying
    URI, obstore missing, the store unreachable, the credentials refused, the bucket
    missing. One line, the URI redacted."""


def is_object_uri(source: object) -> bool:
    """Whether ``source`` names an object-store prefix (``s3://...``) rather than a path."""
    return isinstance(source, str) and source.lower().startswith(SCHEMES)


@dataclasses.dataclass(frozen=True)
class ObjectPrefix:
    """Where an object-store source points: its bucket and prefix (``docs/`` or empty)."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def root(self) -> str:
        """The source's root: the prefix as a URI, without a trailing slash."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def object_id(self, key: str) -> str:
        """An object's file id: its URI."""
        return f"{self.scheme}://{self.bucket}/{key}"


def parse_object_uri(uri: str) -> ObjectPrefix:
    """``s3://bucket/some/prefix/`` -> its bucket and prefix (``some/prefix/``). A URI
    carrying credentials, a query or no bucket is refused (:class:`ObjectSourceError`)."""
    try:
        check_uri(uri, what="source")
    except ValueError as exc:
        raise ObjectSourceError(str(exc)) from None
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectSourceError(f"source {redact_uri(uri)!r}: no bucket (expected {scheme}://BUCKET/PREFIX)")
    if "?" in uri:
        raise ObjectSourceError(f"source {redact_uri(uri)!r}: an object-store source takes no query string; "
                                "its options come from the environment (AWS_ENDPOINT_URL, AWS_REGION, ...)")
    key = key.strip("/")
    return ObjectPrefix(scheme.lower(), bucket, key + "/" if key else "")


def _store(src: ObjectPrefix) -> Any:
    """An obstore store of the bucket, configured from the environment only."""
    try:
        from obstore.store import from_url
    except ImportError as exc:
        raise ObjectSourceError(f"source {src.root}: reading an object store needs obstore: {INSTALL_HINT}") from exc
    try:
        return from_url(f"{src.scheme}://{src.bucket}", retry_config=_RETRY)
    except Exception as exc:  # noqa: BLE001 - a bad AWS_* variable: one line
        raise ObjectSourceError(f"source {src.root}: cannot configure the object store: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """An obstore error as one short line: its kind, and what the store or the network
    said (obstore's messages nest the cause over several lines)."""
    text = " ".join(str(exc).split())
    low = text.lower()
    for needle, what in (("invalidaccesskeyid", "the access key is not known to the store (AWS_ACCESS_KEY_ID)"),
                         ("signaturedoesnotmatch", "the secret key does not match (AWS_SECRET_ACCESS_KEY)"),
                         ("accessdenied", "access denied (the credentials may not list or read this bucket)"),
                         ("nosuchbucket", "no such bucket"),
                         ("connection refused", "connection refused (is AWS_ENDPOINT_URL right, is the store up?)"),
                         ("dns error", "the endpoint's host name does not resolve (AWS_ENDPOINT_URL)"),
                         ("timed out", "the store did not answer in time"),
                         ("credential", "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")):
        if needle in low:
            return f"{what}: {type(exc).__name__}"
    return f"{type(exc).__name__}: {redact_uri(text)[:300]}"


def check_object_source(uri: str) -> str:
    """Check an object-store source before a run starts: the URI (no credentials, a
    bucket), obstore installed, and one listing request answered (the endpoint
    reachable, the credentials accepted, the bucket there). Returns the URI; raises
    :class:`ObjectSourceError` with one line."""
    src = parse_object_uri(uri)
    _first_page(src, _store(src))
    return uri


def _first_page(src: ObjectPrefix, store: Any) -> tuple[list[Any], Iterator[Any]]:
    import obstore

    pages = iter(obstore.list(store, src.prefix or None, chunk_size=LIST_PAGE))
    try:
        first = list(next(pages, []))
    except Exception as exc:  # noqa: BLE001 - every listing failure is the source's
        raise ObjectSourceError(f"source {src.root}: cannot list the objects: {_reason(exc)}") from None
    return first, pages


UnchangedPredicate = Callable[[str, FileStat], "int | None"]
SourceItem = Document | Failure | Unchanged | FileRead
# ``readers.source._read_file``: one local file under a root -> Documents and Failures
# (passed in: the source module dispatches here, so this one does not import it).
ReadFn = Callable[[Path, Path, ReaderSettings], Iterator["Document | Failure"]]


def open_object_source(uri: str, read: ReadFn, settings: ReaderSettings | None = None,
                       unchanged: UnchangedPredicate | None = None) -> tuple[str, Iterator[SourceItem]]:
    """The source's root URI and its documents, lazily, as ``readers.open_source`` gives
    them for a folder: the first listing page is asked now (an unreachable store or
    refused credentials raise :class:`ObjectSourceError` here), the rest as the
    iterator is consumed. With ``unchanged``, an object it vouches for by its listed
    ETag is not downloaded (an :class:`Unchanged` marker stands for it) and an object
    read is followed by a :class:`FileRead` carrying the ETag of the bytes read.
    ``read`` reads the temporary copy (``readers.source._read_file``)."""
    settings = settings or ReaderSettings()
    src = parse_object_uri(uri)
    store = _store(src)
    first, rest = _first_page(src, store)
    return src.root, _iter_objects(src, store, chain([first], rest), read, settings, unchanged)


def object_scope(uri: str) -> Callable[[str], bool]:
    """Which stored doc ids the source covers, for ``--sync full``: every object under
    the prefix, its parts and records."""
    base = parse_object_uri(uri).root + "/"
    return lambda d: d.startswith(base)


def _iter_objects(src: ObjectPrefix, store: Any, pages: Iterator[Any], read: ReadFn, settings: ReaderSettings,
                  unchanged: UnchangedPredicate | None) -> Iterator[SourceItem]:
    seen: dict[str, str] = {}
    tmp = tempfile.mkdtemp(prefix="grainline-objects-")
    try:
        while True:
            try:
                page = next(pages, None)
            except Exception as exc:  # noqa: BLE001 - the listing broke off: the run fails, its commits kept
                raise ObjectSourceError(f"source {src.root}: listing the objects failed: {_reason(exc)}") from None
            if page is None:
                return
            for meta in page:
                yield from _one_object(src, store, meta, read, settings, unchanged, seen, Path(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _one_object(src: ObjectPrefix, store: Any, meta: Any, read: ReadFn, settings: ReaderSettings,
                unchanged: UnchangedPredicate | None, seen: dict[str, str], tmp: Path) -> Iterator[SourceItem]:
    key: str = meta["path"]
    if not key.startswith(src.prefix) or key.endswith("/"):
        return  # a folder marker (an empty object named 'dir/'), or outside the prefix
    rel = key[len(src.prefix):]
    parts = rel.split("/")
    if not settings.include_hidden and any(p.startswith(".") for p in parts):
        return  # hidden, as in a folder
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    if suffix not in READERS:
        # An empty object without a reader's suffix is a console's folder marker
        # ('dir/', listed as 'dir'), not a file someone meant to ingest.
        if int(meta.get("size") or 0) > 0:
            yield Failure(rel, unsupported_reason(parts[-1]), "skip")
        return
    fid = src.object_id(key)
    listed = _stat(meta)
    if unchanged is not None and listed.etag:
        n_docs = unchanged(fid, listed)
        if n_docs is not None:
            yield Unchanged(fid, rel, n_docs)
            return
    docs: list[tuple[str, str]] = []
    complete = True
    got: FileStat | None = None
    # Only ids holding a '#' can come from two objects (readers/source.py, ``_checked``):
    # those are kept for the whole listing, the others for this object alone.
    mine: dict[str, str] = {}
    for item in _download_and_read(src, store, key, rel, fid, parts, suffix, listed, read, settings, tmp):
        if isinstance(item, FileStat):
            got = item
            continue
        if isinstance(item, Document):
            d = item.doc_id
            first = seen.get(d) or mine.get(d)
            if first is not None:
                item = Failure(rel, f"duplicate doc_id, first seen in {first}")
            else:
                (seen if "#" in d else mine)[d] = rel
                docs.append((d, item.content_hash))
        if isinstance(item, Failure):
            complete = False
        yield item
    if unchanged is not None:
        yield FileRead(fid, rel, got, tuple(docs), complete and got is not None and bool(got.etag))


def _stat(meta: Any) -> FileStat:
    """What the listing (or a GET) says of an object, as the manifest compares it."""
    lm = meta.get("last_modified")
    mtime_ns = int(lm.timestamp() * 1e9) if lm is not None else 0
    return FileStat(int(meta.get("size") or 0), mtime_ns, 0, 0, time.time_ns(), meta.get("e_tag") or "")


class _ChangedWhileDownloaded(Exception):
    """A range came from another version of the object than the first one (a store
    that ignores If-Match says so by the ETag of its answer)."""


def _download(store: Any, key: str, size: int, path: Path) -> Any:
    """Copy one object to ``path`` in ranges of :data:`RANGE_BYTES` (one plain GET when
    the listing says it fits in one, or when the store gives no ETag to pin ranges to);
    returns the object's metadata from the first response. A range answered by another
    version raises obstore's PreconditionError (or :class:`_ChangedWhileDownloaded`
    where the store ignored If-Match)."""
    import obstore

    with open(path, "wb") as f:
        if size > RANGE_BYTES:
            res = obstore.get(store, key, options={"range": (0, RANGE_BYTES)})
            meta = res.meta
            etag = meta.get("e_tag")
            if etag:
                f.write(res.bytes())
                pos, total = RANGE_BYTES, int(meta["size"])
                while pos < total:
                    end = min(pos + RANGE_BYTES, total)
                    part = obstore.get(store, key, options={"range": (pos, end), "if_match": etag})
                    if part.meta.get("e_tag") != etag:
                        raise _ChangedWhileDownloaded(key)
                    f.write(part.bytes())
                    pos = end
                return meta
            # No ETag: ranges could not be known to be of one version; one GET is.
        res = obstore.get(store, key)
        for chunk in res.stream(min_chunk_size=RANGE_BYTES):
            f.write(chunk)
        return res.meta


def _download_and_read(src: ObjectPrefix, store: Any, key: str, rel: str, fid: str, parts: list[str], suffix: str,
                       listed: FileStat, read: ReadFn, settings: ReaderSettings,
                       tmp: Path) -> Iterator[Document | Failure | FileStat]:
    """Download one object to a temporary file named by its relative key (readers'
    messages name it so) and read it there; yields the stat of the bytes read (their
    ETag, from the first GET), then the documents with the object's ids. Every range
    is of the version the first GET answered with, so an object replaced after the
    listing is read whole, old or new, and the ETag recorded is the one of what was
    read; one replaced between two ranges fails (read again next run)."""
    if any(p in ("", ".", "..") for p in parts):
        yield Failure(rel, "object key has an empty, '.' or '..' segment: not read", doc_id=fid)
        return
    if listed.size > settings.max_file_bytes and not streams(suffix):
        yield Failure(rel, f"file too large ({listed.size} bytes > {settings.max_file_bytes})", doc_id=fid)
        return
    path = tmp / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            got_meta = _download(store, key, listed.size, path)
        except FileNotFoundError:
            yield Failure(rel, "object not found (deleted after listing?)", doc_id=fid)
            return
        except OSError as exc:  # the local copy: disk full, a name too long
            yield Failure(rel, f"could not copy the object to a temporary file: {exc.strerror or exc}", doc_id=fid)
            return
        except Exception as exc:  # noqa: BLE001 - one object's failure; the run goes on
            if isinstance(exc, _ChangedWhileDownloaded) or type(exc).__name__ == "PreconditionError":
                yield Failure(rel, CHANGED_WHILE_DOWNLOADED, doc_id=fid)
            elif type(exc).__name__ == "NotFoundError":
                yield Failure(rel, "object not found (deleted after listing?)", doc_id=fid)
            else:
                yield Failure(rel, f"download failed: {_reason(exc)}", doc_id=fid)
            return
        yield _stat(got_meta)
        local = _uri(path)
        for item in read(path, tmp, settings):
            if isinstance(item, Document):
                source = src.object_id(key) + item.source[len(local):] if item.source.startswith(local) else item.source
                item = dataclasses.replace(item, doc_id=file_doc_id(fid, rel, item.doc_id), source=source)
            elif item.where == rel and not item.doc_id:
                item = dataclasses.replace(item, doc_id=fid)
            yield item
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
