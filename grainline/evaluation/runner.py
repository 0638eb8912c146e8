"""The granularity evaluation, step by step, without Prefect.

load dataset -> ingest its documents (the ordinary ingestion code, once per strategy)
-> embed the queries -> retrieve with every method over every strategy -> score each
query -> means with bootstrap intervals and paired tests -> ``eval_results`` rows,
a report, and a comparison with the previous run of the same dataset."""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, get_embedder, make_plans, parse_strategies, run_ingest
from grainline.storage.chunks import DEFAULT_DB, connect, open_table_if_exists
from grainline.storage.maintenance import MaintenanceSettings, ensure_fts_index

from .datasets import EvalDataset, Query, load_dataset
from .metrics import Hit, answer_metrics, document_metrics, span_metrics
from .retrieval import RETRIEVERS, ChunkIndex, RetrievalContext, SvmSettings
from .stats import bootstrap_ci, paired_permutation_test

log = logging.getLogger("grainline.evaluation")

# Retrieved-token budgets for answer recall; 100 and 500 are the headline ones, the
# rest draw the curve in the report.
ANSWER_BUDGETS = (50, 100, 200, 500, 1000)

# Metrics shown in the report table and tested for significance.
HEADLINE_METRICS = ("ndcg@10", "recall@5", "mrr@10", "answer@5", "answer@100tok", "answer@500tok", "span_iou@5")


def parse_methods(value: str | list[str]) -> list[str]:
    """'dense,bm25' -> ['dense', 'bm25'], each checked against the registry."""
    return RETRIEVERS.parse_names(value)


class EvalSettings(BaseModel):
    """One evaluation run; defaults are grainline's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str  # KIND:PATH, KIND one of squad, beir, scifact, spans
    split: str | None = None
    strategies: list[str] = Field(default_factory=lambda: ["sentence", "paragraph", "article"])
    methods: list[str] = Field(default_factory=lambda: ["dense", "bm25", "hybrid"])
    db: str = DEFAULT_DB
    long_article: Literal["pool", "truncate"] = "pool"
    sample: int | None = Field(default=None, ge=1)
    seed: int = 0
    depth: int = Field(default=1000, ge=10)  # chunks retrieved per query and method
    reports_dir: str = "reports"
    n_bootstrap: int = Field(default=1000, ge=100)
    n_permutations: int = Field(default=5000, ge=100)
    batch_docs: int = Field(default=128, ge=1)
    chunker_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    svm: SvmSettings = Field(default_factory=SvmSettings)  # options of the ``svm`` method

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, v: Any) -> list[str]:
        return parse_strategies(v)

    @field_validator("db")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        from grainline.redact import check_uri

        return check_uri(v)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> list[str]:
        return parse_methods(v)


@dataclass
class Config:
    """One strategy x method cell of the comparison."""

    strategy: str
    chunker_key: str
    params: str
    method: str
    table_name: str = ""
    table_version: int | None = None
    # The tag on that version: pruning never removes it, so the run can be reproduced.
    table_tag: str | None = None

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.method}"


@dataclass
class EvalRun:
    settings: EvalSettings
    run_id: str
    dataset: EvalDataset
    queries: list[Query]
    model_id: str = ""
    configs: list[Config] = field(default_factory=list)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # config -> qid -> metric -> v
    results: list[dict[str, Any]] = field(default_factory=list)
    significance: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ingest_counts: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "dataset"


def load(settings: EvalSettings) -> EvalRun:
    """Load the dataset and pick the queries (a seeded sample with ``--sample N``)."""
    ds = load_dataset(settings.dataset, settings.split)
    queries = list(ds.queries)
    if settings.sample is not None and settings.sample < len(queries):
        queries = random.Random(settings.seed).sample(queries, settings.sample)
        queries.sort(key=lambda q: q.query_id)
    run_id = f"eval-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    return EvalRun(settings=settings, run_id=run_id, dataset=ds, queries=queries)


def ingest_dataset(run: EvalRun) -> None:
    """The dataset's documents through the ordinary ingestion, once per strategy, each
    into a table of its own (per model): BM25's statistics (document frequencies,
    average length) must come from one granularity's chunks only. Documents already
    there with the same content are not embedded again."""
    s = run.settings
    embedder = get_embedder(s.embedder)
    base = table_base(run)
    t0 = time.perf_counter()
    run.configs = []
    totals: dict[str, Any] = {}
    for strategy in s.strategies:
        # Evaluation searches exactly (numpy), so its tables need no vector index.
        ingest = IngestSettings(source=f"dataset:{s.dataset}", strategies=[strategy], long_article=s.long_article,
                                chunker_overrides=s.chunker_overrides, embedder=s.embedder, db=s.db,
                                batch_docs=s.batch_docs, export_parquet=False,
                                maintenance=MaintenanceSettings(vector_index=False))
        (plan,) = make_plans(ingest, embedder)
        table = f"{base}__{plan.key.replace('-', '_')}"
        ingest = ingest.model_copy(update={"table": table})
        rec = run_ingest(ingest, documents=run.dataset.documents)
        for k, v in rec.counts.as_dict().items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
        run.model_id = rec.model_id
        version, tag = tag_version(s.db, table, run.run_id)
        run.configs += [
            Config(strategy, plan.key, json.dumps(json.loads(plan.params), sort_keys=True), m, table, version, tag)
            for m in s.methods
        ]
    run.seconds["ingest"] = time.perf_counter() - t0
    run.ingest_counts = totals


def tag_version(db: str, table_name: str, run_id: str) -> tuple[int, str]:
    """Tag the table's current version for this run (``eval-...`` run ids; LanceDB
    allows letters, digits, '.', '-' and '_'), after making sure its BM25 index covers
    every row, so the tagged version is complete and read-only use suffices."""
    table = open_table_if_exists(connect(db), table_name)
    if table is None:
        raise ValueError(f"evaluation table {table_name!r} is missing from {db!r}")
    ensure_fts_index(table)
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", run_id if run_id.startswith("eval") else f"eval-{run_id}")
    version = table.version
    if tag in table.tags.list():  # a retried ingestion step of the same run
        table.tags.update(tag, version)
    else:
        table.tags.create(tag, version)
    return version, tag


def table_base(run: EvalRun) -> str:
    """Prefix of this dataset's evaluation tables for this model."""
    return f"{get_embedder(run.settings.embedder).identity.table_name}__{_slug(run.dataset.name)}"


def embed_queries(run: EvalRun) -> dict[str, np.ndarray]:
    t0 = time.perf_counter()
    embedder = get_embedder(run.settings.embedder)
    vecs = embedder.embed_queries([q.text for q in run.queries])
    run.seconds["embed_queries"] = time.perf_counter() - t0
    return {q.query_id: v for q, v in zip(run.queries, vecs)}


def score_strategy(run: EvalRun, strategy: str, query_vectors: dict[str, np.ndarray]) -> None:
    """Retrieve with every method over one strategy's chunks and score each query."""
    s = run.settings
    configs = [c for c in run.configs if c.strategy == strategy]
    table = open_table_if_exists(connect(s.db), configs[0].table_name)
    if table is None:
        raise ValueError(f"evaluation table {configs[0].table_name!r} is missing from {s.db!r}")
    if configs[0].table_tag:
        # Read exactly the tagged version, even if another run writes the table meanwhile.
        table.checkout(configs[0].table_tag)
    dim = get_embedder(s.embedder).identity.dim
    index = ChunkIndex.load(table, configs[0].chunker_key, dim)
    ctx = RetrievalContext(table=table, chunker_key=configs[0].chunker_key, index=index, query_vectors=query_vectors,
                           options={"svm": s.svm})
    texts = run.dataset.texts_by_id()
    queries = {q.query_id: q for q in run.queries}
    cache = ctx.options.setdefault("_runs", {})
    for cfg in configs:
        t0 = time.perf_counter()
        hits = RETRIEVERS.get(cfg.method)(ctx, run.queries, s.depth)
        cache[cfg.method] = hits
        run.seconds[f"retrieve {cfg.name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run.per_query[cfg.name] = score_queries(hits, queries, texts)
        run.seconds[f"score {cfg.name}"] = time.perf_counter() - t0


def score_queries(
    hits: dict[str, list[Hit]], queries: dict[str, Query], texts: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Every metric that is defined for each query."""
    per_query = document_metrics(hits, queries)
    for qid, q in queries.items():
        row = per_query.setdefault(qid, {})
        h = hits.get(qid, [])
        row.update(answer_metrics(h, q, budgets=ANSWER_BUDGETS))
        row.update(span_metrics(h, q, texts))
    return per_query


def aggregate(run: EvalRun) -> None:
    """Means with 95% bootstrap intervals, and paired tests between every two configs."""
    s = run.settings
    now = datetime.now(timezone.utc)
    run.results = []
    t0 = time.perf_counter()
    for cfg in run.configs:
        pq = run.per_query[cfg.name]
        metrics = sorted({m for row in pq.values() for m in row})
        for m in metrics:
            vals = np.array([row[m] for row in pq.values() if m in row], dtype=float)
            mean, lo, hi = bootstrap_ci(vals, n_resamples=s.n_bootstrap, seed=s.seed)
            run.results.append({
                "run_id": run.run_id, "time": now, "dataset": run.dataset.name, "dataset_spec": s.dataset,
                "split": run.dataset.split, "strategy": cfg.strategy, "chunker_key": cfg.chunker_key,
                "params": cfg.params, "method": cfg.method, "model_id": run.model_id, "metric": m,
                "value": float(mean), "ci_low": float(lo), "ci_high": float(hi), "n_queries": int(len(vals)),
                "n_skipped": len(run.dataset.skipped_queries), "table_name": cfg.table_name,
                "table_version": cfg.table_version, "sample": s.sample or 0, "table_tag": cfg.table_tag,
            })
    run.seconds["bootstrap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = [c.name for c in run.configs]
    for m in HEADLINE_METRICS:
        qids = [q.query_id for q in run.queries if all(m in run.per_query[n].get(q.query_id, {}) for n in names)]
        if not qids:
            continue
        vecs = {n: np.array([run.per_query[n][q][m] for q in qids]) for n in names}
        run.significance[m] = {
            (a, b): paired_permutation_test(vecs[a], vecs[b], n_resamples=s.n_permutations, seed=s.seed)
            for i, a in enumerate(names) for b in names[i + 1:]
        }
    run.seconds["significance"] = time.perf_counter() - t0


def store_and_compare(run: EvalRun) -> None:
    """Compare with the previous run of this dataset, then append this run's rows."""
    from .results import find_regressions, previous_results, write_results

    run.regressions = find_regressions(run.results, previous_results(run.settings.db, run.results))
    write_results(run.settings.db, run.results)


def run_eval(settings: EvalSettings) -> EvalRun:
    """The whole evaluation in this process, without Prefect."""
    from .report import write_report

    run = load(settings)
    ingest_dataset(run)
    vectors = embed_queries(run)
    for strategy in settings.strategies:
        score_strategy(run, strategy, vectors)
    aggregate(run)
    store_and_compare(run)
    write_report(run)
    return run


def state_message(run: EvalRun) -> str:
    """One line for the flow's final state: the headline and any regressions."""
    by = {(r["strategy"], r["method"]): r["value"] for r in run.results if r["metric"] == "ndcg@10"}
    best = max(by.items(), key=lambda kv: kv[1]) if by else None
    msg = f"{run.dataset.name}: {len(run.queries)} queries"
    if best:
        msg += f"; best nDCG@10 {best[1]:.3f} ({best[0][0]}/{best[0][1]})"
    if run.regressions:
        items = ", ".join(f"{g['strategy']}/{g['method']} {g['metric']} {g['value']:.3f} < {g['previous_ci_low']:.3f}" for g in run.regressions[:5])
        msg += f"; REGRESSIONS ({len(run.regressions)}): {items}"
    else:
        msg += "; no regressions"
    return msg
