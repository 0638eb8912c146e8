"""The whole evaluation in this process, without Prefect: the runner's steps in order,
then the report. The evaluation flow wires the same steps as tasks."""

from __future__ import annotations

from . import runner
from .model import EvalRun, EvalSettings
from .report import write_report


def run_eval(settings: EvalSettings) -> EvalRun:
    """Evaluate as ``settings`` say, store the results and write the report; returns the run."""
    run = runner.load(settings)
    runner.ingest_dataset(run)
    vectors = runner.embed_queries(run)
    for label in runner.groups(run):
        runner.score_strategy(run, label, vectors)
    runner.aggregate(run)
    runner.store_and_compare(run)
    write_report(run)
    return run
