"""Evaluation datasets: documents, labelled queries and gold character spans.

Four input formats map onto one in-memory shape (:class:`EvalDataset`):

``squad:PATH``
    A SQuAD v1.1 JSON file. One :class:`Document` per *article* (its paragraph
    contexts joined with a blank line), so the same questions can judge article,
    paragraph and sentence chunks. Answer spans are shifted into article offsets.
``beir:PATH``
    A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.
``scifact:PATH``
    The BEIR SciFact folder plus ``corpus_sentences.jsonl`` and
    ``claims_{dev,train}.jsonl``: the evidence sentences become gold spans.
``spans:PATH``
    The generic format below, which :func:`write_spans_dataset` writes, so any
    dataset (SQuAD, SciFact, your own) can be stored once and reloaded.

Generic spans format (a folder)
-------------------------------
``documents.jsonl``, one JSON object per line::

    {"id": "doc-1", "text": "...", "title": "optional", "metadata": {"optional": "dict"}}

``queries.jsonl``, one JSON object per line::

    {"id": "q-1", "text": "question",
     "spans": [{"doc_id": "doc-1", "start": 10, "end": 42}],   # character offsets, end exclusive
     "answers": ["optional answer strings"],
     "relevant": {"doc-1": 1}}                                  # optional graded relevance

``relevant`` defaults to the documents of the spans with grade 1; grades <= 0 are
dropped (as qrels do). A query with neither spans nor a positive ``relevant`` entry
has no gold labels: it is listed in ``skipped_queries`` and never scored as zero.
Every span must name an existing document and satisfy ``0 <= start < end <= len(text)``.

``dataset.json`` (optional) holds ``{"name", "split", "skipped_queries": [[id, reason]],
"stats"}`` so a written dataset reloads with its name, split and skip list.

Every problem in an input file raises :class:`DatasetError`, whose message names the
file, the line where known, and the reason.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from grainline.documents import Document
from grainline.errors import TerminalError

from .jsonl import json_lines

log = logging.getLogger(__name__)

DATASET_KINDS = ("beir", "scifact", "spans", "squad")
SPANS_FORMAT = "grainline-spans"
SPANS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GoldSpan:
    """A gold character span ``[start, end)`` in ``Document.text`` of ``doc_id``."""

    doc_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Query:
    """A query with its gold labels.

    ``relevant`` maps doc ids to graded relevance (> 0); ``answers`` are answer
    strings (SQuAD), ``spans`` gold character spans; either may be empty.
    """

    query_id: str
    text: str
    relevant: dict[str, int]
    answers: tuple[str, ...] = ()
    spans: tuple[GoldSpan, ...] = ()


@dataclass
class EvalDataset:
    """Documents and labelled queries of one dataset split.

    ``skipped_queries`` lists ``(query_id, reason)`` for queries without gold labels;
    they are excluded from scoring rather than counted as misses. ``stats`` holds
    loader counts worth reporting (span mismatches, unlocated sentences, ...).
    """

    name: str
    split: str
    path: str
    documents: list[Document]
    queries: list[Query]
    skipped_queries: list[tuple[str, str]]
    stats: dict[str, Any] = field(default_factory=dict)

    def documents_by_id(self) -> dict[str, Document]:
        """Documents keyed by ``doc_id``."""
        return {d.doc_id: d for d in self.documents}

    def texts_by_id(self) -> dict[str, str]:
        """Document texts keyed by ``doc_id`` (what the span metrics take)."""
        return {d.doc_id: d.text for d in self.documents}

    def queries_by_id(self) -> dict[str, Query]:
        """Queries keyed by ``query_id``."""
        return {q.query_id: q for q in self.queries}


class DatasetError(TerminalError, ValueError):
    """A dataset file is missing or malformed; the message names the file, the line
    (where known) and the reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------- helpers


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(path, f"{what} does not exist")
    return path


def squad_file(path: Path) -> Path:
    """A SQuAD path may name the JSON file or a folder holding exactly one ``*.json``."""
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.json"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DatasetError(path, f"a SQuAD folder must hold exactly one .json file (found: {names}); give the file's path")
    return found[0]


def squad_json(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The SQuAD file at ``path`` (see :func:`squad_file`) and its parsed JSON, checked
    to hold a ``data`` list; anything else raises :class:`DatasetError`."""
    path = squad_file(_require(Path(path), "SQuAD file"))
    try:
        with path.open(encoding="utf-8") as fh:
            raw = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", exc.lineno) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DatasetError(path, "not a SQuAD file: expected an object with a 'data' list")
    return path, raw


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each non-blank line; anything that is not a
    JSON object is an error naming the line, so a truncated file cannot pass silently."""
    _require(path, "file")
    for line in json_lines(path):
        if line.error is not None:
            raise DatasetError(path, line.error, line.number)
        if not isinstance(line.value, dict):
            raise DatasetError(path, f"expected a JSON object, got {type(line.value).__name__}", line.number)
        yield line.number, line.value


def _get_str(obj: dict[str, Any], key: str, path: Path, lineno: int, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DatasetError(path, f"missing field {key!r}", lineno)
        return ""
    # Ids are sometimes numbers (SciFact's corpus_sentences); compare them as strings.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(path, f"field {key!r} must be a string, got {type(value).__name__}", lineno)
    return str(value)


def _beir_text(title: str, text: str) -> str:
    # Exactly BEIR's SentenceBERT.encode_corpus: (title + " " + text).strip().
    return (title + " " + text).strip()


def _dedupe(items: list[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------- SQuAD


def load_squad(path: str | Path) -> EvalDataset:
    """Loads a SQuAD v1.1 JSON file: one Document per article, one Query per question.

    doc_id is the article title, ``Document.title`` the title with ``_`` as spaces, and
    the text the paragraph contexts joined with ``"\\n\\n"``. Each question is relevant
    to its article (grade 1); answers are deduplicated in order; answer spans are moved
    into article offsets and checked against the answer text. Spans that do not match
    are dropped and counted in ``stats["span_mismatches"]`` rather than failing the load.
    """
    path, raw = squad_json(path)

    documents: list[Document] = []
    queries: list[Query] = []
    seen_docs: set[str] = set()
    seen_queries: set[str] = set()
    mismatches: list[str] = []
    n_spans = 0
    sep = "\n\n"
    for a_i, article in enumerate(raw["data"]):
        where = f"data[{a_i}]"
        try:
            doc_id = str(article["title"])
            paragraphs = article["paragraphs"]
        except (KeyError, TypeError):
            raise DatasetError(path, f"{where}: article needs 'title' and 'paragraphs'") from None
        if doc_id in seen_docs:
            raise DatasetError(path, f"{where}: duplicate article title {doc_id!r}")
        seen_docs.add(doc_id)
        contexts: list[str] = []
        offset = 0
        for p_i, para in enumerate(paragraphs):
            pwhere = f"{where}.paragraphs[{p_i}]"
            try:
                context = para["context"]
                qas = para["qas"]
            except (KeyError, TypeError):
                raise DatasetError(path, f"{pwhere}: paragraph needs 'context' and 'qas'") from None
            if contexts:
                offset += len(sep)
            contexts.append(context)
            for qa in qas:
                try:
                    qid = str(qa["id"])
                    question = qa["question"]
                    answers = qa.get("answers", [])
                except (KeyError, TypeError):
                    raise DatasetError(path, f"{pwhere}: question needs 'id' and 'question'") from None
                if qid in seen_queries:
                    raise DatasetError(path, f"{pwhere}: duplicate question id {qid!r}")
                seen_queries.add(qid)
                texts: list[str] = []
                spans: list[GoldSpan] = []
                for ans in answers:
                    text = ans.get("text", "")
                    start = ans.get("answer_start")
                    texts.append(text)
                    if not isinstance(start, int) or not text:
                        continue
                    n_spans += 1
                    if context[start : start + len(text)] != text:
                        mismatches.append(qid)
                        continue
                    spans.append(GoldSpan(doc_id, offset + start, offset + start + len(text)))
                queries.append(
                    Query(
                        query_id=qid,
                        text=question,
                        relevant={doc_id: 1},
                        answers=_dedupe([t for t in texts if t]),
                        spans=_dedupe(spans),
                    )
                )
            offset += len(context)
        text = sep.join(contexts)
        assert len(text) == offset, "paragraph offsets drifted from the joined text"
        documents.append(
            Document(
                doc_id=doc_id,
                text=text,
                source=str(path),
                title=doc_id.replace("_", " "),
                metadata={"n_paragraphs": len(contexts)},
            )
        )
    if mismatches:
        log.warning("%s: %d answer spans do not match their answer text (dropped)", path, len(mismatches))
    stem = path.stem
    split = "dev" if "dev" in stem else "train" if "train" in stem else stem
    return EvalDataset(
        name=f"squad-{stem}",
        split=split,
        path=str(path),
        documents=documents,
        queries=queries,
        skipped_queries=[],
        stats={"answer_spans": n_spans, "span_mismatches": len(mismatches)},
    )


# --------------------------------------------------------------------------- BEIR


def _load_beir_corpus(folder: Path) -> list[Document]:
    corpus_path = _require(folder / "corpus.jsonl", "BEIR corpus")
    documents: list[Document] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(corpus_path):
        doc_id = _get_str(obj, "_id", corpus_path, lineno)
        if doc_id in seen:
            raise DatasetError(corpus_path, f"duplicate document id {doc_id!r}", lineno)
        seen.add(doc_id)
        title = _get_str(obj, "title", corpus_path, lineno, required=False)
        text = _get_str(obj, "text", corpus_path, lineno, required=False)
        meta = obj.get("metadata")
        documents.append(
            Document(
                doc_id=doc_id,
                text=_beir_text(title, text),
                source=str(corpus_path),
                title=title,
                metadata=meta if isinstance(meta, dict) else {},
            )
        )
    return documents


def _read_qrels(qrels_path: Path, doc_ids: set[str]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Returns (query id -> {doc id: score}, query id -> first line), in file order.
    Every row is checked, so a qrels file out of step with its corpus fails loudly."""
    _require(qrels_path, "qrels file")
    judged: dict[str, dict[str, int]] = {}
    order: dict[str, int] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) != 3:
                raise DatasetError(qrels_path, f"expected 3 tab-separated columns, got {len(row)}", lineno)
            qid, did, score_s = (c.strip() for c in row)
            try:
                score = int(score_s)
            except ValueError:
                raise DatasetError(qrels_path, f"score {score_s!r} is not an integer", lineno) from None
            if did not in doc_ids:
                raise DatasetError(qrels_path, f"corpus-id {did!r} is not in the corpus", lineno)
            if qid not in judged:
                judged[qid] = {}
                order[qid] = lineno
            judged[qid][did] = score
    return judged, order


def _load_beir_queries(folder: Path) -> dict[str, tuple[int, str]]:
    queries_path = _require(folder / "queries.jsonl", "BEIR queries")
    out: dict[str, tuple[int, str]] = {}
    for lineno, obj in iter_jsonl(queries_path):
        qid = _get_str(obj, "_id", queries_path, lineno)
        if qid in out:
            raise DatasetError(queries_path, f"duplicate query id {qid!r}", lineno)
        out[qid] = (lineno, _get_str(obj, "text", queries_path, lineno))
    return out


def load_beir(path: str | Path, split: str = "test") -> EvalDataset:
    """Loads a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    Document text is ``(title + " " + text).strip()``, as BEIR's dense evaluation
    builds it. Only queries in the qrels split are kept; ``relevant`` holds the rows
    with score > 0, and split queries with no positive row are skipped. A qrels row
    naming an unknown document or query is a :class:`DatasetError`.
    """
    folder = _require(Path(path), "BEIR folder")
    documents = _load_beir_corpus(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DatasetError(qrels_path, f"qrels split {split!r} does not exist (available: {', '.join(available) or 'none'})")
    judged, order = _read_qrels(qrels_path, {d.doc_id for d in documents})
    texts = _load_beir_queries(folder)
    queries: list[Query] = []
    skipped: list[tuple[str, str]] = []
    for qid, first_line in order.items():
        if qid not in texts:
            raise DatasetError(qrels_path, f"query-id {qid!r} is not in queries.jsonl", first_line)
        relevant = {d: s for d, s in judged[qid].items() if s > 0}
        if not relevant:
            skipped.append((qid, "no positive judgement"))
            continue
        queries.append(Query(query_id=qid, text=texts[qid][1], relevant=relevant))
    return EvalDataset(
        name=folder.name,
        split=split,
        path=str(folder),
        documents=documents,
        queries=queries,
        skipped_queries=skipped,
        stats={"qrels_rows": sum(len(v) for v in judged.values())},
    )


# --------------------------------------------------------------------------- SciFact


class _SquashedText:
    """A text with its whitespace removed, mapped back to the original offsets, so
    sentences can be found even when their whitespace differs from the corpus text
    (SciFact's sentence lists carry trailing spaces and newlines the corpus lacks)."""

    def __init__(self, text: str) -> None:
        self.positions = [i for i, c in enumerate(text) if not c.isspace()]
        self.squashed = "".join(text[i] for i in self.positions)

    def squash_index(self, char_offset: int) -> int:
        """Index in the squashed text of the first non-space at or after ``char_offset``."""
        return bisect.bisect_left(self.positions, char_offset)

    def find(self, sentence: str, from_index: int) -> tuple[int, int, int] | None:
        """(start, end, squashed end) of ``sentence`` in original offsets, or None."""
        needle = "".join(sentence.split())
        if not needle:
            return None
        k = self.squashed.find(needle, from_index)
        if k < 0:
            return None
        end_k = k + len(needle)
        return self.positions[k], self.positions[end_k - 1] + 1, end_k


def _locate_sentences(doc: Document, sentences: list[str]) -> list[tuple[int, int] | None]:
    """Character span of each sentence in the document body, or None when it cannot be
    found. Search starts after the title and moves forward sentence by sentence, so a
    sentence repeated in the abstract maps to its own occurrence."""
    sq = _SquashedText(doc.text)
    body = len(doc.title) if doc.title and doc.text.startswith(doc.title) else 0
    body_k = sq.squash_index(body)
    cursor = body_k
    out: list[tuple[int, int] | None] = []
    for sentence in sentences:
        hit = sq.find(sentence, cursor) or sq.find(sentence, body_k)
        if hit is None:
            out.append(None)
            continue
        start, end, cursor = hit
        out.append((start, end))
    return out


def load_scifact_spans(path: str | Path, split: str = "dev") -> EvalDataset:
    """Loads SciFact claims with their evidence sentences as gold spans.

    Documents are those of :func:`load_beir` on the same folder. ``split`` is ``dev``
    (``claims_dev.jsonl``, the BEIR test queries; ``test`` is accepted as an alias) or
    ``train``. Evidence sentences (indices into ``corpus_sentences.jsonl`` abstracts)
    are located in the document text after the title, ignoring whitespace differences;
    sentences that cannot be located are counted in ``stats["unlocated_sentences"]``.
    ``relevant`` is the evidence documents (grade 1); claims without evidence are
    skipped.
    """
    folder = _require(Path(path), "SciFact folder")
    canonical = {"dev": "dev", "test": "dev", "train": "train"}.get(split)
    if canonical is None:
        raise DatasetError(folder, f"unknown SciFact split {split!r}; valid: dev (alias test), train")
    claims_path = _require(folder / f"claims_{canonical}.jsonl", "SciFact claims file")
    sentences_path = _require(folder / "corpus_sentences.jsonl", "SciFact sentence file")

    documents = _load_beir_corpus(folder)
    by_id = {d.doc_id: d for d in documents}

    abstracts: dict[str, tuple[int, list[str]]] = {}
    for lineno, obj in iter_jsonl(sentences_path):
        doc_id = _get_str(obj, "doc_id", sentences_path, lineno)
        abstract = obj.get("abstract")
        if not isinstance(abstract, list) or not all(isinstance(s, str) for s in abstract):
            raise DatasetError(sentences_path, "field 'abstract' must be a list of strings", lineno)
        abstracts[doc_id] = (lineno, abstract)

    located_cache: dict[str, list[tuple[int, int] | None]] = {}
    queries: list[Query] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    n_evidence = 0
    unlocated: list[tuple[str, str, int]] = []
    for lineno, obj in iter_jsonl(claims_path):
        qid = _get_str(obj, "id", claims_path, lineno)
        if qid in seen:
            raise DatasetError(claims_path, f"duplicate claim id {qid!r}", lineno)
        seen.add(qid)
        claim = _get_str(obj, "claim", claims_path, lineno)
        evidence = obj.get("evidence") or {}
        if not isinstance(evidence, dict):
            raise DatasetError(claims_path, "field 'evidence' must be an object", lineno)
        if not evidence:
            skipped.append((qid, "no evidence"))
            continue
        relevant: dict[str, int] = {}
        spans: list[GoldSpan] = []
        for raw_doc_id, sets in evidence.items():
            doc_id = str(raw_doc_id)
            if doc_id not in by_id:
                raise DatasetError(claims_path, f"evidence document {doc_id!r} is not in corpus.jsonl", lineno)
            if doc_id not in abstracts:
                raise DatasetError(claims_path, f"evidence document {doc_id!r} is not in {sentences_path.name}", lineno)
            relevant[doc_id] = 1
            _s_line, abstract = abstracts[doc_id]
            if doc_id not in located_cache:
                located_cache[doc_id] = _locate_sentences(by_id[doc_id], abstract)
            located = located_cache[doc_id]
            indices: list[int] = []
            for ev in sets if isinstance(sets, list) else []:
                for idx in ev.get("sentences", []) if isinstance(ev, dict) else []:
                    if not isinstance(idx, int) or not 0 <= idx < len(abstract):
                        raise DatasetError(
                            claims_path,
                            f"evidence sentence {idx!r} is out of range for document {doc_id!r} "
                            f"({len(abstract)} sentences)",
                            lineno,
                        )
                    indices.append(idx)
            for idx in sorted(set(indices)):
                n_evidence += 1
                span = located[idx]
                if span is None:
                    unlocated.append((qid, doc_id, idx))
                    continue
                spans.append(GoldSpan(doc_id, span[0], span[1]))
        queries.append(Query(query_id=qid, text=claim, relevant=relevant, spans=tuple(spans)))
    if unlocated:
        log.warning("%s: %d evidence sentences could not be located in the corpus text", claims_path, len(unlocated))
    return EvalDataset(
        name=f"{folder.name}-spans",
        split=canonical,
        path=str(folder),
        documents=documents,
        queries=queries,
        skipped_queries=skipped,
        stats={"evidence_sentences": n_evidence, "unlocated_sentences": len(unlocated)},
    )


# --------------------------------------------------------------------------- generic spans


def _parse_int(value: Any, what: str, path: Path, lineno: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(path, f"{what} must be an integer, got {value!r}", lineno)
    return value


def load_spans(path: str | Path) -> EvalDataset:
    """Loads the generic spans format described in the module docstring, validating
    every span (document exists, offsets inside its text) and relevance entry."""
    folder = _require(Path(path), "spans dataset folder")
    docs_path = _require(folder / "documents.jsonl", "documents file")
    queries_path = _require(folder / "queries.jsonl", "queries file")
    manifest_path = folder / "dataset.json"
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(manifest_path, f"malformed JSON ({exc.msg})", exc.lineno) from None
        if not isinstance(manifest, dict):
            raise DatasetError(manifest_path, "expected a JSON object")

    documents: list[Document] = []
    texts: dict[str, str] = {}
    for lineno, obj in iter_jsonl(docs_path):
        doc_id = _get_str(obj, "id", docs_path, lineno)
        if doc_id in texts:
            raise DatasetError(docs_path, f"duplicate document id {doc_id!r}", lineno)
        text = obj.get("text")
        if not isinstance(text, str):
            raise DatasetError(docs_path, "field 'text' must be a string", lineno)
        title = _get_str(obj, "title", docs_path, lineno, required=False)
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise DatasetError(docs_path, "field 'metadata' must be an object", lineno)
        texts[doc_id] = text
        documents.append(Document(doc_id=doc_id, text=text, source=str(docs_path), title=title, metadata=meta))

    queries: list[Query] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(queries_path):
        qid = _get_str(obj, "id", queries_path, lineno)
        if qid in seen:
            raise DatasetError(queries_path, f"duplicate query id {qid!r}", lineno)
        seen.add(qid)
        text = _get_str(obj, "text", queries_path, lineno)
        raw_spans = obj.get("spans") or []
        if not isinstance(raw_spans, list):
            raise DatasetError(queries_path, "field 'spans' must be a list", lineno)
        spans: list[GoldSpan] = []
        for sp in raw_spans:
            if not isinstance(sp, dict):
                raise DatasetError(queries_path, "each span must be an object with doc_id, start, end", lineno)
            doc_id = _get_str(sp, "doc_id", queries_path, lineno)
            start = _parse_int(sp.get("start"), "span start", queries_path, lineno)
            end = _parse_int(sp.get("end"), "span end", queries_path, lineno)
            if doc_id not in texts:
                raise DatasetError(queries_path, f"span document {doc_id!r} is not in {docs_path.name}", lineno)
            if not 0 <= start < end <= len(texts[doc_id]):
                raise DatasetError(
                    queries_path,
                    f"span [{start}, {end}) is out of range for document {doc_id!r} "
                    f"(length {len(texts[doc_id])}; need 0 <= start < end <= length)",
                    lineno,
                )
            spans.append(GoldSpan(doc_id, start, end))
        raw_rel = obj.get("relevant")
        if raw_rel is None:
            relevant = {s.doc_id: 1 for s in spans}
        else:
            if not isinstance(raw_rel, dict):
                raise DatasetError(queries_path, "field 'relevant' must be an object {doc_id: grade}", lineno)
            relevant = {}
            for doc_id, grade in raw_rel.items():
                grade = _parse_int(grade, f"relevance grade of {doc_id!r}", queries_path, lineno)
                if doc_id not in texts:
                    raise DatasetError(queries_path, f"relevant document {doc_id!r} is not in {docs_path.name}", lineno)
                if grade > 0:
                    relevant[doc_id] = grade
        answers = obj.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DatasetError(queries_path, "field 'answers' must be a list of strings", lineno)
        if not relevant and not spans:
            skipped.append((qid, "no spans or relevant documents"))
            continue
        queries.append(
            Query(query_id=qid, text=text, relevant=relevant, answers=_dedupe(answers), spans=tuple(spans))
        )

    for entry in manifest.get("skipped_queries", []):
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and str(entry[0]) not in seen:
            skipped.append((str(entry[0]), str(entry[1])))
    stats = manifest.get("stats") if isinstance(manifest.get("stats"), dict) else {}
    return EvalDataset(
        name=str(manifest.get("name") or folder.name),
        split=str(manifest.get("split") or ""),
        path=str(folder),
        documents=documents,
        queries=queries,
        skipped_queries=skipped,
        stats=dict(stats),
    )


def write_spans_dataset(ds: EvalDataset, folder: str | Path) -> None:
    """Writes ``ds`` in the generic spans format (``documents.jsonl``,
    ``queries.jsonl``, ``dataset.json``) so :func:`load_spans` reads it back equal.

    ``relevant`` is always written, so queries whose relevant documents differ from
    their span documents (e.g. SQuAD questions with a dropped span) round-trip exactly.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "documents.jsonl").open("w", encoding="utf-8") as fh:
        for d in ds.documents:
            row: dict[str, Any] = {"id": d.doc_id, "text": d.text}
            if d.title:
                row["title"] = d.title
            if d.metadata:
                row["metadata"] = d.metadata
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in ds.queries:
            row = {
                "id": q.query_id,
                "text": q.text,
                "spans": [{"doc_id": s.doc_id, "start": s.start, "end": s.end} for s in q.spans],
                "relevant": dict(q.relevant),
            }
            if q.answers:
                row["answers"] = list(q.answers)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    manifest = {
        "format": SPANS_FORMAT,
        "version": SPANS_FORMAT_VERSION,
        "name": ds.name,
        "split": ds.split,
        "source": ds.path,
        "skipped_queries": [list(s) for s in ds.skipped_queries],
        "stats": ds.stats,
    }
    (folder / "dataset.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- dispatch


def load_dataset(spec: str, split: str | None = None) -> EvalDataset:
    """Loads ``"KIND:PATH"`` where KIND is one of ``beir``, ``scifact``, ``spans``,
    ``squad``. ``split`` picks the qrels split (beir, default ``test``) or the claims
    file (scifact, default ``dev``); squad and spans take their split from the file."""
    kind, sep, raw_path = spec.partition(":")
    if not sep or kind not in DATASET_KINDS:
        raise DatasetError(spec, f"unknown dataset kind {kind!r}; expected KIND:PATH with KIND one of {', '.join(DATASET_KINDS)}")
    if not raw_path:
        raise DatasetError(spec, "no path after the dataset kind")
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise DatasetError(path, f"{kind} dataset path does not exist")
    if kind == "squad":
        return load_squad(path)
    if kind == "beir":
        return load_beir(path, split or "test")
    if kind == "scifact":
        return load_scifact_spans(path, split or "dev")
    return load_spans(path)
