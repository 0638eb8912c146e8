"""Scheduled deployments of grainline's flows, served by one long-running process.

``grainline serve`` (or ``python -m grainline.deployments.schedules``) registers them
with the Prefect server named by PREFECT_API_URL and executes their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from grainline.evaluation.model import EvalSettings
from grainline.ingest import IngestSettings

INGEST_DEPLOYMENT = "scheduled-ingest"
EVAL_DEPLOYMENT = "scheduled-eval"


def _absolute(uri: str) -> str:
    # Scheduled runs start in their own working directory: pin relative paths now.
    if "://" in uri or ":" in uri.split("/")[0]:
        return uri
    return str(Path(uri).expanduser().resolve())


def _pinned(settings: Any, **paths: str | None) -> Any:
    """``settings`` with the given path fields made absolute (globs and URIs kept)."""
    update = {k: (v if v is None or "*" in v else _absolute(v)) for k, v in paths.items()}
    return settings.model_copy(update=update)


class ScheduleSettings(BaseModel):
    """What runs on a schedule, and when. What a run does is the flows' own settings
    (``ingest``, ``evaluate``), stored whole as each deployment's ``settings`` parameter;
    only the schedule and the retries are declared here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ingest: IngestSettings
    # None: no evaluation deployment. Its ``dataset`` (KIND:PATH) is what it scores.
    evaluate: EvalSettings | None = None
    runner: str = "local"  # where the ingestion's tasks run: local, dask or dask://HOST:PORT
    ingest_cron: str = "0 2 * * *"  # every night at 02:00
    eval_cron: str = "0 4 * * 0"  # Sundays at 04:00
    # Also evaluate whenever a run of the ingestion deployment completes having changed
    # its table (a deployment trigger on grainline's ingest-completed event), beside eval_cron.
    eval_after_ingest: bool = False
    timezone: str = "UTC"
    # A run retries once after a failure (which has already restored the table).
    retries: int = 1
    retry_delay_seconds: int = 300
    timeout_seconds: int = 6 * 3600

    @field_validator("ingest_cron", "eval_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=v)
        except ValueError:
            raise ValueError(f"invalid cron expression {v!r}: give five fields, minute (0-59) hour (0-23) "
                             "day-of-month (1-31) month (1-12) day-of-week (0-6), e.g. '0 2 * * *' or '*/15 * * * *'") from None
        return v

    @model_validator(mode="after")
    def _evaluate_has_dataset(self) -> "ScheduleSettings":
        if self.evaluate is not None and not self.evaluate.dataset:
            raise ValueError("a scheduled evaluation needs a dataset (KIND:PATH)")
        return self


def build_deployments(cfg: ScheduleSettings) -> list[Any]:
    """The ingestion deployment, and the evaluation one when ``cfg.evaluate`` is set.

    Each deployment stores its flow's settings whole, as the one parameter
    ``settings`` (paths made absolute: scheduled runs start in a folder of their own).
    Prefect merges a custom run's parameters into the deployment's one level deep, so
    a run that changes one setting passes the whole ``settings`` object, edited."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from grainline.flows.evaluate import evaluate_flow
    from grainline.flows.ingest import ingest_flow

    opts = dict(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_seconds, timeout_seconds=cfg.timeout_seconds)
    ing = _pinned(cfg.ingest, source=cfg.ingest.source, db=cfg.ingest.db, parquet_dir=cfg.ingest.parquet_dir)
    strategies = ",".join(ing.strategies)
    deployments = [
        ingest_flow.with_options(**opts).to_deployment(
            name=INGEST_DEPLOYMENT,
            schedule=Cron(cfg.ingest_cron, timezone=cfg.timezone),
            parameters={"settings": ing.model_dump(mode="json"), "runner": cfg.runner},
            tags=["grainline", "ingest"],
            description=f"Ingest {ing.source} ({strategies}) into {ing.db} with {ing.embedder.model}, {ing.sync} sync.",
        )
    ]
    if cfg.evaluate is not None:
        ev = cfg.evaluate
        kind, _, path = (ev.dataset or "").partition(":")
        ev = _pinned(ev, db=ev.db, reports_dir=ev.reports_dir).model_copy(update={"dataset": f"{kind}:{_absolute(path)}"})
        deployments.append(
            evaluate_flow.with_options(**opts).to_deployment(
                name=EVAL_DEPLOYMENT,
                schedule=Cron(cfg.eval_cron, timezone=cfg.timezone),
                parameters={"settings": ev.model_dump(mode="json")},
                tags=["grainline", "evaluation"],
                description=f"Compare {','.join(ev.strategies)} x {','.join(ev.methods)} on {ev.dataset}.",
                triggers=[after_ingestion_trigger()] if cfg.eval_after_ingest else None,
                # One at a time; a run that arrives meanwhile waits, and gives way to
                # any run that started after it was requested (flows/coalesce.py).
                concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            )
        )
    return deployments


def after_ingestion_trigger() -> Any:
    """Fire when a run of the scheduled ingestion deployment completes having changed its
    table (an unchanged re-run has nothing new to evaluate).

    It listens for grainline's own ``grainline.ingest.completed`` event
    (``grainline.flows.ingest.announce_completed`` says why not Prefect's flow-run
    Completed event)."""
    from prefect.events import DeploymentEventTrigger

    from grainline.flows.ingest import INGEST_COMPLETED

    return DeploymentEventTrigger(
        name="evaluate-after-ingestion",
        match={"prefect.resource.id": "grainline.table.*", "grainline.changed": "true"},
        expect={INGEST_COMPLETED},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": INGEST_DEPLOYMENT},
    )


def serve(cfg: ScheduleSettings, api_url: str) -> None:
    """Register the deployments on the Prefect server at ``api_url`` and execute their
    runs until interrupted (SIGINT or SIGTERM).

    The API URL is given to Prefect's settings, not only to the environment: settings
    are read once, when prefect is first imported, so a changed ``PREFECT_API_URL``
    would otherwise go unseen and the deployments would land on a temporary server."""
    import asyncio
    import os

    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Runner(Runner):
        # Prefect's own SIGTERM handler exits from inside the event loop without
        # awaiting its shutdown (tracebacks in the log); a KeyboardInterrupt takes the
        # same clean path as Ctrl-C: runs stopped, schedules paused, server stopped.
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt("SIGTERM")

    os.environ["PREFECT_API_URL"] = api_url  # the runs the runner starts inherit it
    with temporary_settings({PREFECT_API_URL: api_url}):
        runner = _Runner(pause_on_shutdown=True)
        for deployment in build_deployments(cfg):
            runner.add_deployment(deployment)
        try:
            asyncio.run(runner.start())
        except KeyboardInterrupt:
            pass
