"""The ingestion flow: discover -> read -> chunk and embed in batches -> write.

Thin wiring over :mod:`grainline.ingest`: its one batch loop (``run_batches``) runs
here with chunking and embedding as tasks submitted to the flow's task runner (threads
by default, Dask for scale-out) and writing as a task of the flow process, the single
writer. Two runs that write the same table queue on the table's write lock, taken in
``grainline.ingest.prepare`` (storage/locks.py) inside and outside Prefect."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from grainline import ingest as core
from grainline.documents import Document
from grainline.storage.ledger import RunCounts

from .retry import retry_transient


@task(name="chunk-and-embed", retries=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def chunk_embed_task(spec: core.WorkSpec, docs: list[tuple[Document, str]]) -> core.EmbeddedBatch:
    return core.process_docs(spec, docs)


@task(name="write", retries=3, retry_delay_seconds=[1, 4, 15], retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def write_task(run_id: str, batch: core.EmbeddedBatch) -> RunCounts:
    # The run's context (every stored document's state) is looked up, not passed:
    # Prefect walks a task's arguments on each call.
    return core.write_batch(core.active_run(run_id), batch)


def write_batch(ctx: core.RunContext, batch: core.EmbeddedBatch) -> RunCounts:
    """The write task called for one batch: arguments of the batch's size only (the
    batch is quoted: its vectors are inputs of no other task)."""
    return write_task(ctx.run_id, quote(batch))


def cancel_future(future: Any) -> None:
    """Give up a batch submitted but not written when a run fails: one not started is
    cancelled, a running one is left to end on its own (it only reads the table, and a
    re-run redoes its documents). Prefect's futures have no ``cancel`` (3.8); the
    concurrent or Dask future they wrap has."""
    cancel = getattr(getattr(future, "wrapped_future", None), "cancel", None)
    if cancel is not None:
        cancel()


# After SIGINT or SIGTERM: how long the run may take to record its end (ledger row,
# lock), then how long Prefect gets to record it too, before the process ends anyway.
RECORD_TIMEOUT_S = 30.0
INTERRUPT_GRACE_S = 8.0


class SignalEnd:
    """Ends the process soon after SIGINT or SIGTERM, exit status 128 + signal.

    Ctrl-C and systemd signal the whole process group, Prefect's temporary server
    included: its client then retries the dead server for minutes (and a signal that
    lands inside Prefect's own bookkeeping can be swallowed, the run going on against
    that dead server). The handlers here chain to the ones installed before (Python's
    KeyboardInterrupt, Prefect's TerminationSignal), and once the run says it has
    recorded its end (:meth:`recorded`) the process gets ``grace_s`` more, then ends."""

    def __init__(self, record_timeout_s: float = RECORD_TIMEOUT_S, grace_s: float = INTERRUPT_GRACE_S) -> None:
        self.record_timeout_s, self.grace_s = record_timeout_s, grace_s
        self.signum: int | None = None
        self.outcome = ""
        self._done = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalEnd":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: nothing to chain to
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)

    def recorded(self, outcome: str) -> None:
        """The run's end is in the ledger and its lock released."""
        self.outcome = outcome
        self._done.set()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            threading.Thread(target=self._end, name="grainline-end-after-signal", daemon=True).start()
        prev = self._previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    def _end(self) -> None:
        self._done.wait(self.record_timeout_s)
        time.sleep(self.grace_s)
        outcome = " ".join(self.outcome.split()) or f"interrupted by {signal.Signals(self.signum).name}"
        try:
            os.write(2, f"error: {outcome} (the Prefect API did not answer; not waiting for it)\n".encode())
        finally:
            os._exit(128 + (self.signum or signal.SIGTERM))


# Emitted when an ingestion run completes; the evaluation deployment's trigger listens
# for it (deployments/schedules.py).
INGEST_COMPLETED = "grainline.ingest.completed"


def announce_completed(rec: Any) -> None:
    """Emit :data:`INGEST_COMPLETED` for the run's table, labelled with whether the run
    changed it (``grainline.changed``: "true"/"false").

    Why an event of grainline's own rather than Prefect's ``prefect.flow-run.Completed``:
    a scheduled run's state events follow its Scheduled event, which the scheduler's
    bulk insert never emits, so the server's trigger service holds the whole chain back
    as waiting for that event (minutes; the Completed event of the first scheduled runs
    never fired). This event follows nothing and is evaluated as it arrives. Prefect
    attaches the flow run, flow and deployment as related resources."""
    from prefect.events import emit_event

    c = rec.counts
    changed = bool(c.docs_added or c.docs_updated or c.docs_deleted)
    emit_event(
        event=INGEST_COMPLETED,
        resource={"prefect.resource.id": f"grainline.table.{rec.table_name}", "prefect.resource.name": rec.table_name,
                  "grainline.changed": "true" if changed else "false"},
        payload={"run_id": rec.run_id, "version_after": rec.version_after, "chunks_written": c.chunks_written},
    )


def task_runner_for(runner: str, dask_workers: int = 2) -> Any:
    """``local`` (threads), ``dask`` (a local Dask cluster) or ``dask://HOST:PORT`` /
    ``tcp://HOST:PORT`` (an existing Dask scheduler)."""
    if runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=2)
    if runner == "dask" or runner.startswith(("dask://", "tcp://", "tls://")):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - a dependency
            raise RuntimeError("the dask runner needs prefect-dask: pip install prefect-dask") from exc
        if runner == "dask":
            return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True})
        return DaskTaskRunner(address=runner.replace("dask://", "tcp://", 1))
    raise ValueError(f"unknown runner {runner!r}; use local, dask, or dask://HOST:PORT")


def _ingest(settings: core.IngestSettings, in_flight: int) -> dict[str, Any]:
    logger = get_run_logger()
    # prepare() takes the table's write lock (storage/locks.py: an OS file lock for a
    # local database, a lease for an object store), so a run that dies, however it
    # dies, never leaves the table locked for later runs.
    with SignalEnd() as ends:
        ctx = core.prepare(settings)
        logger.info("holding the write lock of table %s (%s)", ctx.store.table_name,
                    ctx.lock.where if ctx.lock is not None else settings.db)
        counts = RunCounts()
        error: BaseException | None = None
        try:
            core.run_batches(ctx, counts, submit=chunk_embed_task.submit, write=write_batch, in_flight=in_flight,
                             cancel=cancel_future)
        except BaseException as exc:  # recorded in the ledger (the table kept or restored per on_error), then re-raised
            error = exc
        try:
            # A signal landing inside Prefect's task engine comes out as another error.
            rec = core.finish(ctx, counts, error, interrupted_by=ends.signum)
        finally:
            ends.recorded(ctx.record.error or "")
    if error is not None:
        # The outcome (kept or restored, the undo command) travels with the error, so
        # whoever reports it (the CLI) can say it in one line.
        error.add_note(rec.error or "")
        if rec.status == "interrupted" and isinstance(error, Exception):
            # The signal became another error inside Prefect: say it was the signal.
            raise core.RunInterrupted(ends.signum or core.interrupt_signal(error) or signal.SIGTERM,
                                      " ".join((rec.error or "").split())) from error
        raise error
    c = rec.counts
    logger.info(
        "run %s: %d documents seen, %d added, %d updated, %d unchanged, %d deleted, %d failed; %d chunks written",
        rec.run_id, c.docs_seen, c.docs_added, c.docs_updated, c.docs_unchanged, c.docs_deleted, c.docs_failed, c.chunks_written,
    )
    for f in c.failures:
        logger.warning("failed: %s (%s): %s", f["where"], f["stage"], f["reason"])
    summary = core.summary_markdown(rec)
    announce_completed(rec)
    create_markdown_artifact(markdown=summary, key="grainline-ingest-summary", description=f"grainline ingestion {rec.run_id}")
    return {
        "run_id": rec.run_id,
        "status": rec.status,
        "table": rec.table_name,
        "model_id": rec.model_id,
        "precision": rec.parameters.get("precision"),
        "backend": rec.parameters.get("backend"),
        "version_before": rec.version_before,
        "version_after": rec.version_after,
        "counts": c.as_dict(),
        "summary": summary,
    }


@flow(name="grainline-ingest-distributed", description="The ingestion flow's body on a Dask task runner.")
def _ingest_distributed(settings: core.IngestSettings, in_flight: int) -> dict[str, Any]:
    return _ingest(settings, in_flight)


@flow(name="grainline-ingest", description="Ingest documents into sentence/paragraph/article chunk vectors in LanceDB and Parquet.")
def ingest_flow(settings: core.IngestSettings, runner: str = "local", dask_workers: int = 2) -> dict[str, Any]:
    """Ingest ``settings.source`` (folder, file or glob) as ``settings`` say; returns the
    run's ledger record as a dict and publishes its counts as a Markdown artifact.

    ``settings`` is the one declaration of an ingestion's options
    (:class:`grainline.ingest.IngestSettings`); Prefect validates it as the run's
    parameter, so the UI's run form and a deployment's stored parameters show the same
    fields. Only where the run executes is separate: ``runner`` is ``local`` (default),
    ``dask`` (a local cluster of ``dask_workers`` processes) or ``dask://HOST:PORT`` (an
    existing scheduler)."""
    # Here, when the run starts, not when a schedule was made: a scheduled run after a
    # promotion writes to the promoted table with its model.
    settings = core.follow_alias(settings)
    if runner == "local":
        return _ingest(settings, in_flight=1)
    sub = _ingest_distributed.with_options(task_runner=task_runner_for(runner, dask_workers))
    return sub(settings, in_flight=max(2, dask_workers))


def ingest_here(settings: core.IngestSettings, runner: str = "local", dask_workers: int = 2) -> dict[str, Any]:
    """Run :func:`ingest_flow` in this process, in the foreground, as ``grainline ingest``
    and the benchmark do: without Prefect's flow-run heartbeats, unless
    ``GRAINLINE_FLOW_HEARTBEATS=1``.

    Why: Prefect's sync flow engine joins its heartbeat thread at the end of every run,
    and that thread sleeps in one-second steps, so each run waited up to a second more
    than its work (most of an unchanged re-run of a small corpus). Heartbeats serve the
    detection of runs that died without a word; a foreground run is watched by the
    person who started it, and grainline's ledger marks a run that died as interrupted
    when the next run takes the table's lock. Deployment runs (``grainline serve``, a
    worker), which run unattended, keep their heartbeats."""
    if os.environ.get("GRAINLINE_FLOW_HEARTBEATS") == "1":
        return ingest_flow(settings, runner=runner, dask_workers=dask_workers)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return ingest_flow(settings, runner=runner, dask_workers=dask_workers)
