"""LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON (``--format llamaindex``), as its
``save_json`` writes it: ``queries`` (query id -> text), ``corpus`` (node id -> the
node's text) and ``relevant_docs`` (query id -> node ids); ``mode`` is ignored. Each
relevant node's text is one evidence passage, searched in every document (the nodes
are chunks of the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .base import QueryFileError, QueryFormat, SourceRow, kind_of, passages, register

_KEYS = ("queries", "corpus", "relevant_docs")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


@register("llamaindex", "a LlamaIndex EmbeddingQAFinetuneDataset JSON: queries, corpus, relevant_docs")
class LlamaIndexQA(QueryFormat):
    @classmethod
    def sniff(cls, path: Path) -> bool:
        if path.suffix.lower() != ".json" or not path.is_file():
            return False
        data = _load(path)
        return isinstance(data, dict) and all(k in data for k in _KEYS)

    @classmethod
    def rows(cls, path: Path) -> Iterator[SourceRow]:
        if not path.is_file():
            raise QueryFileError(f"{path}: a LlamaIndex dataset is one JSON file")
        data = _load(path)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in _KEYS):
            raise QueryFileError(f"{path}: not a LlamaIndex EmbeddingQAFinetuneDataset (expected a JSON object whose "
                                 f"{', '.join(_KEYS)} are objects)")
        queries, corpus, relevant = data["queries"], data["corpus"], data["relevant_docs"]
        for qid, question in queries.items():
            where = f"{path.name}:queries[{qid!r}]"
            if not isinstance(question, str):
                yield SourceRow(where, qid=qid, error=f"queries[{qid!r}] is {kind_of(question)}, expected text")
                continue
            ids = relevant.get(qid)
            if ids is None:
                yield SourceRow(where, qid=qid, question=question.strip(), error=f"relevant_docs has no entry for query {qid!r}")
                continue
            if not isinstance(ids, list):
                yield SourceRow(where, qid=qid, error=f"relevant_docs[{qid!r}] is {kind_of(ids)}, expected a list of node ids")
                continue
            missing = [i for i in ids if not isinstance(i, str) or i not in corpus]
            if missing:
                yield SourceRow(where, qid=qid, error=f"relevant_docs[{qid!r}] names {missing[0]!r}, which is not a corpus node id")
                continue
            try:
                ps = passages([corpus[i] for i in ids], "relevant_docs")
            except ValueError as exc:
                yield SourceRow(where, qid=qid, error=str(exc))
                continue
            # Name each passage by its node id.
            ps = [type(p)(p.text, p.start, p.end, f"corpus[{i!r}]") for p, i in zip(ps, ids)]
            yield SourceRow(where, question=question.strip(), qid=qid, passages=ps)
        for qid in relevant:
            if qid not in queries:
                yield SourceRow(f"{path.name}:relevant_docs[{qid!r}]", error=f"query id {qid!r} is not in queries")
