"""The ``grainline`` command."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from contextlib import contextmanager
from typing import Iterator

import typer

from grainline import DEMO_CORPUS
from grainline import cli_checks as chk
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL

app = typer.Typer(add_completion=False, no_args_is_help=True, help="grainline: batch document embedding with Prefect.")

# Rich markup would read [openvino] as a style tag and drop it: escaped.
BACKEND_HELP = 'torch, or openvino (CPU; pip install "grainline\\[openvino]").'
DB_HELP = "LanceDB URI (local folder, s3://...)."
MODEL_HELP = "sentence-transformers name or local path (each model has its own table)."
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."
PRECISION_HELP = "auto (fp16 on CUDA, else fp32), fp32, fp16, bf16, int8 (CPU; its own table)."


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"grainline {version('grainline')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """grainline: batch document embedding with Prefect."""


@contextmanager
def _checked() -> Iterator[None]:
    """Argument checks: a bad value is one line and exit code 2, before anything starts."""
    try:
        yield
    except chk.ArgumentError as exc:
        _fail(str(exc))


def _check_embedder_args(device: str, precision: str, backend: str) -> None:
    chk.device(device)
    chk.choice("--precision", precision, chk.PRECISIONS)
    chk.choice("--backend", backend, chk.BACKENDS)
    if backend == "openvino":
        import importlib.util

        if device not in ("auto", "cpu"):
            raise chk.ArgumentError(f"--backend openvino runs on the CPU, got --device {device!r}; use --backend torch")
        if importlib.util.find_spec("openvino") is None:
            raise chk.ArgumentError('--backend openvino needs OpenVINO: pip install "grainline[openvino]"')

DEMO_QUERIES = [
    "how do insects tell each other where flowers are located",
    "keeping a wild yeast culture alive to leaven bread",
    "public and private keys and secure messaging over the internet",
]


def _fail(message: str, code: int = 2) -> None:
    from grainline.redact import redact_text

    # Errors often quote the value received, and a --db URI may carry credentials.
    typer.secho(f"error: {redact_text(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _one_line(exc: BaseException) -> str:
    """An error as one line: the ledger's account of the run when the error carries it
    (the real error, then whether the table was kept or restored, and the undo
    command), else its type and message."""
    notes = [n for n in getattr(exc, "__notes__", []) if n]
    text = notes[-1] if notes else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _interrupted(exc: BaseException) -> None:
    """Ctrl-C or SIGTERM: the run recorded itself as interrupted; exit 128 + signal."""
    import signal

    from grainline.ingest import interrupt_signal

    sig = interrupt_signal(exc) or signal.SIGINT
    notes = [n for n in getattr(exc, "__notes__", []) if n]
    _fail(" ".join((notes[-1] if notes else f"interrupted by {signal.Signals(sig).name}").split()), code=128 + sig)


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
    typer.echo(
        f"  chunks: {c['chunks_written']} written, {c['chunks_deleted']} deleted, "
        f"{c['chunks_embedded']} embedded, {c['chunks_reused']} reused from stored vectors"
    )
    typer.echo("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in c["stage_seconds"].items()))
    if prec := result.get("precision"):
        typer.echo(f"  precision: {prec['chosen']} ({prec['setting']}: {prec['reason']})")
    for f in c["failures"]:
        typer.secho(f"  FAILED {f['where']} ({f['stage']}): {f['reason']}", fg=typer.colors.YELLOW)
    skipped = c.get("skipped") or []
    if skipped:
        names = ", ".join(f["where"] for f in skipped[:10]) + (f", ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
        typer.secho(f"  skipped {len(skipped)} file(s) no reader reads: {names}", fg=typer.colors.YELLOW)
    if not (c["docs_seen"] or c["docs_failed"] or skipped):
        typer.secho(f"warning: {source or 'the source'} holds no documents: nothing was ingested",
                    fg=typer.colors.YELLOW, err=True)


def _use_server() -> None:
    """Before a flow runs: use PREFECT_API_URL's server, else grainline's kept local one
    (started the first time), so no command pays for a temporary server."""
    from grainline.server import ServeError, use_prefect_server

    try:
        use_prefect_server(announce=lambda msg: typer.echo(msg, err=True))
    except ServeError as exc:
        _fail(str(exc))
    except (RuntimeError, TimeoutError) as exc:
        _fail(f"could not start the local Prefect server: {str(exc).splitlines()[0]}", code=1)


def _run_ingest_flow(**kwargs: Any) -> dict[str, Any]:
    from grainline.flows.ingest import ingest_flow

    return ingest_flow(**kwargs)


@app.command()
def ingest(
    source: str = typer.Argument(..., help="Folder (recursive), file or glob of documents."),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="LanceDB URI (local folder, s3://...)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="sentence-transformers name or local path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, bf16 on CPUs with AMX/AVX512-BF16, else fp32; checked once per machine), fp32, fp16, bf16, int8 (CPU)."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
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
) -> None:
    """Ingest documents with the Prefect ingestion flow."""
    with _checked():
        # Before the flow run exists: Prefect stores a flow run's parameters.
        chk.db_uri(db)
        chk.source(source)
        chk.strategies(strategy)
        _check_embedder_args(device, precision, backend)
        chk.choice("--sync", sync, chk.SYNC_MODES)
        chk.choice("--long-article", long_article, chk.LONG_ARTICLE)
        chk.choice("--on-error", on_error, chk.ON_ERROR)
        chk.runner(runner)
        chk.positive("--batch-size", batch_size)
        chk.positive("--batch-docs", batch_docs)
        chk.positive("--dask-workers", dask_workers)
        overrides = chk.chunk_options(chunk)
    if dry_run:
        _dry_run(source=source, strategies=strategy, db=db, model=model, device=device, precision=precision, backend=backend,
                 sync=sync, long_article=long_article, overrides=overrides, head=head,
                 reader={"id_field": id_field, "text_field": text_field, "title_field": title_field})
        return
    from pydantic import ValidationError

    from grainline.storage.lease import LeaseError
    from grainline.storage.locks import TableLockTimeout

    # Outside the try below: its one-line refusal exits 2, not "ingestion failed".
    _use_server()
    try:
        result = _run_ingest_flow(
            reader={"id_field": id_field, "text_field": text_field, "title_field": title_field},
            chunker_overrides=overrides,
            source=source, strategies=strategy, model=model, device=device, precision=precision, backend=backend,
            batch_size=batch_size, db=db, sync=sync, long_article=long_article, batch_docs=batch_docs,
            export_parquet=parquet, show_progress=progress, runner=runner, dask_workers=dask_workers, head=head,
            on_error=on_error, maintain=maintain_after,
        )
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    except (TableLockTimeout, LeaseError) as exc:  # another run holds the table, or the lease was lost
        _fail(str(exc), code=1)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except Exception as exc:  # noqa: BLE001 - the run's end is in the ledger; one line here
        line = _one_line(exc)
        if line.startswith("interrupted by SIG"):  # a signal that became another error inside Prefect
            import signal

            _fail(line, code=128 + int(signal.Signals[line.split()[2].rstrip(";")]))
        _fail(f"ingestion failed: {line}", code=1)
    _print_ingest(result, source)
    if strict and result["counts"]["docs_failed"]:
        _fail(f"{result['counts']['docs_failed']} document(s) failed (--strict)", code=1)


def _dry_run(source: str, strategies: str, db: str, model: str, device: str, precision: str, backend: str, sync: str,
             long_article: str, overrides: dict, head: str | None, reader: dict) -> None:
    from pydantic import ValidationError

    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, dry_run
    from grainline.readers import ReaderSettings

    try:
        plan = dry_run(IngestSettings(
            source=source, strategies=strategies, db=db, sync=sync, long_article=long_article, chunker_overrides=overrides,
            embedder=EmbedderSettings(model=model, device=device, precision=precision, backend=backend, head=head),
            reader=ReaderSettings(**reader)))
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    typer.echo(f"dry run: {source} -> table {plan['table']} (nothing embedded or written)")
    for label in ("added", "updated", "deleted"):
        ids = plan[label]
        typer.echo(f"  would be {label}: {len(ids)}" + (f"  ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" if ids else ""))
    typer.echo(f"  unchanged: {plan['unchanged']}, failed: {len(plan['failures'])}, skipped: {len(plan['skipped'])}")
    typer.echo(f"  chunks: {plan['chunks_written']} would be written, {plan['chunks_to_embed']} embedded "
               f"(the rest reuse stored vectors)")
    for f in plan["failures"]:
        typer.secho(f"  FAILED {f['where']} ({f['stage']}): {f['reason']}", fg=typer.colors.YELLOW)
    for f in plan["skipped"]:
        typer.secho(f"  skipped {f['where']}: {f['reason']}", fg=typer.colors.YELLOW)
    if plan["legacy_ids"]:
        typer.secho(f"  {plan['legacy_ids']} stored documents of this root have ids of an older grainline; "
                    f"--sync full replaces them", fg=typer.colors.YELLOW)


@app.command()
def tables(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print each table as a JSON line."),
) -> None:
    """The tables of a database: rows, version, versions kept, models and strategies."""
    with _checked():
        chk.existing_db(db)
    from grainline.storage.inventory import table_summaries

    rows = table_summaries(db)
    if not rows and not as_json:
        typer.echo(f"no tables in {db}")
    for t in rows:
        if as_json:
            typer.echo(json.dumps(t))
            continue
        extra = ""
        if t["models"]:
            extra = f"  models {', '.join(t['models'])}  strategies " + ", ".join(f"{k} {v}" for k, v in t["strategies"].items())
        typer.echo(f"{t['table']}  {t['rows']} rows  version {t['version']} ({t['versions']} kept){extra}")


@app.command()
def sources(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Chunks table (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    delete: str = typer.Option(None, "--delete", help="Delete every document of this source root from the table (recorded in the ledger)."),
    as_json: bool = typer.Option(False, "--json", help="Print each source as a JSON line."),
) -> None:
    """The sources a chunks table was ingested from (documents, chunks, last run), or
    with --delete ROOT the removal of one whole source."""
    with _checked():
        chk.existing_db(db)
    from grainline.storage.inventory import delete_source, source_summaries
    from grainline.storage.locks import TableLockTimeout

    try:
        if table is None:
            from grainline.embedding import EmbedderSettings
            from grainline.ingest import get_embedder

            table = get_embedder(EmbedderSettings(model=model, device="cpu")).identity.table_name
        if delete is not None:
            root = delete if "://" in delete or delete.startswith("dataset:") else os.path.realpath(delete)
            rec = delete_source(db, table, root)
            typer.echo(f"deleted source {root}: {rec.counts.docs_deleted} documents, {rec.counts.chunks_deleted} chunks; "
                       f"table {table} v{rec.version_before} -> v{rec.version_after} "
                       f"(undo: grainline restore {rec.version_before} --db {db} --table {table})")
            return
        found = source_summaries(db, table)
    except (ValueError, TableLockTimeout) as exc:
        _fail(str(exc))
    for s in found:
        if as_json:
            typer.echo(json.dumps({"source_root": s.source_root, "documents": s.documents, "chunks": s.chunks,
                                   "last_ingested": s.last_ingested.isoformat() if s.last_ingested else None}))
        else:
            when = f"{s.last_ingested:%Y-%m-%d %H:%M:%S}" if s.last_ingested else "-"
            typer.echo(f"{s.source_root}  {s.documents} documents  {s.chunks} chunks  last ingested {when}")


@app.command()
def search(
    query: str = typer.Argument(..., help="Text to search for."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="Which chunks to search: sentence, paragraph or article."),
    k: int = typer.Option(5, "-k", "--k", help="Number of hits."),
    method: str = typer.Option("dense", "--method", "-m", help="dense (cosine), bm25 (full-text; loads no model), hybrid (both, fused) or svm (the evaluation's SVM ranker)."),
    where: list[str] = typer.Option([], "--where", help="KEY=VALUE the document metadata must hold, repeatable (topic=bees, year=2024)."),
    sql_filter: str = typer.Option(None, "--filter", help="SQL filter on the table's columns, e.g. \"doc_id LIKE '%notes%'\"."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help="Must match the ingestion's (int8 has its own table)."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON lines."),
    head: str = typer.Option(None, "--head", help="A tuned head folder (grainline tune train): its own model and table."),
) -> None:
    """Search one strategy's chunks: dense, bm25, hybrid or svm."""
    with _checked():
        chk.strategies(strategy)
        chk.search_method(method)
        chk.positive("-k", k)
        _check_embedder_args(device, precision, backend)
        chk.existing_db(db)
        for pair in where:
            if "=" not in pair or pair.startswith("="):
                raise chk.ArgumentError(f"--where expects KEY=VALUE on document metadata, got {pair!r}")
    from grainline.embedding import EmbedderSettings
    from grainline.search import search as do_search

    try:
        hits = do_search(query, db, strategy, k, EmbedderSettings(model=model, device=device, precision=precision,
                                                                     backend=backend, head=head),
                         where=sql_filter, method=method, metadata=where)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_hits(query, strategy, hits, as_json)


def parse_chunk_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """['paragraph.max_tokens=200'] -> {'paragraph': {'max_tokens': 200}}."""
    return chk.chunk_options(items)


def _print_hits(query: str, strategy: str, hits: list, as_json: bool = False) -> None:
    if as_json:
        for h in hits:
            row = {**h.row, "metadata": json.loads(h.row["metadata"]) if h.row.get("metadata") else {}}
            typer.echo(json.dumps({"rank": h.rank, "score": round(h.score, 4), **row}, ensure_ascii=False))
        return
    typer.secho(f"\n{strategy} chunks for: {query!r}", bold=True)
    if not hits:
        typer.echo("  (no hits)")
    for h in hits:
        text = " ".join(h.row["text"].split())
        snippet = textwrap.shorten(text, width=150, placeholder=" ...")
        typer.echo(f"  {h.rank}. {h.score:.3f}  {printable(h.row['doc_id'])} [{h.row['start']}:{h.row['end']}]  {printable(snippet)}")


def printable(text: str) -> str:
    """Text safe to print on a terminal, on one line: control characters (newlines in
    file names, escape sequences in documents) and bidi controls shown escaped."""
    import unicodedata

    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (c == " ") else
                   (c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c)
                   for c in text)


def run_kind(row: dict[str, Any]) -> str:
    """'evaluation' for an evaluation and the ingestion of its dataset, else 'production'."""
    return "evaluation" if row.get("flow") == "eval" or str(row.get("source") or "").startswith("dataset:") else "production"


def _run_json(r: dict[str, Any]) -> dict[str, Any]:
    dur = (r["finished"] - r["started"]).total_seconds() if r.get("finished") and r.get("started") else None
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
    return {**out, "kind": run_kind(r), "duration_s": None if dur is None else round(dur, 3)}


@app.command()
def runs(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    last: int = typer.Option(10, "--last", help="How many recent runs to show."),
    kind: str = typer.Option("all", "--kind", help="all, production (your documents) or evaluation (eval runs and their datasets' ingestions)."),
    as_json: bool = typer.Option(False, "--json", help="Print each run as a JSON line, every ledger column included."),
) -> None:
    """The run ledger: recent runs with duration, table, status, counts and failures."""
    with _checked():
        chk.existing_db(db)
        chk.choice("--kind", kind, chk.RUN_KINDS)
        chk.positive("--last", last)
    from grainline.storage.ledger import Ledger

    rows = [r for r in Ledger(db).runs() if kind == "all" or run_kind(r) == kind][-last:]
    if not rows and not as_json:
        typer.echo(f"no {'' if kind == 'all' else kind + ' '}runs in {db}")
    for r in rows:
        j = _run_json(r)
        if as_json:
            typer.echo(json.dumps(j, default=str, ensure_ascii=False))
            continue
        dur = f"{j['duration_s']:.1f} s" if j["duration_s"] is not None else "-"
        typer.echo(
            f"{r['run_id']}  {r['flow']} ({j['kind']})  {r['status']}  {r['started']:%Y-%m-%d %H:%M:%S}  {dur}  "
            f"table {r['table_name']} v{r['version_before']}->v{r['version_after']}"
        )
        typer.echo(
            f"    seen {r['docs_seen']} added {r['docs_added']} updated {r['docs_updated']} unchanged {r['docs_unchanged']} "
            f"deleted {r['docs_deleted']} failed {r['docs_failed']} skipped {r.get('docs_skipped') or 0}  "
            f"chunks {r['chunks_written']} written, {r['chunks_embedded']} embedded"
            + (f"  fragments {r['fragments']} versions {r['versions']} unindexed {r['unindexed_rows']}" if r.get("fragments") is not None else "")
        )
        for f in r["failures"][:5]:
            typer.echo(f"    FAILED {f['where']} ({f.get('stage', 'read')}): {f['reason']}")
        if len(r["failures"]) > 5:
            typer.echo(f"    ... {len(r['failures']) - 5} more failures (--json lists all)")
        if r["error"]:
            typer.echo(f"    error: {r['error']}")


@app.command()
def unlock(
    db: str = typer.Option(DEFAULT_DB, "--db", help="LanceDB URI (local folder, s3://...)."),
    table: str = typer.Option(None, "--table", help="The table whose write lock to release (default: list every lock)."),
    force: bool = typer.Option(False, "--force", help="Release it even while a live process holds it."),
) -> None:
    """Show or release a table's write lock. A local lock is an OS lock that its holder
    drops the moment it exits or dies, so this is only needed for a run that is stuck;
    an object-store lease expires by itself (see README, "Crashes, resume and concurrent
    writers")."""
    from grainline.storage import locks

    if not locks.is_local(db):
        try:
            from grainline.storage.lease import break_lease
        except ImportError:
            _fail(f"--db {db!r}: releasing an object-store lease needs the s3 extra: pip install \"grainline[s3]\"")
        from grainline.redact import check_uri, redact_uri

        if not table:
            _fail("--table is required for an object-store database")
        try:
            check_uri(db)
            broken = break_lease(db, table)
        except (ValueError, RuntimeError, OSError) as exc:
            _fail(str(exc))
        # A holder that is still alive finds its lease gone at its next renewal and stops
        # before committing again.
        typer.echo(f"table {table} in {redact_uri(db)}: " + ("no write lease is held" if broken is None
                   else f"broke the write lease of {broken.describe()}"))
        return
    lock_dir = locks.lock_path(db, "x").parent
    if not Path(db.removeprefix("file://")).exists():
        _fail(f"--db {db!r} does not exist")
    tables = [table] if table else sorted(p.name.removesuffix(".lock") for p in lock_dir.glob("*.lock"))
    if not tables:
        typer.echo(f"no write locks in {db}")
    for name in tables:
        held, holder = locks.lock_status(db, name)
        if not held:
            from grainline.storage.ledger import Ledger

            # Free now, so any run of it still 'running' in the ledger is dead.
            stale = Ledger(db).mark_interrupted(name, current_run_id="grainline-unlock")
            note = f"; marked interrupted: {', '.join(stale)}" if stale else ""
            typer.echo(f"table {name}: not locked{note}")
        elif not force:
            _fail(f"table {name} is being written by {locks.describe_holder(holder)}, which is alive; stop that "
                  f"process (its lock goes with it), or pass --force to let the next run write beside it", code=1)
        else:
            locks.break_local_lock(db, name)
            typer.echo(f"table {name}: lock of {locks.describe_holder(holder)} released (--force)")


@app.command()
def restore(
    version: int = typer.Argument(..., help="Table version to make current again (see `grainline runs`)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Table name (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
) -> None:
    """Roll a table back to a named version (a new version; history is kept)."""
    with _checked():
        chk.existing_db(db)
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import get_embedder
    from grainline.storage.chunks import ChunkStore, connect, open_table_if_exists

    if table is None:
        ident = get_embedder(EmbedderSettings(model=model, device="cpu")).identity
        table, dim = ident.table_name, ident.dim
    else:
        t = open_table_if_exists(connect(db), table)
        if t is None:
            _fail(f"no table {table!r} in {db!r}")
        dim = t.schema.field("vector").type.list_size
    store = ChunkStore(db, table, dim)
    if not store.exists:
        _fail(f"no table {table!r} in {db!r}")
    from grainline.storage.lease import LeaseError
    from grainline.storage.locks import TableLock, TableLockTimeout

    from grainline.storage.parquet import default_export_dir, export_table, exported_version

    export = default_export_dir(db, table)
    try:
        with TableLock(db, table, timeout_s=600):  # not while an ingestion writes the table
            now = store.restore(version)
            # The export held the version before the restore: redo it now rather than
            # leave it stale until the next ingestion.
            refreshed = exported_version(export) is not None and export_table(store.table, export) is not None
    except (ValueError, TableLockTimeout, LeaseError) as exc:
        _fail(str(exc))
    typer.echo(f"table {table}: version {version} restored as version {now} ({store.count()} rows)"
               + (f"; Parquet export {export} redone" if refreshed else ""))


@app.command()
def maintain(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Table name (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    prune_days: float = typer.Option(7.0, "--prune-days", help="Prune versions older than this (tagged ones and the newest --keep-versions stay)."),
    keep_versions: int = typer.Option(10, "--keep-versions", help="Newest versions pruning always keeps."),
    drop_eval_tags_days: float = typer.Option(None, "--drop-eval-tags-days", help="Delete evaluation tags older than this first (default: keep them)."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Prune old versions (tagged ones stay)."),
    index: bool = typer.Option(True, "--index/--no-index", help="Build or retrain the IVF_PQ vector index (from 256 rows)."),
) -> None:
    """Compact, prune and index a table now: what runs after every ingestion."""
    with _checked():
        chk.existing_db(db)
    from pydantic import ValidationError

    from grainline.storage.maintenance import MaintenanceSettings, maintain_table

    try:
        settings = MaintenanceSettings(prune=prune, prune_older_than_days=prune_days, keep_versions=keep_versions, vector_index=index,
                                       drop_eval_tags_older_than_days=drop_eval_tags_days)
        if table is None:
            from grainline.embedding import EmbedderSettings
            from grainline.ingest import get_embedder

            table = get_embedder(EmbedderSettings(model=model, device="cpu")).identity.table_name
        rep = maintain_table(db, table, settings)
    except (ValueError, ValidationError) as exc:
        _fail(str(exc))
    b, a = rep.before, rep.after
    typer.echo(f"table {rep.table}: {a.rows} rows, {rep.seconds:.2f} s")
    typer.echo(f"  fragments {b.fragments} -> {a.fragments}, versions {b.versions} -> {a.versions}, "
               f"unindexed rows {b.unindexed_rows} -> {a.unindexed_rows}, vector index {a.vector_index or 'none (exact search)'}")
    for action in rep.actions:
        typer.echo(f"  - {action}")


@app.command()
def reembed(
    from_table: str = typer.Option(..., "--from-table", help="Chunks table whose chunks are reused (see `grainline runs`)."),
    model: str = typer.Option(..., "--model", help="The new model: sentence-transformers name or local path."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    batch_docs: int = typer.Option(64, "--batch-docs", help="Documents per commit."),
) -> None:
    """Embed an existing table's chunks with another model, into that model's table:
    no source is read and nothing is chunked."""
    with _checked():
        _check_embedder_args(device, precision, backend)
        chk.existing_db(db)
        chk.positive("--batch-size", batch_size)
        chk.positive("--batch-docs", batch_docs)
    from pydantic import ValidationError

    from grainline.embedding import EmbedderSettings
    from grainline.reembed import reembed as do_reembed

    try:
        rec = do_reembed(db, from_table, EmbedderSettings(model=model, device=device, precision=precision, backend=backend,
                                                       batch_size=batch_size),
                         batch_docs=batch_docs)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    c = rec.counts
    typer.echo(f"run {rec.run_id} {rec.status}: {from_table} -> {rec.table_name} (model {rec.model_id}) "
               f"v{rec.version_before} -> v{rec.version_after}")
    typer.echo(f"  documents: {c.docs_seen} seen, {c.docs_added} added, {c.docs_updated} updated, {c.docs_unchanged} unchanged")
    typer.echo(f"  chunks: {c.chunks_written} written, {c.chunks_embedded} embedded, {c.chunks_reused} reused; nothing chunked")
    typer.echo("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in c.stage_seconds.items()))


@app.command()
def demo(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    source: str = typer.Option(str(DEMO_CORPUS), "--source", help="The bundled demo corpus by default."),
) -> None:
    """Ingest the bundled demo corpus with all three strategies, then search it."""
    with _checked():
        chk.db_uri(db)
        chk.source(source)
    from grainline.embedding import EmbedderSettings
    from grainline.redact import redact_uri
    from grainline.search import search as do_search

    typer.secho(f"Ingesting {source} into {redact_uri(db)} (sentence, paragraph, article) ...", bold=True)
    _use_server()
    result = _run_ingest_flow(source=source, strategies="sentence,paragraph,article", db=db, show_progress=True)
    _print_ingest(result)
    for query in DEMO_QUERIES:
        for strategy in ("sentence", "paragraph", "article"):
            _print_hits(query, strategy, do_search(query, db, strategy, 3, EmbedderSettings()))
    typer.echo(f"\nTry: grainline search \"your question\" --strategy paragraph -k 5 --db {redact_uri(db)}")


@app.command("eval")
def eval_cmd(
    dataset: str = typer.Option(None, "--dataset", help="squad:PATH, beir:PATH, scifact:PATH or spans:PATH (ingested into evaluation tables)."),
    queries: str = typer.Option(None, "--queries", help="A query set (grainline queries ...): score the production table as ingested, every strategy present; only the queries are embedded."),
    table: str = typer.Option(None, "--table", help="With --queries: the chunks table (default: the model's)."),
    at: str = typer.Option(None, "--at", help="With --queries: the table's version number or tag (default: current)."),
    primary: str = typer.Option("auto", "--primary", help="Metric the recommendation maximises (auto: span_recall@200tok, else answer@200tok, else ndcg@10)."),
    split: str = typer.Option(None, "--split", help="beir: qrels split (default test); scifact: claims file (default dev)."),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies to compare."),
    method: str = typer.Option("dense,bm25,hybrid", "--method", "-m", help="Comma-separated retrieval methods: dense, bm25, hybrid, svm."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="Where the dataset's chunks and eval_results go."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    long_article: str = typer.Option("pool", "--long-article", help="pool or truncate."),
    sample: int = typer.Option(None, "--sample", help="Score a seeded sample of N queries (the documents are all ingested and searched)."),
    sample_docs: int = typer.Option(None, "--sample-docs", help="With --dataset: ingest a seeded sample of N documents and score only the queries about them (a quick look)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --sample and --sample-docs draws."),
    reports: str = typer.Option("reports", "--reports", help="Folder for reports and plots."),
    head: str = typer.Option(None, "--head", help="A tuned head folder (grainline tune train): its own model and table."),
    svm_c: float = typer.Option(0.1, "--svm-c", help="svm method: the SVM's C (regularisation)."),
    svm_candidates: int = typer.Option(1000, "--svm-candidates", help="svm method: dense hits it re-ranks per query."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress of ingestion, query embedding and scoring on stderr."),
    chunk: list[str] = typer.Option([], "--chunk", help="Chunker settings to sweep, repeatable: paragraph.max_tokens=128,256 --chunk paragraph.overlap=0,32 (every combination is a configuration)."),
) -> None:
    """Compare chunk granularities and retrieval methods on a labelled dataset, or on
    the production table with a query set; ends with one recommendation."""
    with _checked():
        chk.db_uri(db)
        if dataset is not None:
            chk.dataset(dataset)
        chk.strategies(strategy)
        chk.eval_methods(method)
        _check_embedder_args(device, precision, backend)
        chk.choice("--long-article", long_article, chk.LONG_ARTICLE)
        if sample is not None:
            chk.positive("--sample", sample)
        if sample_docs is not None:
            chk.positive("--sample-docs", sample_docs)
    from pydantic import ValidationError

    from grainline.evaluation.datasets import DatasetError
    from grainline.evaluation.runner import recommendation_line
    _use_server()
    from grainline.flows.evaluate import evaluate_flow

    if (dataset is None) == (queries is None):
        _fail("give --dataset KIND:PATH or --queries SET (one of them)")
    try:
        from grainline.evaluation.runner import EvalSettings

        # Bad arguments fail here, in one line, rather than inside the flow run.
        EvalSettings(dataset=dataset, queries=queries, strategies=strategy, methods=method, db=db,
                     chunk_sweep=chunk or {}, sample_docs=sample_docs, sample=sample)
        if queries is not None:
            _check_queryset(queries, table, at, db, model, device, precision, backend, head)
        state = evaluate_flow(
            dataset=dataset, queries=queries, table=table, at=at, primary=primary, sample_docs=sample_docs,
            show_progress=progress, chunk=chunk or None, split=split, strategies=strategy, methods=method, db=db, model=model,
            device=device, precision=precision, backend=backend, long_article=long_article, sample=sample, seed=seed, reports_dir=reports,
            head=head, svm_c=svm_c, svm_candidates=svm_candidates, return_state=True,
        )
        result = state.result()
    except (ValueError, FileNotFoundError, DatasetError, ValidationError) as exc:
        _fail(_validation_line(exc) if isinstance(exc, ValidationError) else str(exc))
    md = Path(result["report"]).read_text(encoding="utf-8")
    typer.echo(md.split("## Plots")[0])
    for qid, reason in result.get("skipped", [])[:50]:
        typer.secho(f"skipped {qid}: {reason}", fg=typer.colors.YELLOW)
    typer.echo(f"report: {result['report']}")
    for p in result["plots"]:
        typer.echo(f"plot:   {p}")
    typer.secho(state.message or "", bold=True)
    typer.secho(recommendation_line(result.get("recommendation") or {}), bold=True)


def _check_queryset(queries: str, table: str | None, at: str | None, db: str, model: str, device: str,
                    precision: str, backend: str, head: str | None) -> None:
    """Refuse a query set made for another table or model before the flow starts
    (a failure inside the flow would be logged with a traceback)."""
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.runner import EvalSettings, check_queryset

    check_queryset(EvalSettings(queries=queries, table=table, at=at, db=db, embedder=EmbedderSettings(
        model=model, device=device, precision=precision, backend=backend, head=head)))


def _validation_line(exc: Any) -> str:
    """A pydantic error as one line: the field and the reason of the first problem."""
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "settings"
    return f"{where}: {err.get('msg', exc)}"


@app.command("eval-compare")
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
        _fail(f"no evaluation results for dataset {dataset!r} in {db!r}; run `grainline eval --model ...` once per model")
    typer.echo(compare_models_markdown(by_model, [m.strip() for m in metric.split(",") if m.strip()]))


@app.command()
def related(
    doc_id: str = typer.Argument(None, help="Document id (as stored in the doc_id column)."),
    k: int = typer.Option(10, "-k", "--k", help="How many related documents."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Chunks table (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="Whose chunk vectors make the document vector."),
    precompute: bool = typer.Option(False, "--all", help="Store the top k of every document in related_docs (a flow run)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The documents most similar to DOC_ID (token-weighted mean of chunk vectors), or
    with --all the related_docs table for the whole collection."""
    from pydantic import ValidationError

    from grainline.related import RelatedSettings
    from grainline.related import related as find_related

    with _checked():
        chk.existing_db(db)
        chk.strategies(strategy)
        chk.positive("-k", k)
    if precompute == (doc_id is not None):
        _fail("give a DOC_ID, or --all to precompute every document")
    try:
        settings = RelatedSettings(db=db, table=table, model=model, strategy=strategy, k=k)
        if precompute:
            _use_server()
            from grainline.flows.related import related_flow

            state = related_flow(db=db, table=table, model=model, strategy=strategy, k=k, return_state=True)
            state.result()
            typer.secho(state.message or "", bold=True)
            return
        hits = find_related(doc_id, settings)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    for h in hits:
        if as_json:
            typer.echo(json.dumps({"rank": h.rank, "doc_id": h.doc_id, "title": h.title, "score": round(h.score, 4)}))
        else:
            typer.echo(f"  {h.rank:>3}. {h.score:.3f}  {h.doc_id}" + (f"  {h.title}" if h.title and h.title != h.doc_id else ""))


@app.command()
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

    from grainline import classify as cl
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.datasets import DatasetError
    from grainline.ingest import get_embedder
    from grainline.related import RelatedSettings

    if fmt not in ("table", "jsonl"):
        _fail(f"--format must be table or jsonl, got {fmt!r}")
    def embedder() -> Any:
        return get_embedder(EmbedderSettings(model=model, device=device))

    try:
        if evaluate is not None:
            kind, _, path = evaluate.partition(":")
            if kind != "squad" or not path:
                raise ValueError(f"--evaluate expects squad:PATH, got {evaluate!r}")
            counts = [int(x) for x in per_class.split(",") if x.strip()]
            rows = cl.squad_centroid_study(path, embedder(), counts, list(range(seeds)))
            typer.echo(cl.format_study(rows))
            return
        if train is not None and input_path is None:
            raise ValueError("--train needs --input: the records to classify")
        from_table = None
        if train is None or input_path is None:
            from_table = cl.table_records(RelatedSettings(db=db, table=table, model=model, strategy=strategy), label_field)
        fit = (cl.embed_records(cl.read_records(train, text_field, label_field, id_field), embedder())
               if train is not None else from_table.labelled())
        new = (cl.embed_records(cl.read_records(input_path, text_field, label_field, id_field, require_labels=False), embedder())
               if input_path is not None else from_table.unlabelled())
        cents = cl.Centroids.fit(fit.vectors, fit.labels)
        preds = cents.predict(new.vectors) if len(new.ids) else []
    except (ValueError, FileNotFoundError, DatasetError, ValidationError) as exc:
        _fail(str(exc))
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


@app.command()
def serve(
    source: str = typer.Option(..., "--source", help="Folder, file or glob to ingest on schedule."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    sync: str = typer.Option("full", "--sync", help="full (default for schedules) or incremental."),
    runner: str = typer.Option("local", "--runner", help="local, dask, or dask://HOST:PORT."),
    ingest_cron: str = typer.Option("0 2 * * *", "--ingest-cron", help="When ingestion runs (cron, UTC by default)."),
    eval_dataset: str = typer.Option(None, "--eval-dataset", help="Also evaluate on a schedule: squad:PATH, beir:PATH, spans:PATH."),
    eval_cron: str = typer.Option("0 4 * * 0", "--eval-cron", help="When evaluation runs (cron)."),
    eval_after_ingest: bool = typer.Option(False, "--eval-after-ingest", help="Also evaluate each time a scheduled ingestion completes (a deployment trigger)."),
    eval_sample: int = typer.Option(None, "--eval-sample", help="Scheduled evaluation: a seeded sample of N queries."),
    reports: str = typer.Option("reports", "--reports", help="Folder for the scheduled evaluation reports."),
    timezone: str = typer.Option("UTC", "--timezone", help="Time zone of the cron schedules."),
    api_url: str = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="Use this Prefect server (its .../api URL) instead of starting one."),
    port: int = typer.Option(4200, "--port", help="Port of the local Prefect server grainline starts."),
    prefect_home: str = typer.Option(None, "--prefect-home", help="Where the local server keeps its SQLite database (default: Prefect's)."),
) -> None:
    """Run everything a team needs on one machine: one Prefect server (a local one, or
    the one --api-url names), the deployments registered on it, and the process that
    executes their scheduled runs. Ctrl-C (or SIGTERM) stops both."""
    with _checked():
        # Before the flow run exists: Prefect stores a flow run's parameters.
        chk.db_uri(db)
        chk.source(source)
        chk.strategies(strategy)
        chk.choice("--sync", sync, chk.SYNC_MODES)
        chk.runner(runner)
        if eval_dataset is not None:
            chk.dataset(eval_dataset)
    from pydantic import ValidationError

    from grainline.deployments.schedules import ScheduleSettings

    try:
        cfg = ScheduleSettings(
            source=source, db=db, strategies=strategy, model=model, sync=sync, runner=runner,
            ingest_cron=ingest_cron, eval_dataset=eval_dataset, eval_cron=eval_cron, eval_sample=eval_sample,
            eval_after_ingest=eval_after_ingest, reports_dir=reports, timezone=timezone,
        )
    except ValidationError as exc:
        _fail("; ".join(_validation_message(e) for e in exc.errors()))
    from grainline import server as srv

    # Everything that can be wrong is checked before a server starts.
    try:
        srv.check_source(source)
        if api_url:
            srv.check_api_url(api_url)
        else:
            srv.check_port_free(port)
    except srv.ServeError as exc:
        _fail(str(exc))
    local = None
    with srv.stop_on_sigterm():
        try:
            if not api_url:
                home = prefect_home or os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
                typer.echo(f"starting a local Prefect server on port {port} (database under {home}) ...")
                try:
                    local = srv.start_local_server(home, port=port)
                except (RuntimeError, TimeoutError) as exc:
                    _fail(str(exc).splitlines()[0], code=1)
                api_url = local.url
                typer.secho(f"Prefect UI: {local.ui_url}  (runs, schedules, artifacts)", bold=True)
            from grainline.deployments.schedules import serve as serve_deployments

            typer.echo(f"serving grainline deployments against {api_url}; Ctrl-C stops")
            serve_deployments(cfg, api_url)
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            if local is not None:
                local.stop()


# Settings fields whose command-line option has another name.
_OPTION_OF = {"strategies": "--strategy", "reports_dir": "--reports", "eval_sample": "--eval-sample"}


def _validation_message(err: dict) -> str:
    """One readable line for one pydantic error: the option and the reason."""
    loc = [str(x) for x in err.get("loc", ())]
    where = _OPTION_OF.get(loc[0], "--" + loc[0].replace("_", "-")) if loc else ""
    msg = " ".join(str(err.get("msg", "")).removeprefix("Value error, ").split())
    return f"{where}: {msg}" if where else msg


server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server grainline keeps between commands.")
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Say whether the kept server runs, and where its UI is."""
    from grainline.server import grainline_home, kept_server

    state = kept_server()
    if state is None:
        typer.echo(f"no grainline Prefect server running (state under {grainline_home()})")
        raise typer.Exit(1)
    typer.echo(f"running: pid {state['pid']}, UI {state['url'].removesuffix('/api')}, API {state['url']}, "
               f"database under {state['home']}")


@server_app.command("start")
def server_start(port: int = typer.Option(None, "--port", help="Port to listen on (default 4200 when free).")) -> None:
    """Start the kept server now (commands that run flows start it when needed)."""
    from grainline import server as srv

    if port is not None:
        try:
            srv.check_port_free(port)
        except srv.ServeError as exc:
            _fail(str(exc))
    state = srv.start_kept_server(port)
    typer.echo(f"Prefect UI: {state['url'].removesuffix('/api')} (API {state['url']}, pid {state['pid']})")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the kept server (its database and runs stay for the next start)."""
    from grainline.server import stop_kept_server

    state = stop_kept_server()
    typer.echo("no grainline Prefect server was running" if state is None else f"stopped the server at {state['url']}")


@app.command()
def bench(
    dataset: str = typer.Option(..., "--dataset", help="squad:PATH, beir:PATH, generated:N (N synthetic documents) or "
                                "generated-reuse:N (paragraphs from a pool of 2,000: full-scale pipeline, little embedding)."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="The strategy whose chunks are embedded."),
    output: str = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help="grainline's precision (the baseline is always fp32)."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    stages: str = typer.Option("baseline,embed,ingest,rerun", "--stages", help="Which stages to run (e.g. ingest,rerun for memory at scale)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary corpus, database and Prefect home (the path is printed)."),
) -> None:
    """Time a plain encode loop, grainline's embedding, its whole ingestion, and a re-run."""
    with _checked():
        chk.strategies(strategy)
        _check_embedder_args(device, precision, backend)
    from grainline.bench import bench as run_bench
    from grainline.bench import format_report
    from grainline.chunkers import CHUNKERS

    try:
        CHUNKERS.get(strategy)
        rep = run_bench(dataset, strategy, output, model, device, batch_size, precision, stages, keep, backend)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(format_report(rep))
    if rep.get("work_dir"):
        typer.echo(f"\nkept: {rep['work_dir']}")
    if output:
        typer.echo(f"\nwritten: {output}")


queries_app = typer.Typer(no_args_is_help=True, help="Query sets for your own documents: import or generate questions with gold spans in a chunks table.")
app.add_typer(queries_app, name="queries")


def _queryset_out(out: str | None, default: str) -> str:
    return out or default


def _report_queryset(path: Any, qs: Any) -> None:
    for u in qs.unresolved:
        typer.secho(f"unresolved {u.row}: {u.reason}", fg=typer.colors.YELLOW)
    typer.echo(f"{len(qs.queries)} queries, {len(qs.unresolved)} unresolved -> {path} (version {qs.version}; "
               f"table {qs.provenance['table']} v{qs.provenance['table_version']}, generator {qs.provenance['generator']})")


@queries_app.command("import")
def queries_import(
    file: str = typer.Argument(..., help="CSV, TSV or JSONL with a 'question' column and any of doc_id, answer, evidence (optional id)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="The database whose chunks table the queries are for."),
    out: str = typer.Option(None, "--out", help="The query set to write (default: FILE's name + .queryset.jsonl)."),
    table: str = typer.Option(None, "--table", help="The chunks table (default: the model's)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Names the default table."),
    head: str = typer.Option(None, "--head", help="A tuned head folder: its table is the one the queries are for."),
    fuzzy_threshold: float = typer.Option(90.0, "--fuzzy-threshold", min=0, max=100, help="rapidfuzz partial_ratio an evidence passage needs when it matches neither exactly nor up to whitespace/case."),
) -> None:
    """Import hand-written questions; evidence passages become character spans in the
    stored document text. Every row that cannot be used is listed with its reason."""
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.corpus import open_corpus
    from grainline.evaluation.querysets import QuerySet, QuerySetError, import_queries, provenance, write_queryset
    from grainline.redact import check_uri

    try:
        check_uri(db)
        t, version, model_id, docs = open_corpus(db, table, EmbedderSettings(model=model, head=head))
        queries, bad = import_queries(file, docs, threshold=fuzzy_threshold)
        qs = QuerySet(provenance(t.name, version, model_id, "import", str(file), fuzzy_threshold=fuzzy_threshold), queries, bad)
        path = write_queryset(qs, _queryset_out(out, str(Path(file).with_suffix(".queryset.jsonl").name)))
    except (ValueError, FileNotFoundError, QuerySetError) as exc:
        _fail(str(exc))
    _report_queryset(path, qs)
    if not queries:
        _fail(f"no row of {file} could be used; see the reasons above", code=1)


@queries_app.command("generate")
def queries_generate(
    source: str = typer.Option("headings", "--from", help="headings: offline, Markdown/HTML headings as queries and their sections as gold spans."),
    llm: bool = typer.Option(False, "--llm", help="Ask an OpenAI-compatible chat-completions endpoint instead (--base-url, --model)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="The database whose chunks table the queries are for."),
    out: str = typer.Option(None, "--out", help="The query set to write (default: headings.queryset.jsonl or llm.queryset.jsonl)."),
    table: str = typer.Option(None, "--table", help="The chunks table (default: the model's)."),
    embed_model: str = typer.Option(DEFAULT_MODEL, "--embed-model", help="Embedding model: names the default table."),
    head: str = typer.Option(None, "--head", help="A tuned head folder: its table is the one the queries are for."),
    base_url: str = typer.Option(None, "--base-url", help="--llm: e.g. http://localhost:11434/v1 (Ollama) or http://localhost:8000/v1 (vLLM); the key only from GRAINLINE_LLM_API_KEY or OPENAI_API_KEY."),
    llm_model: str = typer.Option(None, "--model", help="--llm: the chat model's name at that endpoint."),
    per_doc: int = typer.Option(3, "--per-doc", min=1, help="--llm: at most this many questions per document."),
    sample_docs: int = typer.Option(None, "--sample-docs", min=1, help="--llm: a seeded sample of N documents."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --sample-docs draw."),
    cache: str = typer.Option(None, "--cache", help="--llm: response cache folder (default: OUT + .cache); an interrupted generation resumes from it."),
    retries: int = typer.Option(4, "--retries", min=0, help="--llm: retries of a transient HTTP error (429, 5xx, timeout, refused), with doubling waits from 1 s."),
) -> None:
    """Generate a query set from the stored documents."""
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.corpus import open_corpus
    from grainline.evaluation.querysets import QuerySet, QuerySetError, heading_queries, provenance, write_queryset
    from grainline.redact import check_uri

    if not llm and source != "headings":
        _fail(f"--from {source!r}: the offline generator is 'headings' (or pass --llm)")
    if llm and (not base_url or not llm_model):
        _fail("--llm needs --base-url URL and --model NAME (the chat model)")
    info: dict[str, Any] = {}
    try:
        check_uri(db)
        t, version, model_id, docs = open_corpus(db, table, EmbedderSettings(model=embed_model, head=head))
        if llm:
            from grainline.evaluation.llmgen import LlmSettings, generate_llm_queries

            target = _queryset_out(out, "llm.queryset.jsonl")
            settings = LlmSettings(base_url=base_url, model=llm_model, per_doc=per_doc, sample_docs=sample_docs, seed=seed,
                                   cache_dir=cache or f"{target}.cache", retries=retries)
            queries, bad, info = generate_llm_queries(docs, settings, echo=lambda m: typer.echo(m, err=True))
            qs = QuerySet(provenance(t.name, version, model_id, "llm", base_url, llm_model=llm_model, **info), queries, bad)
        else:
            target = _queryset_out(out, "headings.queryset.jsonl")
            queries, bad = heading_queries(docs)
            qs = QuerySet(provenance(t.name, version, model_id, "headings", f"table:{t.name}"), queries, bad)
        path = write_queryset(qs, target)
    except (ValueError, FileNotFoundError, QuerySetError) as exc:
        _fail(str(exc))
    _report_queryset(path, qs)
    if info.get("error"):
        _fail(f"generation stopped: {info['error']}; the {len(queries)} questions finished are in {path}, "
              "and a re-run resumes from the cached responses", code=1)
    if llm:
        typer.echo(f"tokens: {info['prompt_tokens']} prompt, {info['completion_tokens']} completion; "
                   f"{info['requests']} requests, {info['cached']} cached responses")
    if not queries:
        _fail("no query could be generated; see the reasons above", code=1)


tune_app = typer.Typer(no_args_is_help=True, help="Label-tuned embeddings: train a head on frozen vectors, apply it, measure it.")
app.add_typer(tune_app, name="tune")


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
    from grainline.tuning_report import train_from_source

    try:
        hs = HeadSettings(epochs=epochs, lr=lr, temperature=temperature, classes_per_batch=classes_per_batch,
                          per_class=per_class, seed=seed)
        meta = train_from_source(out, labels_file=labels, table=table, db=db, label_field=label_field, text_field=text_field,
                                 strategy=strategy, holdout=holdout, settings=hs,
                                 embedder_settings=EmbedderSettings(model=model, device="cpu"))
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
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
    from grainline.tuning import reembed_table

    try:
        res = reembed_table(db, head, source_table, target_table)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
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
    from grainline.tuning_report import markdown_table, squad_experiment

    kind, _, path = dataset.partition(":")
    try:
        if kind != "squad" or not path:
            raise ValueError(f"--dataset must be squad:PATH, got {dataset!r}")
        n = [int(x) for x in sizes.split(",") if x.strip()]
        res = squad_experiment(path, n, out, cache, HeadSettings(epochs=epochs, lr=lr, temperature=temperature, seed=seed),
                               EmbedderSettings(model=model, device="cpu"))
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    typer.echo(markdown_table(res))
    for p in res["plots"]:
        typer.echo(f"plot: {p}")
    typer.echo(f"heads and tuning.json under {out}")


def main() -> None:
    # Models and tokenizers are bundled; never let a library reach for the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The Prefect servers grainline starts would try to send telemetry (and log an error offline).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # With GRAINLINE_PREFECT_SERVER=temporary: Prefect gives its temporary server 20 s to
    # start, which a busy 2-core machine misses.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
