"""Query sets for your own documents: a versioned JSONL file of questions with gold
character spans into the documents of one chunks table, and where they came from.

File format (``format: grainline-queryset``, ``format_version`` 1)
------------------------------------------------------------------
The first line is the header::

    {"format": "grainline-queryset", "format_version": 1, "version": 2,
     "provenance": {"table": "chunks_...", "table_version": 7, "model_id": "...",
                    "generator": "import|headings|llm", "source": "questions.csv",
                    "llm_model": null, "prompt_hash": null, "created": "2026-...Z"},
     "n_queries": 40, "unresolved": [{"row": "questions.csv:12", "reason": "..."}]}

then one query per line::

    {"id": "q-3", "text": "...", "spans": [{"doc_id": "a.md", "start": 10, "end": 80}],
     "answers": ["..."], "relevant": {"a.md": 1}, "doc_hashes": {"a.md": "..."},
     "match": "exact"}

``version`` counts the sets written to that path: writing over an existing set keeps
the previous one beside it as ``NAME.v<N>.jsonl``. ``doc_hashes`` are the content
hashes of the documents the labels point into; a query whose document changed since
is skipped (with that reason) when the set is evaluated, never scored as a miss."""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from grainline.errors import TerminalError

from .corpus import StoredDocument
from .datasets import GoldSpan, Query
from .jsonl import json_lines

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
    match: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.query_id, "text": self.text,
                "spans": [{"doc_id": s.doc_id, "start": s.start, "end": s.end} for s in self.spans],
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
                queries.append(LabelledQuery(str(obj["id"]), str(obj["text"]), spans, list(obj.get("answers", [])),
                                             {str(k): int(v) for k, v in obj.get("relevant", {}).items()},
                                             dict(obj.get("doc_hashes", {})), str(obj.get("match", ""))))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise QuerySetError(f"{path}:{lineno}: malformed query line ({type(exc).__name__}: {exc})") from None
    unresolved = [Unresolved(str(u.get("row")), str(u.get("reason"))) for u in header.get("unresolved", [])]
    return QuerySet(dict(header.get("provenance", {})), queries, unresolved, int(header.get("version", 1)), str(path))


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


# --------------------------------------------------------------------------- import


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for each data row of a CSV, TSV or JSONL file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for line in json_lines(path):
            where = f"{path.name}:{line.number}"
            if line.error is not None:
                yield where, {"__error__": line.error}
            else:
                yield where, line.value if isinstance(line.value, dict) else {"__error__": "not a JSON object"}
        return
    if suffix not in (".csv", ".tsv", ".tab"):
        raise QuerySetError(f"{path}: unknown query file type {suffix!r}; expected .csv, .tsv or .jsonl")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if suffix in (".tsv", ".tab") else ",")
        names = [n.strip().lower() for n in (reader.fieldnames or [])]
        if "question" not in names:
            raise QuerySetError(f"{path}:1: no 'question' column (columns: {', '.join(names) or 'none'}); "
                                "expected question plus any of doc_id, answer, evidence")
        end = 1
        for row in reader:
            # A quoted field may hold line breaks: name the line the record starts on.
            start, end = end + 1, reader.line_num
            yield f"{path.name}:{start}", {str(k).strip().lower(): v for k, v in row.items() if k is not None}


def _field(row: dict[str, Any], name: str) -> str:
    v = row.get(name)
    return "" if v is None else str(v).strip()


def import_queries(path: str | Path, docs: dict[str, StoredDocument], threshold: float = FUZZY_THRESHOLD,
                   progress: Any = None) -> tuple[list[LabelledQuery], list[Unresolved]]:
    """Each row of a CSV/TSV/JSONL file (``question`` plus any of ``doc_id``,
    ``answer``, ``evidence``, optional ``id``) as a labelled query on ``docs``; every
    row that cannot be used is returned with its reason, none is dropped silently.

    ``evidence`` becomes a gold span in its document (or, without ``doc_id``, in every
    document where it is found exactly, else in the best fuzzy match); ``doc_id``
    alone makes a document-level label, ``answer`` an answer string."""
    path = Path(path)
    if not path.is_file():
        raise QuerySetError(f"{path}: query file does not exist")
    out: list[LabelledQuery] = []
    bad: list[Unresolved] = []
    seen: set[str] = set()
    norm_cache: dict[str, _Normalised] = {}
    for n, (where, row) in enumerate(_rows(path), start=1):
        if progress is not None:
            progress(n)
        if "__error__" in row:
            bad.append(Unresolved(where, row["__error__"]))
            continue
        question = _field(row, "question")
        if not question:
            bad.append(Unresolved(where, "empty question"))
            continue
        qid = _field(row, "id") or f"q{n}"
        if qid in seen:
            bad.append(Unresolved(where, f"duplicate id {qid!r}"))
            continue
        doc_id, answer, evidence = _field(row, "doc_id"), _field(row, "answer"), _field(row, "evidence")
        if doc_id and doc_id not in docs:
            # People write the path they know (guide/bees.md); files are stored under
            # their real paths (/data/docs/guide/bees.md): a unique path suffix names one.
            found = [d for d in docs if d.endswith("/" + doc_id.lstrip("/"))]
            if len(found) > 1:
                bad.append(Unresolved(where, f"document {doc_id!r} is ambiguous: {', '.join(sorted(found)[:3])} ..."))
                continue
            if not found:
                bad.append(Unresolved(where, f"document {doc_id!r} is not in the table"))
                continue
            given, doc_id = doc_id, found[0]
        else:
            given = doc_id
        if not (doc_id or answer or evidence):
            bad.append(Unresolved(where, "nothing to score against: give doc_id, answer or evidence"))
            continue
        q = LabelledQuery(qid, question, answers=[answer] if answer else [])
        if evidence:
            matches, best = _resolve(evidence, [docs[doc_id]] if doc_id else list(docs.values()), threshold, norm_cache)
            if not matches:
                scope = f"document {given!r}" if doc_id else "any document"
                bad.append(Unresolved(where, f"evidence not found in {scope} (best fuzzy score {best:.0f} < {threshold:.0f})"))
                continue
            q.spans = [GoldSpan(m.doc_id, m.start, m.end) for m in matches]
            q.match = matches[0].how
            q.relevant = {m.doc_id: 1 for m in matches}
        elif doc_id:
            q.relevant = {doc_id: 1}
        q.doc_hashes = {d: docs[d].doc_hash for d in q.relevant}
        seen.add(qid)
        out.append(q)
    return out, bad


def _resolve(evidence: str, candidates: list[StoredDocument], threshold: float,
             norm_cache: dict[str, _Normalised]) -> tuple[list[Match], float]:
    """Exact matches in every candidate if there are any (a passage duplicated across
    documents is gold in each), else the normalised ones, else the best fuzzy one."""
    found: list[Match] = []
    best = 0.0
    for doc in candidates:
        m = find_evidence(evidence, doc, threshold, norm_cache)
        if isinstance(m, Match):
            found.append(m)
        else:
            best = max(best, m)
    for how in ("exact", "normalised"):
        tier = [m for m in found if m.how == how]
        if tier:
            return tier, 100.0
    if found:
        top = max(found, key=lambda m: (m.score, [-ord(c) for c in m.doc_id]))
        return [top], top.score
    return [], best


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
