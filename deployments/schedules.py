"""Scheduled deployments of grainline's flows, served by one long-running process.

``grainline serve`` (or ``python -m grainline.deployments.schedules``) registers them
with the Prefect server named by PREFECT_API_URL and executes their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grainline.embedding import DEFAULT_MODEL
from grainline.storage.chunks import DEFAULT_DB

INGEST_DEPLOYMENT = "scheduled-ingest"
EVAL_DEPLOYMENT = "scheduled-eval"


def _absolute(uri: str) -> str:
    # Scheduled runs start in their own working directory: pin relative paths now.
    if "://" in uri or ":" in uri.split("/")[0]:
        return uri
    return str(Path(uri).expanduser().resolve())


class ScheduleSettings(BaseModel):
    """What runs on a schedule; every field has a default a team can read here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="Folder, file or glob to ingest.")
    db: str = DEFAULT_DB
    strategies: str = "sentence,paragraph,article"
    model: str = DEFAULT_MODEL
    sync: Literal["incremental", "full"] = "full"
    runner: str = "local"
    ingest_cron: str = "0 2 * * *"  # every night at 02:00
    eval_dataset: str | None = None  # e.g. squad:/data/squad/dev-v1.1.json
    eval_split: str | None = None
    eval_strategies: str = "sentence,paragraph,article"
    eval_methods: str = "dense,bm25,hybrid"
    eval_sample: int | None = None
    eval_cron: str = "0 4 * * 0"  # Sundays at 04:00
    # Also evaluate whenever a run of the ingestion deployment completes (a Prefect
    # deployment trigger on its flow-run Completed event), beside eval_cron.
    eval_after_ingest: bool = False
    reports_dir: str = "reports"
    timezone: str = "UTC"
    # A run retries once after a failure (which has already restored the table).
    retries: int = 1
    retry_delay_seconds: int = 300
    timeout_seconds: int = 6 * 3600

    @field_validator("db")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        # Deployment parameters are stored by Prefect: credentials stay in the environment.
        from grainline.redact import check_uri

        return check_uri(v)

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


def build_deployments(cfg: ScheduleSettings) -> list[Any]:
    """The ingestion deployment, and the evaluation one when a dataset is set."""
    from prefect.schedules import Cron

    from grainline.flows.evaluate import evaluate_flow
    from grainline.flows.ingest import ingest_flow

    opts = dict(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_seconds, timeout_seconds=cfg.timeout_seconds)
    deployments = [
        ingest_flow.with_options(**opts).to_deployment(
            name=INGEST_DEPLOYMENT,
            schedule=Cron(cfg.ingest_cron, timezone=cfg.timezone),
            parameters={
                "source": _absolute(cfg.source) if "*" not in cfg.source else cfg.source,
                "strategies": cfg.strategies,
                "model": cfg.model,
                "db": _absolute(cfg.db),
                "sync": cfg.sync,
                "runner": cfg.runner,
            },
            tags=["grainline", "ingest"],
            description=f"Ingest {cfg.source} ({cfg.strategies}) into {cfg.db} with {cfg.model}, {cfg.sync} sync.",
        )
    ]
    if cfg.eval_dataset:
        kind, _, path = cfg.eval_dataset.partition(":")
        deployments.append(
            evaluate_flow.with_options(**opts).to_deployment(
                name=EVAL_DEPLOYMENT,
                schedule=Cron(cfg.eval_cron, timezone=cfg.timezone),
                parameters={
                    "dataset": f"{kind}:{_absolute(path)}",
                    "split": cfg.eval_split,
                    "strategies": cfg.eval_strategies,
                    "methods": cfg.eval_methods,
                    "model": cfg.model,
                    "db": _absolute(cfg.db),
                    "sample": cfg.eval_sample,
                    "reports_dir": _absolute(cfg.reports_dir),
                },
                tags=["grainline", "evaluation"],
                description=f"Compare {cfg.eval_strategies} x {cfg.eval_methods} on {cfg.eval_dataset}.",
                triggers=[after_ingestion_trigger()] if cfg.eval_after_ingest else None,
            )
        )
    return deployments


def after_ingestion_trigger() -> Any:
    """Fire when a flow run of the scheduled ingestion deployment completes."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="evaluate-after-ingestion",
        match={"prefect.resource.id": "prefect.flow-run.*"},
        expect={"prefect.flow-run.Completed"},
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
