"""The three granularities: sentence, paragraph and article. Each is a pure function
Document -> list[Chunk]; they differ only in the units they start from."""

from __future__ import annotations

from grainline.documents import Chunk, Document

from .base import CHUNKERS, ChunkContext, chunker_params, make_chunks
from .pack import fit, merge_small
from .segment import Span, paragraph_spans, sentence_spans, trim
from .settings import ArticleSettings, ChunkerSettings


def _split_units(doc: Document, strategy: str, units: list[Span], settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    text = doc.text
    units = merge_small(text, units, ctx.tokens, settings.min_tokens, settings.max_tokens)
    if settings.max_tokens is not None:
        units = [p for u in units for p in fit(text, u, ctx.tokens, settings.max_tokens, settings.overlap)]
    handling = ["plain"] * len(units)
    if ctx.model is not None:
        # The model's tokenizer often needs more tokens than cl100k for the same text;
        # anything over the model's window is split again rather than truncated.
        model_counts = ctx.model.counter.count_many([text[s:e] for s, e in units])
        fitted: list[Span] = []
        handling = []
        overlap = min(settings.overlap, ctx.model.max_tokens // 4)
        for span, n in zip(units, model_counts):
            if n <= ctx.model.max_tokens:
                fitted.append(span)
                handling.append("plain")
            else:
                pieces = fit(text, span, ctx.model.counter, ctx.model.max_tokens, overlap)
                fitted.extend(pieces)
                handling.extend(["split"] * len(pieces))
        units = fitted
        n_model = ctx.model.counter.count_many([text[s:e] for s, e in units])
    else:
        n_model = [-1] * len(units)
    n_tokens = ctx.tokens.count_many([text[s:e] for s, e in units])
    exceeds = [ctx.model is not None and n > ctx.model.max_tokens for n in n_model]
    params = chunker_params(strategy, settings, ctx)
    return make_chunks(doc, strategy, params, units, n_tokens, n_model, handling, exceeds)


@CHUNKERS.register("sentence")
def sentence_chunks(doc: Document, settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    """One chunk per sentence (pysbd), tiny fragments merged, long ones cut at tokens."""
    return _split_units(doc, "sentence", sentence_spans(doc.text), settings, ctx)


@CHUNKERS.register("paragraph")
def paragraph_chunks(doc: Document, settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    """One chunk per blank-line separated block, headings merged into the next block,
    long blocks split at sentences, then tokens."""
    return _split_units(doc, "paragraph", paragraph_spans(doc.text), settings, ctx)


@CHUNKERS.register("article")
def article_chunks(doc: Document, settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    """The whole document as one chunk. When it is longer than the model's window the
    chunk is marked for pooling or truncation (``settings.long_article``); it is never
    silently cut."""
    span = trim(doc.text, 0, len(doc.text))
    if span is None:
        return []
    s, e = span
    text = doc.text[s:e]
    n_model = ctx.model.counter.count(text) if ctx.model is not None else -1
    exceeds = ctx.model is not None and n_model > ctx.model.max_tokens
    policy = settings.long_article if isinstance(settings, ArticleSettings) else "pool"
    handling = policy if exceeds else "plain"
    params = chunker_params("article", settings, ctx)
    return make_chunks(doc, "article", params, [span], [ctx.tokens.count(text)], [n_model], [handling], [exceeds])
