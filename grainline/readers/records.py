"""Record files, one Document per record: JSON Lines (.jsonl, .ndjson) line by line
and Parquet (.parquet) batch by batch, with the shared record -> Document rules (id,
text, title and metadata fields; a huge text cut into parts). A bad record fails
alone; the rest of the file is still read."""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grainline.documents import Document, Failure
from grainline.readers.ids import _rel, _uri
from grainline.readers.metadata import _json_safe, _metadata_too_large
from grainline.readers.registry import register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.text import BINARY_NUL, _bom, _cut, _empty_reason, _normalise


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
        found = _bom(head)
        if found is not None and found[0] != "utf-8":
            encoding = found[0]
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
                yield lineno, None, BINARY_NUL
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
