"""The database's housekeeping: ``tables``, ``sources``, ``runs``, ``unlock``,
``restore``, ``maintain``, ``check`` and ``reembed``."""

from __future__ import annotations

import typer

from grainline.cli import checks as chk
from grainline.cli.common import (BACKEND_HELP, DB_HELP, DEVICE_HELP, MODEL_HELP, PRECISION_HELP, check_embedder_args,
                                  checked, fail)
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


def tables(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print each table as a JSON line."),
) -> None:
    """The tables of a database: rows, version, versions kept, models and strategies."""
    with checked():
        chk.existing_db(db)
    import json

    from grainline.storage.inventory import table_summaries

    from grainline.storage.alias import AliasError, read_alias

    rows = table_summaries(db)
    try:
        alias = read_alias(db)
    except AliasError as exc:
        fail(str(exc))
    production = alias.target.table if alias is not None else None
    if not rows and not as_json:
        typer.echo(f"no tables in {db}")
    for t in rows:
        if as_json:
            typer.echo(json.dumps({**t, "production": True} if t["table"] == production else t))
            continue
        extra = ""
        if t["models"]:
            extra = f"  models {', '.join(t['models'])}  strategies " + ", ".join(f"{k} {v}" for k, v in t["strategies"].items())
        mark = "  <- production (the alias names it)" if t["table"] == production else ""
        typer.echo(f"{t['table']}  {t['rows']} rows  version {t['version']} ({t['versions']} kept){extra}{mark}")


def sources(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Chunks table (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    delete: str = typer.Option(None, "--delete", help="Delete every document of this source root from the table (recorded in the ledger)."),
    as_json: bool = typer.Option(False, "--json", help="Print each source as a JSON line."),
) -> None:
    """The sources a chunks table was ingested from (documents, chunks, last run), or
    with --delete ROOT the removal of one whole source."""
    with checked():
        chk.existing_db(db)
    import json

    from grainline import api
    from grainline.storage.inventory import source_summaries
    from grainline.storage.lock_protocol import TableLockTimeout

    try:
        if delete is not None:
            table, root, rec = api.delete_source(db, delete, table, model)
            typer.echo(f"deleted source {root}: {rec.counts.docs_deleted} documents, {rec.counts.chunks_deleted} chunks; "
                       f"table {table} v{rec.version_before} -> v{rec.version_after} "
                       f"(undo: grainline restore {rec.version_before} --db {db} --table {table})")
            return
        found = source_summaries(db, table if table is not None else api.model_table(model))
    except (ValueError, TableLockTimeout) as exc:
        fail(str(exc))
    for s in found:
        if as_json:
            typer.echo(json.dumps({"source_root": s.source_root, "documents": s.documents, "chunks": s.chunks,
                                   "last_ingested": s.last_ingested.isoformat() if s.last_ingested else None}))
        else:
            when = f"{s.last_ingested:%Y-%m-%d %H:%M:%S}" if s.last_ingested else "-"
            typer.echo(f"{s.source_root}  {s.documents} documents  {s.chunks} chunks  last ingested {when}")


def runs(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    last: int = typer.Option(10, "--last", help="How many recent runs to show."),
    kind: str = typer.Option("all", "--kind", help="all, production (your documents) or evaluation (eval runs and their datasets' ingestions)."),
    as_json: bool = typer.Option(False, "--json", help="Print each run as a JSON line, every ledger column included."),
) -> None:
    """The run ledger: recent runs with duration, table, status, counts and failures."""
    with checked():
        chk.existing_db(db)
        chk.choice("--kind", kind, chk.RUN_KINDS)
        chk.positive("--last", last)
    import json

    from grainline.api import runs as ledger_runs

    rows = ledger_runs(db, last, kind)
    if not rows and not as_json:
        typer.echo(f"no {'' if kind == 'all' else kind + ' '}runs in {db}")
    for r in rows:
        if as_json:
            typer.echo(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()},
                                  default=str, ensure_ascii=False))
            continue
        dur = f"{r['duration_s']:.1f} s" if r["duration_s"] is not None else "-"
        typer.echo(
            f"{r['run_id']}  {r['flow']} ({r['kind']})  {r['status']}  {r['started']:%Y-%m-%d %H:%M:%S}  {dur}  "
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


def unlock(
    db: str = typer.Option(DEFAULT_DB, "--db", help="LanceDB URI (local folder, s3://...)."),
    table: str = typer.Option(None, "--table", help="The table whose write lock to release (default: list every lock)."),
    force: bool = typer.Option(False, "--force", help="Release it even while a live process holds it."),
) -> None:
    """Show or release a table's write lock. A local lock is an OS lock that its holder
    drops the moment it exits or dies, so this is only needed for a run that is stuck;
    an object-store lease expires by itself (see docs/crashes.md)."""
    from grainline import api
    from grainline.storage.lock_protocol import is_local

    if not is_local(db):
        try:
            import grainline.storage.lease  # noqa: F401 - needs the s3 extra
        except ImportError:
            fail(f"--db {db!r}: releasing an object-store lease needs the s3 extra: pip install \"grainline[s3]\"")
        from grainline.redact import redact_uri

        if not table:
            fail("--table is required for an object-store database")
        try:
            broken = api.unlock_lease(db, table)
        except (ValueError, RuntimeError, OSError) as exc:
            fail(str(exc))
        typer.echo(f"table {table} in {redact_uri(db)}: " + ("no write lease is held" if broken is None
                   else f"broke the write lease of {broken.describe()}"))
        return
    seen = 0
    try:
        for lock in api.unlock_local(db, table, force):
            seen += 1
            if lock.state == "free":
                note = f"; marked interrupted: {', '.join(lock.marked_interrupted)}" if lock.marked_interrupted else ""
                typer.echo(f"table {lock.table}: not locked{note}")
            elif lock.state == "held":
                fail(f"table {lock.table} is being written by {lock.holder}, which is alive; stop that "
                     f"process (its lock goes with it), or pass --force to let the next run write beside it", code=1)
            else:
                typer.echo(f"table {lock.table}: lock of {lock.holder} released (--force)")
    except ValueError as exc:
        fail(str(exc))
    if not seen:
        typer.echo(f"no write locks in {db}")


def restore(
    version: int = typer.Argument(..., help="Table version to make current again (see `grainline runs`)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Table name (default: the chunks table of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
) -> None:
    """Roll a table back to a named version (a new version; history is kept)."""
    with checked():
        chk.existing_db(db)
    from grainline.api import restore as restore_version
    from grainline.storage.lease import LeaseError
    from grainline.storage.lock_protocol import TableLockTimeout

    try:
        r = restore_version(db, version, table, model)
    except (ValueError, TableLockTimeout, LeaseError) as exc:
        fail(str(exc))
    typer.echo(f"table {r.table}: version {r.version} restored as version {r.now} ({r.rows} rows)"
               + (f"; Parquet export {r.export} redone" if r.export_redone else ""))


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
    with checked():
        chk.existing_db(db)
    from pydantic import ValidationError

    from grainline.storage.check import NotADatabase, check_database
    from grainline.storage.lock_protocol import TableLockTimeout
    from grainline.storage.maintenance import MaintenanceSettings, maintain_table

    try:
        settings = MaintenanceSettings(prune=prune, prune_older_than_days=prune_days, keep_versions=keep_versions, vector_index=index,
                                       drop_eval_tags_older_than_days=drop_eval_tags_days)
        if table is None:
            from grainline.api import model_table

            table = model_table(model)
        # A damaged table is never maintained (and so never recorded as healthy):
        # compaction would rewrite damage into new files and pruning drop the versions
        # it could be restored from.
        found = check_database(db, only=table)
        if found.damage:
            from grainline.storage.repair import data_damage

            for p in found.damage:
                typer.echo(p.line())
            for p in found.damage:
                if p.kind == "open" and p.where not in ("table", "data", "manifest"):
                    typer.echo(data_damage(db, p.table, p.where).line(db))
            fail(f"table {table} is damaged ({len(found.damage)} problems above); not maintained", code=1)
        mendable = ("index", "history")
        if any(p.kind in mendable for p in found.problems):
            # An index is derived from the rows: rebuilt first (a `repair` run), so the
            # pass below folds new rows into whole indexes; a damaged file only older
            # versions name is set aside with them (the prune would otherwise keep them).
            from grainline.storage.repair import problem_lines, repair_database

            for p in found.problems:
                if p.kind in mendable:
                    typer.echo(p.line())
            repaired = repair_database(db, only=table, before=found)
            for line in problem_lines(repaired, db):
                typer.echo(line)
            left = [p for p in (repaired.after or found).problems if p.kind in mendable]
            if left:
                fail(f"table {table}: {len(left)} damaged indexes or files could not be mended; not maintained", code=1)
        for p in found.problems:  # beside the table (export, locks): said, not blocking
            if p.kind not in mendable:
                typer.secho(f"warning: {p.line()}", fg=typer.colors.YELLOW, err=True)
        rep = maintain_table(db, table, settings)
    except NotADatabase as exc:
        fail(str(exc))
    except TableLockTimeout as exc:
        fail(str(exc), code=1)
    except (ValueError, ValidationError) as exc:
        fail(str(exc))
    b, a = rep.before, rep.after
    typer.echo(f"table {rep.table}: {a.rows} rows, {rep.seconds:.2f} s")
    typer.echo(f"  fragments {b.fragments} -> {a.fragments}, versions {b.versions} -> {a.versions}, "
               f"unindexed rows {b.unindexed_rows} -> {a.unindexed_rows}, vector index {a.vector_index or 'none (exact search)'}")
    for action in rep.actions:
        typer.echo(f"  - {action}")


def check(
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    table: str = typer.Option(None, "--table", help="Check only this table (default: every table)."),
    as_json: bool = typer.Option(False, "--json", help="Print the problems as one JSON list of {kind, table, where, reason}."),
    repair: bool = typer.Option(False, "--repair", help="Rebuild every damaged index from the rows (a `repair` run, under the "
                                "table's write lock); a damaged data file is named with its documents and the version to restore."),
) -> None:
    """Verify a database as fsck verifies a disk: tables and ledger versions, every
    index and every file the manifest names, chunk rows, duplicate ids, the Parquet
    export, locks. One line per problem and exit 1, or an "ok" line and exit 0. With
    --repair: rebuild what is derivable, then check again."""
    from grainline.storage.check import NotADatabase, check_database, problems_json
    from grainline.storage.lock_protocol import TableLockTimeout

    try:
        if repair:
            _repair(db, table, as_json)
            return
        report = check_database(db, only=table)
    except NotADatabase as exc:
        fail(str(exc))
    except TableLockTimeout as exc:
        fail(str(exc), code=1)
    if as_json:
        typer.echo(problems_json(report))
    else:
        for p in report.problems:
            typer.echo(p.line())
        if report.ok:
            typer.echo(report.summary())
        elif report.indexes_damaged:
            typer.echo(f"indexes are derived from the rows: `grainline check --repair --db {db}` rebuilds them")
    if not report.ok:
        raise typer.Exit(1)


def _repair(db: str, table: str | None, as_json: bool) -> None:
    """``check --repair``: print what was found, what was done, and what is left."""
    import json

    from grainline.storage.repair import problem_lines, repair_database

    rep = repair_database(db, only=table)
    after = rep.after or rep.before
    if as_json:
        typer.echo(json.dumps({"found": [p.as_dict() for p in rep.before.problems],
                               "repaired": [r.__dict__ for r in rep.rebuilt],
                               "set_aside": rep.set_aside,  # damaged manifests and data files, one line each
                               "not_repairable": [d.__dict__ for d in rep.data] + [{"error": f} for f in rep.failed],
                               "left": [p.as_dict() for p in after.problems]}, ensure_ascii=False))
    else:
        for p in rep.before.problems:
            typer.echo(p.line())
        for line in problem_lines(rep, db):
            typer.echo(line)
        if rep.before.ok:
            typer.echo(f"{rep.before.summary()}; nothing to repair: nothing changed")
        elif after.ok:
            typer.echo(after.summary())
        else:
            for p in after.problems:
                if p.kind != "open":  # data files: said above, with their documents
                    typer.echo(f"left: {p.line()}")
    if not after.ok:
        raise typer.Exit(1)


def reembed(
    from_table: str = typer.Option(..., "--from-table", help="Chunks table whose chunks are reused (see `grainline runs`)."),
    model: str = typer.Option(..., "--model", help="The new model: sentence-transformers name or local path."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    batch_docs: int = typer.Option(64, "--batch-docs", help="Documents per commit."),
) -> None:
    """Embed an existing table's chunks with another model, into that model's table:
    no source is read and nothing is chunked."""
    with checked():
        check_embedder_args(device, precision, backend)
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
        fail(str(exc))
    c = rec.counts
    typer.echo(f"run {rec.run_id} {rec.status}: {from_table} -> {rec.table_name} (model {rec.model_id}) "
               f"v{rec.version_before} -> v{rec.version_after}")
    typer.echo(f"  documents: {c.docs_seen} seen, {c.docs_added} added, {c.docs_updated} updated, {c.docs_unchanged} unchanged")
    typer.echo(f"  chunks: {c.chunks_written} written, {c.chunks_embedded} embedded, {c.chunks_reused} reused; nothing chunked")
    typer.echo("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in c.stage_seconds.items()))
