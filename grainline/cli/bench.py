"""``grainline bench``: timings of a plain encode loop, grainline's embedding, its
ingestion and a re-run; with ``--scale``, what each step of a scheduled run costs as
the table grows."""

from __future__ import annotations

import typer

from grainline.cli import checks as chk
from grainline.cli.common import BACKEND_HELP, DEVICE_HELP, MODEL_HELP, check_embedder_args, checked, fail
from grainline.defaults import DEFAULT_MODEL

STAGES_DEFAULT = "baseline,embed,ingest,rerun"


def bench(
    dataset: str = typer.Option(None, "--dataset", help="squad:PATH, beir:PATH, generated:N (N synthetic documents) or "
                                "generated-reuse:N (paragraphs from a pool of 2,000: full-scale pipeline, little embedding)."),
    strategy: str = typer.Option("paragraph", "--strategy", "-s", help="The strategy whose chunks are embedded."),
    output: str = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help="grainline's precision (the baseline is always fp32)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Chunks per model forward pass."),
    stages: str = typer.Option(STAGES_DEFAULT, "--stages", help="Which stages to run (e.g. ingest,rerun for memory at scale)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary corpus, database and Prefect home (the path is printed)."),
    scale: str = typer.Option(None, "--scale", help="N1,N2 (or more sizes): instead of --dataset, build a table of each size "
                              "and time a scheduled run's steps on it (add, unchanged, edit1, edit_new_delete, search, "
                              "search_hybrid), each a fresh grainline process; see docs/benchmark.md."),
    add_docs: int = typer.Option(200, "--add-docs", help="With --scale: documents of the add step."),
    batch_docs: int = typer.Option(64, "--batch-docs", help="With --scale: grainline ingest --batch-docs of every run."),
    query: str = typer.Option(None, "--query", help="With --scale: the query of the search steps (default: 'glacier membrane protein signal')."),
) -> None:
    """Time a plain encode loop, grainline's embedding, its whole ingestion, and a re-run;
    or, with --scale, a scheduled run's steps on tables of growing size."""
    with checked():
        if (dataset is None) == (scale is None):
            raise chk.ArgumentError("give --dataset (the stages) or --scale N1,N2 (a scheduled run's steps), not both"
                                    if dataset else "give --dataset SPEC, or --scale N1,N2")
        chk.strategies(strategy)
        check_embedder_args(device, precision, backend)
        if scale is not None:
            chk.positive("--add-docs", add_docs)
            chk.positive("--batch-docs", batch_docs)
            chk.positive("--batch-size", batch_size)
            if strategy.count(",") or stages != STAGES_DEFAULT:
                raise chk.ArgumentError("--scale times one strategy and takes no --stages")
            from grainline.bench_scale import parse_scale

            try:
                sizes = parse_scale(scale)
            except ValueError as exc:
                raise chk.ArgumentError(str(exc)) from None
    if scale is not None:
        _scale(sizes, strategy, output, model, device, precision, backend, add_docs, batch_docs, query, keep, batch_size)
        return
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


def _scale(sizes: list[int], strategy: str, output: str | None, model: str, device: str, precision: str, backend: str,
           add_docs: int, batch_docs: int, query: str | None, keep: bool, batch_size: int) -> None:
    from grainline.bench_scale import DEFAULT_QUERY, ScaleBenchError, format_scale_report, scale_bench

    try:
        rep = scale_bench(sizes, strategy, output, model, device, precision, backend, add_docs, batch_docs,
                          query or DEFAULT_QUERY, keep, announce=lambda msg: typer.echo(msg, err=True),
                          batch_size=batch_size)
    except ScaleBenchError as exc:
        fail(str(exc), code=1)
    typer.echo(format_scale_report(rep))
    if rep.get("work_dir"):
        typer.echo(f"\nkept: {rep['work_dir']}")
    if output:
        typer.echo(f"\nwritten: {output}")
