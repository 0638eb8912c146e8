"""Questions from a file (any of :mod:`grainline.evaluation.queryformats`) resolved
against the stored documents of a chunks table: each evidence passage becomes a gold
span (checked at its offsets first when the file gives them, else found exactly, up
to whitespace and case, or fuzzily), document labels become relevance labels, and
every row that cannot be used is returned with its reason. A question counts only
when all its passages are found; one found in part is reported with the passages
that failed and why. The counts of what was matched how, per document, go with the
set (its header's ``matches``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .corpus import StoredDocument
from .datasets import GoldSpan
from .queryformats import Passage, SourceRow, read_rows
from .querysets import (FUZZY_MIN_CHARS, FUZZY_THRESHOLD, LabelledQuery, Match, QuerySetError, Unresolved, _Normalised,
                        find_evidence, normalise)

TIERS = ("exact", "normalised", "fuzzy")
NO_DOCUMENT = "(any document)"


@dataclass
class ImportResult:
    """What an import made: the queries, the unusable rows, notes on rows resolved
    another way than the file said (offsets that point elsewhere), the counts."""

    fmt: str
    queries: list[LabelledQuery] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)
    notes: list[Unresolved] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def tier(how: str) -> str:
    return how.split(":", 1)[0]


def resolve_doc(given: str, docs: dict[str, StoredDocument]) -> tuple[str | None, str | None]:
    """(stored doc id, None) or (None, reason): the id as stored, or the one stored
    path it is the end of (people write guide/bees.md; files are stored under their
    real paths)."""
    if given in docs:
        return given, None
    found = sorted(d for d in docs if d.endswith("/" + given.lstrip("/")))
    if len(found) > 1:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        return None, f"document {given!r} is ambiguous: it matches {len(found)} stored documents ({shown}); give more of its path"
    if not found:
        return None, f"document {given!r} is not in the table"
    return found[0], None


def _search(evidence: str, candidates: list[StoredDocument], threshold: float,
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
        hits = [m for m in found if m.how == how]
        if hits:
            return hits, 100.0
    if found:
        top = max(found, key=lambda m: (m.score, [-ord(c) for c in m.doc_id]))
        return [top], top.score
    return [], best


def _at_offsets(p: Passage, candidates: list[StoredDocument]) -> tuple[list[Match], str]:
    """Matches where the stored text at the passage's offsets is the passage, or why not."""
    assert p.start is not None and p.end is not None
    hits, outside = [], []
    for doc in candidates:
        if p.end > len(doc.text):
            outside.append(doc)
            continue
        at = doc.text[p.start:p.end]
        if at == p.text or at.strip() == p.text.strip():
            lead = len(at) - len(at.lstrip())
            hits.append(Match(doc.doc_id, p.start + lead, p.start + lead + len(at.strip()), "exact"))
    if hits:
        return hits, ""
    if len(candidates) == 1 and outside:
        return [], (f"offsets {p.start}-{p.end} are outside the stored document "
                    f"({len(candidates[0].text)} characters)")
    return [], f"offsets {p.start}-{p.end} point at other text in the stored document{'s' if len(candidates) > 1 else ''}"


def resolve_passage(p: Passage, candidates: list[StoredDocument], scope: str, threshold: float,
                    norm_cache: dict[str, _Normalised]) -> tuple[list[Match], str, str]:
    """(matches, note, failure): the passage's spans, a note when its offsets did not
    hold and search found it, or why it was not found."""
    note = ""
    if p.start is not None:
        hits, why = _at_offsets(p, candidates)
        if hits:
            return hits, "", ""
        note = why
    matches, best = _search(p.text, candidates, threshold, norm_cache)
    if matches:
        if note:
            m = matches[0]
            note = f"{p.label}: {note}; found by search instead ({tier(m.how)}, at {m.start}-{m.end})"
        return matches, note, ""
    prefix = f"{p.label} ({note}) " if note else f"{p.label} "
    length = len(normalise(p.text))
    if length < FUZZY_MIN_CHARS:
        return [], "", (f"{prefix}not found in {scope} exactly or up to whitespace and case, and at {length} characters "
                        f"it is shorter than the fuzzy minimum ({FUZZY_MIN_CHARS})")
    return [], "", f"{prefix}not found in {scope} (best fuzzy score {best:.0f} < {threshold:.0f})"


def import_queries(path: str | Path, docs: dict[str, StoredDocument], threshold: float = FUZZY_THRESHOLD,
                   progress: Any = None, fmt: str | None = None, split: str | None = None) -> ImportResult:
    """Each question of the file as a labelled query on ``docs``; every row that
    cannot be used is listed with its reason, none is dropped silently.

    A passage becomes a gold span in its document (or, without ``doc_id``, in every
    document where it is found exactly, else in the best fuzzy match); ``doc_id`` or
    a BEIR judgement alone makes a document-level label, ``answer`` an answer string."""
    name, rows = read_rows(path, fmt, split)
    res = ImportResult(name)
    seen: set[str] = set()
    norm_cache: dict[str, _Normalised] = {}
    by_doc: dict[str, dict[str, int]] = {}
    offsets = {"offsets_checked": 0, "offsets_differ": 0}

    def count(doc: str, what: str, n: int = 1) -> None:
        c = by_doc.setdefault(doc, {"exact": 0, "normalised": 0, "fuzzy": 0, "document": 0, "unresolved": 0})
        c[what] += n

    def refuse(row: SourceRow, reason: str, doc: str = "") -> None:
        res.unresolved.append(Unresolved(row.where, reason))
        count(doc or NO_DOCUMENT, "unresolved")

    for n, row in enumerate(rows, start=1):
        if progress is not None:
            progress(n)
        doc_id = ""
        if row.doc_id:
            got, why = resolve_doc(row.doc_id, docs)
            if row.error or why:  # an unusable row still counts against the document it names
                refuse(row, row.error or why or "", got or row.doc_id)
                continue
            doc_id = got or ""
        if row.error:
            refuse(row, row.error)
            continue
        if not row.question:
            refuse(row, "empty question", doc_id)
            continue
        qid = row.qid or f"q{n}"
        if qid in seen:
            refuse(row, f"duplicate id {qid!r}", doc_id)
            continue
        if not (doc_id or row.answers or row.passages or row.judged):
            refuse(row, "nothing to score against: give doc_id, answer or evidence")
            continue
        q = LabelledQuery(qid, row.question, answers=list(row.answers))
        if row.passages:
            candidates = [docs[doc_id]] if doc_id else list(docs.values())
            scope = f"document {row.doc_id!r}" if doc_id else "any document"
            spans: list[Match] = []
            failures: list[str] = []
            notes: list[str] = []
            for p in row.passages:
                matches, note, failure = resolve_passage(p, candidates, scope, threshold, norm_cache)
                if p.start is not None:
                    offsets["offsets_checked"] += 1
                    offsets["offsets_differ"] += bool(note or failure)
                spans.extend(matches)
                notes += [note] if note else []
                failures += [failure] if failure else []
            if failures:
                k = len(row.passages) - len(failures)
                head = "" if len(row.passages) == 1 else (
                    f"partly resolved, {k} of {len(row.passages)} passages found; " if k else
                    f"none of its {len(row.passages)} passages found; ")
                refuse(row, head + "; ".join(failures), doc_id)
                continue
            res.notes += [Unresolved(row.where, x) for x in notes]
            unique = list(dict.fromkeys(spans))
            q.spans = [GoldSpan(m.doc_id, m.start, m.end) for m in unique]
            q.matches = [m.how for m in unique]
            q.match = max((m.how for m in unique), key=lambda h: TIERS.index(tier(h)))
            q.relevant = {m.doc_id: 1 for m in unique}
            for m in unique:
                count(m.doc_id, tier(m.how))
        elif row.judged:
            relevant: dict[str, int] = {}
            missing = []
            for given, grade in row.judged.items():
                got, why = resolve_doc(given, docs)
                if why:
                    missing.append(f"corpus-id {why.removeprefix('document ')}")
                else:
                    relevant[got or given] = grade
            if missing:
                head = f"{len(relevant)} of {len(row.judged)} judged documents found; " if relevant else ""
                refuse(row, head + "; ".join(missing))
                continue
            q.relevant = relevant
            q.match = "document"
            for d in relevant:
                count(d, "document")
        elif doc_id:
            q.relevant = {doc_id: 1}
            q.match = "document"
            count(doc_id, "document")
        q.doc_hashes = {d: docs[d].doc_hash for d in q.relevant}
        seen.add(qid)
        res.queries.append(q)
    totals = {k: sum(c[k] for c in by_doc.values()) for k in ("exact", "normalised", "fuzzy", "document", "unresolved")}
    res.report = {"format": name, **totals, **offsets, "by_document": dict(sorted(by_doc.items()))}
    if not res.queries and not res.unresolved:
        raise QuerySetError(f"{path}: holds no questions")
    return res
