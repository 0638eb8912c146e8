"""The granularity evaluation flow: which chunking retrieves best, with which method.

Thin wiring over :mod:`grainline.evaluation.runner`; ready to be scheduled. The run
record (:class:`~grainline.evaluation.model.EvalRun`) travels as an argument: the
first task returns it and every later task takes it. Tasks are called, not submitted,
so each runs in the flow's own thread and fills in the very run it is given (Prefect
resolves task inputs without copying an object that holds no futures)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from grainline.evaluation import runner
from grainline.evaluation.model import EvalRun, EvalSettings

from .retry import retry_transient


@task(name="load-dataset", cache_policy=NO_CACHE)
def load_task(settings: EvalSettings) -> EvalRun:
    return runner.load(settings)


@task(name="ingest-dataset", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def ingest_task(run: EvalRun) -> dict[str, Any]:
    from grainline.storage.locks import TableLock

    # Two evaluations of one dataset queue rather than write its tables together (each
    # strategy's table also has its own lock, taken by the ingestion itself).
    with TableLock(run.settings.db, runner.table_base(run), timeout_s=6 * 3600, run_id=run.run_id):
        runner.ingest_dataset(run)
    return run.ingest_counts


@task(name="embed-queries", cache_policy=NO_CACHE)
def embed_queries_task(run: EvalRun) -> dict[str, Any]:
    return runner.embed_queries(run)


@task(name="retrieve-and-score", retries=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="retrieve-and-score-{label}")
def score_task(run: EvalRun, label: str, vectors: dict[str, Any]) -> None:
    runner.score_strategy(run, label, vectors)


@task(name="aggregate", cache_policy=NO_CACHE)
def aggregate_task(run: EvalRun) -> None:
    runner.aggregate(run)


@task(name="store-results", retries=3, retry_delay_seconds=[1, 4, 15], retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def store_task(run: EvalRun) -> list[dict[str, Any]]:
    runner.store_and_compare(run)
    return run.regressions


@task(name="report", cache_policy=NO_CACHE)
def report_task(run: EvalRun) -> dict[str, Any]:
    from grainline.evaluation.report import write_report

    path, pngs, md = write_report(run)
    return {"report": str(path), "plots": [str(p) for p in pngs], "markdown": md}


@flow(name="grainline-evaluate", description="Compare chunk granularities (sentence/paragraph/article) x retrieval methods on a labelled dataset or on the production table with a query set.")
def evaluate_flow(settings: EvalSettings) -> Any:
    """Evaluate and report; the final state's message states the recommendation and
    any metric that fell below the previous run's interval.

    ``settings`` (:class:`grainline.evaluation.model.EvalSettings`, the one declaration
    of an evaluation's options): ``dataset`` (KIND:PATH) ingests a labelled dataset into
    evaluation tables of its own; ``queries`` (a query set from ``grainline queries``)
    instead scores the production table ``table`` (default: the model's) at version or
    tag ``at`` (default: current) for every strategy present, embedding only the
    queries. ``chunk_sweep`` (``{"paragraph": {"max_tokens": [128, 256]}}``) makes
    every combination a configuration of its own. Among the configurations tied with
    the best, ``prefer="cost"`` (default) recommends the cheapest by ``cost`` (names
    tried in order: vectors, bytes, embed_seconds, latency), ``prefer="quality"`` the
    highest mean; each configuration's costs are in the report artifact and in the
    returned ``results`` (``cost_*`` metrics) and ``costs``."""
    logger = get_run_logger()
    from .coalesce import COALESCED, superseded_by

    later = superseded_by()
    if later is not None:
        message = (f"coalesced: flow run {later.name} started after this run was requested and evaluates "
                   f"the same dataset and tables")
        logger.info(message)
        return Completed(name=COALESCED, message=message)
    run = load_task(settings)
    ingest_task(run)  # with a query set: only swept configurations the table lacks
    vectors = embed_queries_task(run)
    for label in runner.groups(run):
        score_task(run, label, vectors)
    aggregate_task(run)
    regressions = store_task(run)
    report = report_task(run)
    # The images travel inside the artifacts: the UI cannot open the report folder.
    from grainline.evaluation.report import embedded_markdown, plot_images

    create_markdown_artifact(markdown=embedded_markdown(report["markdown"], report["plots"]), key="grainline-eval-report",
                             description=f"grainline evaluation {run.run_id}")
    for img in plot_images(report["plots"]):
        create_markdown_artifact(markdown=f"### {img['name']}\n\n![{img['name']}]({img['data_uri']})\n",
                                 key="grainline-eval-plot-" + img["name"].replace("_", "-"),
                                 description=f"grainline evaluation {run.run_id}: {img['name']}")
    message = runner.state_message(run)
    for g in regressions:
        logger.warning("regression: %s/%s %s %.4f below previous interval (low %.4f)", g["strategy"], g["method"], g["metric"], g["value"], g["previous_ci_low"])
    logger.info(message)
    data = {
        "run_id": run.run_id, "report": report["report"], "plots": report["plots"], "regressions": regressions,
        "results": run.results, "message": message, "n_queries": len(run.queries),
        "skipped_queries": len(run.dataset.skipped_queries), "recommendation": run.recommendation,
        "skipped": [list(x) for x in run.dataset.skipped_queries],
        "costs": {name: {"values": c.values, "unknown": c.why} for name, c in run.costs.items()},
    }
    return Completed(message=message, data=data)
