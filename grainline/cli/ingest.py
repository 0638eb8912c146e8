"""``grainline ingest`` (and its ``--dry-run``) and ``grainline demo``."""

from __future__ import annotations

from typing import Any

import typer

from grainline import DEMO_CORPUS
from grainline.cli import checks as chk
from grainline.cli.common import (BACKEND_HELP, DB_HELP, check_embedder_args, checked, fail, interrupted, one_line,
                                  print_hits, use_server, validation_message)
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


DEMO_QUERIES = [
    "how do insects tell each other where flowers are located",
    "keeping a wild yeast culture alive to leaven bread",
    "public and private keys and secure messaging over the internet",
]


def _print_ingest(result: dict[str, Any], source: str = "") -> None:
    c = result["counts"]
    typer.echo(
        f"run {result['run_id']} {result['status']}: table {result['table']} "
        f"v{result['version_before']} -> v{result['version_after']}"
    )
    typer.echo(
        f"  documents: {c['docs_seen']} seen, {c['docs_added']} added, {c['docs_updated']} updated, "
        f"{c['docs_unchanged']} unchanged, {c['docs_deleted']} deleted, {c['docs_failed']} failed, "
        f"{c.get('docs_skipped', 0)} skipped"
    )
    if c.get("files_read") or c.get("files_unchanged"):
        typer.echo(f"  files: {c.get('files_read', 0)} read, {c.get('files_unchanged', 0)} unchanged by stat (not read)")
    typer.echo(
        f"  chunks: {c['chunks_written']} written, {c['chunks_deleted']} deleted, "
        f"{c['chunks_embedded']} embedded, {c['chunks_reused']} reused from stored vectors"
    )
    typer.echo("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in c["stage_seconds"].items()))
    if prec := result.get("precision"):
        typer.echo(f"  precision: {prec['chosen']} ({prec['setting']}: {prec['reason']})")
    if backend := result.get("backend"):
        typer.echo(f"  backend: {backend['chosen']} ({backend['setting']}: {backend['reason']})")
    for f in c["failures"]:
        typer.secho(f"  FAILED {f['where']} ({f['stage']}): {f['reason']}", fg=typer.colors.YELLOW)
    skipped = c.get("skipped") or []
    # A FIFO, socket or device: named with what it is (its reason), apart from the
    # files of a type no reader reads.
    special = [f for f in skipped if "not a regular file" in f.get("reason", "")]
    unread = [f for f in skipped if f not in special]
    if unread:
        names = ", ".join(f["where"] for f in unread[:10]) + (f", ... ({len(unread) - 10} more)" if len(unread) > 10 else "")
        typer.secho(f"  skipped {len(unread)} file(s) no reader reads: {names}", fg=typer.colors.YELLOW)
    for f in special[:10]:
        typer.secho(f"  skipped {f['where']}: {f['reason']}", fg=typer.colors.YELLOW)
    if len(special) > 10:
        typer.secho(f"  ... {len(special) - 10} more special files skipped (grainline runs --json lists all)", fg=typer.colors.YELLOW)
    if not (c["docs_seen"] or c["docs_failed"] or skipped):
        typer.secho(f"warning: {source or 'the source'} holds no documents: nothing was ingested",
                    fg=typer.colors.YELLOW, err=True)


def _run_ingest_flow(settings: Any, runner: str = "local", dask_workers: int = 2) -> dict[str, Any]:
    from grainline.flows.ingest import ingest_here

    return ingest_here(settings, runner=runner, dask_workers=dask_workers)


def ingest(
    source: str = typer.Argument(..., help="Folder (recursive), file, glob, or s3://bucket/prefix (credentials from AWS_* variables) of documents."),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="LanceDB URI (local folder, s3://...)."),
    model: str = typer.Option(None, "--model", help="sentence-transformers name or local path. Default: the table the alias names and its model (grainline promote), else " + DEFAULT_MODEL + "."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, bf16 on CPUs with AMX/AVX512-BF16, else fp32; checked once per machine), fp32, fp16, bf16, int8 (CPU)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    batch_docs: int = typer.Option(64, "--batch-docs", help="Documents per commit."),
    sync: str = typer.Option("incremental", "--sync", help="incremental, or full (also delete documents gone from the source)."),
    long_article: str = typer.Option("pool", "--long-article", help="pool or truncate: articles longer than the model window."),
    parquet: bool = typer.Option(True, "--parquet/--no-parquet", help="Export the table to Parquet after the run."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any document failed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar while embedding."),
    maintain_after: bool = typer.Option(True, "--maintain/--no-maintain", help="Compact, prune and index the table after the run."),
    runner: str = typer.Option("local", "--runner", help="local, dask (a local cluster) or dask://HOST:PORT."),
    dask_workers: int = typer.Option(2, "--dask-workers", help="Workers of a local Dask cluster."),
    chunk: list[str] = typer.Option([], "--chunk", help="Chunker setting, repeatable: paragraph.max_tokens=200, sentence.min_tokens=3, ..."),
    id_field: str = typer.Option("id", "--id-field", help="Record id field of .jsonl/.parquet sources."),
    text_field: str = typer.Option("text", "--text-field", help="Record text field of .jsonl/.parquet sources."),
    title_field: str = typer.Option("title", "--title-field", help="Record title field of .jsonl/.parquet sources."),
    head: str = typer.Option(None, "--head", help="A tuned head folder (grainline tune train): its own model and table."),
    on_error: str = typer.Option("keep", "--on-error", help="keep (a re-run resumes) or restore (roll the table back) when a run fails."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be added, updated, deleted and embedded; embed and write nothing."),
    rehash: bool = typer.Option(False, "--rehash", help="Read and hash every file, even those whose size, modification time and inode say they are unchanged since the last run."),
) -> None:
    """Ingest documents with the Prefect ingestion flow."""
    with checked():
        # Before the flow run exists: Prefect stores a flow run's parameters.
        chk.db_uri(db)
        chk.source(source)
        chk.strategies(strategy)
        check_embedder_args(device, precision, backend)
        chk.choice("--sync", sync, chk.SYNC_MODES)
        chk.choice("--long-article", long_article, chk.LONG_ARTICLE)
        chk.choice("--on-error", on_error, chk.ON_ERROR)
        chk.runner(runner)
        chk.positive("--batch-size", batch_size)
        chk.positive("--batch-docs", batch_docs)
        chk.positive("--dask-workers", dask_workers)
        overrides = chk.chunk_options(chunk)
    from pydantic import ValidationError

    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, RunInterrupted
    from grainline.readers import ReaderSettings
    from grainline.storage.lease import LeaseError
    from grainline.storage.lock_protocol import TableLockTimeout
    from grainline.storage.maintenance import MaintenanceSettings

    try:
        settings = IngestSettings(
            source=source, strategies=strategy, db=db, sync=sync, long_article=long_article, batch_docs=batch_docs,
            export_parquet=parquet, chunker_overrides=overrides, on_error=on_error, rehash=rehash,
            follow_alias=model is None and head is None,
            embedder=EmbedderSettings(model=model or DEFAULT_MODEL, device=device, precision=precision, backend=backend,
                                      batch_size=batch_size, show_progress=progress, head=head),
            reader=ReaderSettings(id_field=id_field, text_field=text_field, title_field=title_field),
            maintenance=MaintenanceSettings(enabled=maintain_after),
        )
    except ValidationError as exc:
        fail("; ".join(validation_message(e) for e in exc.errors()))
    if dry_run:
        _dry_run(settings)
        return
    # Outside the try below: its one-line refusal exits 2, not "ingestion failed".
    use_server()
    try:
        result = _run_ingest_flow(settings, runner=runner, dask_workers=dask_workers)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        fail(str(exc))
    except (TableLockTimeout, LeaseError) as exc:  # another run holds the table, or the lease was lost
        fail(str(exc), code=1)
    except RunInterrupted as exc:  # a signal that became another error inside Prefect
        fail(str(exc), code=128 + exc.signum)
    except KeyboardInterrupt as exc:
        interrupted(exc)
    except Exception as exc:  # noqa: BLE001 - the run's end is in the ledger; one line here
        fail(f"ingestion failed: {one_line(exc)}", code=1)
    _print_ingest(result, source)
    if strict and result["counts"]["docs_failed"]:
        fail(f"{result['counts']['docs_failed']} document(s) failed (--strict)", code=1)


def _dry_run(settings: Any) -> None:
    from pydantic import ValidationError

    from grainline.ingest import dry_run

    source = settings.source
    try:
        plan = dry_run(settings)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        fail(str(exc))
    typer.echo(f"dry run: {source} -> table {plan['table']} (nothing embedded or written)")
    for label in ("added", "updated", "deleted"):
        ids = plan[label]
        typer.echo(f"  would be {label}: {len(ids)}" + (f"  ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" if ids else ""))
    typer.echo(f"  unchanged: {plan['unchanged']}, failed: {len(plan['failures'])}, skipped: {len(plan['skipped'])}")
    if plan.get("files_unchanged"):
        typer.echo(f"  files: {plan['files_read']} read, {plan['files_unchanged']} unchanged by stat (not read)")
    typer.echo(f"  chunks: {plan['chunks_written']} would be written, {plan['chunks_to_embed']} embedded "
               f"(the rest reuse stored vectors)")
    for f in plan["failures"]:
        typer.secho(f"  FAILED {f['where']} ({f['stage']}): {f['reason']}", fg=typer.colors.YELLOW)
    for f in plan["skipped"]:
        typer.secho(f"  skipped {f['where']}: {f['reason']}", fg=typer.colors.YELLOW)
    if plan["legacy_ids"]:
        typer.secho(f"  {plan['legacy_ids']} stored documents of this root have ids of an older grainline; "
                    f"--sync full replaces them", fg=typer.colors.YELLOW)


def demo(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    source: str = typer.Option(str(DEMO_CORPUS), "--source", help="The bundled demo corpus by default."),
) -> None:
    """Ingest the bundled demo corpus with all three strategies, then search it."""
    with checked():
        chk.db_uri(db)
        chk.source(source)
    from grainline.embedding import EmbedderSettings
    from grainline.redact import redact_uri
    from grainline.search import search as do_search

    typer.secho(f"Ingesting {source} into {redact_uri(db)} (sentence, paragraph, article) ...", bold=True)
    use_server()
    from grainline.ingest import IngestSettings

    result = _run_ingest_flow(IngestSettings(source=source, db=db, embedder=EmbedderSettings(show_progress=True)))
    _print_ingest(result)
    for query in DEMO_QUERIES:
        for strategy in ("sentence", "paragraph", "article"):
            print_hits(query, strategy, do_search(query, db, strategy, 3, EmbedderSettings()))
    typer.echo(f"\nTry: grainline search \"your question\" --strategy paragraph -k 5 --db {redact_uri(db)}")
