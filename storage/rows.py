"""Rows of the chunks table, built from chunks and their vectors: storage decides what
a row holds (``storage/schema.py`` says its types), callers hand it chunks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from grainline.documents import Chunk, Document, canonical_json


@dataclass(frozen=True)
class RowStamp:
    """What every row of one write carries beside its chunk: the root its documents
    came from, the run and the model that made it, and when."""

    source_root: str
    run_id: str
    model_id: str
    model_max_seq_length: int
    ingested_at: datetime


def chunk_rows(schema: pa.Schema, dim: int, docs: Iterable[tuple[Document, list[Chunk]]],
               vectors: Mapping[str, np.ndarray], n_windows: Mapping[str, int], stamp: RowStamp) -> pa.Table:
    """The chunks of these documents as an Arrow table in ``schema``; ``vectors`` and
    ``n_windows`` are keyed by the chunks' content hashes."""
    cols: dict[str, list[Any]] = {f.name: [] for f in schema}
    vecs: list[np.ndarray] = []
    for doc, chunks in docs:
        # Once per document: each is a pass over the whole text (sha256, JSON), and a
        # big document has tens of thousands of chunk rows.
        meta = canonical_json(doc.metadata)
        doc_hash = doc.content_hash
        for c in chunks:
            for name, value in (
                ("chunk_id", c.chunk_id), ("doc_id", c.doc_id), ("strategy", c.strategy),
                ("chunker_key", c.chunker_key), ("params", c.params), ("ordinal", c.ordinal),
                ("start", c.start), ("end", c.end), ("text", c.text), ("n_tokens", c.n_tokens),
                ("n_model_tokens", c.n_model_tokens), ("exceeds_model_limit", c.exceeds_model_limit),
                ("handling", c.handling), ("n_windows", n_windows[c.content_hash]),
                ("content_hash", c.content_hash), ("doc_hash", doc_hash), ("source", doc.source),
                ("source_root", stamp.source_root), ("title", doc.title), ("metadata", meta),
                ("model_id", stamp.model_id), ("model_max_seq_length", stamp.model_max_seq_length),
                ("run_id", stamp.run_id), ("ingested_at", stamp.ingested_at),
            ):
                cols[name].append(value)
            vecs.append(vectors[c.content_hash])
    arr = np.asarray(vecs, dtype=np.float32).reshape(-1, dim)
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel(), pa.float32()), dim)
    return pa.Table.from_pydict(cols, schema=schema)
