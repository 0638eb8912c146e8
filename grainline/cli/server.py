"""``grainline serve`` (server, deployments and their runner in one process) and the
``grainline server`` group for the Prefect server grainline keeps between commands."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from grainline.cli import checks as chk
from grainline.cli.common import DB_HELP, MODEL_HELP, checked, fail, validation_message
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


def serve(
    source: str = typer.Option(..., "--source", help="Folder, file, glob or s3://bucket/prefix to ingest on schedule."),
    db: str = typer.Option(DEFAULT_DB, "--db", help=DB_HELP),
    strategy: str = typer.Option("sentence,paragraph,article", "--strategy", "-s", help="Comma-separated strategies."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP + " Default: each run reads the alias (grainline promote) and writes to its table with its model, else " + DEFAULT_MODEL + "."),
    sync: str = typer.Option("full", "--sync", help="full (default for schedules) or incremental."),
    rehash: bool = typer.Option(False, "--rehash", help="Each scheduled ingestion reads and hashes every file, even those unchanged by their stat."),
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
    with checked():
        # Before the flow run exists: Prefect stores a flow run's parameters.
        chk.db_uri(db)
        chk.source(source)
        chk.strategies(strategy)
        chk.choice("--sync", sync, chk.SYNC_MODES)
        chk.runner(runner)
        if eval_dataset is not None:
            chk.dataset(eval_dataset)
        if eval_sample is not None:
            chk.positive("--eval-sample", eval_sample)
    from pydantic import ValidationError

    from grainline.deployments.schedules import ScheduleSettings
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.model import EvalSettings
    from grainline.ingest import IngestSettings

    try:
        embedder = EmbedderSettings(model=model or DEFAULT_MODEL)
        cfg = ScheduleSettings(
            ingest=IngestSettings(source=source, db=db, strategies=strategy, sync=sync, embedder=embedder, rehash=rehash,
                                  follow_alias=model is None),
            evaluate=None if eval_dataset is None else EvalSettings(
                dataset=eval_dataset, db=db, sample=eval_sample, reports_dir=reports, embedder=embedder),
            runner=runner, ingest_cron=ingest_cron, eval_cron=eval_cron, eval_after_ingest=eval_after_ingest,
            timezone=timezone,
        )
    except ValidationError as exc:
        fail("; ".join(validation_message(e) for e in exc.errors()))
    from grainline import server as srv

    # Everything that can be wrong is checked before a server starts.
    try:
        srv.check_source(source)
        if api_url:
            srv.check_api_url(api_url)
        else:
            srv.check_port_free(port)
    except srv.ServeError as exc:
        fail(str(exc))
    local = None
    with srv.stop_on_sigterm():
        try:
            if not api_url:
                home = prefect_home or os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
                typer.echo(f"starting a local Prefect server on port {port} (database under {home}) ...")
                try:
                    local = srv.start_local_server(home, port=port)
                except (RuntimeError, TimeoutError) as exc:
                    fail(str(exc).splitlines()[0], code=1)
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


server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server grainline keeps between commands.")


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
            fail(str(exc))
    state = srv.start_kept_server(port)
    typer.echo(f"Prefect UI: {state['url'].removesuffix('/api')} (API {state['url']}, pid {state['pid']})")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the kept server (its database and runs stay for the next start)."""
    from grainline.server import stop_kept_server

    state = stop_kept_server()
    typer.echo("no grainline Prefect server was running" if state is None else f"stopped the server at {state['url']}")
