"""The ``grainline tune`` group: train a head on frozen vectors, apply it to a table,
report what it gains."""

from __future__ import annotations

import typer

from grainline.cli.common import DB_HELP, MODEL_HELP, fail
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


tune_app = typer.Typer(no_args_is_help=True, help="Label-tuned embeddings: train a head on frozen vectors, apply it, measure it.")


@tune_app.command("train")
def tune_train(
    out: str = typer.Option(..., "--out", "-o", help="Folder to write the head to (head.safetensors + head.json)."),
    labels: str = typer.Option(None, "--labels", help="Labelled .jsonl/.csv/.tsv file (text and label columns)."),
    table: str = typer.Option(None, "--table", help="Or: an ingested table whose document metadata has the label."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="LanceDB URI of --table."),
    label_field: str = typer.Option("label", "--label-field", help="Label column / metadata field."),
    text_field: str = typer.Option("text", "--text-field", help="Text column of --labels."),
    strategy: str = typer.Option("article", "--strategy", "-s", help="Chunks of --table used as records."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of each class held out to measure the head (0: none)."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    temperature: float = typer.Option(0.1, "--temperature", help="Contrastive loss temperature."),
    classes_per_batch: int = typer.Option(16, "--classes-per-batch", help="P classes per batch."),
    per_class: int = typer.Option(4, "--per-class", help="K records of each class per batch."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model (the one that wrote --table)."),
) -> None:
    """Train a head so that records of one class sit together; save it with its metadata."""
    from pydantic import ValidationError

    from grainline.embedding import EmbedderSettings
    from grainline.tuning import HeadSettings
    from grainline.tuning import train_from_source

    try:
        hs = HeadSettings(epochs=epochs, lr=lr, temperature=temperature, classes_per_batch=classes_per_batch,
                          per_class=per_class, seed=seed)
        meta = train_from_source(out, labels_file=labels, table=table, db=db, label_field=label_field, text_field=text_field,
                                 strategy=strategy, holdout=holdout, settings=hs,
                                 embedder_settings=EmbedderSettings(model=model, device="cpu"))
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        fail(str(exc))
    m = meta["metrics"]
    typer.echo(f"head {meta['weights_sha256'][:8]} -> {out}: {meta['n_records']} records, {len(meta['labels'])} classes, "
               f"{meta['steps']} steps in {meta['train_seconds']:.1f} s (loss {m['loss_first_epoch']:.3f} -> {m['loss_last_epoch']:.3f})")
    if "holdout" in m:
        h = m["holdout"]
        for k in h["raw"]:
            typer.echo(f"  held out ({h['n']}): top-{k} same-class rate raw {h['raw'][k]:.3f} -> tuned {h['tuned'][k]:.3f} "
                       f"(ceiling {h['ceiling'][k]:.3f})")
    typer.echo(f"use it with: --head {out}")


@tune_app.command("apply")
def tune_apply(
    head: str = typer.Argument(..., help="Head folder written by `grainline tune train`."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    source_table: str = typer.Option(None, "--from", help="Base-model table (default: the base model's chunks table)."),
    target_table: str = typer.Option(None, "--to", help="Tuned table (default: the tuned model's chunks table)."),
) -> None:
    """Re-embed a table's stored vectors with a head into the tuned model's table (no model run)."""
    from grainline.reembed import reembed_with_head

    try:
        res = reembed_with_head(db, head, source_table, target_table)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"{res['rows']} rows {res['source']} -> {res['target']} (model {res['model_id']}, "
               f"version {res['version']}) in {res['seconds']:.2f} s")


@tune_app.command("report")
def tune_report(
    dataset: str = typer.Option(..., "--dataset", help="squad:PATH (SQuAD v1.1 file or its folder): paragraphs labelled by article."),
    sizes: str = typer.Option("25,100,1000", "--sizes", help="Numbers of labelled paragraphs, comma-separated."),
    out: str = typer.Option("reports/tuning", "--out", "-o", help="Folder for the table, heads and plots."),
    cache: str = typer.Option(None, "--cache", help="Where the embedded paragraphs are kept (default ~/.cache/grainline/tuning)."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    temperature: float = typer.Option(0.1, "--temperature", help="Contrastive loss temperature."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
) -> None:
    """Top-k same-class rate, raw versus tuned, as the number of labels grows (SQuAD)."""
    from pydantic import ValidationError

    from grainline.embedding import EmbedderSettings
    from grainline.tuning import HeadSettings
    from grainline.tuning import markdown_table, squad_experiment

    kind, _, path = dataset.partition(":")
    try:
        if kind != "squad" or not path:
            raise ValueError(f"--dataset must be squad:PATH, got {dataset!r}")
        n = [int(x) for x in sizes.split(",") if x.strip()]
        res = squad_experiment(path, n, out, cache, HeadSettings(epochs=epochs, lr=lr, temperature=temperature, seed=seed),
                               EmbedderSettings(model=model, device="cpu"))
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        fail(str(exc))
    typer.echo(markdown_table(res))
    for p in res["plots"]:
        typer.echo(f"plot: {p}")
    typer.echo(f"heads and tuning.json under {out}")
