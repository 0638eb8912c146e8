"""The production chunks table as an evaluation corpus: which configurations it holds,
and the document texts its chunk offsets point into.

The chunks table stores no document text of its own, but every chunk stores its text
and its ``[start, end)`` offsets into the document, and the chunkers only ever drop
whitespace between units (``chunkers.segment.trim``). So a document's text is rebuilt
exactly from its chunks wherever they cover it; the uncovered gaps are whitespace in
the original, filled here with a newline when two or more characters wide (the
blank line between paragraphs) and a space otherwise. Offsets stay exact, which is
what the span metrics and evidence resolution need. With ``article`` chunks present
the whole document between its first and last visible character is covered."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from grainline.storage.sql import quote


@dataclass(frozen=True)
class StoredDocument:
    """A document as the chunks table knows it."""

    doc_id: str
    text: str
    title: str
    source: str
    doc_hash: str


@dataclass(frozen=True)
class StoredConfig:
    """One chunker configuration present in a table."""

    strategy: str
    chunker_key: str
    params: str
    n_chunks: int


def _gap(n: int) -> str:
    return "\n" * n if n >= 2 else " " * n


def rebuild_text(pieces: list[tuple[int, int, str]]) -> str:
    """The document text from ``(start, end, text)`` chunk pieces (any order, any
    overlap): each character comes from a chunk covering it, gaps become whitespace."""
    out: list[str] = []
    cursor = 0
    for start, end, text in sorted(pieces, key=lambda p: (p[0], -p[1])):
        if end <= cursor:
            continue
        if start > cursor:
            out.append(_gap(start - cursor))
            out.append(text)
        else:
            out.append(text[cursor - start:])
        cursor = end
    return "".join(out)


def stored_configs(table: Any) -> list[StoredConfig]:
    """Every (strategy, chunker key, parameters) in the table, with its chunk count,
    ordered sentence, paragraph, article, then others by name."""
    t = table.search().select(["strategy", "chunker_key", "params"]).limit(None).to_arrow()
    counts = Counter(zip(t.column("strategy").to_pylist(), t.column("chunker_key").to_pylist(),
                         t.column("params").to_pylist()))
    order = {"sentence": 0, "paragraph": 1, "article": 2}
    return [StoredConfig(s, k, p or "{}", n) for (s, k, p), n in
            sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][0], kv[0][2] or ""))]


def stored_documents(table: Any, doc_ids: list[str] | None = None) -> dict[str, StoredDocument]:
    """The table's documents rebuilt from their chunks (all strategies together),
    keyed by doc id; ``doc_ids`` limits them. A document whose chunks carry different
    content hashes (partly re-ingested) is rebuilt from the hash most of its chunks
    carry."""
    from grainline.storage.damage import without_scalar_index

    cols = ["doc_id", "start", "end", "text", "title", "source", "doc_hash"]
    q = table.search().select(cols).limit(None)
    if doc_ids is not None:
        if not doc_ids:
            return {}
        where = "doc_id IN (" + ", ".join(quote(d) for d in doc_ids) + ")"
        q = q.where(where)
        rows = without_scalar_index(table, lambda: q.to_arrow().to_pylist(), where, cols)
    else:
        rows = q.to_arrow().to_pylist()
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    out: dict[str, StoredDocument] = {}
    for doc_id in sorted(by_doc):
        group = by_doc[doc_id]
        doc_hash = Counter(r["doc_hash"] for r in group).most_common(1)[0][0]
        group = [r for r in group if r["doc_hash"] == doc_hash]
        text = rebuild_text([(int(r["start"]), int(r["end"]), r["text"]) for r in group])
        out[doc_id] = StoredDocument(doc_id, text, group[0]["title"] or "", group[0]["source"] or "", doc_hash or "")
    return out


def table_model_id(table: Any) -> str:
    """The model that embedded the table's chunks (one per table by construction)."""
    t = table.search().select(["model_id"]).limit(1).to_arrow()
    return t.column("model_id")[0].as_py() if t.num_rows else ""


def open_corpus(db: str, table_name: str | None, embedder_settings: Any) -> tuple[Any, int, str, dict[str, StoredDocument]]:
    """(table, version, model id, documents) of a production chunks table at its
    current version: what a query set is made on. ``table_name`` defaults to the
    model's chunks table."""
    from grainline.embedding import get_embedder

    table = open_chunks_table(db, table_name or get_embedder(embedder_settings).identity.table_name)
    version = table.version
    table.checkout(version)  # documents and provenance from one version, whatever is written meanwhile
    return table, version, table_model_id(table), stored_documents(table)


def open_chunks_table(db: str, name: str) -> Any:
    """The production chunks table ``name`` of ``db``; a missing one is an error that
    names the chunks tables there."""
    from grainline.storage.tables import chunk_table_names
    from grainline.storage.chunks import connect, open_table_if_exists

    conn = connect(db)
    table = open_table_if_exists(conn, name)
    if table is None:
        names = chunk_table_names(conn)
        raise ValueError(f"no chunks table {name!r} in {db!r} (tables there: {', '.join(names) or 'none'}); "
                         "run `grainline ingest` first or pass --table")
    return table
