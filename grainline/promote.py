"""Promotion: moving the database's alias (``storage/alias.py``) from the production
table to a candidate built beside it (``reembed`` with another model, an ingestion
with other settings) only when the candidate retrieves at least as well on the same
query set, and moving it back (``undo``).

The gate, exactly: both tables are scored on the query set (the evaluation of a query
set, ``grainline.evaluation.runner``, same queries, same methods, every strategy both
tables hold; a table whose current version was already scored on the whole set is not
scored again, its ``eval_results`` rows are reused); for every configuration (strategy/method) the candidate's mean of the
primary metric must be at least the lower bound of production's 95% bootstrap
interval. Anything else refuses with the figures, the alias unchanged.

Refused before anything is scored, in one line naming the value: a candidate that is
not a table of the database (the chunks tables listed), one whose vector dimension
differs from the production table's (what readers expect), one whose model cannot be
told or loaded, a query set made on another corpus (a document of its queries is
missing from the candidate, or holds other content there than in production).

Costs: resolving the alias is one small file read; a promotion reads the ledger for
the candidate's model (a filtered read), the two tables' ``doc_id``/``doc_hash``
columns, scores the query set twice (the queries embedded once per model) and brings
the candidate's Parquet export up to its version (nothing when it is current).

May import: defaults, embedding, errors, evaluation, storage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grainline.storage.alias import AliasError, AliasTarget, alias_lock, read_alias, switch, undo

# How long a promotion waits for another promotion of the same database.
LOCK_TIMEOUT_S = 600.0
DEFAULT_METHODS = ("dense",)
_BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class PromotionRefused(AliasError):
    """The candidate scored below production: the message names the failing figures,
    ``promotion`` holds them all."""

    def __init__(self, message: str, promotion: "Promotion") -> None:
        super().__init__(message)
        self.promotion = promotion


@dataclass
class Figure:
    """One configuration's primary metric on both tables."""

    config: str  # strategy/method
    metric: str
    production: tuple[float, float, float]  # mean, 95% low, 95% high
    candidate: tuple[float, float, float]
    n_queries: int

    @property
    def passes(self) -> bool:
        return self.candidate[0] >= self.production[1]

    def line(self) -> str:
        p, c = self.production, self.candidate
        verdict = "ok" if self.passes else "BELOW"
        return (f"{self.config} {self.metric}: candidate {c[0]:.3f} [{c[1]:.3f}-{c[2]:.3f}], production {p[0]:.3f} "
                f"[{p[1]:.3f}-{p[2]:.3f}], {self.n_queries} queries: {verdict}")

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "metric": self.metric, "production": list(self.production),
                "candidate": list(self.candidate), "n_queries": self.n_queries, "passes": self.passes}


@dataclass
class Promotion:
    """What a promotion (or its refusal) did."""

    run_id: str
    production: AliasTarget
    candidate: AliasTarget
    figures: list[Figure] = field(default_factory=list)
    # The evaluation runs the figures come from, and which were reused from eval_results.
    eval_runs: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    promoted: bool = False
    seconds: float = 0.0


def _table(db: str, name: str) -> Any:
    from grainline.storage.chunks import connect, open_table_if_exists
    from grainline.storage.tables import chunk_table_names

    conn = connect(db)
    table = open_table_if_exists(conn, name) if name.startswith("chunks_") else None
    if table is None:
        known = chunk_table_names(conn)
        raise AliasError(f"no chunks table {name!r} in {db!r}; chunks tables there: {', '.join(known) or 'none'}")
    return table


def _dim(table: Any) -> int:
    return int(table.schema.field("vector").type.list_size)


def _stored_model_id(table: Any) -> str:
    from grainline.evaluation.corpus import table_model_id

    return table_model_id(table)


def _loadable(ident: dict[str, Any]) -> str:
    """What ``EmbedderSettings(model=...)`` takes to give back the identity ``ident``
    (a reembed run records the identity, not the string it was given)."""
    from grainline.defaults import DEFAULT_MODEL

    name, path = str(ident.get("name") or ""), str(ident.get("path") or "")
    if name == _BUNDLED_NAME:
        return DEFAULT_MODEL
    if path and Path(path).is_dir() and Path(path).resolve().name == name:
        return path
    return name


def target_of(db: str, name: str) -> AliasTarget:
    """The alias target for chunks table ``name``: how to load the model that made its
    vectors, from the ledger's last ingestion or re-embedding of it, checked against
    the model id its rows carry (the default model's table needs no ledger)."""
    from grainline.embedding import EmbedderSettings, get_embedder
    from grainline.storage.ledger import Ledger

    table = _table(db, name)
    stored = _stored_model_id(table)
    if not stored:
        raise AliasError(f"table {name!r} in {db!r} is empty; ingest or re-embed into it first")
    run = Ledger(db).last_run_of(name, ("ingest", "reembed"))
    if run is not None:
        p = run["parameters"]
        ident, emb = p.get("model") or {}, p.get("embedder") or {}
        model = emb.get("model") or _loadable(ident)
        precision = "int8" if ident.get("variant") in ("int8", "ov_int8") else "auto"
        head = emb.get("head") or p.get("head")
    else:
        from grainline.defaults import DEFAULT_MODEL

        model, precision, head = DEFAULT_MODEL, "auto", None
    from grainline.embedding.identity import is_bundled

    if not is_bundled(model) and Path(model).exists():
        # An ingestion records the path as typed; readers run from other folders.
        model = str(Path(model).resolve())
    try:
        ident_now = get_embedder(EmbedderSettings(model=model, precision=precision, head=head, device="cpu")).identity
    except Exception as exc:  # noqa: BLE001 - a model folder moved, a hub name offline: said in one line
        raise AliasError(f"table {name!r}: cannot load its model {model!r} here ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if ident_now.model_id != stored:
        raise AliasError(f"table {name!r} holds vectors of {stored!r}, but its model as recorded ({model!r}) "
                         f"is {ident_now.model_id!r} now; re-embed it")
    return AliasTarget(table=name, model=model, model_id=stored, dim=_dim(table), precision=precision, head=head)


def production_target(db: str) -> AliasTarget:
    """What readers read now: the alias's target, else the default model's table."""
    alias = read_alias(db)
    if alias is not None:
        return alias.target
    from grainline.embedding import EmbedderSettings, get_embedder

    name = get_embedder(EmbedderSettings(device="cpu")).identity.table_name
    return target_of(db, name)


def _doc_hashes(table: Any) -> dict[str, str]:
    """doc_id -> content hash of every document of a chunks table (two columns read)."""
    out: dict[str, str] = {}
    for batch in table.search().select(["doc_id", "doc_hash"]).limit(None).to_batches(8192):
        for d, h in zip(batch.column("doc_id").to_pylist(), batch.column("doc_hash").to_pylist()):
            out.setdefault(d, h or "")
    return out


def check_same_corpus(queries: str, db: str, production: str, candidate: str) -> Any:
    """The query set was made on the corpus both tables hold: every document of the
    queries production can score is in the candidate with the same content. Returns
    the set; AliasError naming the first query that breaks it."""
    from grainline.evaluation.querysets import read_queryset

    qs = read_queryset(queries)
    prod = _doc_hashes(_table(db, production))
    cand = _doc_hashes(_table(db, candidate))

    def holds(docs: dict[str, str], d: str, h: str) -> bool:
        return d in docs and (not h or docs[d] == h)

    scorable = [q for q in qs.queries if q.doc_hashes and all(holds(prod, d, h) for d, h in q.doc_hashes.items())]
    if not scorable:
        some = next((d for q in qs.queries for d in q.doc_hashes), None)
        raise AliasError(f"{queries}: query set made on another corpus: none of its {len(qs.queries)} queries' "
                         f"documents are in production table {production!r}"
                         + (f" (e.g. {some!r})" if some else ""))
    for q in scorable:
        for d in q.doc_hashes:
            if cand.get(d) != prod[d]:
                why = "is not in" if d not in cand else "holds other content in"
                raise AliasError(f"{queries}: query set made on another corpus: document {d!r} of query {q.query_id!r} "
                                 f"{why} candidate table {candidate!r}")
    return qs


def gate_metric(primary: str, qs: Any) -> str:
    """The metric gated on: ``primary``, or for ``auto`` what ``grainline eval`` picks
    (span recall within 200 tokens with gold spans, else answer recall within 200
    tokens, else nDCG@10)."""
    if primary != "auto":
        return primary
    if any(q.spans for q in qs.queries):
        return "span_recall@200tok"
    if any(q.answers for q in qs.queries):
        return "answer@200tok"
    return "ndcg@10"


def scored(db: str, target: AliasTarget, queries: str, qs: Any, methods: tuple[str, ...], metric: str, device: str,
           backend: str, precision: str) -> tuple[list[dict[str, Any]], str, bool]:
    """(``metric`` rows per configuration, the evaluation run they come from, whether
    they were reused): the stored rows of an evaluation of this whole query set on
    exactly the table's current version when one scored every method asked for (the
    same table version gives the same scores), else a new evaluation."""
    from grainline.evaluation.results import results_of_version

    version = _table(db, target.table).version
    rows = results_of_version(db, f"queries-{qs.name}", f"v{qs.version}", target.table, version, metric)
    if rows and set(methods) <= {r["method"] for r in rows}:
        return [r for r in rows if r["method"] in methods], rows[0]["run_id"], True
    run = score(db, target, queries, methods, device, metric, backend, precision)
    got = [r for r in run.results if r["metric"] == metric and r["method"] in methods]
    if not got:
        known = sorted({r["metric"] for r in run.results if not r["metric"].startswith("cost_")})
        raise AliasError(f"--primary {metric!r}: the evaluation has no such metric (it has: {', '.join(known)})")
    return got, run.run_id, False


def score(db: str, target: AliasTarget, queries: str, methods: tuple[str, ...], device: str, primary: str = "auto",
          backend: str = "auto", precision: str = "auto") -> Any:
    """The query set scored on ``target`` (at its current version) with its own model;
    the results are stored in ``eval_results`` like any evaluation's."""
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation import runner
    from grainline.evaluation.model import EvalSettings

    settings = EvalSettings(queries=queries, table=target.table, same_corpus=True, db=db, methods=list(methods),
                            small_to_big=[], n_permutations=100, primary=primary,
                            embedder=EmbedderSettings(model=target.model, head=target.head,
                                                      precision=precision if target.precision == "auto" else target.precision,
                                                      device=device, backend=backend))
    run = runner.load(settings)
    runner.ingest_dataset(run)
    vectors = runner.embed_queries(run)
    for label in runner.groups(run):
        runner.score_strategy(run, label, vectors)
    runner.aggregate(run)
    runner.store_and_compare(run)
    return run


def figures(prod_rows: list[dict[str, Any]], cand_rows: list[dict[str, Any]]) -> list[Figure]:
    """The gated metric of every configuration both tables were scored on, side by side."""
    prod = {f"{r['config']}/{r['method']}": r for r in prod_rows}
    cand = {f"{r['config']}/{r['method']}": r for r in cand_rows}
    return [Figure(c, prod[c]["metric"], (prod[c]["value"], prod[c]["ci_low"], prod[c]["ci_high"]),
                   (cand[c]["value"], cand[c]["ci_low"], cand[c]["ci_high"]), int(prod[c]["n_queries"]))
            for c in prod if c in cand]


def refusal_line(p: Promotion) -> str:
    """The one line a refused promotion ends with: the rule and every failing figure."""
    bad = [f for f in p.figures if not f.passes]
    items = "; ".join(f"{f.config} {f.metric} {f.candidate[0]:.3f} < {f.production[1]:.3f} (production "
                      f"{f.production[0]:.3f} [{f.production[1]:.3f}-{f.production[2]:.3f}])" for f in bad)
    return (f"promotion of {p.candidate.table!r} refused: below production {p.production.table!r}'s 95% interval "
            f"on {items}; the rule: every configuration's candidate mean >= production's lower bound; alias unchanged")


def ensure_export(db: str, name: str, lock_timeout_s: float) -> None:
    """The Parquet export of ``name`` at its current version before the export link
    names it, so the export's consumers never follow the link to a missing folder (a
    re-embedded table was never exported). Under the table's write lock, as an
    ingestion's export is; an export already current costs one marker read."""
    from grainline.storage.locks import TableLock
    from grainline.storage.parquet import default_export_dir, export_table, exported_version

    out = default_export_dir(db, name)
    with TableLock(db, name, lock_timeout_s):
        table = _table(db, name)
        if exported_version(out) != table.version:
            export_table(table, out)


def _record(db: str, kind: str, status: str, frm: AliasTarget, to: AliasTarget, run_id: str, started: Any,
            extra: dict[str, Any]) -> None:
    from grainline.storage.ledger import Ledger, RunRecord, utcnow

    rec = RunRecord(run_id=run_id, flow=kind, source=f"alias:{frm.table}", table_name=to.table, model_id=to.model_id,
                    parameters={"from": frm.table, "to": to.table, "from_model_id": frm.model_id, **extra},
                    started=started, status=status, finished=None if status == "running" else utcnow())
    Ledger(db).write(rec)


def promote(db: str, candidate: str, queries: str, methods: tuple[str, ...] = DEFAULT_METHODS, device: str = "auto",
            lock_timeout_s: float = LOCK_TIMEOUT_S, primary: str = "auto", backend: str = "auto",
            precision: str = "auto") -> Promotion:
    """Score ``candidate`` against production on ``queries`` and move the alias to it
    when no configuration's primary metric falls below production's 95% interval;
    :class:`PromotionRefused` with the figures otherwise. The whole promotion holds the
    alias's lock, so a second one waits and then judges against the new production.
    Recorded in the ledger (flow ``promote``: completed or refused)."""
    from grainline.storage.ledger import new_run_id, utcnow

    t0 = time.perf_counter()
    started = utcnow()
    run_id = new_run_id("promote")
    if not Path(queries).is_file():
        raise AliasError(f"--queries {queries}: query set does not exist")
    with alias_lock(db, lock_timeout_s, run_id) as lock:
        prod = production_target(db)
        if candidate == prod.table:
            raise AliasError(f"{candidate!r} already is the production table; nothing to promote")
        _table(db, candidate)  # a missing candidate is named before its model is looked for
        cand = target_of(db, candidate)
        if cand.dim != prod.dim:
            raise AliasError(f"candidate {candidate!r} has {cand.dim}-dimensional vectors, production {prod.table!r} "
                             f"(what readers expect) {prod.dim}; alias unchanged")
        qs = check_same_corpus(queries, db, prod.table, cand.table)
        metric = gate_metric(primary, qs)
        prod_rows, prod_run, prod_reused = scored(db, prod, queries, qs, methods, metric, device, backend, precision)
        cand_rows, cand_run, cand_reused = scored(db, cand, queries, qs, methods, metric, device, backend, precision)
        p = Promotion(run_id, prod, cand, figures(prod_rows, cand_rows))
        p.eval_runs = {"production": prod_run, "candidate": cand_run}
        p.reused = [name for name, r in (("production", prod_reused), ("candidate", cand_reused)) if r]
        if not p.figures:
            raise AliasError(f"{candidate!r} and {prod.table!r} share no configuration to compare (strategies differ)")
        extra = {"queries": str(Path(queries).resolve()), "methods": list(methods), "metric": metric,
                 "figures": [f.as_dict() for f in p.figures], "eval_runs": p.eval_runs, "reused": p.reused}
        p.seconds = round(time.perf_counter() - t0, 3)
        if not all(f.passes for f in p.figures):
            _record(db, "promote", "refused", prod, cand, run_id, started, extra)
            raise PromotionRefused(refusal_line(p), p)
        ensure_export(db, cand.table, lock_timeout_s)
        # In the ledger before the pointer moves, so no switch is ever unrecorded.
        _record(db, "promote", "running", prod, cand, run_id, started, extra)
        switch(db, prod, cand, run_id, lock)
        _record(db, "promote", "completed", prod, cand, run_id, started, extra)
        p.promoted = True
    return p


def undo_promotion(db: str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> tuple[AliasTarget, AliasTarget]:
    """Move the alias back to the table before the last promotion (that table was never
    touched); recorded in the ledger (flow ``undo``). Returns (from, to)."""
    from grainline.storage.ledger import new_run_id, utcnow

    started = utcnow()
    run_id = new_run_id("undo")
    if read_alias(db) is None:  # said before any lock file is made in a database without promotions
        raise AliasError(f"nothing to undo: {db!r} has no alias (no promotion yet)")
    with alias_lock(db, lock_timeout_s, run_id) as lock:
        alias = read_alias(db)
        if alias is not None and alias.previous:
            back = alias.previous[-1]
            _table(db, back.table)  # never point readers at a table that is gone
            ensure_export(db, back.table, lock_timeout_s)
            _record(db, "undo", "running", alias.target, back, run_id, started, {})
        frm, new = undo(db, run_id, lock)  # says "nothing to undo" when the stack is empty
        _record(db, "undo", "completed", frm, new.target, run_id, started, {})
    return frm, new.target
