"""``grainline eval`` and ``grainline eval-compare``. (Named ``evaluate`` rather than
``eval``: a submodule becomes an attribute of its package, and ``eval`` would shadow
the builtin there.)"""

from __future__ import annotations

from pathlib import Path

import typer

from grainline.cli import checks as chk
from grainline.cli.common import (BACKEND_HELP, DB_HELP, DEVICE_HELP, MODEL_HELP, PRECISION_HELP, check_embedder_args,
                                  checked, damage_code, fail, use_server, validation_line)
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


def eval_cmd(
    dataset: str = typer.Option(None, "--dataset", help="squad:PATH, beir:PATH, scifact:PATH or spans:PATH (ingested into evaluation tables)."),
    queries: str = typer.Option(None, "--queries", help="A query set (grainline queries ...): score the production table as ingested, every strategy present; only the queries are embedded."),
    table: str = typer.Option(None, "--table", help="With --queries: the chunks table (default: the model's)."),
    at: str = typer.Option(None, "--at", help="With --queries: the table's version number or tag (default: current)."),
    primary: str = typer.Option("auto", "--primary", help="Metric the recommendation maximises (auto: span_recall@200tok, else answer@200tok, else ndcg@10)."),
    prefer: str = typer.Option("cost", "--prefer", help="Among the configurations tied with the best: cost (the cheapest by --cost) or quality (the highest mean)."),
    cost: str = typer.Option("vectors", "--cost", help="What --prefer cost prices the tie by: vectors, bytes, embed_seconds or latency; comma-separated names are tried in order while a figure is unknown."),
    split: str = typer.Option(None, "--split", help="beir: qrels split (default test); scifact: claims file (default dev)."),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies to compare."),
    method: str = typer.Option("dense,bm25,hybrid", "--method", "-m", help="Comma-separated retrieval methods: dense, bm25, hybrid, svm."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="Where the dataset's chunks and eval_results go."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    long_article: str = typer.Option("pool", "--long-article", help="pool or truncate."),
    sample: int = typer.Option(None, "--sample", help="Score a seeded sample of N queries (the documents are all ingested and searched)."),
    sample_docs: int = typer.Option(None, "--sample-docs", help="With --dataset: ingest a seeded sample of N documents and score only the queries about them (a quick look)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --sample and --sample-docs draws."),
    reports: str = typer.Option("reports", "--reports", help="Folder for reports and plots."),
    head: str = typer.Option(None, "--head", help="A tuned head folder (grainline tune train): its own model and table."),
    svm_c: float = typer.Option(0.1, "--svm-c", help="svm method: the SVM's C (regularisation)."),
    svm_candidates: int = typer.Option(1000, "--svm-candidates", help="svm method: dense hits it re-ranks per query."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress of ingestion, query embedding and scoring on stderr."),
    small_to_big: str = typer.Option("sentence->paragraph,paragraph->article", "--small-to-big", help="Small-to-big configurations scored beside the flat ones: CHILD->PARENT searches CHILD chunks and returns the PARENT chunks that hold them (comma-separated; none: off)."),
    chunk: list[str] = typer.Option([], "--chunk", help="Chunker settings to sweep, repeatable: paragraph.max_tokens=128,256 --chunk paragraph.overlap=0,32 (every combination is a configuration)."),
) -> None:
    """Compare chunk granularities and retrieval methods on a labelled dataset, or on
    the production table with a query set; ends with one recommendation."""
    with checked():
        chk.db_uri(db)
        if dataset is not None:
            chk.dataset(dataset)
        chk.strategies(strategy)
        chk.eval_methods(method)
        check_embedder_args(device, precision, backend)
        chk.choice("--long-article", long_article, chk.LONG_ARTICLE)
        chk.choice("--prefer", prefer, chk.EVAL_PREFER)
        chk.eval_costs(cost)
        if sample is not None:
            chk.positive("--sample", sample)
        if sample_docs is not None:
            chk.positive("--sample-docs", sample_docs)
    from pydantic import ValidationError

    from grainline.evaluation.datasets import DatasetError
    from grainline.evaluation.runner import recommendation_line
    if (dataset is None) == (queries is None):  # before any server starts
        fail("give --dataset KIND:PATH or --queries SET (one of them)")
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.runner import EvalSettings, check_queryset

    try:
        # Bad arguments fail here, in one line, rather than inside the flow run.
        settings = EvalSettings(
            dataset=dataset, queries=queries, table=table, at=at, primary=primary, prefer=prefer, cost=cost,
            sample_docs=sample_docs,
            progress=progress, chunk_sweep=chunk or {}, split=split, strategies=strategy, methods=method, db=db,
            long_article=long_article, sample=sample, seed=seed, reports_dir=reports,
            embedder=EmbedderSettings(model=model, device=device, precision=precision, backend=backend, head=head,
                                      show_progress=progress),
            svm={"c": svm_c, "candidates": svm_candidates}, small_to_big=small_to_big,
        )
        if queries is not None:
            # A query set made for another table or model is refused before the flow
            # starts (a failure inside the flow would be logged with a traceback).
            check_queryset(settings)
    except (ValueError, FileNotFoundError, DatasetError, ValidationError) as exc:
        fail(validation_line(exc) if isinstance(exc, ValidationError) else str(exc), code=damage_code(exc))
    use_server()
    from grainline.flows.evaluate import evaluate_flow

    try:
        state = evaluate_flow(settings, return_state=True)
        result = state.result()
    except (ValueError, FileNotFoundError, DatasetError, ValidationError) as exc:
        fail(validation_line(exc) if isinstance(exc, ValidationError) else str(exc), code=damage_code(exc))
    md = Path(result["report"]).read_text(encoding="utf-8")
    typer.echo(md.split("## Plots")[0])
    if queries is not None:
        _queryset_counts(queries, len(result.get("skipped", [])))
    for qid, reason in result.get("skipped", [])[:50]:
        typer.secho(f"skipped {qid}: {reason}", fg=typer.colors.YELLOW)
    typer.echo(f"report: {result['report']}")
    for p in result["plots"]:
        typer.echo(f"plot:   {p}")
    typer.secho(state.message or "", bold=True)
    typer.secho(recommendation_line(result.get("recommendation") or {}), bold=True)


def _queryset_counts(queries: str, n_skipped: int) -> None:
    """What the scores rest on: the set's queries and, for an imported set, how its
    labels were matched (the counts its import printed)."""
    from grainline.cli.common import printable
    from grainline.evaluation.querysets import QuerySetError, match_lines, read_header

    try:
        header = read_header(Path(queries))
    except QuerySetError:
        return
    typer.echo(f"query set {printable(queries)}: {header.get('n_queries', '?')} queries, {n_skipped} skipped or "
               "unresolved rows listed below")
    for line in match_lines(header.get("matches") or {}):
        typer.echo(printable(line))


def eval_compare(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name as in the report (e.g. scifact, squad-dev-v1.1)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    split: str = typer.Option(None, "--split", help="The split the runs scored (default: any)."),
    metric: str = typer.Option("ndcg@10,recall@5,answer@100tok", "--metric", help="Comma-separated metrics."),
) -> None:
    """Compare models: the latest evaluation run of each model on one dataset, side by side."""
    from grainline.evaluation.report import compare_models_markdown
    from grainline.evaluation.results import latest_by_model

    by_model = latest_by_model(db, dataset, split)
    if not by_model:
        fail(f"no evaluation results for dataset {dataset!r} in {db!r}; run `grainline eval --model ...` once per model")
    typer.echo(compare_models_markdown(by_model, [m.strip() for m in metric.split(",") if m.strip()]))
