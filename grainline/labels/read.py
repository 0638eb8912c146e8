"""Reading labelled records: from a JSONL, CSV or TSV file of text + label, from an
ingested table (a label in the documents' metadata), or from SQuAD (each paragraph
labelled by its article title).

Two file contracts share one row reader (:func:`file_rows`): :func:`load_labelled_file`
(tuning: labels are names or integer codes, every problem a :class:`LabelError` naming
the column) and :func:`read_records` (classification: unlabelled records allowed,
every problem a :class:`~grainline.evaluation.datasets.DatasetError`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from grainline.errors import TerminalError
from grainline.evaluation.datasets import DatasetError, iter_jsonl, squad_json

from .records import LabelledRecords

if TYPE_CHECKING:
    from grainline.related import RelatedSettings

JSONL_SUFFIXES = (".jsonl", ".ndjson")
DELIMITERS = {".csv": ",", ".tsv": "\t"}


class LabelError(TerminalError, ValueError):
    """A labelled input is missing or malformed; the message says where and why."""

    def __init__(self, where: str, reason: str, line: int | None = None, column: str | None = None) -> None:
        loc = where + (f":{line}" if line is not None else "") + (f" column {column!r}" if column else "")
        super().__init__(f"{loc}: {reason}")


def file_rows(path: Path, header: Callable[[list[str]], None] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record of a ``.jsonl``/``.ndjson`` or
    ``.csv``/``.tsv`` file; the caller has checked the suffix. A JSONL line that is
    not an object raises :class:`DatasetError` naming it. ``header`` sees a table's
    column names before its first row. A table row with more cells than columns keeps
    the extra cells under the key None, for the caller to refuse in its own words."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from iter_jsonl(path)
        return
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=DELIMITERS[suffix])
        if header is not None:
            header(list(reader.fieldnames or []))
        for row in reader:
            # DictReader counts physical lines; a quoted newline spans two.
            yield reader.line_num, row


def _label_value(value: Any, where: str, line: int | None, column: str) -> str:
    # Labels are names or integer codes; a float, bool, list or object is almost
    # always a wrong column, so it is refused rather than stringified.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LabelError(where, "missing or empty label", line, column)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LabelError(where, f"label must be a string or integer, got {type(value).__name__} {value!r}", line, column)
    return str(value).strip()


def load_labelled_file(path: str | Path, text_field: str = "text", label_field: str = "label", id_field: str = "id") -> LabelledRecords:
    """Records from a ``.jsonl`` (one object per line) or ``.csv``/``.tsv`` (header
    row) file with a text and a label column; ids default to ``line-N``."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise LabelError(where, "labelled file does not exist")
    suffix = p.suffix.lower()
    if suffix not in JSONL_SUFFIXES and suffix not in DELIMITERS:
        raise LabelError(where, f"unknown labelled file type {suffix!r}; use .jsonl, .csv or .tsv")

    header: list[str] = []

    def columns(names: list[str]) -> None:
        header.extend(names)
        for col in (text_field, label_field):
            if col not in names:
                raise LabelError(where, f"no column {col!r} in the header (columns: {', '.join(names) or 'none'})", 1, col)

    ids: list[str] = []
    texts: list[str] = []
    labels: list[str | None] = []
    try:
        for line, rec in file_rows(p, columns):
            if None in rec:  # more cells than header columns
                raise LabelError(where, f"{len(header) + len(rec[None])} cells for {len(header)} columns", line)
            text = rec.get(text_field)
            if not isinstance(text, str) or not text.strip():
                raise LabelError(where, f"missing or empty text (got {text!r})", line, text_field)
            labels.append(_label_value(rec.get(label_field), where, line, label_field))
            texts.append(text)
            rid = rec.get(id_field)
            ids.append(str(rid) if rid not in (None, "") else f"line-{line}")
    except DatasetError as exc:
        raise LabelError(where, exc.reason, exc.line) from None
    if not ids:
        raise LabelError(where, "no labelled records")
    return LabelledRecords(ids=ids, texts=texts, labels=labels, source=where)


def read_records(
    path: str | Path, text_field: str = "text", label_field: str = "label", id_field: str = "id",
    require_labels: bool = True,
) -> LabelledRecords:
    """Records of a JSONL or CSV file: text (required, non-empty), label (required
    unless ``require_labels`` is false; empty counts as missing; a number is taken as
    its string) and an optional id (default: the line number). Every problem names the
    file and line."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix not in JSONL_SUFFIXES and suffix not in DELIMITERS:
        raise DatasetError(path, f"unsupported file type {suffix or '(none)'!r}; use .jsonl or .csv")
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str | None] = []
    header: list[str] = []
    for lineno, row in file_rows(path, header.extend):
        if None in row:
            raise DatasetError(path, f"more fields than the header's {len(header)}", lineno)
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(path, f"field {text_field!r} is missing or empty", lineno)
        label = row.get(label_field)
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            label = str(label)
        if label is not None and not isinstance(label, str):
            raise DatasetError(path, f"field {label_field!r} must be a string, got {type(label).__name__}", lineno)
        if label is None or not label.strip():
            if require_labels:
                raise DatasetError(path, f"field {label_field!r} is missing or empty", lineno)
            label = None
        ids.append(str(row.get(id_field) or lineno))
        texts.append(text)
        labels.append(label.strip() if label else None)
    if not texts:
        raise DatasetError(path, "no records")
    return LabelledRecords(ids=ids, texts=texts, labels=labels, source=str(path))


def load_labelled_table(db: str, table: str, label_field: str = "label", strategy: str | None = "article") -> LabelledRecords:
    """Chunks of an ingested table whose document metadata has ``label_field``, with
    their stored vectors (one model's: the table's). Rows without the label are
    skipped and counted; a label of the wrong type is an error naming the chunk."""
    from grainline.storage.chunks import connect, open_table_if_exists
    from grainline.storage.sql import quote

    t = open_table_if_exists(connect(db), table)
    where = f"{db}/{table}"
    if t is None:
        raise LabelError(where, "no such table")
    q = t.search().select(["chunk_id", "doc_id", "text", "metadata", "model_id", "vector"]).limit(None)
    if strategy:
        q = q.where(f"strategy = {quote(strategy)}")
    data = q.to_arrow()
    if data.num_rows == 0:
        raise LabelError(where, f"no rows{' of strategy ' + repr(strategy) if strategy else ''}")
    dim = data.schema.field("vector").type.list_size
    vecs = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    keep: list[int] = []
    ids: list[str] = []
    labels: list[str | None] = []
    for i, (cid, meta) in enumerate(zip(data.column("chunk_id").to_pylist(), data.column("metadata").to_pylist())):
        try:
            m = json.loads(meta) if meta else {}
        except json.JSONDecodeError:
            raise LabelError(where, f"chunk {cid}: metadata is not JSON", column="metadata") from None
        if not isinstance(m, dict) or m.get(label_field) is None:
            continue
        labels.append(_label_value(m[label_field], f"{where} chunk {cid}", None, f"metadata.{label_field}"))
        ids.append(cid)
        keep.append(i)
    if not keep:
        raise LabelError(where, f"no row has a {label_field!r} field in its metadata", column=f"metadata.{label_field}")
    model_ids = data.column("model_id").to_pylist()
    models = {model_ids[i] for i in keep}
    if len(models) != 1:
        raise LabelError(where, f"rows from several models {sorted(models)}; train on one model's vectors")
    texts = data.column("text").to_pylist()
    doc_ids = data.column("doc_id").to_pylist()
    return LabelledRecords(
        ids=ids, texts=[texts[i] for i in keep], labels=labels, source=where,
        vectors=np.ascontiguousarray(vecs[keep], dtype=np.float32), model_id=models.pop(), skipped=data.num_rows - len(keep),
        info={"doc_ids": [doc_ids[i] for i in keep]},
    )


def table_records(settings: "RelatedSettings", label_field: str) -> LabelledRecords:
    """Documents of an ingested table as records: vectors as :mod:`grainline.related`
    builds them (``settings.strategy``), labels from ``metadata[label_field]`` (None
    where a document has none)."""
    from grainline.related import document_vectors, resolve_table
    from grainline.storage.sql import quote

    t = resolve_table(settings)
    dv = document_vectors(t, settings.strategy)
    meta: dict[str, str | None] = {}
    where = f"strategy = {quote(settings.strategy)}"
    for batch in t.search().select(["doc_id", "metadata"]).where(where).limit(None).to_batches(8192):
        for d, m in zip(batch.column("doc_id").to_pylist(), batch.column("metadata").to_pylist()):
            if d in meta:
                continue
            try:
                value = (json.loads(m) if m else {}).get(label_field)
            except (json.JSONDecodeError, AttributeError):
                value = None
            meta[d] = str(value) if value not in (None, "") else None
    labels = [meta.get(d) for d in dv.doc_ids]
    if not any(lab is not None for lab in labels):
        raise ValueError(f"no document in table {dv.table_name!r} has metadata field {label_field!r}")
    return LabelledRecords(ids=list(dv.doc_ids), texts=None, labels=labels, source=dv.table_name, vectors=dv.vectors)


def squad_paragraphs(path: str | Path) -> LabelledRecords:
    """Every paragraph context of a SQuAD v1.1 file, labelled by its article title.

    The SQuAD article-label task: it needs no annotation beyond the file itself, the
    48 classes of v1.1 dev are topical (Super_Bowl_50, Normans, Amazon_rainforest, ...)
    and uneven in size, which makes it a fair test of "do records of one class sit
    together". Paragraphs are kept in file order; ids are ``<title>#<index within the
    article>``; ``source`` is the path as given.

    A folder holding one ``.json`` file is accepted. A malformed file raises
    :class:`DatasetError` naming the file and the bad entry."""
    file, raw = squad_json(path)
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str | None] = []
    for a_i, article in enumerate(raw["data"]):
        try:
            title = str(article["title"])
            paragraphs = article["paragraphs"]
        except (KeyError, TypeError):
            raise DatasetError(file, f"data[{a_i}]: article needs 'title' and 'paragraphs'") from None
        for p_i, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                raise DatasetError(file, f"data[{a_i}].paragraphs[{p_i}]: paragraph needs a non-empty 'context'")
            ids.append(f"{title}#{p_i}")
            texts.append(context)
            labels.append(title)
    return LabelledRecords(ids=ids, texts=texts, labels=labels, source=str(path))
