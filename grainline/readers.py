"""Turn files on disk into Documents.

Every reader yields ``Document`` or ``Failure`` values and never raises for a bad
file: one unreadable PDF must not stop an ingestion of ten thousand files, and the
failure has to be reported with a location so it can be fixed.

Entry points:

* ``discover(source)`` finds the files a source (folder, single file or glob) names.
* ``iter_documents(source, settings)`` reads them lazily, file by file.
* ``read_file(path, root, settings)`` reads one file.
* ``READERS`` / ``register_reader`` / ``get_reader`` map a suffix to its reader.
"""

from __future__ import annotations

import codecs
import dataclasses
import errno
import fnmatch
import io
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pydantic

from grainline.documents import Document, Failure

__all__ = [
    "READERS",
    "ReaderSettings",
    "discover",
    "get_reader",
    "iter_documents",
    "file_doc_id",
    "file_id",
    "read_file",
    "register_reader",
    "sync_scope",
]


class ReaderSettings(pydantic.BaseModel):
    """How files are read. Every default lives here, in one place."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    id_field: str = "id"
    """Field holding a record's id in .jsonl/.parquet files."""
    text_field: str = "text"
    """Field holding a record's text in .jsonl/.parquet files."""
    title_field: str = "title"
    """Field holding a record's title in .jsonl/.parquet files."""
    metadata_fields: list[str] | None = None
    """Record fields kept as metadata. None keeps every field other than id/text/title;
    a nested ``metadata`` mapping is merged in (top-level fields win on a clash)."""
    follow_symlinks: bool = False
    """Follow symlinks that stay inside the ingested root while discovering files.
    A symlink that resolves outside the root is never followed, whatever this says."""
    include_hidden: bool = False
    """Descend into / read dot-files and dot-directories (.git, .venv, ...) when
    walking a folder. Glob patterns follow shell rules instead: a segment starting
    with '.' matches hidden names."""
    max_file_bytes: int = pydantic.Field(default=200 * 1024 * 1024, gt=0)
    """Whole-file readers (txt, md, html, pdf) refuse larger files; streaming readers
    (jsonl, parquet) apply it per record line instead."""
    max_html_depth: int = pydantic.Field(default=10_000, gt=0)
    """HTML nested deeper than this fails instead of being parsed: the parser's time
    grows with the square of the depth (40,000 nested divs take seconds, 200,000 minutes)."""
    html_extractor: str = pydantic.Field(default="main", pattern="^(main|all)$")
    """``main``: the page's main content, by trafilatura (navigation, cookie banners,
    footers, sidebars, comments and help dialogs dropped), falling back to ``all`` when
    it finds none; ``all``: every visible text block (the selectolax walk)."""
    part_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024)
    """A .txt/.md file whose text is larger than this (UTF-8 bytes) is read streaming
    and becomes several Documents (``big.txt#part-0003``) of at most this many bytes,
    cut at paragraph breaks, so memory follows the part size, not the file size. A
    .jsonl/.parquet record whose text is larger is cut the same way (``id#part-0003``)."""
    max_front_matter_bytes: int = pydantic.Field(default=64 * 1024, gt=0)
    """Markdown front matter larger than this (UTF-8 bytes) fails the file unparsed."""
    max_yaml_nodes: int = pydantic.Field(default=10_000, gt=0)
    """Front matter holding more values than this once its YAML aliases are expanded
    fails the file (a 300-byte alias bomb expands to hundreds of millions), as does
    an alias that refers to itself."""
    max_metadata_bytes: int = pydantic.Field(default=64 * 1024, gt=0)
    """A document whose metadata (front matter, record fields) is larger than this as
    JSON fails: it is copied onto every one of its chunk rows."""
    max_chunks_per_doc: int = pydantic.Field(default=50_000, gt=0)
    """A document (or part) cut into more chunks than this by one strategy fails at
    chunking, the rest of its batch is stored."""


# ----------------------------------------------------------------------------
# Registry

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


def get_reader(suffix: str) -> ReaderFn:
    """The reader for ``suffix`` (case-insensitive, dot optional).

    Raises ValueError listing the known suffixes when there is none.
    """
    key = _norm_suffix(suffix)
    try:
        return READERS[key]
    except KeyError:
        known = ", ".join(sorted(READERS))
        raise ValueError(f"no reader for suffix {suffix!r}; known suffixes: {known}") from None


# ----------------------------------------------------------------------------
# Discovery

_MAGIC = re.compile(r"[*?\[]")


class _Skip:
    """A path found during discovery that will not be read, and why (reported later)."""

    __slots__ = ("path", "reason", "stage")

    def __init__(self, path: Path, reason: str, stage: str = "read") -> None:
        self.path = path
        self.reason = reason
        # "read": a failure (a link that cannot be followed, a folder not listed);
        # "skip": a file no reader reads, counted and named apart from the failures.
        self.stage = stage


def discover(
    source: str | os.PathLike[str], settings: ReaderSettings | None = None
) -> tuple[Path, list[Path]]:
    """Find the readable files a source names.

    ``source`` is a folder (searched recursively), a single file, or a glob pattern
    such as ``"docs/**/*.md"``. Returns ``(root, files)``: ``root`` is the folder
    itself, the file's parent, or the glob's non-magic base; ``files`` are the paths
    with a known suffix, sorted by their path relative to ``root``.

    Symlinks that resolve outside ``root`` are left out (``iter_documents`` reports
    them as failures), and directory symlink loops are never followed.

    Raises FileNotFoundError when the source does not exist or matches nothing, and
    ValueError when a single named file has no reader.
    """
    root, entries = _scan(source, settings or ReaderSettings())
    return root, [e for e in entries if isinstance(e, Path)]


def _scan(source: str | os.PathLike[str], settings: ReaderSettings) -> tuple[Path, list[Path | _Skip]]:
    """Discovery proper: the files to read plus the skipped paths, in one sorted list."""
    path = Path(source)
    src = os.fspath(source)
    # An existing path is taken literally even if its name contains glob characters.
    if path.is_dir():
        root = path
        entries = list(_walk(root, settings, include_hidden=settings.include_hidden))
    elif path.exists() or path.is_symlink():
        root = path.parent
        get_reader(path.suffix)  # a named file with no reader is a usage error
        entries = list(_check_single(path, root))
    elif _MAGIC.search(src):
        root, entries = _glob(src, settings)
    else:
        raise FileNotFoundError(f"source does not exist: {src}")

    def key(e: Path | _Skip) -> tuple[str, ...]:
        p = e if isinstance(e, Path) else e.path
        return p.relative_to(root).parts

    entries.sort(key=key)
    return root, entries


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _check_single(path: Path, root: Path) -> Iterator[Path | _Skip]:
    if path.is_symlink() and not _inside(os.path.realpath(path), os.path.realpath(root)):
        yield _Skip(path, "symlink points outside the ingested root")
    else:
        yield path


def _walk(
    root: Path,
    settings: ReaderSettings,
    include_hidden: bool,
    want_dir: Callable[[tuple[str, ...]], bool] | None = None,
    want_file: Callable[[tuple[str, ...]], bool] | None = None,
) -> Iterator[Path | _Skip]:
    """Walk ``root`` without recursion (deep trees must not hit the recursion limit).

    ``want_dir``/``want_file`` receive paths relative to root as parts; they let a
    glob prune directories that cannot match.
    """
    root_real = os.path.realpath(root)
    # Real paths of directories already entered: a symlinked directory pointing at
    # an ancestor (or anywhere already walked) is not entered twice, so loops end.
    visited = {root_real}
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    # Symlinked folders wait until every real folder has been walked, so a target
    # reachable without symlinks keeps its real path (and doc_id) rather than the
    # alias that happened to be listed first.
    deferred: list[tuple[Path, tuple[str, ...]]] = []
    first = True
    while stack or deferred:
        if stack:
            folder, rel = stack.pop()
        else:
            folder, rel = deferred.pop()
            real = os.path.realpath(folder)
            if real in visited:
                continue
            visited.add(real)
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError as exc:
            if first:
                raise  # the source itself cannot be listed: not a per-file problem
            yield _Skip(folder, f"directory not listed: {_os_reason(exc)}")
            continue
        finally:
            first = False
        for entry in items:
            name = entry.name
            if name.startswith(".") and not include_hidden:
                continue
            parts = rel + (name,)
            p = folder / name
            is_link = False
            try:
                is_link = entry.is_symlink()
                # For a symlink, "dir" means what it points at. ELOOP (a file symlink
                # loop) counts as not-a-dir and is reported below as broken.
                is_dir = entry.is_dir(follow_symlinks=is_link)
            except OSError:
                if not is_link:
                    continue
                is_dir = False
            if is_dir:
                if want_dir is not None and not want_dir(parts):
                    continue
            else:
                if want_file is not None and not want_file(parts):
                    continue
                if Path(name).suffix.lower() not in READERS:
                    # Named in the run's summary and ledger: a user who dropped a
                    # report.docx in the folder learns it was not ingested.
                    yield _Skip(p, unsupported_reason(name), stage="skip")
                    continue
            if is_link:
                real = os.path.realpath(p)
                if not _inside(real, root_real):
                    # Reported even when following is off: the user should learn that
                    # content they may have expected was not ingested, and why.
                    yield _Skip(p, "symlink points outside the ingested root")
                    continue
                # Loops and dangling links are reported even when following is off:
                # the content the link was meant to bring in is missing either way.
                if not os.path.exists(real):
                    yield _Skip(p, _broken_link_reason(p))
                    continue
                if is_dir and _inside(os.path.realpath(folder), real):
                    yield _Skip(p, "symlink loop (points to a folder that contains it), not followed")
                    continue
                if not settings.follow_symlinks:
                    continue
                if is_dir:
                    deferred.append((p, parts))
                else:
                    yield p
                continue
            if is_dir:
                real = os.path.realpath(p)
                if real in visited:  # bind mounts can loop too
                    continue
                visited.add(real)
                stack.append((p, parts))
            else:
                try:
                    regular = entry.is_file(follow_symlinks=False)
                except OSError:
                    continue
                if regular:
                    yield p


def unsupported_reason(name: str) -> str:
    """Why a file is skipped: its suffix has no reader (and which suffixes do)."""
    suffix = Path(name).suffix.lower()
    what = f"{suffix!r} files" if suffix else "files without a suffix"
    return f"unsupported file type: no reader for {what} (readers: {', '.join(sorted(READERS))})"


def _broken_link_reason(path: Path) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (the link resolves to itself)"
    return "broken symlink (target missing)"


def _glob(pattern: str, settings: ReaderSettings) -> tuple[Path, list[Path | _Skip]]:
    """Expand a glob with our own walker: ``glob.glob`` follows symlink loops under
    ``**`` and would also escape the root through symlinks."""
    pat_path = Path(pattern)
    parts = pat_path.parts
    base_parts: list[str] = []
    for part in parts:
        if _MAGIC.search(part):
            break
        base_parts.append(part)
    segs = list(parts[len(base_parts):])
    if ".." in segs:
        # The walk never yields '..', so it could match nothing; say why instead.
        raise ValueError(f"'..' after a wildcard is not allowed in a glob (got {pattern!r}); put it before the first wildcard")
    root = Path(*base_parts) if base_parts else Path(".")
    if not root.is_dir():
        raise FileNotFoundError(f"glob base folder does not exist: {root} (from pattern {pattern!r})")
    hidden_ok = settings.include_hidden or any(s.startswith(".") for s in segs)
    matcher = _GlobMatcher(segs, settings.include_hidden)
    entries = list(
        _walk(root, settings, include_hidden=hidden_ok, want_dir=matcher.viable_dir, want_file=matcher.matches)
    )
    if not entries:
        raise FileNotFoundError(
            f"glob pattern matched no readable files: {pattern!r} (known suffixes: {', '.join(sorted(READERS))})"
        )
    return root, entries


def sync_scope(source: str | os.PathLike[str], settings: ReaderSettings | None = None) -> Callable[[str], bool]:
    """Which stored doc ids a source covers, for ``--sync full``: everything under a
    folder, a file and its parts or records, or the files under a glob's base folder
    that match the glob. A stored document in scope and not read again is gone."""
    settings = settings or ReaderSettings()
    path = Path(source)
    src = os.fspath(source)
    if path.is_dir():
        base = file_id(path).rstrip("/") + "/"
        return lambda d: d.startswith(base)
    if path.exists() or path.is_symlink() or not _MAGIC.search(src):
        fid = file_id(path)
        return lambda d: d == fid or d.startswith(fid + "#")
    parts = path.parts
    n = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    base = file_id(Path(*parts[:n]) if n else Path(".")).rstrip("/") + "/"
    matcher = _GlobMatcher(list(parts[n:]), settings.include_hidden)

    def in_glob(d: str) -> bool:
        if not d.startswith(base):
            return False
        rel = d[len(base):]
        # The file's part of the id: a part or record suffix follows a '#'.
        return matcher.matches(tuple(rel.split("/"))) or ("#" in rel and matcher.matches(tuple(rel.rsplit("#", 1)[0].split("/"))))

    return in_glob


class _GlobMatcher:
    """Shell-style matching of relative path parts against pattern segments.

    ``**`` spans zero or more path parts; other segments match exactly one part via
    fnmatch (case-sensitive). As in the shell, wildcards do not match a leading dot.
    """

    def __init__(self, segs: list[str], include_hidden: bool) -> None:
        self.segs = segs
        self.include_hidden = include_hidden

    def _closure(self, states: Iterable[int]) -> set[int]:
        out = set()
        for i in states:
            out.add(i)
            while i < len(self.segs) and self.segs[i] == "**":
                i += 1
                out.add(i)
        return out

    def _seg_ok(self, seg: str, part: str) -> bool:
        if part.startswith(".") and not seg.startswith(".") and not self.include_hidden:
            return False
        return fnmatch.fnmatchcase(part, seg)

    def _run(self, parts: tuple[str, ...]) -> set[int]:
        states = self._closure({0})
        for part in parts:
            nxt = set()
            for i in states:
                if i >= len(self.segs):
                    continue
                seg = self.segs[i]
                if seg == "**":
                    if self.include_hidden or not part.startswith("."):
                        nxt.add(i)
                elif self._seg_ok(seg, part):
                    nxt.add(i + 1)
            states = self._closure(nxt)
            if not states:
                break
        return states

    def matches(self, parts: tuple[str, ...]) -> bool:
        return len(self.segs) in self._run(parts)

    def viable_dir(self, parts: tuple[str, ...]) -> bool:
        # A directory is worth entering if some segment is still left to match.
        return any(i < len(self.segs) for i in self._run(parts))


# ----------------------------------------------------------------------------
# Reading: shared helpers


class _ReadError(Exception):
    """A reason a file cannot be read; turned into a Failure by read_file."""


_BOMS: list[tuple[bytes, str]] = [
    # UTF-32 first: its LE BOM starts with the UTF-16 LE BOM.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


# Formats that can be mostly ASCII and would otherwise be read as text under a text
# suffix (a PDF named .html was stored as its raw bytes).
_BINARY_MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", "PDF"), (b"PK\x03\x04", "ZIP (docx, xlsx, ...)"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"),
    (b"\xff\xd8\xff", "JPEG"), (b"\x1f\x8b", "gzip"), (b"\x7fELF", "ELF executable"),
]


def _decode(data: bytes) -> str:
    """Bytes -> str, honouring a BOM, else strict UTF-8. The BOM character is kept
    (decoded with an explicit-endian codec) so that ``_normalise`` removes exactly one
    leading BOM whatever the encoding was."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _ReadError(f"invalid {encoding.upper()} at byte {exc.start}") from None
    if b"\x00" in data[:8192]:
        raise _ReadError("binary content (NUL bytes), not text")
    kind = next((k for magic, k in _BINARY_MAGIC if data.startswith(magic)), None)
    if kind is not None:
        raise _ReadError(f"binary content: a {kind} file by its first bytes, not text (give it its real suffix)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _ReadError(f"invalid UTF-8 at byte {exc.start}") from None


def _normalise(text: str) -> str:
    """Unify line endings and drop one leading BOM; nothing else, so that character
    offsets computed by the chunkers stay faithful to what the reader produced."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _empty_reason(text: str) -> str | None:
    if not text:
        return "empty document"
    stripped = text.strip()
    if not stripped:
        return "whitespace-only document"
    # Zero-width and bidi control characters (Unicode category Cf) show nothing: a text
    # of only those and whitespace would be embedded as if it said something.
    if not any(not c.isspace() and unicodedata.category(c) != "Cf" for c in stripped):
        return "no visible text (only whitespace, zero-width or bidi control characters)"
    return None


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
    from grainline.documents import canonical_json

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


def _read_bytes(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise _ReadError(f"file too large ({size} bytes > {limit})")
        # The file may grow between fstat and read; never read more than the limit.
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _ReadError(f"file too large ({len(data)}+ bytes > {limit})")
    return data


def _read_text(path: Path, settings: ReaderSettings) -> str:
    return _normalise(_decode(_read_bytes(path, settings.max_file_bytes)))


# ----------------------------------------------------------------------------
# Big text files: streamed and cut into parts

_BLOCK_BYTES = 1 << 20


def _stream_text(path: Path, settings: ReaderSettings, block_bytes: int = _BLOCK_BYTES) -> Iterator[str]:
    """The decoded, line-end-normalised text of a file in blocks, never all of it at
    once. Same rules as ``_decode``/``_normalise``: a BOM picks the codec and is
    dropped, else strict UTF-8; NUL bytes near the start mean binary."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > settings.max_file_bytes:
            raise _ReadError(f"file too large ({size} bytes > {settings.max_file_bytes})")
        head = f.read(8192)
        encoding, bom = next(((enc, b) for b, enc in _BOMS if head.startswith(b)), ("utf-8", b""))
        if not bom and b"\x00" in head:
            raise _ReadError("binary content (NUL bytes), not text")
        f.seek(len(bom))
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        consumed = len(bom)
        carry = ""  # a trailing "\r" waits: the next block may start with "\n"
        while True:
            block = f.read(block_bytes)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise _ReadError(f"invalid {encoding.upper()} at byte {consumed - pending + exc.start}") from None
            consumed += len(block)
            if consumed > settings.max_file_bytes:  # grew since the size check
                raise _ReadError(f"file too large ({consumed}+ bytes > {settings.max_file_bytes})")
            text = carry + text
            carry = ""
            if block and text.endswith("\r"):
                text, carry = text[:-1], "\r"
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield text
            if not block:
                return


def _cut(text: str, limit: int) -> int:
    """Where to end a part of ``text`` holding at most ``limit`` UTF-8 bytes: after the
    last paragraph break that fits, else after the last line end, else at the last
    whole character that fits."""
    fit = len(text[:limit].encode("utf-8")[:limit].decode("utf-8", "ignore"))
    window = text[:fit]
    last = None
    for last in _PARAGRAPH_BREAK.finditer(window):
        pass
    if last is not None:
        return last.end()
    line_end = window.rfind("\n")
    return line_end + 1 if line_end >= 0 else fit


def _text_parts(path: Path, settings: ReaderSettings, block_bytes: int = _BLOCK_BYTES) -> Iterator[tuple[int, str, bool]]:
    """``(char offset in the file's text, part text, last)`` for consecutive parts of
    at most ``settings.part_bytes`` UTF-8 bytes each; the parts joined are the text
    ``_read_text`` would return. Holds at most one part and one block in memory."""
    limit = settings.part_bytes
    buf = ""
    buf_bytes = 0
    offset = 0
    for block in _stream_text(path, settings, block_bytes):
        buf += block
        buf_bytes += len(block.encode("utf-8"))
        # Cut only while more text follows the part, so the last part is known as such.
        while buf_bytes > limit:
            n = _cut(buf, limit)
            part, buf = buf[:n], buf[n:]
            buf_bytes -= len(part.encode("utf-8"))
            yield offset, part, False
            offset += n
    yield offset, buf, True


_Head = Callable[[str], "tuple[str, int, str, dict[str, Any]] | Failure"]


def _split_text_file(path: Path, root: Path, settings: ReaderSettings, head: _Head) -> Iterator[Document | Failure]:
    """A text file larger than ``part_bytes`` as Documents ``<rel>#part-NNNN`` (index
    from 0, four digits or more), each with ``metadata["file_part"]`` = its index and
    ``char_start``/``char_end`` in the file's text. ``head(first part)`` gives the body
    of the first part, where that body starts, the title and the metadata every part
    shares (front matter). Whitespace-only parts yield nothing; their index is still
    used, so the ids of the parts after them do not move. A file that turns out to
    hold a single part is an ordinary Document with the plain relative path as id."""
    rel = _rel(path, root)
    uri = _uri(path)
    # Decode it all once first (streaming, nothing kept): a bad byte deep in the file
    # fails the whole file rather than leaving its first parts stored.
    for _ in _stream_text(path, settings):
        pass
    title = ""
    shared: dict[str, Any] = {}
    stored = 0
    for index, (offset, text, last) in enumerate(_text_parts(path, settings)):
        if index == 0:
            got = head(text)
            if isinstance(got, Failure):
                yield got
                return
            text, skip, title, shared = got
            offset += skip
            if last:  # it fitted after all (e.g. UTF-16 on disk, half the size in UTF-8)
                reason = _empty_reason(text)
                yield Failure(rel, reason) if reason else Document(rel, text, uri, title, shared)
                return
        if not text.strip():
            continue
        stored += 1
        part = {"index": index, "char_start": offset, "char_end": offset + len(text)}
        yield Document(f"{rel}#part-{index:04d}", text, f"{uri}#part-{index:04d}", title, {**shared, "file_part": part})
    if not stored:
        yield Failure(rel, "whitespace-only document")


def _is_big(path: Path, settings: ReaderSettings) -> bool:
    return os.stat(path).st_size > settings.part_bytes


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted after discovery?)"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"OS error: {exc.strerror or exc}"


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _uri(path: Path) -> str:
    # absolute() rather than resolve(): a symlink inside the root keeps its own
    # location, and resolve() can raise on loops.
    return Path(os.path.abspath(path)).as_uri()


# ----------------------------------------------------------------------------
# read_file and iter_documents


def file_id(path: str | os.PathLike[str]) -> str:
    """The identity of a file: its resolved real path, POSIX style. The same file
    reached through a subfolder, a single-file source, a relative or a symlinked path
    gets the same id, and two files with the same relative name under two roots never
    share one."""
    return Path(os.path.realpath(path)).as_posix()


def file_doc_id(fid: str, rel: str, local_id: str) -> str:
    """A reader's id for a document of the file at ``rel`` (``rel`` itself, ``rel#part-3``,
    or a record's own id) -> the stored id: the file's id, then ``#part-...`` or
    ``#<record id>``. Record ids are scoped to their file, so a record whose id looks
    like another file's path never collides with that file."""
    if local_id == rel:
        return fid
    if local_id.startswith(rel + "#"):
        return fid + local_id[len(rel):]
    return f"{fid}#{local_id}"


def _with_global_id(item: Document | Failure, fid: str, rel: str) -> Document | Failure:
    if isinstance(item, Document):
        return dataclasses.replace(item, doc_id=file_doc_id(fid, rel, item.doc_id))
    if item.where == rel and not item.doc_id:
        return dataclasses.replace(item, doc_id=fid)
    return item


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
        yield Failure(rel, "symlink points outside the ingested root")
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


# ----------------------------------------------------------------------------
# Plain text

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_MAX_TITLE_CHARS = 120


@register_reader(".txt")
def read_txt(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A .txt file is one Document. Its title is the first non-empty line when that
    line is short and more paragraphs follow (a lone line or paragraph is body, not a
    heading). The title line stays in the text so offsets match the file. A file over
    ``part_bytes`` becomes parts (see ``_split_text_file``) sharing the first's title."""
    if _is_big(path, settings):
        yield from _split_text_file(path, root, settings, lambda text: (text, 0, _txt_title(text), {}))
        return
    rel = _rel(path, root)
    text = _read_text(path, settings)
    reason = _empty_reason(text)
    if reason:
        yield Failure(rel, reason)
        return
    yield Document(doc_id=rel, text=text, source=_uri(path), title=_txt_title(text))


def _txt_title(text: str) -> str:
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) > 1:
        first_line = next(line.strip() for line in text.split("\n") if line.strip())
        if len(first_line) <= _MAX_TITLE_CHARS:
            return first_line
    return ""


# ----------------------------------------------------------------------------
# Markdown

_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _first_h1(text: str) -> str:
    """First ``# `` heading outside fenced code (shell comments in code blocks look
    exactly like headings)."""
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            h = _ATX_H1.match(line)
            if h:
                return h.group(1).strip()
    return ""


@register_reader(".md", ".markdown")
def read_md(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A Markdown file is one Document: YAML front matter becomes metadata, the title
    comes from front matter ``title`` or the first ``# `` heading, and the text is the
    body after the front matter. A file over ``part_bytes`` becomes parts (see
    ``_split_text_file``), front matter and title taken from the first."""
    rel = _rel(path, root)
    if _is_big(path, settings):
        yield from _split_text_file(path, root, settings, lambda text: _md_head(text, rel, settings))
        return
    got = _md_head(_read_text(path, settings), rel, settings)
    if isinstance(got, Failure):
        yield got
        return
    body, _, title, metadata = got
    reason = _empty_reason(body)
    if reason:
        yield Failure(rel, reason)
        return
    yield Document(doc_id=rel, text=body, source=_uri(path), title=title, metadata=metadata)


def _md_head(text: str, rel: str, settings: ReaderSettings) -> tuple[str, int, str, dict[str, Any]] | Failure:
    """Markdown text -> (body, where the body starts, title, front matter as metadata),
    or the Failure of malformed front matter."""
    import yaml
    from frontmatter.default_handlers import YAMLHandler

    metadata: dict[str, Any] = {}
    body = text
    handler = YAMLHandler()
    # frontmatter.parse() strips the whole text; use the handler directly so the
    # body is kept verbatim.
    if handler.detect(text):
        try:
            fm, content = handler.split(text)
        except ValueError:
            fm = None  # an opening '---' with no closing one is a thematic break
        if fm is not None:
            size = len(fm.encode("utf-8"))
            if size > settings.max_front_matter_bytes:
                return Failure(rel, f"front matter too large ({size} bytes > max_front_matter_bytes {settings.max_front_matter_bytes})")
            try:
                data = yaml.load(fm, Loader=yaml.SafeLoader)
            except yaml.YAMLError as exc:
                return Failure(rel, f"malformed YAML front matter in {rel}: {exc}")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                return Failure(rel, f"front matter in {rel} is not a mapping (got {type(data).__name__})")
            # Aliases are shared, not copied, when YAML loads: count the values they
            # stand for before anything copies them (JSON, every chunk row).
            nodes = _expanded_nodes(data, settings.max_yaml_nodes)
            if nodes is None:
                return Failure(rel, "front matter has a YAML alias that refers to itself")
            if nodes > settings.max_yaml_nodes:
                return Failure(rel, f"front matter expands to more than {settings.max_yaml_nodes} values through YAML "
                                    f"aliases (max_yaml_nodes)")
            metadata = _json_safe(data)
            reason = _metadata_too_large(metadata, settings)
            if reason:
                return Failure(rel, reason)
            # Blank lines between the closing '---' and the body carry nothing.
            body = re.sub(r"\A(?:[ \t]*\n)+", "", content)
    fm_title = metadata.get("title")
    title = str(fm_title).strip() if fm_title not in (None, "") else _first_h1(body)
    # The body is the end of the text: its offset is what precedes it.
    return body, len(text) - len(body), title, metadata


# ----------------------------------------------------------------------------
# HTML

# Navigation menus are visible but are site chrome, not the document: they would put
# the same words ("Home About Contact") into every page's chunks.
_HTML_DROP = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "nav", "-comment"})
_HTML_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
        "table", "tr", "blockquote", "pre", "header", "footer", "nav", "main", "aside", "figure",
        "figcaption", "dd", "dt", "dl", "hr", "address", "details", "summary", "caption",
        "fieldset", "legend", "form", "body", "html",
    }
)  # fmt: skip
# Table cells are inline-level for paragraphs but must not glue words together.
_HTML_CELL = frozenset({"td", "th"})
_HTML_WS = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace only: &nbsp; is content


class _TextBuilder:
    """Accumulates visible text into lines and paragraphs."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.lines: list[str] = []
        self.pieces: list[str] = []

    def text(self, s: str) -> None:
        self.pieces.append(s)

    def line_break(self) -> None:
        self.lines.append(_HTML_WS.sub(" ", "".join(self.pieces)).strip())
        self.pieces = []

    def paragraph_break(self) -> None:
        self.line_break()
        # <br> at the start/end of a block should not produce blank lines.
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        start = 0
        while start < len(self.lines) and not self.lines[start]:
            start += 1
        if start < len(self.lines):
            self.paragraphs.append("\n".join(self.lines[start:]))
        self.lines = []

    def result(self) -> str:
        self.paragraph_break()
        return "\n\n".join(self.paragraphs)


def _html_text(node: Any) -> str:
    """Visible text under ``node`` without recursion (5,000-deep nesting happens in
    generated HTML), with an explicit stack of (node, leaving) pairs."""
    out = _TextBuilder()
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:
        cur, leaving = stack.pop()
        tag = cur.tag
        if leaving:
            if tag in _HTML_BLOCK:
                out.paragraph_break()
            elif tag in _HTML_CELL:
                out.text(" ")
            continue
        if tag == "-text":
            out.text(cur.text_content or "")
            continue
        if tag in _HTML_DROP:
            continue
        if tag == "br":
            out.line_break()
            continue
        if tag in _HTML_BLOCK:
            out.paragraph_break()
        elif tag in _HTML_CELL:
            out.text(" ")
        stack.append((cur, True))
        children = []
        child = cur.child
        while child is not None:
            children.append(child)
            child = child.next
        for c in reversed(children):
            stack.append((c, False))
    return out.result()


_HTML_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)[^>]*>")
# Elements that never nest: void ones, and those whose end tag may be left out (a new
# <p> or <li> closes the open one), so sloppy pages are not taken for deep ones.
_HTML_FLAT = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
        "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody", "tfoot", "colgroup",
        "rb", "rt", "rp", "caption",
    }
)  # fmt: skip


def _html_depth_over(html: str, limit: int) -> bool:
    """Whether tags in ``html`` nest deeper than ``limit``: a linear scan of the tags,
    checked before the parser (which is quadratic in depth) sees the text."""
    depth = 0
    for m in _HTML_TAG.finditer(html):
        if m.group(2).lower() in _HTML_FLAT or m.group(0).endswith("/>"):
            continue
        if m.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def html_main_text(html: str, extractor: str = "main") -> tuple[str, str]:
    """``(title, text)`` of an HTML page. Title from ``<title>``, else the first
    ``<h1>``. Text: with ``main``, the main content found by trafilatura, each heading,
    paragraph, list item or table row a paragraph of its own; when it finds nothing
    (a tiny page, markup it cannot parse) or with ``all``, every visible block (the
    selectolax walk)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title = ""
    for selector in ("title", "h1"):
        node = tree.css_first(selector)
        if node is not None:
            # Walking the node itself: <title> sits in <head>, which the body walk drops.
            title = _HTML_WS.sub(" ", _html_text(node)).strip()
            if title:
                break
    text = _trafilatura_text(html) if extractor == "main" else ""
    if not text.strip():
        start = tree.root if tree.root is not None else tree.body
        text = _html_text(start) if start is not None else ""
    return title, text


_HTML_HEADING = re.compile(r"<h[1-6][\s>]", re.IGNORECASE)


def _trafilatura_text(html: str) -> str:
    """Main content as paragraphs, from trafilatura's XML (plain text output joins
    blocks with single newlines and markdown adds '#' marks)."""
    try:
        import trafilatura
    except ImportError:  # the selectolax walk still reads the page
        return ""
    import xml.etree.ElementTree as ET

    try:
        xml = trafilatura.extract(html, output_format="xml", include_comments=False, include_tables=True,
                                  favor_precision=True, with_metadata=False, deduplicate=False)
        # Precision mode can drop every heading of a short page; headings are the
        # structure sections and heading query sets are built on, so ask again for recall.
        if xml and "<head" not in xml and _HTML_HEADING.search(html):
            recall = trafilatura.extract(html, output_format="xml", include_comments=False, include_tables=True,
                                         favor_recall=True, with_metadata=False, deduplicate=False)
            if recall and "<head" in recall:
                xml = recall
    except Exception:  # noqa: BLE001 - a parser failure on one page falls back to the walk
        return ""
    if not xml:
        return ""
    try:
        doc = ET.fromstring(xml)
    except ET.ParseError:
        return ""
    main = doc.find("main")
    blocks: list[str] = []

    def flat(el: ET.Element) -> str:
        return _HTML_WS.sub(" ", "".join(el.itertext())).strip()

    for el in (main if main is not None else doc):
        if el.tag == "list":
            items = [flat(i) for i in el.iter("item")]
            blocks.append("\n".join(i for i in items if i))
        elif el.tag == "table":
            rows = [" | ".join(flat(c) for c in row if flat(c)) for row in el.iter("row")]
            blocks.append("\n".join(r for r in rows if r))
        elif el.tag == "code":
            blocks.append("".join(el.itertext()).strip("\n"))
        else:
            blocks.append(flat(el))
    return "\n\n".join(b for b in blocks if b.strip())


@register_reader(".html", ".htm")
def read_html(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """An HTML file is one Document of its main content (:func:`html_main_text`):
    blocks become paragraphs separated by a blank line, inline tags keep sentences
    whole; page chrome, scripts, styles, head and the like are dropped. The HTML is parsed, never rendered: no script runs and
    nothing it points to (iframes, objects, images, styles) is fetched. Nesting deeper
    than ``max_html_depth`` fails before parsing."""
    rel = _rel(path, root)
    html = _read_text(path, settings)
    if _html_depth_over(html, settings.max_html_depth):
        yield Failure(rel, f"HTML nested deeper than {settings.max_html_depth} levels (max_html_depth), not parsed")
        return
    title, text = html_main_text(html, settings.html_extractor)
    reason = _empty_reason(text)
    if reason:
        yield Failure(rel, reason)
        return
    yield Document(doc_id=rel, text=text, source=_uri(path), title=title)


# ----------------------------------------------------------------------------
# Records: JSONL and Parquet


def _record_document(
    record: dict[str, Any], rel: str, default_id: str, source: str, where: str, settings: ReaderSettings
) -> Document | Failure:
    """A record (JSON object / Parquet row) -> Document, or Failure with the reason."""
    tf = settings.text_field
    if tf not in record:
        return Failure(where, f"missing text field {tf!r}")
    text = record[tf]
    if text is None:
        return Failure(where, f"text field {tf!r} is null")
    if not isinstance(text, str):
        return Failure(where, f"text field {tf!r} is not a string (got {type(text).__name__})")
    text = _normalise(text)
    reason = _empty_reason(text)
    if reason:
        return Failure(where, reason)

    raw_id = record.get(settings.id_field)
    if raw_id is None or raw_id == "":
        doc_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Failure(where, f"id field {settings.id_field!r} must be a string or integer (got {type(raw_id).__name__})")
    else:
        doc_id = str(raw_id)

    raw_title = record.get(settings.title_field)
    title = "" if raw_title is None else (raw_title if isinstance(raw_title, str) else str(raw_title)).strip()

    reserved = {settings.id_field, tf, settings.title_field}
    if settings.metadata_fields is None:
        names = [k for k in record if k not in reserved]
    else:
        names = [k for k in settings.metadata_fields if k in record]
    metadata: dict[str, Any] = {}
    nested = record.get("metadata") if "metadata" in names else None
    if isinstance(nested, dict):
        metadata.update(nested)
    for name in names:
        if name == "metadata" and isinstance(nested, dict):
            continue
        metadata[name] = record[name]
    metadata = _json_safe(metadata)
    reason = _metadata_too_large(metadata, settings)
    if reason:
        return Failure(where, reason)
    return Document(doc_id=doc_id, text=text, source=source, title=title, metadata=metadata)


def _record_documents(
    record: dict[str, Any], rel: str, default_id: str, source: str, where: str, settings: ReaderSettings
) -> Iterator[Document | Failure]:
    """A record as one Document, or, when its text is over ``part_bytes``, as parts
    ``<id>#part-NNNN`` cut at paragraph breaks like big text files (each with
    ``metadata["record_part"]``: its index and ``char_start``/``char_end`` in the
    record's text), so one huge record costs what a part costs."""
    got = _record_document(record, rel, default_id, source, where, settings)
    if isinstance(got, Failure) or len(got.text) * 4 <= settings.part_bytes or len(got.text.encode("utf-8")) <= settings.part_bytes:
        yield got
        return
    size = len(got.text.encode("utf-8"))
    if size > settings.max_file_bytes:
        yield Failure(where, f"record text too large ({size} bytes > max_file_bytes {settings.max_file_bytes})")
        return
    text, offset, index, remaining = got.text, 0, 0, size
    while text:
        n = _cut(text, settings.part_bytes) if remaining > settings.part_bytes else len(text)
        part, text = text[:n], text[n:]
        remaining -= len(part.encode("utf-8"))
        if part.strip():
            meta = {**got.metadata, "record_part": {"index": index, "char_start": offset, "char_end": offset + n}}
            yield Document(f"{got.doc_id}#part-{index:04d}", part, f"{got.source}#part-{index:04d}", got.title, meta)
        offset += n
        index += 1


def _jsonl_lines(path: Path, limit: int) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, decoded line or None, error reason or None), streaming.

    UTF-8 files are read as bytes so one bad line fails alone; a UTF-16/32 BOM
    switches to a decoding text stream."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        encoding = next((enc for bom, enc in _BOMS if head.startswith(bom)), None)
        if encoding is not None and encoding != "utf-8":
            # Remove the BOM via the BOM-consuming codec family.
            stream_enc = "utf-32" if encoding.startswith("utf-32") else "utf-16"
            text_stream = io.TextIOWrapper(f, encoding=stream_enc, errors="strict", newline="")
            lineno = 0
            try:
                for line in text_stream:
                    lineno += 1
                    yield lineno, line, None
            except UnicodeDecodeError as exc:
                yield lineno + 1, None, f"invalid {stream_enc.upper()} ({exc.reason}); rest of file skipped"
            return
        offset = 0
        lineno = 0
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            lineno += 1
            start = offset
            offset += len(raw)
            if len(raw) > limit and not raw.endswith(b"\n"):
                # Skip the rest of an oversized line without holding it in memory.
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1 << 20)
                    offset += len(raw)
                yield lineno, None, f"line too large (> {limit} bytes)"
                continue
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
                start += len(codecs.BOM_UTF8)
            if b"\x00" in raw:
                yield lineno, None, "binary content (NUL bytes), not text"
                continue
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                yield lineno, None, f"invalid UTF-8 at byte {start + exc.start}"


@register_reader(".jsonl", ".ndjson", streaming=True)
def read_jsonl(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """One Document per JSON-object line. Blank lines are skipped; a bad line
    yields a Failure at ``<relpath>:<line>`` and the rest of the file is still read."""
    rel = _rel(path, root)
    uri = _uri(path)
    any_line = False
    for lineno, line, error in _jsonl_lines(path, settings.max_file_bytes):
        where = f"{rel}:{lineno}"
        if error is not None:
            any_line = True
            yield Failure(where, error)
            continue
        assert line is not None
        if not line.strip():
            continue
        any_line = True
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Failure(where, f"bad JSON: {exc.msg} at column {exc.colno}")
            continue
        except RecursionError:
            yield Failure(where, "bad JSON: nested too deeply")
            continue
        if not isinstance(record, dict):
            yield Failure(where, f"not a JSON object (got {type(record).__name__})")
            continue
        yield from _record_documents(record, rel, f"{rel}#{lineno}", f"{uri}#L{lineno}", where, settings)
    if not any_line:
        yield Failure(rel, "empty document")


@register_reader(".parquet", streaming=True)
def read_parquet(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """One Document per row, read batch by batch. A missing text column fails the
    file once; bad rows fail alone at ``<relpath>#row=<i>`` (0-based)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = _rel(path, root)
    uri = _uri(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, ValueError) as exc:
        yield Failure(rel, f"unreadable Parquet: {exc}")
        return
    names = pf.schema_arrow.names
    if settings.text_field not in names:
        yield Failure(rel, f"missing text column {settings.text_field!r} (columns: {', '.join(names)})")
        return
    columns = None
    if settings.metadata_fields is not None:
        wanted = [settings.id_field, settings.text_field, settings.title_field, *settings.metadata_fields]
        columns = [n for n in names if n in wanted]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            for record in batch.to_pylist():
                where = f"{rel}#row={row}"
                yield from _record_documents(record, rel, f"{rel}#{row}", f"{uri}#row={row}", where, settings)
                row += 1
    except (pa.ArrowException, ValueError) as exc:
        yield Failure(f"{rel}#row={row}", f"unreadable Parquet from row {row} on: {exc}")
        return
    if row == 0:
        yield Failure(rel, "empty document")


# ----------------------------------------------------------------------------
# PDF


@register_reader(".pdf")
def read_pdf(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A PDF is one Document: the text of its pages joined by a blank line. Encrypted
    files are tried with the empty password; PDFs without a text layer fail (OCR is
    out of scope)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    rel = _rel(path, root)
    data = _read_bytes(path, settings.max_file_bytes)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                yield Failure(rel, f"encrypted PDF ({exc})")
                return
            if not ok:
                yield Failure(rel, "encrypted PDF")
                return
        pages = [_normalise(page.extract_text() or "") for page in reader.pages]
        title = ""
        try:
            meta = reader.metadata
            if meta is not None and meta.title:
                title = str(meta.title).strip()
        except Exception:  # noqa: BLE001 - a broken Info dict should not lose the text
            title = ""
    except FileNotDecryptedError:
        yield Failure(rel, "encrypted PDF")
        return
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on damaged files
        detail = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PdfReadError) else str(exc)
        yield Failure(rel, f"unreadable PDF: {detail}")
        return
    text = "\n\n".join(p for p in pages if p.strip())
    if not text:
        yield Failure(rel, "no text layer (image-only or empty PDF)")
        return
    yield Document(doc_id=rel, text=text, source=_uri(path), title=title, metadata={"pages": len(pages)})
