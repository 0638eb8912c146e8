"""Turning units (sentences, paragraphs) into chunks that respect token limits:
tiny units merge with a neighbour, oversized ones split at sentences, then tokens."""

from __future__ import annotations

from grainline.tokens import TokenCounter

from .segment import DEFAULT_SEGMENTER, Span, sentence_spans, trim


def merge_small(
    text: str, spans: list[Span], counter: TokenCounter, min_tokens: int, max_tokens: int | None,
    counts: list[int] | None = None,
) -> tuple[list[Span], list[int]]:
    """Join each unit under ``min_tokens`` to the next one (or, for the last, to the
    previous one) as long as the result stays within ``max_tokens``. ``counts`` are the
    units' token counts when known; returns the units and their counts."""
    if counts is None:
        counts = counter.count_many([text[s:e] for s, e in spans])
    if min_tokens <= 0 or len(spans) < 2:
        return list(spans), list(counts)
    limit = max_tokens if max_tokens is not None else float("inf")
    out: list[list[int]] = []  # [start, end, tokens]
    for (s, e), n in zip(spans, counts):
        if out and out[-1][2] < min_tokens:
            joined = counter.count(text[out[-1][0]:e])
            if joined <= limit:
                out[-1][1], out[-1][2] = e, joined
                continue
        out.append([s, e, n])
    if len(out) > 1 and out[-1][2] < min_tokens:
        joined = counter.count(text[out[-2][0]:out[-1][1]])
        if joined <= limit:
            out[-2][1], out[-2][2] = out[-1][1], joined
            out.pop()
    return [(s, e) for s, e, _ in out], [n for _, _, n in out]


def fit(text: str, span: Span, counter: TokenCounter, max_tokens: int, overlap: int,
        segmenter: str = DEFAULT_SEGMENTER, count: int | None = None) -> tuple[list[Span], list[int]]:
    """Split ``span`` into pieces of at most ``max_tokens``: whole sentences (found by
    ``segmenter``) packed together first; a single sentence that is still too long is
    cut at token boundaries. Consecutive pieces share up to ``overlap`` tokens.
    ``count`` is the span's token count when the caller knows it. Returns the pieces
    and their counts: each piece was counted on the way (to check that it fits), so
    the caller need not count it again."""
    s, e = span
    n = count if count is not None else counter.count(text[s:e])
    if n <= max_tokens:
        return [span], [n]
    sentences = sentence_spans(text, s, e, segmenter=segmenter)
    if len(sentences) <= 1:
        return _token_windows(text, span, counter, max_tokens, overlap)
    # The sentences counted in one batch, and each count used twice: to see which
    # sentences fit whole, and to pack them (one call per sentence was most of the
    # time on a long block of short sentences).
    pieces: list[Span] = []
    counts: list[int] = []
    for sent, n in zip(sentences, counter.count_many([text[a:b] for a, b in sentences])):
        if n <= max_tokens:
            pieces.append(sent)
            counts.append(n)
        else:
            parts, part_counts = fit(text, sent, counter, max_tokens, overlap, segmenter, count=n)
            pieces.extend(parts)
            counts.extend(part_counts)
    return _pack(text, pieces, counter, max_tokens, overlap, counts)


def _pack(text: str, pieces: list[Span], counter: TokenCounter, max_tokens: int, overlap: int,
          counts: list[int]) -> tuple[list[Span], list[int]]:
    groups: list[Span] = []
    group_counts: list[int] = []
    i = 0
    n = len(pieces)
    while i < n:
        # Grow the group while the pieces' own counts fit (cheap), check that once on the
        # joined text, then go on piece by piece with exact counts: counting every
        # prefix afresh made a long block quadratic. Same groups as counting every
        # prefix, as a longer text never has fewer tokens. The last count that fitted
        # is the group's.
        j, total = i + 1, counts[i]
        while j < n and total + counts[j] <= max_tokens:
            total += counts[j]
            j += 1
        group_n = counts[i]
        while j > i + 1:
            joined = counter.count(text[pieces[i][0]:pieces[j - 1][1]])
            if joined <= max_tokens:
                group_n = joined
                break
            j -= 1
        while j < n:
            joined = counter.count(text[pieces[i][0]:pieces[j][1]])
            if joined > max_tokens:
                break
            group_n = joined
            j += 1
        groups.append((pieces[i][0], pieces[j - 1][1]))
        group_counts.append(group_n)
        if j >= n:
            break
        # The next group starts with trailing pieces of this one that fit in ``overlap``,
        # but always makes progress past the current group's start.
        k = j
        carried = 0
        while k - 1 > i and carried + counts[k - 1] <= overlap:
            k -= 1
            carried += counts[k]
        i = k
    return groups, group_counts


def _token_windows(text: str, span: Span, counter: TokenCounter, max_tokens: int,
                   overlap: int) -> tuple[list[Span], list[int]]:
    s, e = span
    size = max_tokens
    while size > 1:
        windows = counter.windows(text[s:e], size, min(overlap, size // 2))
        out = [w for ws, we in windows if (w := trim(text, s + ws, s + we)) is not None]
        # A window's text can tokenize to slightly more than its token slice (merges at
        # the cut); shrink the window until every piece fits.
        counts = counter.count_many([text[a:b] for a, b in out])
        if all(n <= max_tokens for n in counts):
            return out, counts
        size -= max(1, size // 16)
    raise ValueError(f"cannot fit span {span} into {max_tokens} tokens")  # pragma: no cover
