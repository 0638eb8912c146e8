"""The granularity evaluation, step by step, without Prefect.

load dataset -> ingest its documents (the ordinary ingestion code, once per strategy)
-> embed the queries -> retrieve with every method over every strategy -> score each
query -> means with bootstrap intervals and paired tests -> ``eval_results`` rows and
a comparison with the previous run of the same dataset. Each step fills in the
:class:`~.model.EvalRun` it is given; the report is written by whoever drives the
steps (:mod:`.pipeline` in one process, the evaluation flow as tasks)."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np

from grainline.ingest import IngestSettings, make_plans, run_ingest

from grainline.embedding import get_embedder
from grainline.storage.chunks import connect, open_table_if_exists
from grainline.storage.ledger import new_run_id
from grainline.storage.maintenance import MaintenanceSettings, ensure_fts_index

from .datasets import EvalDataset, Query, load_dataset
from .metrics import Hit, answer_metrics, document_metrics, span_budget_metrics, span_metrics
from .model import (
    ANSWER_BUDGETS, HEADLINE_METRICS, SPAN_BUDGETS, TIE_ALPHA, Config, EvalRun, EvalSettings, primary_metric,
    recommendation_line, sweep_combos,
)
from .costs import COST_METRICS, LATENCY_QUERIES, TEXT_ONLY_METHODS, add_latency, cpu_name, kind_value, measure
from .retrieval import RETRIEVERS, ChunkIndex, RetrievalContext
from .stats import bootstrap_ci, paired_permutation_test

log = logging.getLogger("grainline.evaluation")


def progress(run: EvalRun, message: str) -> None:
    """A progress line on stderr for each long step, when the run asks for progress
    (the CLI does); the log gets it either way."""
    log.info(message)
    if run.settings.progress:
        import sys

        print(f"[eval] {message}", file=sys.stderr, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "dataset"


def load(settings: EvalSettings) -> EvalRun:
    """Load the dataset (or the query set and the table it is scored on) and pick the
    queries (a seeded sample with ``--sample N``)."""
    if settings.queries is not None:
        return load_production(settings)
    ds = load_dataset(settings.dataset, settings.split)
    if settings.sample_docs is not None and settings.sample_docs < len(ds.documents):
        ds = sample_documents(ds, settings.sample_docs, settings.seed)
    queries = list(ds.queries)
    if settings.sample is not None and settings.sample < len(queries):
        queries = random.Random(settings.seed).sample(queries, settings.sample)
        queries.sort(key=lambda q: q.query_id)
    run_id = new_run_id("eval")
    return EvalRun(settings=settings, run_id=run_id, dataset=ds, queries=queries)


def sample_documents(ds: EvalDataset, n: int, seed: int) -> EvalDataset:
    """A seeded sample of ``n`` documents and the queries whose labels all lie in it."""
    keep = {d.doc_id for d in random.Random(seed).sample(ds.documents, n)}
    docs = [d for d in ds.documents if d.doc_id in keep]
    queries = [q for q in ds.queries
               if q.relevant and set(q.relevant) <= keep and all(sp.doc_id in keep for sp in q.spans)]
    stats = dict(ds.stats, sampled_documents=n, sampled_from=len(ds.documents))
    # Its own name, so its tables (and its results' history) never mix with the full set's.
    return EvalDataset(f"{ds.name}-docs{n}s{seed}", ds.split, ds.path, docs, queries, ds.skipped_queries, stats)


def _labels(configs: list[tuple[str, str]]) -> list[str]:
    """Report names for (strategy, params JSON) pairs: the strategy alone, or with the
    settings that differ between several configurations of one strategy."""
    by: dict[str, list[dict[str, Any]]] = {}
    for strategy, params in configs:
        by.setdefault(strategy, []).append(json.loads(params or "{}"))
    out = []
    for strategy, params in configs:
        group = by[strategy]
        if len(group) == 1:
            out.append(strategy)
            continue
        p = json.loads(params or "{}")
        differ = sorted(k for k in {k for g in group for k in g} if len({json.dumps(g.get(k), sort_keys=True) for g in group}) > 1)
        out.append(f"{strategy}(" + ",".join(f"{k}={p.get(k)}" for k in differ) + ")")
    return out


def open_production(settings: EvalSettings) -> tuple[Any, int, str | None]:
    """The production chunks table read-only at the version evaluated: ``at`` (a
    version number or tag), else the current one once its BM25 index covers every row."""
    from .corpus import open_chunks_table

    name = settings.table or get_embedder(settings.embedder).identity.table_name
    table = open_chunks_table(settings.db, name)
    tag = None
    if settings.at is None:
        ensure_fts_index(table)
        version = table.version
    elif settings.at.isdigit():
        version = int(settings.at)
    else:
        tag = settings.at
        if tag not in table.tags.list():
            raise ValueError(f"table {name!r} has no tag {tag!r} (tags: {', '.join(sorted(table.tags.list())) or 'none'})")
        version = table.tags.get_version(tag)
    try:
        table.checkout(version)
    except Exception as exc:  # noqa: BLE001 - lance names the missing version its own way
        raise ValueError(f"table {name!r} has no version {settings.at!r} ({exc})") from None
    return table, version, tag


def check_queryset(settings: EvalSettings) -> None:
    """What can be refused before an evaluation of a query set starts: the set's
    header, the table it was made for, the model of the table and the queries. Raises
    with one line naming the file or table and the reason; :func:`load_production`
    checks the same again inside the flow."""
    from pathlib import Path

    from .querysets import QuerySetError, read_header

    path = Path(settings.queries or "")
    if not path.is_file():
        raise QuerySetError(f"{path}: query set does not exist")
    prov = read_header(path).get("provenance", {})
    from grainline.storage.damage import preflight, reading

    # A damaged table fails here in one line, not inside the flow run with a traceback:
    # its files and indexes first, before the reads below trip on them.
    with reading(settings.table or get_embedder(settings.embedder).identity.table_name, settings.db):
        table, _version, _tag = open_production(settings)
        preflight(settings.db, table, needs_fts=any(m in ("bm25", "hybrid") for m in settings.methods))
        _check_made_for(str(path), prov, table, settings)


def _check_made_for(where: str, provenance: dict[str, Any], table: Any, settings: EvalSettings) -> str:
    """The model id of ``table``'s vectors, once the query set (named ``where``) proves
    to be made for this table and model and the queries would be embedded with it."""
    from .corpus import table_model_id
    from .querysets import QuerySetError

    made_for = provenance.get("table")
    if made_for and made_for != table.name and not settings.same_corpus:
        raise QuerySetError(f"{where}: query set was made for table {made_for!r}, not {table.name!r}; "
                            f"pass --table {made_for} or make a new set")
    model_id = table_model_id(table)
    query_model = get_embedder(settings.embedder).identity.model_id
    if model_id and model_id != query_model:
        raise ValueError(f"table {table.name!r} holds vectors of {model_id!r} but the queries would be embedded with "
                         f"{query_model!r}; pass the table's --model")
    set_model = provenance.get("model_id")
    if set_model and model_id and set_model != model_id and not settings.same_corpus:
        raise QuerySetError(f"{where}: query set was made for model {set_model!r}, the table holds {model_id!r}")
    return model_id


def load_production(settings: EvalSettings) -> EvalRun:
    """A query set scored on the production table as ingested: its documents rebuilt
    from the stored chunks, every configuration present (limited to the requested
    strategies), nothing ingested or embedded but the queries. A set made for another
    table or model is an error; queries whose documents changed or vanished since the
    set was made are skipped, each with its reason."""
    from grainline.documents import Document

    from .corpus import stored_configs, stored_documents
    from .querysets import read_queryset

    qs = read_queryset(settings.queries)
    table, version, tag = open_production(settings)
    name = table.name
    model_id = _check_made_for(str(settings.queries), qs.provenance, table, settings)
    docs = stored_documents(table)
    queries: list[Query] = []
    skipped: list[tuple[str, str]] = [(u.row, f"unresolved when the set was made: {u.reason}") for u in qs.unresolved]
    for lq in qs.queries:
        gone = sorted(d for d in lq.doc_hashes if d not in docs)
        changed = sorted(d for d, h in lq.doc_hashes.items() if d in docs and h and docs[d].doc_hash != h)
        if gone:
            skipped.append((lq.query_id, f"document {gone[0]!r} is no longer in table {name!r} v{version}"))
        elif changed:
            skipped.append((lq.query_id, f"document {changed[0]!r} changed since the query set was made"))
        elif not (lq.spans or lq.relevant or lq.answers):
            skipped.append((lq.query_id, "no labels"))
        else:
            queries.append(lq.to_query())
    for qid, reason in skipped:
        log.warning("query set %s: %s skipped: %s", settings.queries, qid, reason)
    documents = [Document(d.doc_id, d.text, d.source, d.title) for d in docs.values()]
    ds = EvalDataset(f"queries-{qs.name}", f"v{qs.version}", str(settings.queries), documents, queries, skipped,
                     {"table": name, "table_version": version, "queryset_provenance": qs.provenance})
    picked = list(queries)
    if settings.sample is not None and settings.sample < len(picked):
        picked = sorted(random.Random(settings.seed).sample(picked, settings.sample), key=lambda q: q.query_id)
    run_id = new_run_id("eval")
    run = EvalRun(settings=settings, run_id=run_id, dataset=ds, queries=picked, model_id=model_id)
    present = stored_configs(table)
    wanted: list[tuple[str, str, str, str | None, dict[str, Any]]] = []  # strategy, key, params, table, combo
    for c in present:
        if c.strategy in settings.strategies and c.strategy not in settings.chunk_sweep:
            wanted.append((c.strategy, c.chunker_key, c.params, name, {}))
    by_key = {c.chunker_key: c for c in present}
    for strategy in settings.chunk_sweep:
        if strategy not in settings.strategies:
            continue
        embedder = get_embedder(settings.embedder)
        for combo in sweep_combos(strategy, settings.chunk_sweep):
            (plan,) = make_plans(_ingest_settings(settings, strategy, combo, source="queries"), embedder)
            if plan.key in by_key:
                wanted.append((strategy, plan.key, by_key[plan.key].params, name, combo))
            else:  # not in production: an evaluation table of its own, ingested in the next step
                wanted.append((strategy, plan.key, plan.params, f"{name}__eval__{plan.key.replace('-', '_')}", combo))
    if not wanted:
        raise ValueError(f"table {name!r} v{version} holds none of the strategies {', '.join(settings.strategies)} "
                         f"(it holds: {', '.join(sorted({c.strategy for c in present})) or 'nothing'})")
    order = {st: i for i, st in enumerate(settings.strategies)}
    wanted.sort(key=lambda w: order[w[0]])  # stable: the table's order within a strategy
    labels = _labels([(w[0], w[2]) for w in wanted])
    for (strategy, key, params, tname, combo), label in zip(wanted, labels):
        in_prod = tname == name
        run.sweep_overrides[label] = combo
        run.configs += [Config(strategy, key, json.dumps(json.loads(params or "{}"), sort_keys=True), m, tname,
                               version if in_prod else None, tag if in_prod else None, label)
                        for m in settings.methods]
    run.production = True
    add_small_to_big(run)
    return run


def add_small_to_big(run: EvalRun) -> None:
    """Append the settings' small-to-big configurations (``sentence->paragraph``: search
    sentence chunks, return their paragraphs) for every method, where the run holds
    both strategies once each (a swept strategy has no single parent or child)."""
    from grainline.chunkers.nesting import parse_pair

    flat = [c for c in run.configs if c.parent is None]
    for pair in run.settings.small_to_big:
        child, parent = parse_pair(pair)
        kids = [c for c in flat if c.strategy == child]
        bigs = [c for c in flat if c.strategy == parent]
        if len({c.label for c in kids}) != 1 or len({c.label for c in bigs}) != 1:
            continue  # a strategy missing, or swept into several configurations
        parents = {c.method: c for c in bigs}
        label = f"{child}->{parent}"
        for k in kids:
            p = parents.get(k.method)
            if p is None:
                continue
            params = json.dumps({child: json.loads(k.params or "{}"), parent: json.loads(p.params or "{}")}, sort_keys=True)
            run.configs.append(Config(label, f"{k.chunker_key}>{p.chunker_key}", params, k.method, k.table_name,
                                      k.table_version, k.table_tag, label, child=k.label, parent=p.label))


def groups(run: EvalRun) -> list[str]:
    """The chunking configurations of the run (each scored in one step)."""
    return list(dict.fromkeys(c.label for c in run.configs))


def ingest_dataset(run: EvalRun) -> None:
    """The dataset's documents through the ordinary ingestion, once per strategy and
    swept setting, each into a table of its own (per model): BM25's statistics
    (document frequencies, average length) must come from one granularity's chunks
    only. Documents already there with the same content are not embedded again, and
    vectors already stored in a sibling table of this run are reused by content hash.

    With a query set, only the swept configurations the production table lacks are
    ingested (its rebuilt documents, into evaluation tables that reuse the production
    table's vectors); the rest is scored where it is."""
    s = run.settings
    if run.production:
        _ingest_missing(run)
        return
    embedder = get_embedder(s.embedder)
    base = table_base(run)
    t0 = time.perf_counter()
    made: list[tuple[str, Any, str, int, str]] = []
    totals: dict[str, Any] = {}
    steps = [(st, combo) for st in s.strategies for combo in sweep_combos(st, s.chunk_sweep)]
    for i, (strategy, combo) in enumerate(steps):
        ingest = _ingest_settings(s, strategy, combo)
        progress(run, f"ingesting {len(run.dataset.documents)} documents as {strategy} chunks"
                      + (f" {combo}" if combo else "") + f" ({i + 1}/{len(steps)})")
        (plan,) = make_plans(ingest, embedder)
        table = f"{base}__{plan.key.replace('-', '_')}"
        ingest = ingest.model_copy(update={"table": table, "reuse_from": [t for *_x, t, _v, _g in made]})
        rec = run_ingest(ingest, documents=run.dataset.documents)
        for k, v in rec.counts.as_dict().items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
        run.model_id = rec.model_id
        version, tag = tag_version(s.db, table, run.run_id)
        made.append((strategy, plan, table, version, tag))
    labels = _labels([(st, plan.params) for st, plan, *_ in made])
    run.configs = [
        Config(st, plan.key, json.dumps(json.loads(plan.params), sort_keys=True), m, table, version, tag, label)
        for (st, plan, table, version, tag), label in zip(made, labels) for m in s.methods
    ]
    add_small_to_big(run)
    run.seconds["ingest"] = time.perf_counter() - t0
    run.ingest_counts = totals


def _ingest_settings(s: EvalSettings, strategy: str, combo: dict[str, Any], source: str | None = None) -> IngestSettings:
    overrides = dict(s.chunker_overrides)
    overrides[strategy] = {**overrides.get(strategy, {}), **combo}
    # Evaluation searches exactly (numpy), so its tables need no vector index.
    return IngestSettings(source=source or f"dataset:{s.dataset}", strategies=[strategy], long_article=s.long_article,
                          chunker_overrides=overrides, embedder=s.embedder, db=s.db, batch_docs=s.batch_docs,
                          export_parquet=False, maintenance=MaintenanceSettings(vector_index=False))



def _ingest_missing(run: EvalRun) -> None:
    """Ingest the rebuilt documents for the configurations the production table lacks."""
    s = run.settings
    pending = [c for c in run.configs if c.table_version is None]
    if not pending:
        return
    t0 = time.perf_counter()
    embedder = get_embedder(s.embedder)
    production = run.dataset.stats["table"]
    done: dict[str, tuple[int, str]] = {}
    todo = list(dict.fromkeys((c.label, c.table_name) for c in pending))
    for i, (label, table) in enumerate(todo):
        cfg = next(c for c in pending if c.label == label)
        progress(run, f"ingesting {len(run.dataset.documents)} documents as {label}, not in {production} "
                      f"({i + 1}/{len(todo)}; stored vectors reused by content hash)")
        ingest = _ingest_settings(s, cfg.strategy, run.sweep_overrides[label], source=f"queries:{s.queries}")
        ingest = ingest.model_copy(update={"table": table, "reuse_from": [production]})
        rec = run_ingest(ingest, documents=run.dataset.documents)
        for k, v in rec.counts.as_dict().items():
            if isinstance(v, int):
                run.ingest_counts[k] = run.ingest_counts.get(k, 0) + v
        done[table] = tag_version(s.db, table, run.run_id)
    for c in pending:
        c.table_version, c.table_tag = done[c.table_name]
    run.seconds["ingest"] = time.perf_counter() - t0


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
    """Embed the run's queries (the only embedding an evaluation of a query set does)."""
    t0 = time.perf_counter()
    embedder = get_embedder(run.settings.embedder)
    progress(run, f"embedding {len(run.queries)} queries")
    vecs = embedder.embed_queries([q.text for q in run.queries])
    run.seconds["embed_queries"] = time.perf_counter() - t0
    return {q.query_id: v for q, v in zip(run.queries, vecs)}


def score_strategy(run: EvalRun, label: str, query_vectors: dict[str, np.ndarray]) -> None:
    """Retrieve with every method over one chunking configuration's chunks (``label``,
    see :func:`groups`; a strategy name unless a sweep holds several) and score each query."""
    s = run.settings
    configs = [c for c in run.configs if c.label == label]
    if not configs:
        raise ValueError(f"no configuration {label!r} in this run (have: {', '.join(groups(run))})")
    dim = get_embedder(s.embedder).identity.dim
    table, index = _load_index(run, configs[0], dim)
    parents = None
    if configs[0].parent is not None:
        # Small-to-big: search the child's chunks, score the parents that hold them.
        from grainline.chunkers.nesting import Parents

        (pcfg, *_) = [c for c in run.configs if c.label == configs[0].parent]
        _, pindex = _load_index(run, pcfg, dim)
        parents = (pindex, Parents((d, int(a), int(b), i) for i, (d, a, b) in
                                   enumerate(zip(pindex.doc_ids, pindex.starts, pindex.ends))))
    key = configs[0].chunker_key.split(">")[0]
    ctx = RetrievalContext(table=table, chunker_key=key, index=index,
                           query_vectors=query_vectors, options={"svm": s.svm})
    texts = run.dataset.texts_by_id()
    queries = {q.query_id: q for q in run.queries}
    costs = measure(table, s.db, configs[0].table_name, configs[0].table_version, key, dim,
                    [c.method for c in configs])
    run.cpu = run.cpu or cpu_name()
    for cfg in configs:
        progress(run, f"retrieving and scoring {cfg.name}: {len(run.queries)} queries "
                      f"(configuration {run.configs.index(cfg) + 1}/{len(run.configs)})")
        t0 = time.perf_counter()
        hits, seconds = timed_retrieval(ctx, cfg.method, run.queries, s.depth, parents)
        run.seconds[f"retrieve {cfg.name}"] = time.perf_counter() - t0
        add_latency(costs[cfg.method], seconds)
        run.costs[cfg.name] = costs[cfg.method]
        t0 = time.perf_counter()
        run.per_query[cfg.name] = score_queries(hits, queries, texts)
        run.seconds[f"score {cfg.name}"] = time.perf_counter() - t0


def timed_retrieval(ctx: RetrievalContext, method: str, queries: list[Query], depth: int,
                    parents: Any = None) -> tuple[dict[str, list[Hit]], list[float]]:
    """Retrieve with ``method``: the first :data:`LATENCY_QUERIES` queries one at a
    time, each call timed as a server would serve it (small-to-big: the child search
    and the lookup of the parents), the rest in one call (dense search scores them in
    blocks: one matrix product per 256 queries instead of one pass over every vector
    per query). Returns the hits per query id and the timed seconds. Hybrid reuses
    the dense and bm25 lists of this context and is charged their recorded time beside
    its own fusion."""
    fn = RETRIEVERS.get(method)
    cache = ctx.options.setdefault("_runs", {})
    # Each method's own time per query, so hybrid (which fuses cached dense and bm25
    # lists) is charged the time of the lists it fuses, as a server would pay it.
    own: dict[str, dict[str, float]] = ctx.options.setdefault("_seconds", {})
    reused = [m for m in ("dense", "bm25") if method == "hybrid" and cache.get(m)]
    raw: dict[str, list[Hit]] = {}
    out: dict[str, list[Hit]] = {}
    seconds: list[float] = []
    mine: dict[str, float] = {}
    timed, rest = queries[:LATENCY_QUERIES], queries[LATENCY_QUERIES:]
    for q in timed:
        t0 = time.perf_counter()
        hs = fn(ctx, [q], depth).get(q.query_id, [])
        t1 = time.perf_counter()
        raw[q.query_id] = hs
        if parents is not None:
            hs = parent_hits(hs, *parents)
        t2 = time.perf_counter()
        mine[q.query_id] = (t1 - t0) + sum(own.get(m, {}).get(q.query_id, 0.0) for m in reused)
        seconds.append(mine[q.query_id] + (t2 - t1))
        out[q.query_id] = hs
    if rest:
        got = fn(ctx, rest, depth)
        for q in rest:
            hs = raw[q.query_id] = got.get(q.query_id, [])
            out[q.query_id] = parent_hits(hs, *parents) if parents is not None else hs
    cache[method] = raw  # the child's hits: what hybrid fuses, before any parent lookup
    own[method] = mine
    return out, seconds


def _load_index(run: EvalRun, cfg: Config, dim: int) -> tuple[Any, ChunkIndex]:
    """A configuration's table at the version the run tagged, and its chunks in memory."""
    s = run.settings
    table = open_table_if_exists(connect(s.db), cfg.table_name)
    if table is None:
        raise ValueError(f"evaluation table {cfg.table_name!r} is missing from {s.db!r}")
    if cfg.table_tag:
        # Read exactly the tagged version, even if another run writes the table meanwhile.
        table.checkout(cfg.table_tag)
    elif cfg.table_version is not None:
        table.checkout(cfg.table_version)
    progress(run, f"loading {cfg.label} chunks from {cfg.table_name} v{table.version}")
    key = cfg.chunker_key.split(">")[0]
    return table, ChunkIndex.load(table, key, dim)


def parent_hits(hits: list[Hit], pindex: ChunkIndex, parents: Any) -> list[Hit]:
    """Child hits -> the parent chunks that hold them, in the children's order, each
    parent once, with the score of its best child."""
    from grainline.chunkers.nesting import expand

    return [pindex.hit(i, h.score) for h, i in expand(hits, lambda h: (h.doc_id, h.start, h.end), parents)]


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
        row.update(span_budget_metrics(h, q, texts, budgets=SPAN_BUDGETS))
    return per_query


def aggregate(run: EvalRun) -> None:
    """Means with 95% bootstrap intervals, and paired tests between every two configs."""
    s = run.settings
    now = datetime.now(timezone.utc)
    run.results = []
    progress(run, f"bootstrap intervals and paired tests over {len(run.configs)} configurations")
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
                "config": cfg.label,
            })
    run.results += cost_rows(run, now)
    run.seconds["bootstrap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = [c.name for c in run.configs]
    for m in dict.fromkeys(HEADLINE_METRICS + (primary_metric(run),)):
        qids = [q.query_id for q in run.queries if all(m in run.per_query[n].get(q.query_id, {}) for n in names)]
        if not qids:
            continue
        vecs = {n: np.array([run.per_query[n][q][m] for q in qids]) for n in names}
        run.significance[m] = {
            (a, b): paired_permutation_test(vecs[a], vecs[b], n_resamples=s.n_permutations, seed=s.seed)
            for i, a in enumerate(names) for b in names[i + 1:]
        }
    run.seconds["significance"] = time.perf_counter() - t0
    run.recommendation = recommend(run)


def cost_rows(run: EvalRun, now: datetime) -> list[dict[str, Any]]:
    """One ``eval_results`` row per configuration and cost metric (``cost_vectors``,
    ...): the figure as value, ci_low and ci_high (a measurement, not a mean over
    queries); an unknown figure is a null value, never 0."""
    s = run.settings
    out = []
    for cfg in run.configs:
        cost = run.costs.get(cfg.name)
        if cost is None:
            continue
        for m in COST_METRICS:
            if m not in cost.values:
                continue
            v = cost.values[m]
            out.append({
                "run_id": run.run_id, "time": now, "dataset": run.dataset.name, "dataset_spec": s.dataset,
                "split": run.dataset.split, "strategy": cfg.strategy, "chunker_key": cfg.chunker_key,
                "params": cfg.params, "method": cfg.method, "model_id": run.model_id, "metric": m,
                "value": v, "ci_low": v, "ci_high": v, "n_queries": len(run.queries),
                "n_skipped": len(run.dataset.skipped_queries), "table_name": cfg.table_name,
                "table_version": cfg.table_version, "sample": s.sample or 0, "table_tag": cfg.table_tag,
                "config": cfg.label,
            })
    return out


def recommend(run: EvalRun) -> dict[str, Any]:
    """The documented rule: the configuration with the highest mean primary metric is
    the best; every other one whose paired permutation test against it gives
    p >= TIE_ALPHA is statistically tied with it. Ties in the mean go to the
    configuration listed first (sentence, paragraph, article; dense, bm25, hybrid, svm
    in the order asked).

    With ``prefer="cost"`` (the default) the cheapest of the best and its tied ones by
    the first of ``settings.cost`` known for all of them is recommended (equal costs:
    the higher mean); a cost unknown for any of them is passed over, with the reason,
    for the next one named, and with none left the best is recommended.
    ``prefer="quality"`` recommends the best (the rule before costs)."""
    s = run.settings
    metric = primary_metric(run)
    rows = {(r["config"], r["method"]): r for r in run.results if r["metric"] == metric}
    if not rows:
        known = sorted({r["metric"] for r in run.results if not r["metric"].startswith("cost_")})
        return {"metric": metric, "error": f"primary metric {metric!r} is not defined for these queries (have: {', '.join(known)})"}
    order = [(c.label, c.method) for c in run.configs if (c.label, c.method) in rows]
    best = max(order, key=lambda k: (rows[k]["value"], -order.index(k)))
    sig = run.significance.get(metric, {})
    best_name = f"{best[0]}/{best[1]}"
    tied = []
    for k in order:
        if k == best:
            continue
        name = f"{k[0]}/{k[1]}"
        p = sig.get((best_name, name), sig.get((name, best_name)))
        if p is not None and p >= TIE_ALPHA:
            tied.append({"config": name, "value": rows[k]["value"], "ci_low": rows[k]["ci_low"], "ci_high": rows[k]["ci_high"], "p": p})
    r = rows[best]
    rec: dict[str, Any] = {
        "metric": metric, "config": best_name, "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
        "n_queries": r["n_queries"], "tied": tied, "prefer": s.prefer, "cost": None, "fallback": None,
        "best": {"config": best_name, "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]},
    }
    if s.prefer == "quality" or not tied:
        return rec
    names = [best_name] + [t["config"] for t in tied]
    passed: list[str] = []
    for cost in s.cost:
        figures = {n: kind_value(run.costs.get(n), cost) for n in names}
        unknown = [(n, why) for n, (v, why) in figures.items() if v is None]
        if unknown:
            n, why = unknown[0]
            passed.append(f"--cost {cost} passed over: unknown for {n}"
                          + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "") + f" ({why})")
            continue
        value = {n: v for n, (v, _) in figures.items()}
        mean = {best_name: r["value"], **{t["config"]: t["value"] for t in tied}}
        pick = min(names, key=lambda n: (value[n], -mean[n], names.index(n)))
        rec["cost"], rec["cost_value"] = cost, value[pick]
        rec["best"]["cost_value"] = value[best_name]
        if pick != best_name:
            t = next(t for t in tied if t["config"] == pick)
            k = next(k for k in order if f"{k[0]}/{k[1]}" == pick)
            rec.update(config=pick, value=t["value"], ci_low=t["ci_low"], ci_high=t["ci_high"], p=t["p"],
                       n_queries=rows[k]["n_queries"])
        if rec["config"].rsplit("/", 1)[-1] in TEXT_ONLY_METHODS:
            rec["cost_note"] = "BM25 needs no vectors and no model: it reads the text index only"
        break
    else:
        passed.append("fell back to the highest mean")
    if passed:
        rec["fallback"] = "; ".join(passed)
    return rec


def store_and_compare(run: EvalRun) -> None:
    """Compare with the previous run of this dataset, then append this run's rows."""
    from .results import find_regressions, previous_results, write_results

    run.regressions = find_regressions(run.results, previous_results(run.settings.db, run.results))
    write_results(run.settings.db, run.results)


def state_message(run: EvalRun) -> str:
    """One line for the flow's final state: the headline and any regressions."""
    by = {(r["config"], r["method"]): r["value"] for r in run.results if r["metric"] == "ndcg@10"}
    best = max(by.items(), key=lambda kv: kv[1]) if by else None
    msg = f"{run.dataset.name}: {len(run.queries)} queries"
    if best:
        msg += f"; best nDCG@10 {best[1]:.3f} ({best[0][0]}/{best[0][1]})"
    msg += "; " + recommendation_line(run.recommendation)
    if run.regressions:
        items = ", ".join(f"{g['strategy']}/{g['method']} {g['metric']} {g['value']:.3f} < {g['previous_ci_low']:.3f}" for g in run.regressions[:5])
        msg += f"; REGRESSIONS ({len(run.regressions)}): {items}"
    else:
        msg += "; no regressions"
    return msg
