"""The three granularities: sentence, paragraph and article. Each is a pure function
Document -> list[Chunk]; they differ only in the units they start from."""

from __future__ import annotations

from grainline.documents import Chunk, Document
from grainline.tokens import TokenCounter

from .base import CHUNKERS, ChunkContext, chunker_params, make_chunks
from .pack import fit, merge_small
from .segment import DEFAULT_SEGMENTER, Span, paragraph_spans, sentence_spans, trim
from .settings import ArticleSettings, ChunkerSettings


def _refit(text: str, units: list[Span], counts: list[int], counter: TokenCounter, max_tokens: int, overlap: int,
           segmenter: str) -> tuple[list[Span], list[int], list[int]]:
    """Units over ``max_tokens`` split by :func:`fit`, the others kept with their
    counts. Returns the units, their counts (a piece's is the count that showed it
    fits) and, for each, the index of the unit it came from, or -1 for a piece of a
    split one."""
    out: list[Span] = []
    out_counts: list[int] = []
    origin: list[int] = []
    for i, (span, n) in enumerate(zip(units, counts)):
        if n <= max_tokens:
            out.append(span)
            out_counts.append(n)
            origin.append(i)
            continue
        pieces, piece_counts = fit(text, span, counter, max_tokens, overlap, segmenter, count=n)
        out.extend(pieces)
        out_counts.extend(piece_counts)
        origin.extend([-1] * len(pieces))
    return out, out_counts, origin


def _carried_counts(text: str, units: list[Span], origin: list[int], counts: list[int], counter: TokenCounter) -> list[int]:
    """Each unit's count: carried over from the unit it came from (``origin``), counted
    anew for the pieces of a split unit (origin -1)."""
    out = [counts[o] if o >= 0 else -1 for o in origin]
    fresh = [i for i, o in enumerate(origin) if o < 0]
    for i, n in zip(fresh, counter.count_many([text[units[i][0]:units[i][1]] for i in fresh])):
        out[i] = n
    return out


def _split_units(doc: Document, strategy: str, units: list[Span], settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    # Each text is counted once per tokenizer: a unit that stays whole keeps its count,
    # only the pieces of a split unit are counted anew.
    text = doc.text
    segmenter = getattr(settings, "segmenter", DEFAULT_SEGMENTER)
    units, n_tokens = merge_small(text, units, ctx.tokens, settings.min_tokens, settings.max_tokens)
    if settings.max_tokens is not None:
        units, n_tokens, _ = _refit(text, units, n_tokens, ctx.tokens, settings.max_tokens, settings.overlap, segmenter)
    handling = ["plain"] * len(units)
    if ctx.model is not None:
        # The model's tokenizer often needs more tokens than cl100k for the same text;
        # anything over the model's window is split again rather than truncated.
        n_model = ctx.model.counter.count_many([text[s:e] for s, e in units])
        overlap = min(settings.overlap, ctx.model.max_tokens // 4)
        units, n_model, origin = _refit(text, units, n_model, ctx.model.counter, ctx.model.max_tokens, overlap, segmenter)
        if any(o < 0 for o in origin):
            handling = ["split" if o < 0 else "plain" for o in origin]
            n_tokens = _carried_counts(text, units, origin, n_tokens, ctx.tokens)
    else:
        n_model = [-1] * len(units)
    exceeds = [ctx.model is not None and n > ctx.model.max_tokens for n in n_model]
    params = chunker_params(strategy, settings, ctx)
    return make_chunks(doc, strategy, params, units, n_tokens, n_model, handling, exceeds)


@CHUNKERS.register("sentence")
def sentence_chunks(doc: Document, settings: ChunkerSettings, ctx: ChunkContext) -> list[Chunk]:
    """One chunk per sentence (``settings.segmenter``), tiny fragments merged, long ones
    cut at tokens."""
    segmenter = getattr(settings, "segmenter", DEFAULT_SEGMENTER)
    return _split_units(doc, "sentence", sentence_spans(doc.text, segmenter=segmenter), settings, ctx)


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
