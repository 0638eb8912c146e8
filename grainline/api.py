"""grainline from Python: the main jobs as plain functions, run in this process
without a Prefect server (the CLI's ``ingest`` and ``eval`` run the same code as
Prefect flows: ``grainline.flows.ingest.ingest_flow``, ``grainline.flows.evaluate``).

    from grainline.api import Document, evaluate, ingest, ingest_documents, search

Each function validates its arguments with the same settings objects the CLI uses
and raises ``ValueError`` naming a bad value. The rest is what the CLI's
housekeeping, query-set and classification commands do, as functions that return
what those commands print: the command line only parses, calls one of them and
prints.

May import: classify, defaults, documents, embedding, evaluation, flows, ingest, labels, promote, redact, related, search, storage.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, NamedTuple

from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL
from grainline.documents import Document

__all__ = ["Document", "classify", "classify_study", "delete_source", "evaluate", "generate_queryset", "import_queryset",
           "ingest", "ingest_documents", "model_table", "production_table", "promote", "restore", "run_kind", "runs",
           "search", "source_root", "undo_promotion", "unlock_lease", "unlock_local"]

_STRATEGIES = ("sentence", "paragraph", "article")


def _embedder(model: str, device: str, precision: str = "auto", backend: str = "auto") -> Any:
    from grainline.embedding import EmbedderSettings

    return EmbedderSettings(model=model, device=device, precision=precision, backend=backend)


def ingest(source: str, db: str = DEFAULT_DB, strategies: Iterable[str] | str = _STRATEGIES, *, sync: str = "incremental",
           model: str = DEFAULT_MODEL, device: str = "auto", export_parquet: bool = True, **settings: Any) -> Any:
    """Ingest a folder (recursively), a file or a glob into ``db``; returns the run's
    ledger record (``.status``, ``.counts``, ``.table_name``, versions). Further
    :class:`grainline.ingest.IngestSettings` fields go in ``settings``."""
    from grainline.ingest import IngestSettings, run_ingest

    return run_ingest(IngestSettings(source=str(source), db=db, strategies=strategies, sync=sync,
                                     embedder=_embedder(model, device), export_parquet=export_parquet, **settings))


def ingest_documents(documents: Iterable[Document | dict[str, Any]], db: str = DEFAULT_DB, *, source: str = "python",
                     strategies: Iterable[str] | str = _STRATEGIES, sync: str = "incremental", model: str = DEFAULT_MODEL,
                     device: str = "auto", export_parquet: bool = True, **settings: Any) -> Any:
    """Ingest documents held in memory: :class:`Document` values or dicts with
    ``doc_id`` and ``text`` (optional ``title``, ``metadata``, ``source``). Their ids
    are kept as given; ``source`` labels them (``sync="full"`` deletes the documents of
    that label that are not passed again)."""
    from grainline.ingest import IngestSettings, run_ingest

    docs = [d if isinstance(d, Document) else Document(**d) for d in documents]
    return run_ingest(IngestSettings(source=source, db=db, strategies=strategies, sync=sync, embedder=_embedder(model, device),
                                     export_parquet=export_parquet, **settings), documents=docs)


def search(query: str, db: str = DEFAULT_DB, *, strategy: str = "paragraph", k: int = 5, method: str = "dense",
           metadata: list[str] | None = None, where: str | None = None, model: str | None = None,
           device: str = "auto") -> list[Any]:
    """The ``k`` best chunks of ``strategy`` for ``query``: ``method`` dense, bm25 or
    hybrid; ``metadata`` ``KEY=VALUE`` pairs the document metadata must hold; ``where``
    a SQL filter on the table's columns. Hits have ``rank``, ``score`` and ``row``.
    Without ``model``: the production table the database's alias names, with its model
    (``grainline promote``), else the default model's table."""
    from grainline.search import alias_reader
    from grainline.search import search as _search

    if model is None:
        table, settings = alias_reader(db, device)
        return _search(query, db, strategy, k, settings, where=where, method=method, metadata=metadata, table=table)
    return _search(query, db, strategy, k, _embedder(model, device), where=where, method=method, metadata=metadata)


def evaluate(dataset: str, db: str = DEFAULT_DB, *, strategies: Iterable[str] | str = _STRATEGIES,
             methods: Iterable[str] | str = ("dense", "bm25", "hybrid"), sample: int | None = None,
             reports_dir: str = "reports", model: str = DEFAULT_MODEL, device: str = "auto", **settings: Any) -> Any:
    """Evaluate the strategies and methods on a labelled dataset (``squad:PATH``,
    ``beir:PATH``, ``scifact:PATH`` or ``spans:PATH``); returns the run, whose
    ``.results`` are the ``eval_results`` rows (strategy, method, metric, value) and
    whose report lands in ``reports_dir``."""
    from grainline.evaluation import EvalSettings, parse_methods, run_eval

    return run_eval(EvalSettings(dataset=dataset, db=db, strategies=strategies, methods=parse_methods(methods),
                                 sample=sample, reports_dir=reports_dir, embedder=_embedder(model, device), **settings))


def promote(candidate: str, queries: str, db: str = DEFAULT_DB, *, methods: Iterable[str] | str = ("dense",),
            device: str = "auto", primary: str = "auto") -> Any:
    """What ``grainline promote`` does: score ``candidate`` and production on the query
    set ``queries`` and move the database's alias to the candidate when no
    configuration's primary metric falls below production's 95% interval; raises
    ``grainline.promote.PromotionRefused`` (a ``ValueError``) with the figures otherwise.
    Returns the promotion (``.figures``, ``.production``, ``.candidate``, ``.run_id``)."""
    from grainline.evaluation import parse_methods
    from grainline.promote import promote as _promote

    return _promote(db, candidate, queries, tuple(parse_methods(methods)), device, primary=primary)


def undo_promotion(db: str = DEFAULT_DB) -> tuple[str, str]:
    """What ``grainline promote --undo`` does; returns (table moved from, table moved to)."""
    from grainline.promote import undo_promotion as _undo

    frm, to = _undo(db)
    return frm.table, to.table


def production_table(db: str = DEFAULT_DB) -> str | None:
    """The chunks table the database's alias names (what :func:`search` reads without a
    model), or None without an alias (then the default model's table is read)."""
    from grainline.storage.alias import read_alias

    alias = read_alias(db)
    return alias.target.table if alias is not None else None


# --- housekeeping: what `grainline sources/runs/unlock/restore/maintain` do -----------------


def model_table(model: str = DEFAULT_MODEL) -> str:
    """The name of ``model``'s chunks table (the model is loaded on the CPU to learn its
    identity: name, revision, dimension and pooling name the table)."""
    from grainline.embedding import EmbedderSettings, get_embedder

    return get_embedder(EmbedderSettings(model=model, device="cpu")).identity.table_name


def source_root(path: str) -> str:
    """The source root a path names, as ingestion records it: URIs and ``dataset:``
    names as given, local paths resolved."""
    return path if "://" in path or path.startswith("dataset:") else os.path.realpath(path)


class SourceDeletion(NamedTuple):
    table: str
    root: str
    record: Any  # the ledger's RunRecord of the deletion


def delete_source(db: str, path: str, table: str | None = None, model: str = DEFAULT_MODEL) -> SourceDeletion:
    """Delete every document of one source root from a chunks table (``model``'s by
    default); recorded in the ledger, undone by :func:`restore` of ``version_before``."""
    from grainline.storage.inventory import delete_source as _delete

    table = table if table is not None else model_table(model)
    root = source_root(path)
    return SourceDeletion(table, root, _delete(db, table, root))


def run_kind(row: dict[str, Any]) -> str:
    """'evaluation' for an evaluation and the ingestion of its dataset, else 'production'."""
    return "evaluation" if row.get("flow") == "eval" or str(row.get("source") or "").startswith("dataset:") else "production"


def runs(db: str = DEFAULT_DB, last: int = 10, kind: str = "all") -> list[dict[str, Any]]:
    """The ``last`` runs of the ledger, oldest first, of one ``kind`` (all, production or
    evaluation): every ledger column, plus ``kind`` and ``duration_s`` (None while running)."""
    from grainline.storage.ledger import Ledger

    out = []
    for r in Ledger(db).runs():
        if kind == "all" or run_kind(r) == kind:
            dur = (r["finished"] - r["started"]).total_seconds() if r.get("finished") and r.get("started") else None
            out.append({**r, "kind": run_kind(r), "duration_s": None if dur is None else round(dur, 3)})
    return out[-last:]


def unlock_lease(db: str, table: str) -> Any:
    """Break the write lease of ``table`` in an object-store database; returns the holder
    it broke (``.describe()``), or None when none was held. A holder still alive finds
    its lease gone at its next renewal and stops before committing again. Raises
    ImportError without the s3 extra."""
    from grainline.redact import check_uri
    from grainline.storage.lease import break_lease

    check_uri(db)
    return break_lease(db, table)


class LockState(NamedTuple):
    table: str
    state: str  # "free", "held" (by a live process; nothing done) or "released" (with force)
    holder: str  # who holds or held it, described
    marked_interrupted: list[str]  # runs of a free table the ledger still had as running


def unlock_local(db: str, table: str | None = None, force: bool = False) -> Iterator[LockState]:
    """The write locks of a local database (one ``table``, else every lock), one at a time:
    a free one marks the runs the ledger still has as running interrupted, a held one is
    released only with ``force``. Lazy, so that a caller stopping at a held lock leaves the
    rest untouched. Raises ValueError when ``db`` does not exist."""
    from pathlib import Path

    from grainline.storage import locks

    lock_dir = locks.lock_path(db, "x").parent
    if not Path(db.removeprefix("file://")).exists():
        raise ValueError(f"--db {db!r} does not exist")
    names = [table] if table else sorted(p.name.removesuffix(".lock") for p in lock_dir.glob("*.lock"))
    for name in names:
        held, holder = locks.lock_status(db, name)
        if not held:
            from grainline.storage.ledger import Ledger

            # Free now, so any run of it still 'running' in the ledger is dead.
            stale = Ledger(db).mark_interrupted(name, current_run_id="grainline-unlock")
            yield LockState(name, "free", "", stale)
        elif not force:
            yield LockState(name, "held", locks.describe_holder(holder), [])
        else:
            locks.break_local_lock(db, name)
            yield LockState(name, "released", locks.describe_holder(holder), [])


class Restored(NamedTuple):
    table: str
    version: int  # the version restored
    now: int  # the new current version holding it
    rows: int
    export: str  # the table's Parquet export folder
    export_redone: bool


def restore(db: str, version: int, table: str | None = None, model: str = DEFAULT_MODEL) -> Restored:
    """Make ``version`` of a table (``model``'s chunks table by default) current again, as a
    new version, under the table's write lock; a Parquet export that exists is redone."""
    from grainline.embedding import EmbedderSettings, get_embedder
    from grainline.storage.chunks import ChunkStore, connect, open_table_if_exists
    from grainline.storage.locks import TableLock
    from grainline.storage.parquet import default_export_dir, export_table, exported_version

    if table is None:
        ident = get_embedder(EmbedderSettings(model=model, device="cpu")).identity
        table, dim = ident.table_name, ident.dim
    else:
        t = open_table_if_exists(connect(db), table)
        if t is None:
            raise ValueError(f"no table {table!r} in {db!r}")
        dim = t.schema.field("vector").type.list_size
    store = ChunkStore(db, table, dim)
    if not store.exists:
        raise ValueError(f"no table {table!r} in {db!r}")
    export = default_export_dir(db, table)
    with TableLock(db, table, timeout_s=600):  # not while an ingestion writes the table
        now = store.restore(version)
        # The export held the version before the restore: redo it now rather than
        # leave it stale until the next ingestion.
        refreshed = exported_version(export) is not None and export_table(store.table, export) is not None
    return Restored(table, version, now, store.count(), str(export), refreshed)


# --- query sets: what `grainline queries import/generate` do -------------------------------


class QuerySetWritten(NamedTuple):
    path: Any  # where the set was written (an older set there is kept as NAME.v<N>.jsonl)
    queryset: Any  # the QuerySet: .queries, .unresolved (each with its reason), .provenance
    info: dict[str, Any]  # the generator's figures (--llm: tokens, requests, cached responses, error)


def import_queryset(file: str, db: str = DEFAULT_DB, out: str | None = None, *, table: str | None = None,
                    model: str = DEFAULT_MODEL, head: str | None = None, fuzzy_threshold: float = 90.0,
                    fmt: str | None = None, split: str | None = None) -> QuerySetWritten:
    """Questions from a file as a query set on a chunks table (``model``'s or
    ``head``'s by default): grainline's CSV/TSV/JSONL rows, a Ragas test set, a
    LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON or a BEIR folder (``fmt``: grainline,
    ragas, llamaindex, beir; detected when unambiguous; ``split`` a BEIR qrels split).
    Evidence passages become character spans of the stored text. Written to ``out``
    (default: FILE's name + ``.queryset.jsonl``); the set's ``matches`` count what was
    matched how, per document."""
    from pathlib import Path

    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.corpus import open_corpus
    from grainline.evaluation.queryimport import import_queries
    from grainline.evaluation.querysets import QuerySet, provenance, write_queryset
    from grainline.redact import check_uri

    check_uri(db)
    t, version, model_id, docs = open_corpus(db, table, EmbedderSettings(model=model, head=head))
    res = import_queries(file, docs, threshold=fuzzy_threshold, fmt=fmt, split=split)
    qs = QuerySet(provenance(t.name, version, model_id, "import", str(file), fuzzy_threshold=fuzzy_threshold,
                             input_format=res.fmt), res.queries, res.unresolved, matches=res.report, notes=res.notes)
    name = Path(file).name if Path(file).is_dir() else Path(file).with_suffix(".queryset.jsonl").name
    return QuerySetWritten(write_queryset(qs, out or (name + ".queryset.jsonl" if Path(file).is_dir() else name)), qs, {})


def generate_queryset(db: str = DEFAULT_DB, out: str | None = None, *, table: str | None = None, model: str = DEFAULT_MODEL,
                      head: str | None = None, llm: Any = None, echo: Any = None) -> QuerySetWritten:
    """A query set generated from a chunks table's stored documents: offline from their
    headings, or with ``llm`` (:class:`grainline.evaluation.llmgen.LlmSettings`) by an
    OpenAI-compatible endpoint, ``echo`` receiving its progress lines. Written to ``out``
    (default ``headings.queryset.jsonl`` or ``llm.queryset.jsonl``)."""
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.corpus import open_corpus
    from grainline.evaluation.querysets import QuerySet, heading_queries, provenance, write_queryset
    from grainline.redact import check_uri

    check_uri(db)
    t, version, model_id, docs = open_corpus(db, table, EmbedderSettings(model=model, head=head))
    info: dict[str, Any] = {}
    if llm is not None:
        from grainline.evaluation.llmgen import generate_llm_queries

        queries, bad, info = generate_llm_queries(docs, llm, echo=echo or (lambda m: None))
        qs = QuerySet(provenance(t.name, version, model_id, "llm", llm.base_url, llm_model=llm.model, **info), queries, bad)
    else:
        queries, bad = heading_queries(docs)
        qs = QuerySet(provenance(t.name, version, model_id, "headings", f"table:{t.name}"), queries, bad)
    return QuerySetWritten(write_queryset(qs, out or ("llm.queryset.jsonl" if llm is not None else "headings.queryset.jsonl")),
                           qs, info)


# --- classification: what `grainline classify` does ---------------------------------------


class Classified(NamedTuple):
    labelled: Any  # the Records the centroids were fitted on
    records: Any  # the Records classified (with their labels, where they have one)
    centroids: Any  # the fitted Centroids (.classes)
    predictions: list[Any]  # one Prediction per record: label, cosine, margin to the runner-up


def classify(train: str | None = None, input_path: str | None = None, db: str = DEFAULT_DB, *, table: str | None = None,
             strategy: str = "paragraph", model: str = DEFAULT_MODEL, device: str = "auto", label_field: str = "label",
             text_field: str = "text", id_field: str = "id") -> Classified:
    """Nearest-centroid classification: centroids fitted on the labelled records of
    ``train`` (a .jsonl/.csv file), else on the table's documents whose metadata has
    ``label_field``; the records of ``input_path``, else the table's unlabelled
    documents, each given its nearest class."""
    from grainline import classify as cl
    from grainline.embedding import EmbedderSettings, get_embedder
    from grainline.labels import read_records, table_records
    from grainline.related import RelatedSettings

    def embedder() -> Any:
        return get_embedder(EmbedderSettings(model=model, device=device))

    if train is not None and input_path is None:
        raise ValueError("--train needs --input: the records to classify")
    from_table = None
    if train is None or input_path is None:
        from grainline.related import chunks_table_name
        from grainline.storage.damage import reading

        rs = RelatedSettings(db=db, table=table, model=model, strategy=strategy)
        with reading(chunks_table_name(rs), db):
            from_table = table_records(rs, label_field)
    fit = (cl.embed_records(read_records(train, text_field, label_field, id_field), embedder())
           if train is not None else from_table.labelled())
    new = (cl.embed_records(read_records(input_path, text_field, label_field, id_field, require_labels=False), embedder())
           if input_path is not None else from_table.unlabelled())
    cents = cl.Centroids.fit(fit.vectors, fit.labels)
    return Classified(fit, new, cents, cents.predict(new.vectors) if len(new.ids) else [])


def classify_study(dataset: str, per_class: Iterable[int] | str = (1, 5, 10), seeds: int = 3, *, model: str = DEFAULT_MODEL,
                   device: str = "auto") -> list[Any]:
    """Nearest-centroid accuracy on SQuAD paragraphs labelled by article (``squad:PATH``),
    fitted on ``per_class`` labelled records per class (``"1,5,10"`` or numbers), over
    ``seeds`` seeded splits each."""
    from grainline import classify as cl
    from grainline.embedding import EmbedderSettings, get_embedder

    kind, _, path = dataset.partition(":")
    if kind != "squad" or not path:
        raise ValueError(f"--evaluate expects squad:PATH, got {dataset!r}")
    counts = [int(x) for x in per_class.split(",") if x.strip()] if isinstance(per_class, str) else list(per_class)
    return cl.squad_centroid_study(path, get_embedder(EmbedderSettings(model=model, device=device)), counts, list(range(seeds)))
