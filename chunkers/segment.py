"""Finding the units chunks are made of: paragraphs (blank-line blocks) and sentences.

Sentences come from a segmenter of the ``SEGMENTERS`` registry: ``blingfire`` (the
default: a compiled finite-state segmenter, tens of times faster) or ``pysbd`` (rule
based, slower, kept as a named option; it was the only one before). Both see the same
text: blank lines and hard line breaks always end a sentence, soft wraps never do.
Every function returns character spans into the text it was given."""

from __future__ import annotations

import re
import threading
from typing import Callable

from grainline.registry import Registry

Span = tuple[int, int]

# A segmenter takes one line of text (no line breaks) and returns the spans of its
# sentences in it, in order; text between them (spaces) may be left out.
Segmenter = Callable[[str], list[Span]]
SEGMENTERS: Registry[Segmenter] = Registry("sentence segmenter")
DEFAULT_SEGMENTER = "blingfire"

# A blank line, whatever the line ends (readers turn CRLF and CR into LF; text passed
# in directly may still have them).
_BLANK_LINE = re.compile(r"(?>\r\n|\n|\r)[ \t\f\v]*(?>\r\n|\n|\r)\s*")


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


def _pysbd():
    # pysbd keeps the text being segmented on the Segmenter instance, so one instance
    # shared by threads mixes their sentences up: one per thread.
    seg = getattr(_local, "pysbd", None)
    if seg is None:
        import pysbd

        _enlarge_re_cache()
        seg = _local.pysbd = pysbd.Segmenter(language="en", clean=False)
    return seg


# pysbd passes its rules to re.sub/re.search as pattern strings, a few hundred of them
# plus some per abbreviation, more than the 512 that Python's re module caches (3.11
# evicts the oldest entry when full, so cycling through more evicts each one before its
# next use and every split recompiles them).
_RE_CACHE = 4096


def _enlarge_re_cache() -> None:
    if getattr(re, "_MAXCACHE", _RE_CACHE) < _RE_CACHE:
        re._MAXCACHE = _RE_CACHE  # type: ignore[attr-defined]


@SEGMENTERS.register("pysbd")
def pysbd_sentences(line: str) -> list[Span]:
    """pysbd's sentences of ``line``, located in it. pysbd's own ``segment()`` locates
    them by compiling each sentence into a regex and searching the whole text from its
    start: quadratic, and a new pattern per sentence floods the re cache."""
    spans: list[Span] = []
    pos = 0
    for part in _pysbd().processor(line).process():
        stripped = part.strip()
        if not stripped:
            continue
        found = line.find(stripped, pos)
        if found < 0:  # not a piece of the text: the caller keeps it in the next sentence
            continue
        spans.append((found, found + len(stripped)))
        pos = found + len(stripped)
    return spans


@SEGMENTERS.register("blingfire")
def blingfire_sentences(line: str) -> list[Span]:
    """blingfire's sentences of ``line``. Its C function is called directly: the Python
    wrapper maps byte offsets to characters in a per-byte Python loop that takes most of
    the time; here that map is one numpy pass, and none at all for ASCII text."""
    import numpy as np

    fn = _blingfire_fn()
    data = line.encode("utf-8")
    n = len(data)
    if n == 0:
        return []
    # Buffers as blingfire's own wrapper sizes them: the output text and one offset
    # pair per output byte (it may write that many).
    out = np.zeros(2 * n, dtype=np.uint8)
    starts = np.empty(2 * n, dtype=np.int32)
    ends = np.empty(2 * n, dtype=np.int32)
    got = fn(data, n, out.ctypes.data, starts.ctypes.data, ends.ctypes.data, len(out))
    if got <= 0 or got > len(out):
        return [(0, len(line))]  # blingfire refused the text: one sentence, nothing lost
    k = int(np.count_nonzero(out[:got] == 10)) + 1  # sentences are '\n'-separated
    s, e = starts[:k], ends[:k] + 1  # blingfire's ends are inclusive
    if n != len(line):
        # char index of each byte: count the bytes that start a character before it
        first = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80
        char_at = np.concatenate(([0], np.cumsum(first)))
        s, e = char_at[s], char_at[e]
    spans: list[Span] = []
    for a, b in zip(s.tolist(), e.tolist()):
        # A sentence does not start in lower case: blingfire ends one after a quoted
        # question or exclamation ('"Is it?" she asked.'), which is one sentence.
        if spans and line[a:a + 1].islower():
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def _blingfire_fn():
    fn = getattr(_local, "blingfire", None)
    if fn is None:
        import ctypes

        try:
            import blingfire
        except ImportError as exc:  # pragma: no cover - a dependency
            raise ImportError("the blingfire segmenter needs blingfire: pip install blingfire") from exc
        # A function object of our own over blingfire's library: typing the one its
        # wrapper uses would change how that wrapper's calls are converted.
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_int)
        fn = _local.blingfire = proto(("TextToSentencesWithOffsets", blingfire.blingfire))
    return fn


# Segmenters are slow or memory-hungry on very long inputs, so a pathological block
# (megabytes without a blank line) is fed to them in slices cut at whitespace.
_MAX_SEGMENT_CHARS = 20_000

# A line break followed by a lower-case letter is a hard wrap inside a sentence, so it
# is shown to the segmenter as a space (same length, so offsets stay exact); breaks
# before headings, list items and capitals end a sentence.
_SOFT_WRAP = re.compile(r"(?<=\S)[ \t]*(?>\r\n|\n|\r)(?=[ \t]*[a-z(,;])")
_LINE_BREAK = re.compile(r"[\r\n]+")


def sentence_spans(text: str, start: int = 0, end: int | None = None, segmenter: str = DEFAULT_SEGMENTER) -> list[Span]:
    """Sentences of ``text[start:end]``, trimmed; blank lines always end a sentence."""
    end = len(text) if end is None else end
    fn = SEGMENTERS.get(segmenter)
    spans: list[Span] = []
    for ps, pe in paragraph_spans(text, start, end):
        spans.extend(_sentences_in_block(text, ps, pe, fn))
    return spans


def _sentences_in_block(text: str, start: int, end: int, fn: Segmenter) -> list[Span]:
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
                out.extend(_sentences_in_block(text, *s, fn))
            pos = cut
        return out
    shown = text[start:end]
    if "\n" in shown or "\r" in shown:  # most blocks are one line: no regex pass
        shown = _SOFT_WRAP.sub(lambda m: " " * len(m.group(0)), shown)
    spans: list[Span] = []
    # Anything a segmenter leaves out becomes part of the following sentence, and the
    # rest of a line after its last sentence part of that sentence: no text is lost.
    pos = start
    line_start = 0
    for m in [*_LINE_BREAK.finditer(shown), None]:
        line_end = m.start() if m is not None else len(shown)
        line = shown[line_start:line_end]
        found = fn(line) if line.strip() else []
        for i, (_, e) in enumerate(found):
            e = line_end - line_start if i == len(found) - 1 else e
            if (s := trim(text, pos, start + line_start + e)) is not None:
                spans.append(s)
            pos = start + line_start + e
        if m is not None:
            line_start = m.end()
    if (tail := trim(text, pos, end)) is not None:
        spans.append(tail)
    return spans
