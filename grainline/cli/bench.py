"""``grainline bench``: timings of a plain encode loop, grainline's embedding, its
ingestion and a re-run."""

from __future__ import annotations

import typer

from grainline.cli import checks as chk
from grainline.cli.common import BACKEND_HELP, DEVICE_HELP, MODEL_HELP, check_embedder_args, checked, fail
from grainline.defaults import DEFAULT_MODEL


def bench(
    dataset: str = typer.Option(..., "--dataset", help="squad:PATH, beir:PATH, generated:N (N synthetic documents) or "
                                "generated-reuse:N (paragraphs from a pool of 2,000: full-scale pipeline, little embedding)."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="The strategy whose chunks are embedded."),
    output: str = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help="grainline's precision (the baseline is always fp32)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    stages: str = typer.Option("baseline,embed,ingest,rerun", "--stages", help="Which stages to run (e.g. ingest,rerun for memory at scale)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary corpus, database and Prefect home (the path is printed)."),
) -> None:
    """Time a plain encode loop, grainline's embedding, its whole ingestion, and a re-run."""
    with checked():
        chk.strategies(strategy)
        check_embedder_args(device, precision, backend)
    from grainline.bench import bench as run_bench
    from grainline.bench import format_report
    from grainline.chunkers import CHUNKERS

    try:
        CHUNKERS.get(strategy)
        rep = run_bench(dataset, strategy, output, model, device, batch_size, precision, stages, keep, backend)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(format_report(rep))
    if rep.get("work_dir"):
        typer.echo(f"\nkept: {rep['work_dir']}")
    if output:
        typer.echo(f"\nwritten: {output}")
