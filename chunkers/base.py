"""What every chunker gets besides the Document, and the helpers that turn spans into
Chunks with stable ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from grainline.documents import Chunk, Document, canonical_json, sha256_hex, sha256_of
from grainline.registry import Registry
from grainline.tokens import TiktokenCounter, TokenCounter

from .segment import Span
from .settings import ChunkerSettings


@dataclass(frozen=True)
class ModelWindow:
    """The embedding model's tokenizer and how many tokens (special tokens excluded)
    fit in one forward pass."""

    counter: TokenCounter
    max_tokens: int
    name: str = "model"


@dataclass(frozen=True)
class ChunkContext:
    """Tokenizers the chunkers count with. ``model`` is None when chunking without an
    embedding model in mind (then ``n_model_tokens`` is -1)."""

    tokens: TokenCounter
    model: ModelWindow | None = None

    @classmethod
    def default(cls, model: ModelWindow | None = None) -> "ChunkContext":
        return cls(tokens=TiktokenCounter(), model=model)


ChunkerFn = Callable[[Document, ChunkerSettings, ChunkContext], list[Chunk]]

CHUNKERS: Registry[ChunkerFn] = Registry("chunking strategy")


def chunker_params(strategy: str, settings: ChunkerSettings, ctx: ChunkContext) -> str:
    """Everything that shapes a strategy's chunks, as canonical JSON."""
    params = {"strategy": strategy, **settings.model_dump(), "tokens": ctx.tokens.name}
    if ctx.model is not None:
        params["model_window"] = ctx.model.max_tokens
        params["model_tokenizer"] = ctx.model.name
    return canonical_json(params)


def superseded_keys(strategy: str, settings: ChunkerSettings, ctx: ChunkContext) -> tuple[str, ...]:
    """Chunker keys of rows that a strategy's chunks with ``settings`` replace: those cut
    before the sentence segmenter was a setting (always pysbd, so their parameters lack
    ``segmenter``). An ingestion that re-chunks a document drops its rows under these
    keys, so a table moves to a new segmenter one document at a time, never holding
    both cuts of one document."""
    if "segmenter" not in type(settings).model_fields:
        return ()
    legacy = json.loads(chunker_params(strategy, settings, ctx))
    legacy.pop("segmenter", None)
    return (chunker_key(strategy, canonical_json(legacy)),)


def chunker_key(strategy: str, params: str) -> str:
    """Short readable id of a strategy with its parameters, e.g. ``paragraph-3f9c1a2b``."""
    return f"{strategy}-{sha256_hex(params, length=8)}"


def make_chunks(
    doc: Document,
    strategy: str,
    params: str,
    spans: list[Span],
    n_tokens: list[int],
    n_model_tokens: list[int],
    handling: list[str],
    exceeds: list[bool],
) -> list[Chunk]:
    """Chunks for ``spans`` of ``doc`` with ids derived from document, strategy,
    parameters and offsets, so the same input always yields the same ids."""
    key = chunker_key(strategy, params)
    # Every id hashes the same prefix (document, strategy, parameters): hash it once and
    # copy it; the ids are those of sha256_hex(doc_id, strategy, params, start, end).
    prefix = sha256_of(doc.doc_id, strategy, params, "")
    out = []
    for i, (s, e) in enumerate(spans):
        h = prefix.copy()
        h.update(f"{s}\x1f{e}".encode())
        out.append(
            Chunk(
                chunk_id=h.hexdigest()[:32],
                doc_id=doc.doc_id,
                strategy=strategy,
                chunker_key=key,
                params=params,
                ordinal=i,
                start=s,
                end=e,
                text=doc.text[s:e],
                n_tokens=n_tokens[i],
                n_model_tokens=n_model_tokens[i],
                exceeds_model_limit=exceeds[i],
                handling=handling[i],
            )
        )
    return out
