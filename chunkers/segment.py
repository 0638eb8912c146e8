"""Finding the units chunks are made of: paragraphs (blank-line blocks) and sentences
(pysbd, a rule-based segmenter that knows abbreviations, decimals and quotes).
Every function returns character spans into the text it was given."""

from __future__ import annotations

import re
import threading

Span = tuple[int, int]

_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n\s*")


def trim(text: str, start: int, end: int) -> Span | None:
    """Shrink a span to exclude surrounding whitespace; None if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def paragraph_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Blocks separated by one or more blank lines, trimmed."""
    end = len(text) if end is None else end
    spans: list[Span] = []
    pos = start
    for m in _BLANK_LINE.finditer(text, start, end):
        if (s := trim(text, pos, m.start())) is not None:
            spans.append(s)
        pos = m.end()
    if (s := trim(text, pos, end)) is not None:
        spans.append(s)
    return spans


_local = threading.local()


def _segmenter():
    # pysbd keeps the text being segmented on the Segmenter instance, so one instance
    # shared by threads mixes their sentences up: one per thread.
    seg = getattr(_local, "segmenter", None)
    if seg is None:
        import pysbd

        _enlarge_re_cache()
        seg = _local.segmenter = pysbd.Segmenter(language="en", clean=False)
    return seg


# pysbd passes its rules to re.sub/re.search as pattern strings, a few hundred of them
# plus some per abbreviation, more than the 512 that Python's re module caches (3.11
# evicts the oldest entry when full, so cycling through more evicts each one before its
# next use and every split recompiles them).
_RE_CACHE = 4096


def _enlarge_re_cache() -> None:
    if getattr(re, "_MAXCACHE", _RE_CACHE) < _RE_CACHE:
        re._MAXCACHE = _RE_CACHE  # type: ignore[attr-defined]


# pysbd is slow on very long inputs, so a pathological block (megabytes without a
# blank line) is fed to it in slices cut at whitespace.
_MAX_SEGMENT_CHARS = 20_000

# pysbd ends a sentence at every line break. A break followed by a lower-case letter is
# a hard wrap inside a sentence, so it is shown to the segmenter as a space (same length,
# so offsets stay exact); breaks before headings, list items and capitals still count.
_SOFT_WRAP = re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*[a-z(,;])")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentences of ``text[start:end]``, trimmed; blank lines always end a sentence."""
    end = len(text) if end is None else end
    spans: list[Span] = []
    for ps, pe in paragraph_spans(text, start, end):
        spans.extend(_sentences_in_block(text, ps, pe))
    return spans


def _sentences_in_block(text: str, start: int, end: int) -> list[Span]:
    if end - start > _MAX_SEGMENT_CHARS:
        out: list[Span] = []
        pos = start
        while pos < end:
            cut = min(pos + _MAX_SEGMENT_CHARS, end)
            if cut < end:
                ws = max(text.rfind(" ", pos + _MAX_SEGMENT_CHARS // 2, cut),
                         text.rfind("\n", pos + _MAX_SEGMENT_CHARS // 2, cut))
                cut = ws if ws > pos else cut
            if (s := trim(text, pos, cut)) is not None:
                out.extend(_sentences_in_block(text, *s))
            pos = cut
        return out
    piece = text[start:end]
    shown = _SOFT_WRAP.sub(lambda m: " " * len(m.group(0)), piece)
    # The processor's sentences, located here. pysbd's own segment() locates them by
    # compiling each sentence into a regex and searching the whole text from its start:
    # quadratic in the block, and a new pattern per sentence floods the re cache.
    parts = _segmenter().processor(shown).process()
    spans: list[Span] = []
    # Anything unlocated (pysbd should return pieces of the text) becomes part of the
    # following sentence, so no text is ever lost.
    pos = start
    for part in parts:
        stripped = part.strip()
        if not stripped:
            continue
        found = shown.find(stripped, pos - start)
        if found < 0:
            continue
        found += start
        if (s := trim(text, pos, found + len(stripped))) is not None:
            spans.append(s)
        pos = found + len(stripped)
    if (tail := trim(text, pos, end)) is not None:
        spans.append(tail)
    return spans
