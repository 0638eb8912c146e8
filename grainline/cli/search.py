"""Reading the stored chunks: ``search``, ``related`` and ``classify``."""

from __future__ import annotations

from pathlib import Path

import typer

from grainline.cli import checks as chk
from grainline.cli.common import (BACKEND_HELP, DB_HELP, DEVICE_HELP, MODEL_HELP, check_embedder_args, checked,
                                  damage_code, fail, print_hits, use_server)
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


def search(
    query: str = typer.Argument(..., help="Text to search for."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="Which chunks to search: sentence, paragraph or article."),
    k: int = typer.Option(5, "-k", "--k", help="Number of hits."),
    method: str = typer.Option("dense", "--method", "-m", help="dense (cosine), bm25 (full-text; loads no model), hybrid (both, fused) or svm (the evaluation's SVM ranker)."),
    where: list[str] = typer.Option([], "--where", help="KEY=VALUE the document metadata must hold, repeatable (topic=bees, year=2024)."),
    sql_filter: str = typer.Option(None, "--filter", help="SQL filter on the table's columns, e.g. \"doc_id LIKE '%notes%'\"."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    model: str = typer.Option(None, "--model", help=MODEL_HELP + " Default: the table the alias names and its model (grainline promote), else " + DEFAULT_MODEL + "."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help="Must match the ingestion's (int8 has its own table)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON lines."),
    head: str = typer.Option(None, "--head", help="A tuned head folder (grainline tune train): its own model and table."),
    returns: str = typer.Option(None, "--return", help="Small-to-big: return the coarser chunks (paragraph or article) that hold the best --strategy hits, each once."),
) -> None:
    """Search one strategy's chunks: dense, bm25, hybrid or svm."""
    with checked():
        chk.strategies(strategy)
        if returns is not None:
            from grainline.chunkers.nesting import check_coarser

            try:
                check_coarser(strategy, returns)
            except ValueError as exc:
                raise chk.ArgumentError(f"--return {returns}: {exc}") from None
        chk.search_method(method)
        chk.positive("-k", k)
        check_embedder_args(device, precision, backend)
        chk.existing_db(db)
        for pair in where:
            if "=" not in pair or pair.startswith("="):
                raise chk.ArgumentError(f"--where expects KEY=VALUE on document metadata, got {pair!r}")
    from grainline.embedding import EmbedderSettings
    from grainline.search import alias_reader
    from grainline.search import search as do_search

    try:
        table = None
        if model is None and head is None:
            # No model named: the production table the alias names, with its model.
            table, settings = alias_reader(db, device, backend)
            if settings.precision == "auto":
                settings = settings.model_copy(update={"precision": precision})
        else:
            settings = EmbedderSettings(model=model or DEFAULT_MODEL, device=device, precision=precision,
                                        backend=backend, head=head)
        hits = do_search(query, db, strategy, k, settings, where=sql_filter, method=method, metadata=where,
                         returns=returns, table=table)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), code=damage_code(exc))
    print_hits(query, returns or strategy, hits, as_json)


def related(
    doc_id: str = typer.Argument(None, help="Document id (as stored in the doc_id column)."),
    k: int = typer.Option(10, "-k", "--k", help="How many related documents."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Chunks table (default: the chunks table of --model, else the alias's, else the default model's)."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="Whose chunk vectors make the document vector."),
    precompute: bool = typer.Option(False, "--all", help="Store the top k of every document in related_docs (a flow run)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The documents most similar to DOC_ID (token-weighted mean of chunk vectors), or
    with --all the related_docs table for the whole collection."""
    import json

    from pydantic import ValidationError

    from grainline.related import RelatedSettings
    from grainline.related import related as find_related

    with checked():
        chk.existing_db(db)
        chk.strategies(strategy)
        chk.positive("-k", k)
    if precompute == (doc_id is not None):
        fail("give a DOC_ID, or --all to precompute every document")
    try:
        if table is None and model is None:
            from grainline.storage.alias import read_alias

            alias = read_alias(db)  # the production table, when a promotion named one
            if alias is not None:
                table, model = alias.target.table, alias.target.model
        model = model or DEFAULT_MODEL
        settings = RelatedSettings(db=db, table=table, model=model, strategy=strategy, k=k)
        if precompute:
            use_server()
            from grainline.flows.related import related_flow

            state = related_flow(db=db, table=table, model=model, strategy=strategy, k=k, return_state=True)
            state.result()
            typer.secho(state.message or "", bold=True)
            return
        hits = find_related(doc_id, settings)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        fail(str(exc), code=damage_code(exc))
    for h in hits:
        if as_json:
            typer.echo(json.dumps({"rank": h.rank, "doc_id": h.doc_id, "title": h.title, "score": round(h.score, 4)}))
        else:
            typer.echo(f"  {h.rank:>3}. {h.score:.3f}  {h.doc_id}" + (f"  {h.title}" if h.title and h.title != h.doc_id else ""))


def classify(
    train: str = typer.Option(None, "--train", help="Labelled records (.jsonl or .csv with text and label); default: the table's labelled documents."),
    input_path: str = typer.Option(None, "--input", help="Records to classify (.jsonl/.csv); default: the table's unlabelled documents."),
    label_field: str = typer.Option("label", "--label-field", help="Label field of the files, or metadata key of the table's documents."),
    text_field: str = typer.Option("text", "--text-field", help="Text field of the --train/--input files."),
    id_field: str = typer.Option("id", "--id-field", help="Id field of the --train/--input files."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Chunks table (default: the chunks table of --model)."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="Table records: whose chunk vectors make the document vector."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    fmt: str = typer.Option("table", "--format", help="table or jsonl."),
    output: str = typer.Option(None, "--output", "-o", help="Write the predictions here instead of stdout."),
    evaluate: str = typer.Option(None, "--evaluate", help="squad:PATH: accuracy on SQuAD paragraphs labelled by article, instead."),
    per_class: str = typer.Option("1,5,10", "--per-class", help="--evaluate: labelled records per class to fit on."),
    seeds: int = typer.Option(3, "--seeds", help="--evaluate: seeded splits per label count."),
) -> None:
    """Nearest-centroid classification: fit class centroids on labelled records and give
    each new record its nearest class, the cosine and the margin to the runner-up."""
    from pydantic import ValidationError

    from grainline import api
    from grainline import classify as cl
    from grainline.evaluation.datasets import DatasetError

    if fmt not in ("table", "jsonl"):
        fail(f"--format must be table or jsonl, got {fmt!r}")
    try:
        if evaluate is not None:
            typer.echo(cl.format_study(api.classify_study(evaluate, per_class, seeds, model=model, device=device)))
            return
        fit, new, cents, preds = api.classify(train, input_path, db, table=table, strategy=strategy, model=model, device=device,
                                              label_field=label_field, text_field=text_field, id_field=id_field)
    except (ValueError, FileNotFoundError, DatasetError, ValidationError) as exc:
        fail(str(exc), code=damage_code(exc))
    lines = cl.format_predictions(new, preds, fmt)
    if output:
        Path(output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        typer.echo(f"{len(preds)} predictions written to {output}")
    else:
        for line in lines:
            typer.echo(line)
    known = [(p.label, lab) for p, lab in zip(preds, new.labels) if lab is not None]
    summary = f"{len(cents.classes)} classes from {len(fit.ids)} labelled records; {len(preds)} classified"
    if known:
        summary += f"; accuracy on the {len(known)} with a label: {sum(a == b for a, b in known) / len(known):.3f}"
    typer.secho(summary, bold=True, err=True)
