"""Labelled records for tuning a head: from a labelled JSONL/CSV file, from a label
field in an ingested table's metadata, or from SQuAD (paragraph -> article title);
and the seeded, stratified choice of which records are labelled.

Every problem in an input raises :class:`LabelError`, naming the file (or table), the
line (or chunk id), the column and the reason."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class LabelError(ValueError):
    """A labelled input is missing or malformed; the message says where and why."""

    def __init__(self, where: str, reason: str, line: int | None = None, column: str | None = None) -> None:
        loc = where + (f":{line}" if line is not None else "") + (f" column {column!r}" if column else "")
        super().__init__(f"{loc}: {reason}")


@dataclass
class LabelledRecords:
    """Records with a class label; ``vectors`` are the base model's, when known."""

    ids: list[str]
    texts: list[str]
    labels: list[str]
    source: str
    vectors: np.ndarray | None = None
    model_id: str | None = None
    skipped: int = 0  # table rows without a label
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> "LabelledRecords":
        """The records at ``index``, in that order."""
        idx = list(map(int, index))
        return LabelledRecords(
            ids=[self.ids[i] for i in idx], texts=[self.texts[i] for i in idx], labels=[self.labels[i] for i in idx],
            source=self.source, vectors=None if self.vectors is None else self.vectors[idx], model_id=self.model_id,
        )


def _label_value(value: Any, where: str, line: int | None, column: str) -> str:
    # Labels are names or integer codes; a float, bool, list or object is almost
    # always a wrong column, so it is refused rather than stringified.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LabelError(where, "missing or empty label", line, column)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LabelError(where, f"label must be a string or integer, got {type(value).__name__} {value!r}", line, column)
    return str(value).strip()


def load_labelled_file(path: str | Path, text_field: str = "text", label_field: str = "label", id_field: str = "id") -> LabelledRecords:
    """Records from a ``.jsonl`` (one object per line) or ``.csv`` (header row) file
    with a text and a label column; ids default to ``line-N``."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise LabelError(where, "labelled file does not exist")
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []

    def add(line: int, rec: dict[str, Any]) -> None:
        text = rec.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise LabelError(where, f"missing or empty text (got {text!r})", line, text_field)
        labels.append(_label_value(rec.get(label_field), where, line, label_field))
        texts.append(text)
        rid = rec.get(id_field)
        ids.append(str(rid) if rid not in (None, "") else f"line-{line}")

    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        from grainline.evaluation.datasets import DatasetError, _iter_jsonl

        try:
            for line, rec in _iter_jsonl(p):
                add(line, rec)
        except DatasetError as exc:
            raise LabelError(where, exc.reason, exc.line) from None
    elif suffix in (".csv", ".tsv"):
        with p.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            header = reader.fieldnames or []
            for col in (text_field, label_field):
                if col not in header:
                    raise LabelError(where, f"no column {col!r} in the header (columns: {', '.join(header) or 'none'})", 1, col)
            for rec in reader:
                if None in rec:  # more cells than header columns
                    raise LabelError(where, f"{len(header) + len(rec[None])} cells for {len(header)} columns", reader.line_num)
                add(reader.line_num, rec)
    else:
        raise LabelError(where, f"unknown labelled file type {suffix!r}; use .jsonl, .csv or .tsv")
    if not ids:
        raise LabelError(where, "no labelled records")
    return LabelledRecords(ids=ids, texts=texts, labels=labels, source=where)


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
    labels: list[str] = []
    models = set()
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


def squad_paragraphs(path: str | Path) -> LabelledRecords:
    """SQuAD v1.1 paragraphs labelled by their article title (ids ``title#i``); see
    :func:`grainline.evaluation.labels.squad_paragraph_labels`."""
    from grainline.evaluation.labels import squad_paragraph_labels

    d = squad_paragraph_labels(path)
    return LabelledRecords(ids=d.ids, texts=d.texts, labels=d.labels, source=str(path))


def labelled_subset(labels: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` records to label, the rest being held out; seeded.

    Contrastive training needs two records of a class to learn anything about it, so
    a sampled class always gets at least two. With fewer than two per class to give
    (``n < 2 * classes``) ``n // 2`` classes are drawn at random and two records of
    each (plus one more record when ``n`` is odd). Otherwise every class gets two,
    and the remaining ``n - 2 * classes`` are shared in proportion to each class's
    size minus two (largest remainders), so the held-out records keep the classes'
    proportions; every class keeps at least one record held out. Records within a
    class are drawn at random."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    members = {c: rng.permutation([i for i, lab in enumerate(labels) if lab == c]) for c in classes}
    usable = [c for c in classes if len(members[c]) >= 3]  # two to label, one to hold out
    cap = sum(len(members[c]) - 1 for c in usable)
    if n < 2 or n > cap:
        raise ValueError(f"cannot label {n} records: between 2 and {cap} possible here (classes of 3+ records, one held out each)")
    take: dict[str, int] = {}
    if n < 2 * len(usable):
        order = [usable[i] for i in rng.permutation(len(usable))]
        for c in order[: n // 2]:
            take[c] = 2
        if n % 2:
            take[order[n // 2]] = 1
    else:
        take = {c: 2 for c in usable}
        rest = n - 2 * len(usable)
        room = np.array([len(members[c]) - 3 for c in usable], dtype=float)
        share = rest * room / room.sum() if room.sum() else np.zeros(len(usable))
        extra = np.minimum(np.floor(share).astype(int), room.astype(int))
        left = rest - int(extra.sum())
        order = np.argsort(-(share - extra), kind="stable")
        while left > 0:  # n <= cap, so there is always room somewhere
            for j in order:
                if left and extra[j] < room[j]:
                    extra[j] += 1
                    left -= 1
        for c, e in zip(usable, extra):
            take[c] += int(e)
    return np.sort(np.concatenate([members[c][:k] for c, k in take.items()]))
