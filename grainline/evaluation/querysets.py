"""Query sets for your own documents: a versioned JSONL file of questions with gold
character spans into the documents of one chunks table, and where they came from.

File format (``format: grainline-queryset``, ``format_version`` 1)
------------------------------------------------------------------
The first line is the header::

    {"format": "grainline-queryset", "format_version": 1, "version": 2,
     "provenance": {"table": "chunks_...", "table_version": 7, "model_id": "...",
                    "generator": "import|headings|llm", "source": "questions.csv",
                    "llm_model": null, "prompt_hash": null, "created": "2026-...Z"},
     "n_queries": 40, "unresolved": [{"row": "questions.csv:12", "reason": "..."}],
     "matches": {"format": "grainline", "exact": 50, "normalised": 3, "fuzzy": 1, "document": 0,
                 "unresolved": 1, "offsets_checked": 0, "offsets_differ": 0,
                 "by_document": {"a.md": {"exact": 20, ..., "unresolved": 0}, ...}},
     "notes": [{"row": "questions.csv:7", "reason": "evidence[1]: offsets ... found by search instead"}]}

(``matches`` and ``notes`` only in imported sets) then one query per line::

    {"id": "q-3", "text": "...", "spans": [{"doc_id": "a.md", "start": 10, "end": 80, "match": "exact"}],
     "answers": ["..."], "relevant": {"a.md": 1}, "doc_hashes": {"a.md": "..."},
     "match": "exact"}

``version`` counts the sets written to that path: writing over an existing set keeps
the previous one beside it as ``NAME.v<N>.jsonl``. ``doc_hashes`` are the content
hashes of the documents the labels point into; a query whose document changed since
is skipped (with that reason) when the set is evaluated, never scored as a miss."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grainline.errors import TerminalError

from .corpus import StoredDocument
from .datasets import GoldSpan, Query

log = logging.getLogger("grainline.evaluation")

QUERYSET_FORMAT = "grainline-queryset"
QUERYSET_FORMAT_VERSION = 1

# rapidfuzz partial_ratio (0-100) an evidence passage must reach to count as found
# when it matches neither exactly nor up to whitespace and case. 90 accepts a few
# changed characters in a sentence (typos, quotes, a dropped word) but not a
# paraphrase; evidence shorter than FUZZY_MIN_CHARS is never matched fuzzily, since
# a short string finds a near-match in almost any long text.
FUZZY_THRESHOLD = 90.0
FUZZY_MIN_CHARS = 24


class QuerySetError(TerminalError, ValueError):
    """A query set or its input file is unusable; the message names the file (and row)."""


@dataclass
class Unresolved:
    """A row that produced no query, and why."""

    row: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"row": self.row, "reason": self.reason}


@dataclass
class LabelledQuery:
    """A query with its labels and the hashes of the documents they point into."""

    query_id: str
    text: str
    spans: list[GoldSpan] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    relevant: dict[str, int] = field(default_factory=dict)
    doc_hashes: dict[str, str] = field(default_factory=dict)
    match: str = ""  # how the spans were found (the weakest: exact < normalised < fuzzy), or "document"
    matches: list[str] = field(default_factory=list)  # how each span was found

    def as_dict(self) -> dict[str, Any]:
        spans = [{"doc_id": s.doc_id, "start": s.start, "end": s.end} for s in self.spans]
        for span, how in zip(spans, self.matches):
            span["match"] = how
        return {"id": self.query_id, "text": self.text, "spans": spans,
                "answers": self.answers, "relevant": self.relevant, "doc_hashes": self.doc_hashes, "match": self.match}

    def to_query(self) -> Query:
        return Query(self.query_id, self.text, dict(self.relevant), tuple(self.answers), tuple(self.spans))


@dataclass
class QuerySet:
    """A query set in memory: header fields and queries."""

    provenance: dict[str, Any]
    queries: list[LabelledQuery]
    unresolved: list[Unresolved] = field(default_factory=list)
    version: int = 1
    path: str = ""
    # An import's counts of what was matched how, per document (see match_lines), and
    # its notes on rows resolved otherwise than the file said.
    matches: dict[str, Any] = field(default_factory=dict)
    notes: list[Unresolved] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else "queryset"


# --------------------------------------------------------------------------- writing and reading


def provenance(table: str, table_version: int, model_id: str, generator: str, source: str, **extra: Any) -> dict[str, Any]:
    """The provenance header of a new set, stamped now."""
    return {"table": table, "table_version": int(table_version), "model_id": model_id, "generator": generator,
            "source": source, "llm_model": extra.get("llm_model"), "prompt_hash": extra.get("prompt_hash"),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{k: v for k, v in extra.items() if k not in ("llm_model", "prompt_hash")}}


def write_queryset(qs: QuerySet, path: str | Path) -> Path:
    """Write the set; an existing set at ``path`` is kept as ``NAME.v<N>.jsonl`` and
    the new one gets version N+1."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            old = read_header(path)
            prev = int(old.get("version", 1))
        except QuerySetError:
            prev = 0
        if prev:
            path.replace(path.with_name(f"{path.stem}.v{prev}{path.suffix}"))
        qs.version = prev + 1
    header = {"format": QUERYSET_FORMAT, "format_version": QUERYSET_FORMAT_VERSION, "version": qs.version,
              "provenance": qs.provenance, "n_queries": len(qs.queries),
              "unresolved": [u.as_dict() for u in qs.unresolved]}
    if qs.matches:
        header["matches"] = qs.matches
    if qs.notes:
        header["notes"] = [u.as_dict() for u in qs.notes]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, ensure_ascii=False) + "\n")
        for q in qs.queries:
            fh.write(json.dumps(q.as_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    qs.path = str(path)
    return path


def read_header(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
        header = json.loads(first)
    except (OSError, json.JSONDecodeError) as exc:
        raise QuerySetError(f"{path}:1: not a grainline query set ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != QUERYSET_FORMAT:
        raise QuerySetError(f"{path}:1: not a grainline query set (no '\"format\": \"{QUERYSET_FORMAT}\"' header)")
    if int(header.get("format_version", 0)) > QUERYSET_FORMAT_VERSION:
        raise QuerySetError(f"{path}:1: query set format_version {header['format_version']} is newer than this grainline reads")
    return header


def read_queryset(path: str | Path) -> QuerySet:
    """Read a set written by :func:`write_queryset`; bad lines are errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise QuerySetError(f"{path}: query set does not exist")
    header = read_header(path)
    queries: list[LabelledQuery] = []
    with path.open(encoding="utf-8") as fh:
        next(fh)
        for lineno, raw in enumerate(fh, start=2):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                spans = [GoldSpan(str(s["doc_id"]), int(s["start"]), int(s["end"])) for s in obj.get("spans", [])]
                matches = [str(s.get("match", "")) for s in obj.get("spans", [])]
                queries.append(LabelledQuery(str(obj["id"]), str(obj["text"]), spans, list(obj.get("answers", [])),
                                             {str(k): int(v) for k, v in obj.get("relevant", {}).items()},
                                             dict(obj.get("doc_hashes", {})), str(obj.get("match", "")),
                                             matches if any(matches) else []))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise QuerySetError(f"{path}:{lineno}: malformed query line ({type(exc).__name__}: {exc})") from None
    unresolved = [Unresolved(str(u.get("row")), str(u.get("reason"))) for u in header.get("unresolved", [])]
    notes = [Unresolved(str(u.get("row")), str(u.get("reason"))) for u in header.get("notes", [])]
    return QuerySet(dict(header.get("provenance", {})), queries, unresolved, int(header.get("version", 1)), str(path),
                    dict(header.get("matches") or {}), notes)


def _counts(c: dict[str, Any]) -> str:
    parts = [f"{int(c.get(k, 0))} {k}" for k in ("exact", "normalised", "fuzzy")]
    if c.get("document"):
        parts.append(f"{int(c['document'])} document-level")
    return ", ".join(parts) + f"; {int(c.get('unresolved', 0))} unresolved rows"


def match_lines(matches: dict[str, Any]) -> list[str]:
    """An import's counts as lines: what was matched how (passages found exactly, up
    to whitespace and case, fuzzily; document-level labels) and the unresolved rows,
    per document, then in all. Empty for a set that was not imported."""
    if not matches:
        return []
    lines = [f"  {doc}: {_counts(c)}" for doc, c in matches.get("by_document", {}).items()]
    total = f"matches ({matches.get('format', '?')} format): {_counts(matches)}"
    if matches.get("offsets_checked"):
        total += (f"; {matches['offsets_checked']} passages with offsets, "
                  f"{matches.get('offsets_differ', 0)} of them pointing at other text")
    return [total] + lines


# --------------------------------------------------------------------------- evidence -> spans


class _Normalised:
    """A text lower-cased with whitespace runs as one space, mapped back to the
    original offsets, so a passage copied with other line breaks or case is found."""

    def __init__(self, text: str) -> None:
        chars: list[str] = []
        pos: list[int] = []
        prev_space = True
        for i, c in enumerate(text):
            if c.isspace():
                if not prev_space:
                    chars.append(" ")
                    pos.append(i)
                prev_space = True
                continue
            prev_space = False
            for low in c.lower():
                chars.append(low)
                pos.append(i)
        self.text = "".join(chars)
        self.pos = pos

    def span(self, k: int, length: int) -> tuple[int, int]:
        return self.pos[k], self.pos[k + length - 1] + 1


def normalise(text: str) -> str:
    """What the whitespace- and case-insensitive match compares."""
    return _Normalised(text).text.strip()


@dataclass(frozen=True)
class Match:
    doc_id: str
    start: int
    end: int
    how: str  # exact | normalised | fuzzy:<score>
    score: float = 100.0


def find_evidence(evidence: str, doc: StoredDocument, threshold: float = FUZZY_THRESHOLD,
                  norm_cache: dict[str, _Normalised] | None = None) -> Match | float:
    """The evidence's span in ``doc``: exact, then whitespace/case-insensitive, then
    fuzzy (rapidfuzz partial_ratio >= ``threshold``). Returns the best fuzzy score
    reached (a float) when none matches."""
    ev = evidence.strip()
    k = doc.text.find(ev)
    if k >= 0:
        return Match(doc.doc_id, k, k + len(ev), "exact")
    norm = norm_cache.get(doc.doc_id) if norm_cache is not None else None
    if norm is None:
        norm = _Normalised(doc.text)
        if norm_cache is not None:
            norm_cache[doc.doc_id] = norm
    needle = normalise(ev)
    if not needle:
        return 0.0
    k = norm.text.find(needle)
    if k >= 0:
        s, e = norm.span(k, len(needle))
        return Match(doc.doc_id, s, e, "normalised")
    if len(needle) < FUZZY_MIN_CHARS or len(needle) > len(norm.text):
        return 0.0
    from rapidfuzz import fuzz

    res = fuzz.partial_ratio_alignment(needle, norm.text)
    if res is None:
        return 0.0
    if res.score >= threshold and res.dest_end > res.dest_start:
        s, e = norm.span(res.dest_start, res.dest_end - res.dest_start)
        return Match(doc.doc_id, s, e, f"fuzzy:{res.score:.1f}", res.score)
    return float(res.score)


# --------------------------------------------------------------------------- offline: headings

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_headings(text: str) -> list[tuple[int, str, int, int]]:
    """``(level, heading, line start, line end)`` of each ATX heading outside fenced code."""
    out = []
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if _FENCE.match(body):
            in_fence = not in_fence
        elif not in_fence:
            m = _MD_HEADING.match(body)
            if m:
                out.append((len(m.group(1)), m.group(2).strip(), pos, pos + len(body)))
        pos += len(line)
    return out


def html_headings(source: str, text: str) -> list[tuple[int, str, int, int]] | str:
    """Headings of an HTML source file located in its stored text (each is a block of
    its own there), or the reason they cannot be."""
    from urllib.parse import unquote, urlparse

    from selectolax.lexbor import LexborHTMLParser

    p = urlparse(source)
    path = Path(unquote(p.path)) if p.scheme == "file" else Path(source)
    try:
        html = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"HTML source {source} is not readable ({exc.strerror or exc}), its headings are unknown"
    tree = LexborHTMLParser(html)
    out = []
    cursor = 0
    for node in tree.css("h1, h2, h3, h4, h5, h6"):
        heading = " ".join((node.text() or "").split())
        if not heading:
            continue
        k = text.find(heading, cursor)
        if k < 0:
            continue
        out.append((int(node.tag[1]), heading, k, k + len(heading)))
        cursor = k + len(heading)
    return out


def _section_spans(text: str, headings: list[tuple[int, str, int, int]]) -> list[tuple[str, int, int]]:
    """(heading, start, end) of the section under each heading: up to the next
    heading of the same or a higher level, surrounding whitespace trimmed."""
    out = []
    for i, (level, heading, _s, line_end) in enumerate(headings):
        end = len(text)
        for lvl2, _h, s2, _e2 in headings[i + 1:]:
            if lvl2 <= level:
                end = s2
                break
        start = line_end
        while start < end and text[start].isspace():
            start += 1
        e = end
        while e > start and text[e - 1].isspace():
            e -= 1
        if e > start:
            out.append((heading, start, e))
    return out


def heading_queries(docs: dict[str, StoredDocument], progress: Any = None) -> tuple[list[LabelledQuery], list[Unresolved]]:
    """Offline queries from document structure: each Markdown/HTML heading is a query
    whose gold span is the section under it, and each title a query whose gold span is
    its whole document. Headings or titles shared by several documents ("Summary")
    are ambiguous and listed as unresolved; so are documents with neither."""
    cands: list[tuple[str, str, int, int, str]] = []  # (query, doc_id, start, end, kind)
    bad: list[Unresolved] = []
    for n, doc in enumerate(docs.values(), start=1):
        if progress is not None:
            progress(n)
        text = doc.text
        lower = doc.source.lower()
        if lower.endswith((".html", ".htm")):
            heads = html_headings(doc.source, text)
            if isinstance(heads, str):
                bad.append(Unresolved(doc.doc_id, heads))
                heads = []
        elif lower.endswith((".md", ".markdown")):
            heads = markdown_headings(text)
        else:
            heads = []
        title = " ".join(doc.title.split())
        body_start = len(text) - len(text.lstrip())
        body_end = len(text.rstrip())
        if title and body_end > body_start:
            cands.append((title, doc.doc_id, body_start, body_end, "title"))
        for heading, s, e in _section_spans(text, heads):
            if heading.casefold() == title.casefold():
                continue  # the H1 that is the title: its section is the article, asked already
            cands.append((heading, doc.doc_id, s, e, "heading"))
        if not title and not heads:
            bad.append(Unresolved(doc.doc_id, "no title and no Markdown/HTML headings"))
    docs_of: dict[str, set[str]] = {}
    for text, doc_id, *_ in cands:
        docs_of.setdefault(text.casefold(), set()).add(doc_id)
    out: list[LabelledQuery] = []
    seen: set[tuple[str, str]] = set()
    for text, doc_id, s, e, kind in cands:
        key = text.casefold()
        if len(docs_of[key]) > 1:
            if (key, "ambiguous") not in seen:
                seen.add((key, "ambiguous"))
                bad.append(Unresolved(f"{kind} {text!r}", f"ambiguous: heading of {len(docs_of[key])} documents ({', '.join(sorted(docs_of[key]))})"))
            continue
        if (key, doc_id) in seen:
            continue  # the same heading twice in one document: the first section is the gold one
        seen.add((key, doc_id))
        qid = f"{kind}:{doc_id}#{s}"
        out.append(LabelledQuery(qid, text, [GoldSpan(doc_id, s, e)], [], {doc_id: 1},
                                 {doc_id: docs[doc_id].doc_hash}, kind))
    return out, bad
