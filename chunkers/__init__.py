"""Chunking strategies. ``chunk_document(doc, "paragraph")`` is the entry point;
``CHUNKERS`` lists the registered strategies.

May import: documents, registry, tokens.
"""

from __future__ import annotations

from grainline.documents import Chunk, Document

from . import strategies as _strategies  # noqa: F401  (fills the registry)
from .base import CHUNKERS, ChunkContext, ModelWindow, chunker_key, chunker_params, superseded_keys
from .segment import DEFAULT_SEGMENTER, SEGMENTERS
from .settings import DEFAULT_SETTINGS, ArticleSettings, ChunkerSettings, ParagraphSettings, SentenceSettings

SETTINGS_TYPES: dict[str, type[ChunkerSettings]] = {
    "sentence": SentenceSettings,
    "paragraph": ParagraphSettings,
    "article": ArticleSettings,
}


def settings_for(strategy: str, **overrides) -> ChunkerSettings:
    """Default settings of a strategy with ``overrides`` applied (validated)."""
    CHUNKERS.get(strategy)
    return SETTINGS_TYPES[strategy](**overrides)


def chunk_document(
    doc: Document,
    strategy: str,
    settings: ChunkerSettings | None = None,
    ctx: ChunkContext | None = None,
) -> list[Chunk]:
    """Cut ``doc`` with the named strategy; pure: same input, same chunks and ids."""
    fn = CHUNKERS.get(strategy)
    settings = settings if settings is not None else DEFAULT_SETTINGS[strategy]
    ctx = ctx if ctx is not None else ChunkContext.default()
    return fn(doc, settings, ctx)


__all__ = [
    "CHUNKERS",
    "Chunk",
    "ChunkContext",
    "ChunkerSettings",
    "ModelWindow",
    "chunk_document",
    "chunker_key",
    "chunker_params",
    "superseded_keys",
    "SEGMENTERS",
    "DEFAULT_SEGMENTER",
    "settings_for",
    "SETTINGS_TYPES",
    "DEFAULT_SETTINGS",
]
