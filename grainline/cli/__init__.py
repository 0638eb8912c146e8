"""The ``grainline`` command line: the Typer ``app``, registered here from one module
per command group (``ingest``, ``search``, ``evaluate``, ``queries``, ``tune``,
``server``, ``admin``, ``bench``, ``promote``) in the order ``grainline --help`` lists them, and
``main()``, the console script (``python -m grainline.cli`` runs the same). A command
checks its options (``checks``), builds the settings of what it drives, calls one
function of ``grainline.api`` or of the phase, and prints; ``common`` holds the
one-line errors and printing helpers. The top layer: it may import anything of
grainline and nothing imports it, but everything heavy (torch, sentence-transformers,
LanceDB, Prefect, pandas, the phases' settings) only inside the command that needs it,
so that ``--help`` and a mistyped option cost a fraction of a second.

May import: anything.
"""

from __future__ import annotations

import os

import typer

from grainline.cli import admin, bench, evaluate, ingest, promote, queries, search, server, tune

app = typer.Typer(add_completion=False, no_args_is_help=True, help="grainline: batch document embedding with Prefect.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"grainline {version('grainline')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Let LanceDB's and Lance's own warnings through (grainline --verbose search ...)."),
) -> None:
    """grainline: batch document embedding with Prefect."""
    from grainline.storage.lance_import import quiet_lance_logs

    # Before LanceDB is imported: its Rust logger reads its level once, at import.
    quiet_lance_logs(verbose)
    _one_line_warnings()


def _one_line_warnings() -> None:
    """grainline's own warnings to the user (a damaged index done without) as one
    ``warning:`` line on stderr, not Python's two lines with a source location."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if category.__module__.startswith("grainline"):
            typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# The order of `grainline --help` (groups are listed after the commands).
app.command()(ingest.ingest)
app.command()(admin.tables)
app.command()(admin.sources)
app.command()(search.search)
app.command()(admin.runs)
app.command()(admin.unlock)
app.command()(admin.restore)
app.command()(admin.maintain)
app.command()(admin.check)
app.command()(admin.reembed)
app.command()(promote.promote)
app.command()(ingest.demo)
app.command("eval")(evaluate.eval_cmd)
app.command("eval-compare")(evaluate.eval_compare)
app.command()(search.related)
app.command()(search.classify)
app.command()(server.serve)
app.add_typer(server.server_app, name="server")
app.command()(bench.bench)
app.add_typer(queries.queries_app, name="queries")
app.add_typer(tune.tune_app, name="tune")


def main() -> None:
    """The ``grainline`` command."""
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
