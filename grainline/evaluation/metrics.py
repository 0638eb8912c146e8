"""Retrieval metrics over ranked chunk hits, for comparing chunk granularities.

Three families, each per query:

* document metrics (nDCG@10, Recall@1/5/20/100, MRR@10) after mapping chunk hits to
  documents by their best chunk, computed with ``pytrec_eval`` (trec_eval semantics);
* answer containment (SQuAD): does the answer string occur in the top-k chunks, or in
  the first B tokens of the retrieved text, so that long chunks cannot win just by
  returning more text;
* span overlap: token-level recall / precision / IoU between the retrieved character
  spans and the gold spans.

Rank order is the order of the hit list, not the scores: retrievers may return ties
or scores on different scales, and what the user sees is the list.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

import numpy as np
import pytrec_eval

from grainline.evaluation.datasets import Query
from grainline.tokens import tiktoken_encoding

DOC_METRICS = ("ndcg@10", "recall@1", "recall@5", "recall@20", "recall@100", "mrr@10")
_TREC_NAMES = {
    "ndcg_cut_10": "ndcg@10",
    "recall_1": "recall@1",
    "recall_5": "recall@5",
    "recall_20": "recall@20",
    "recall_100": "recall@100",
}


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: ``text`` is ``documents[doc_id][start:end]``."""

    doc_id: str
    start: int
    end: int
    text: str
    score: float


# --------------------------------------------------------------------------- documents


def doc_ranking(hits: Sequence[Hit]) -> list[tuple[str, float]]:
    """Documents in rank order, each represented by its best (first-ranked) chunk:
    ``(doc_id, that chunk's score)``; later chunks of the same document are dropped."""
    seen: set[str] = set()
    out: list[tuple[str, float]] = []
    for h in hits:
        if h.doc_id not in seen:
            seen.add(h.doc_id)
            out.append((h.doc_id, h.score))
    return out


def document_metrics(
    runs: Mapping[str, Sequence[Hit]], queries: Mapping[str, Query]
) -> dict[str, dict[str, float]]:
    """nDCG@10, Recall@1/5/20/100 and MRR@10 per query, with ``pytrec_eval``.

    Every query in ``queries`` with relevance labels is scored; one absent from
    ``runs`` or with no hits scores 0 on everything (it has labels and found nothing),
    so pass only the queries you evaluated. Run entries for unknown or unlabelled
    queries are ignored.
    """
    qrels = {qid: {str(d): int(g) for d, g in q.relevant.items() if g > 0} for qid, q in queries.items()}
    qrels = {qid: rel for qid, rel in qrels.items() if rel}
    run: dict[str, dict[str, float]] = {}
    run10: dict[str, dict[str, float]] = {}
    for qid in qrels:
        ranking = doc_ranking(runs.get(qid, ()))
        if not ranking:
            continue
        # pytrec_eval re-sorts by score and breaks ties by doc id, descending; strictly
        # decreasing scores make it score the list order instead.
        n = len(ranking)
        scored = {str(doc_id): float(n - rank) for rank, (doc_id, _s) in enumerate(ranking)}
        run[qid] = scored
        run10[qid] = dict(list(scored.items())[:10])

    out = {qid: dict.fromkeys(DOC_METRICS, 0.0) for qid in qrels}
    if run:
        main = pytrec_eval.RelevanceEvaluator(
            {q: qrels[q] for q in run}, {"ndcg_cut.10", "recall.1,5,20,100"}
        ).evaluate(run)
        # recip_rank has no cutoff in trec_eval, so MRR@10 is recip_rank on the top 10.
        rr = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in run10}, {"recip_rank"}).evaluate(run10)
        for qid, values in main.items():
            row = out[qid]
            for trec_name, name in _TREC_NAMES.items():
                row[name] = float(values[trec_name])
            row["mrr@10"] = float(rr[qid]["recip_rank"])
    return out


# --------------------------------------------------------------------------- answers

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower-case, drop ASCII punctuation, drop the
    articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCT_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@lru_cache(maxsize=65536)
def _normalized_padded(text: str) -> str:
    # Chunks recur across queries (article chunks in every top 20); normalising
    # each once is what keeps 10k queries x 9 configurations fast.
    return f" {normalize_answer(text)} "


def _contains(padded_text: str, padded_answers: Sequence[str]) -> bool:
    # Padding with spaces makes containment whole-word, as DPR's has_answer does: the
    # answer "1" must not match inside "1990".
    return any(a in padded_text for a in padded_answers)


def _budget_tokens(texts: Sequence[str], budget: int, sep: str = "\n\n") -> list[int]:
    """The first ``budget`` tiktoken tokens of ``sep.join(texts)``.

    Only a prefix of the joined text is tokenised (growing until it yields more tokens
    than needed), because a top 20 of whole articles is a megabyte of text while the
    budget needs a few kilobytes. The margin of extra tokens keeps the cut away from
    the prefix end, where tokenisation could differ from that of the full text.
    """
    if budget <= 0 or not texts:
        return []
    enc = tiktoken_encoding()
    margin = 16
    limit = budget * 5 + 64  # ~4.5 characters per token in English prose
    while True:
        parts: list[str] = []
        length = 0
        for i, t in enumerate(texts):
            if i:
                parts.append(sep)
                length += len(sep)
            parts.append(t)
            length += len(t)
            if length > limit:
                break
        joined = "".join(parts)
        complete = length <= limit
        tokens = enc.encode_ordinary(joined if complete else joined[:limit])
        if complete or len(tokens) >= budget + margin:
            return tokens[:budget]
        limit *= 4


def token_budget_prefix(texts: Sequence[str], budget: int, sep: str = "\n\n") -> str:
    """The first ``budget`` tiktoken tokens of ``sep.join(texts)``, decoded."""
    return tiktoken_encoding().decode(_budget_tokens(texts, budget, sep))


def answer_metrics(
    hits: Sequence[Hit],
    query: Query,
    ks: Iterable[int] = (1, 5, 20),
    budgets: Iterable[int] = (100, 500),
) -> dict[str, float]:
    """Answer containment for a query with answer strings (else ``{}``).

    ``answer@k`` is 1.0 when a gold answer occurs in one of the top-k chunks;
    ``answer@{B}tok`` when it occurs in the first B tiktoken tokens of the ranked
    chunk texts joined with ``"\\n\\n"``. Both sides use SQuAD normalisation, and the
    match is on whole normalised words.
    """
    answers = [normalize_answer(a) for a in query.answers]
    padded = [f" {a} " for a in dict.fromkeys(answers) if a]
    if not padded:
        return {}
    out: dict[str, float] = {}
    ks = sorted(set(ks))
    # Rank of the first chunk holding an answer answers every k at once.
    first = None
    for rank, h in enumerate(hits[: max(ks, default=0)]):
        if _contains(_normalized_padded(h.text), padded):
            first = rank
            break
    for k in ks:
        out[f"answer@{k}"] = 1.0 if first is not None and first < k else 0.0
    budgets = sorted(set(budgets))
    # One tokenisation serves every budget: a shorter budget is a prefix of a longer.
    tokens = _budget_tokens([h.text for h in hits], max(budgets, default=0))
    enc = tiktoken_encoding()
    for b in budgets:
        prefix = enc.decode(tokens[:b])
        out[f"answer@{b}tok"] = 1.0 if _contains(f" {normalize_answer(prefix)} ", padded) else 0.0
    return out


# --------------------------------------------------------------------------- spans


@dataclass(frozen=True)
class _DocTokens:
    starts: np.ndarray  # where each token belongs: its first non-whitespace character
    ends: np.ndarray  # character end of each token

    @property
    def n(self) -> int:
        return len(self.starts)


@lru_cache(maxsize=8192)
def _doc_tokens(doc_id: str, text: str) -> _DocTokens:
    # Keyed by text as well as id: two datasets in one process may reuse an id. The
    # hash of a str is cached on the object, so the key costs nothing after first use.
    del doc_id
    enc = tiktoken_encoding()
    tokens = enc.encode_ordinary(text)
    _decoded, offsets = enc.decode_with_offsets(tokens)
    n = len(offsets)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    for i, off in enumerate(offsets):
        end = offsets[i + 1] if i + 1 < n else len(text)
        seg = text[off:end]
        stripped = len(seg) - len(seg.lstrip())
        # cl100k tokens carry their leading space (" Denver"); placing a token at its
        # first visible character puts it inside a span that starts at the word, so
        # a one-word answer span holds one token rather than none.
        starts[i] = off + stripped if stripped < len(seg) else off
        ends[i] = end
    # Tokens that split one multi-byte character share an offset; keep the order.
    np.maximum.accumulate(starts, out=starts)
    return _DocTokens(starts, ends)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _snap(toks: _DocTokens, intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Moves an interval start that falls inside a token back to that token's start,
    so an interval always holds the token its first character belongs to (an answer
    that begins mid-word still counts that word)."""
    if not toks.n:
        return intervals
    out = []
    for s, e in intervals:
        i = int(np.searchsorted(toks.starts, s, side="right")) - 1
        if i >= 0 and toks.starts[i] < s < toks.ends[i]:
            s = int(toks.starts[i])
        out.append((s, e))
    return out


def _count(toks: _DocTokens, merged: list[tuple[int, int]]) -> int:
    if not merged:
        return 0
    arr = np.asarray(merged, dtype=np.int64)
    lo = np.searchsorted(toks.starts, arr[:, 0], side="left")
    hi = np.searchsorted(toks.starts, arr[:, 1], side="left")
    return int((hi - lo).sum())


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        s = max(a[i][0], b[j][0])
        e = min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def span_metrics(
    hits: Sequence[Hit], query: Query, documents: Mapping[str, str], k: int = 5
) -> dict[str, float]:
    """Token-level overlap between the top-k chunks and the gold spans (else ``{}``).

    Per document, the union of retrieved character spans R and of gold spans G are
    compared in tiktoken tokens of the document text; counts are summed over
    documents. A token belongs to an interval set when its first non-whitespace
    character lies inside it (or the set starts inside the token). Returns
    ``span_recall@k`` = |R∩G|/|G|, ``span_precision@k`` = |R∩G|/|R| (0 when nothing
    was retrieved) and ``span_iou@k`` = |R∩G|/|R∪G|: the *merged* variants, where
    overlapping retrieved chunks count their shared tokens once.

    Also the *summed* variants ``span_precision_summed@k`` = |R∩G| / Σ|r| and
    ``span_iou_summed@k`` = |R∩G| / (Σ|r| + |G| - |R∩G|), with Σ|r| the sum of the
    retrieved chunks' own token counts, as the widely cited chunking benchmark
    (Chroma's) counts them: overlapping or duplicated chunks are paid for each time.
    """
    if not query.spans:
        return {}
    gold: dict[str, list[tuple[int, int]]] = {}
    for s in query.spans:
        gold.setdefault(s.doc_id, []).append((s.start, s.end))
    got: dict[str, list[tuple[int, int]]] = {}
    for h in hits[:k]:
        got.setdefault(h.doc_id, []).append((h.start, h.end))

    n_r = n_g = n_i = n_sum = 0
    for doc_id in gold.keys() | got.keys():
        try:
            text = documents[doc_id]
        except KeyError:
            raise KeyError(f"span_metrics: document {doc_id!r} is not in the documents given") from None
        toks = _doc_tokens(doc_id, text)
        g = _merge(_snap(toks, gold.get(doc_id, [])))
        snapped = _snap(toks, got.get(doc_id, []))
        r = _merge(snapped)
        n_sum += sum(_count(toks, [iv]) for iv in snapped if iv[1] > iv[0])
        n_g += _count(toks, g)
        n_r += _count(toks, r)
        if g and r:
            n_i += _count(toks, _intersect(g, r))
    if n_g == 0:
        return {}
    union = n_r + n_g - n_i
    return {
        f"span_recall@{k}": n_i / n_g,
        f"span_precision@{k}": n_i / n_r if n_r else 0.0,
        f"span_iou@{k}": n_i / union if union else 0.0,
        f"span_precision_summed@{k}": n_i / n_sum if n_sum else 0.0,
        f"span_iou_summed@{k}": n_i / (n_sum + n_g - n_i) if (n_sum + n_g - n_i) else 0.0,
    }


def span_budget_metrics(
    hits: Sequence[Hit], query: Query, documents: Mapping[str, str], budgets: Iterable[int] = (100, 200, 500)
) -> dict[str, float]:
    """Span recall within a retrieved-token budget (else ``{}``): ``span_recall@{B}tok``
    is the share of gold tokens among the first B tokens of the ranked chunks, each
    chunk paying its own tokens (overlap is paid twice) and the last one cut at the
    budget. Long chunks cannot win by returning more text."""
    if not query.spans:
        return {}
    budgets = sorted(set(budgets))
    gold: dict[str, list[tuple[int, int]]] = {}
    for s in query.spans:
        gold.setdefault(s.doc_id, []).append((s.start, s.end))
    toks_of: dict[str, _DocTokens] = {}

    def toks(doc_id: str) -> _DocTokens:
        if doc_id not in toks_of:
            try:
                toks_of[doc_id] = _doc_tokens(doc_id, documents[doc_id])
            except KeyError:
                raise KeyError(f"span_budget_metrics: document {doc_id!r} is not in the documents given") from None
        return toks_of[doc_id]

    gold_m = {d: _merge(_snap(toks(d), iv)) for d, iv in gold.items()}
    n_g = sum(_count(toks(d), iv) for d, iv in gold_m.items())
    if n_g == 0:
        return {}
    out: dict[str, float] = {}
    for b in budgets:
        left = b
        got: dict[str, list[tuple[int, int]]] = {}
        for h in hits:
            if left <= 0:
                break
            t = toks(h.doc_id)
            (s, e), = _snap(t, [(h.start, h.end)])
            lo = int(np.searchsorted(t.starts, s, side="left"))
            hi = int(np.searchsorted(t.starts, e, side="left"))
            if hi <= lo:
                continue
            if hi - lo > left:
                e = int(t.ends[lo + left - 1])
                hi = lo + left
            left -= hi - lo
            got.setdefault(h.doc_id, []).append((s, e))
        n_i = sum(_count(toks(d), _intersect(gold_m[d], _merge(iv))) for d, iv in got.items() if d in gold_m)
        out[f"span_recall@{b}tok"] = n_i / n_g
    return out


# --------------------------------------------------------------------------- aggregation


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the queries that have it (queries returning ``{}``
    for a family are not defined for it and do not count)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in per_query.values():
        for name, v in row.items():
            sums[name] = sums.get(name, 0.0) + v
            counts[name] = counts.get(name, 0) + 1
    return {name: sums[name] / counts[name] for name in sums}


def metric_vector(per_query: Mapping[str, Mapping[str, float]], metric: str, qids: Sequence[str]) -> np.ndarray:
    """One metric as an array aligned to ``qids``, ready for paired significance
    tests between configurations; a query without the metric is a KeyError."""
    return np.array([per_query[q][metric] for q in qids], dtype=np.float64)
