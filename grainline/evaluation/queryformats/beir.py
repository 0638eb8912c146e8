"""BEIR query files (``--format beir``): a folder with ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, a header
line optional). Labels are document-level: each ``corpus-id`` with a score above 0 is
a relevant document (its grade the score), named as a ``doc_id`` is (the stored id, or
a unique end of a stored path). ``corpus.jsonl`` is not read: the documents are the
table's."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from ..jsonl import json_lines
from .base import QueryFileError, QueryFormat, SourceRow, kind_of, register


def folder_of(path: Path) -> Path:
    """The BEIR folder a path names: the folder, or the folder of its queries.jsonl."""
    return path.parent if path.is_file() and path.name == "queries.jsonl" else path


def pick_split(folder: Path, split: str | None) -> Path:
    available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    if split:
        if split not in available:
            raise QueryFileError(f"{folder}: no qrels/{split}.tsv (splits: {', '.join(available) or 'none'})")
        return folder / "qrels" / f"{split}.tsv"
    if "test" in available:
        return folder / "qrels" / "test.tsv"
    if len(available) == 1:
        return folder / "qrels" / f"{available[0]}.tsv"
    raise QueryFileError(f"{folder}: {'no qrels/*.tsv' if not available else 'several qrels splits (' + ', '.join(available) + ')'}"
                         f"; {'a BEIR folder needs one' if not available else 'pass --split NAME'}")


@register("beir", "a BEIR folder: queries.jsonl and qrels/*.tsv (document-level labels)")
class BeirQueries(QueryFormat):
    split: str | None = None

    @classmethod
    def sniff(cls, path: Path) -> bool:
        folder = folder_of(path)
        return folder.is_dir() and (folder / "queries.jsonl").is_file() and (folder / "qrels").is_dir()

    @classmethod
    def rows(cls, path: Path, split: str | None = None) -> Iterator[SourceRow]:
        folder = folder_of(path)
        if not (folder / "queries.jsonl").is_file():
            raise QueryFileError(f"{folder}: not a BEIR folder (no queries.jsonl)")
        qrels = pick_split(folder, split)
        texts: dict[str, tuple[str, str]] = {}  # id -> (where, text)
        bad: list[SourceRow] = []
        for line in json_lines(folder / "queries.jsonl"):
            where = f"queries.jsonl:{line.number}"
            obj = line.value
            if line.error is not None or not isinstance(obj, dict):
                bad.append(SourceRow(where, error=line.error or f"not a JSON object (got {kind_of(obj)})"))
                continue
            qid, text = obj.get("_id"), obj.get("text")
            if isinstance(qid, int) and not isinstance(qid, bool):
                qid = str(qid)
            if not isinstance(qid, str) or not qid:
                bad.append(SourceRow(where, error=f"field '_id' is {kind_of(qid) if qid != '' else 'empty'}, expected text"))
            elif not isinstance(text, str):
                bad.append(SourceRow(where, qid=qid, error=f"field 'text' is {kind_of(text)}, expected text"))
            elif qid in texts:
                bad.append(SourceRow(where, qid=qid, error=f"duplicate query id {qid!r}"))
            else:
                texts[qid] = (where, text.strip())
        yield from bad
        judged: dict[str, dict[str, int]] = {}
        rel = f"qrels/{qrels.name}"
        with qrels.open(encoding="utf-8", newline="") as fh:
            for lineno, cells in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                if not cells or all(not c.strip() for c in cells):
                    continue
                if lineno == 1 and cells[0].strip().lower() in ("query-id", "query_id", "qid"):
                    continue
                where = f"{rel}:{lineno}"
                if len(cells) != 3:
                    yield SourceRow(where, error=f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cells)}")
                    continue
                qid, did, score = (c.strip() for c in cells)
                if not score.lstrip("-").isdigit():
                    yield SourceRow(where, error=f"score {score!r} is not an integer")
                    continue
                if qid not in texts:
                    yield SourceRow(where, error=f"query-id {qid!r} is not in queries.jsonl")
                    continue
                judged.setdefault(qid, {})[did] = int(score)
        for qid, (where, text) in texts.items():
            if qid not in judged:
                continue  # a query of another split
            positive = {d: s for d, s in judged[qid].items() if s > 0}
            if not positive:
                yield SourceRow(where, qid=qid, question=text, error=f"no positive judgement in {rel}")
                continue
            yield SourceRow(where, question=text, qid=qid, judged=positive)
