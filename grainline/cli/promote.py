"""``grainline promote``: move the database's alias to a candidate table once it scores
at least as well as production on a query set, ``--undo`` to move it back, or with no
argument say what the alias names."""

from __future__ import annotations

import typer

from grainline.cli import checks as chk
from grainline.cli.common import BACKEND_HELP, DB_HELP, DEVICE_HELP, check_embedder_args, checked, fail

PRECISION_HELP = "Of the query vectors: auto, fp32, fp16, bf16 (an int8 table's own precision is kept)."
from grainline.defaults import DEFAULT_DB


def promote(
    candidate: str = typer.Argument(None, help="The chunks table to promote (grainline tables lists them)."),
    queries: str = typer.Option(None, "--queries", help="The query set both tables are scored on (grainline queries ...)."),
    undo: bool = typer.Option(False, "--undo", help="Move the alias back to the table before the last promotion."),
    method: str = typer.Option("dense", "--method", "-m", help="Comma-separated retrieval methods scored: dense, bm25, hybrid, svm."),
    primary: str = typer.Option("auto", "--primary", help="The metric gated on (auto: span_recall@200tok, else answer@200tok, else ndcg@10, as grainline eval)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    wait: float = typer.Option(600.0, "--wait", help="Seconds to wait for another promotion of the same database."),
) -> None:
    """Promote CANDIDATE to production (what search, related, the Python API and a
    scheduled ingestion read) when no configuration's primary metric falls below
    production's 95% interval on --queries; --undo moves back."""
    with checked():
        chk.existing_db(db)
        check_embedder_args(device, precision, backend)
        if precision == "int8":
            raise chk.ArgumentError("--precision int8 names a table of its own; promote that table instead")
        chk.eval_methods(method)
        if undo and (candidate is not None or queries is not None):
            raise chk.ArgumentError("--undo takes no CANDIDATE and no --queries")
        if candidate is not None and queries is None:
            raise chk.ArgumentError("promote CANDIDATE needs --queries SET: both tables are scored on it")
        if candidate is None and queries is not None:
            raise chk.ArgumentError("--queries needs a CANDIDATE table to promote")
    from grainline.storage.alias import AliasError
    from grainline.storage.lock_protocol import TableLockTimeout

    try:
        if undo:
            _undo(db, wait)
        elif candidate is None:
            _show(db)
        else:
            _promote(db, candidate, queries, method, device, wait, primary, backend, precision)
    except TableLockTimeout as exc:
        # The alias's lock ('_alias': another promotion) or the candidate's write lock
        # (an ingestion into it, while its export is brought up to date): the message names which.
        fail(str(exc), code=1)
    except (AliasError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def _promote(db: str, candidate: str, queries: str, method: str, device: str, wait: float, primary: str,
             backend: str, precision: str) -> None:
    from grainline.evaluation.model import parse_methods
    from grainline.promote import PromotionRefused, promote as do_promote

    try:
        p = do_promote(db, candidate, queries, tuple(parse_methods(method)), device, wait, primary, backend, precision)
    except PromotionRefused as exc:
        for f in exc.promotion.figures:
            typer.echo(f"  {f.line()}")
        fail(str(exc), code=1)
    for f in p.figures:
        typer.echo(f"  {f.line()}")
    for name in p.reused:
        typer.echo(f"  ({name}: the stored figures of evaluation {p.eval_runs[name]}, same table version and query set)")
    typer.secho(f"promoted {p.candidate.table} (model {p.candidate.model_id}): the alias of {db} names it now, was "
                f"{p.production.table}; `grainline promote --undo --db {db}` moves it back (run {p.run_id}, "
                f"{p.seconds:.1f} s)", bold=True)


def _undo(db: str, wait: float) -> None:
    from grainline.promote import undo_promotion

    frm, to = undo_promotion(db, wait)
    typer.secho(f"undone: the alias of {db} names {to.table} (model {to.model_id}) again, was {frm.table}", bold=True)


def _show(db: str) -> None:
    from grainline.storage.alias import read_alias

    alias = read_alias(db)
    if alias is None:
        typer.echo(f"no alias in {db}: readers read the default model's table (grainline promote CANDIDATE --queries SET sets one)")
        return
    t = alias.target
    typer.echo(f"production: {t.table} (model {t.model_id}, {t.dim} dimensions)")
    if alias.previous:
        typer.echo(f"undo moves back to: {alias.previous[-1].table}")
    for e in alias.history[-5:]:
        typer.echo(f"  {e['at']} {e['kind']} {e['from']} -> {e['to']} ({e['run_id']})")
