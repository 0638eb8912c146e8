"""Bytes on disk -> text: decoding (a BOM picks the codec, else strict UTF-8; binary
refused), line-end normalising, the size limit, the empty/invisible-text reasons, and
big text files streamed and cut into parts at paragraph breaks."""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from grainline.documents import Document, Failure
from grainline.readers.errors import _ReadError
from grainline.readers.ids import _rel, _uri
from grainline.readers.settings import ReaderSettings

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

BINARY_NUL = "binary content (NUL bytes), not text"


def _bom(head: bytes) -> tuple[str, bytes] | None:
    """``(encoding, BOM)`` when ``head`` starts with a byte-order mark."""
    return next(((enc, bom) for bom, enc in _BOMS if head.startswith(bom)), None)


def _decode(data: bytes) -> str:
    """Bytes -> str, honouring a BOM, else strict UTF-8. The BOM character is kept
    (decoded with an explicit-endian codec) so that ``_normalise`` removes exactly one
    leading BOM whatever the encoding was."""
    found = _bom(data)
    if found is not None:
        encoding = found[0]
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise _ReadError(f"invalid {encoding.upper()} at byte {exc.start}") from None
    if b"\x00" in data[:8192]:
        raise _ReadError(BINARY_NUL)
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


def _document(
    rel: str, text: str, source: str, title: str = "", metadata: dict[str, Any] | None = None
) -> Document | Failure:
    """A whole file's text as its Document, or the Failure saying it holds no text."""
    reason = _empty_reason(text)
    if reason:
        return Failure(rel, reason)
    return Document(doc_id=rel, text=text, source=source, title=title, metadata=metadata or {})


def _too_large(size: int, limit: int, grew: bool = False) -> _ReadError:
    # "N+ bytes": the file grew past the limit after its size was checked.
    return _ReadError(f"file too large ({size}{'+' if grew else ''} bytes > {limit})")


def _check_size(f: IO[bytes], limit: int) -> None:
    size = os.fstat(f.fileno()).st_size
    if size > limit:
        raise _too_large(size, limit)


def _read_bytes(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        _check_size(f, limit)
        # The file may grow between fstat and read; never read more than the limit.
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data), limit, grew=True)
    return data


def _read_text(path: Path, settings: ReaderSettings) -> str:
    return _normalise(_decode(_read_bytes(path, settings.max_file_bytes)))


# ----------------------------------------------------------------------------
# Big text files: streamed and cut into parts

_BLOCK_BYTES = 1 << 20
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def _stream_text(path: Path, settings: ReaderSettings, block_bytes: int = _BLOCK_BYTES) -> Iterator[str]:
    """The decoded, line-end-normalised text of a file in blocks, never all of it at
    once. Same rules as ``_decode``/``_normalise``: a BOM picks the codec and is
    dropped, else strict UTF-8; NUL bytes near the start mean binary."""
    with open(path, "rb") as f:
        _check_size(f, settings.max_file_bytes)
        head = f.read(8192)
        encoding, bom = _bom(head) or ("utf-8", b"")
        if not bom and b"\x00" in head:
            raise _ReadError(BINARY_NUL)
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
                raise _too_large(consumed, settings.max_file_bytes, grew=True)
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
                yield _document(rel, text, uri, title, shared)
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
