"""How a run ends, in the ledger: completed, failed or interrupted (and by which
signal), what a failed run did with what it wrote (kept, with an undo command and a tag
that keeps that version from pruning, or restored), and the errors of a run's last steps."""

from __future__ import annotations

import logging
import shlex

from grainline.embedding import Embedder
from grainline.errors import TerminalError
from grainline.redact import redact_text
from grainline.storage.ledger import RunCounts, RunRecord, utcnow

from .context import RunContext
from .settings import IngestSettings

log = logging.getLogger("grainline.ingest")

UNDO_TAG_PREFIX = "undo-"


class ExportFailed(TerminalError, RuntimeError):
    """The Parquet export of a run failed (its table was written in full). Terminal for
    the run; the next run exports again, since the export does not hold the table's version."""


class LedgerWriteFailed(TerminalError, RuntimeError):
    """The run's ledger row could not be written (e.g. the disk is full): the ``runs``
    table may still say 'running'; the next run on the table marks it interrupted.
    Terminal: the run itself is over, and repeating it is the user's call."""


class RunInterrupted(TerminalError, RuntimeError):
    """A run stopped by SIGINT or SIGTERM whose signal surfaced as another error (inside
    Prefect's task engine, say). ``signum`` is the signal; the message is the ledger's
    account of the run (interrupted, what was kept or restored). Terminal: the user
    stopped it."""

    def __init__(self, signum: int, outcome: str) -> None:
        super().__init__(outcome)
        self.signum = signum


def interrupt_signal(error: BaseException | None) -> int | None:
    """The signal that stopped a run: SIGINT for KeyboardInterrupt, else the ``signal``
    of a termination exception (Prefect's TerminationSignal for SIGTERM), else None."""
    import signal

    if isinstance(error, KeyboardInterrupt):
        return getattr(error, "signal", None) or signal.SIGINT
    sig = getattr(error, "signal", None)
    return sig if isinstance(sig, int) and not isinstance(error, Exception) else None


def undo_command(settings: IngestSettings, table: str, version: int) -> str:
    """The command that rolls ``table`` back to ``version``."""
    return f"grainline restore {version} --db {shlex.quote(settings.db)} --table {table}"


def record_end(ctx: RunContext, counts: RunCounts, error: BaseException | None,
               interrupted_by: int | None = None) -> RunRecord:
    """Say in the ledger how the run ended (completed, failed or interrupted), after
    keeping or restoring what a failed run wrote (``on_error``)."""
    import signal

    rec = ctx.record
    record_precision(rec, ctx.embedder)
    rec.counts = counts
    rec.finished = utcnow()
    sig = interrupt_signal(error) or (interrupted_by if error is not None else None)
    rec.status = "completed" if error is None else ("interrupted" if sig is not None else "failed")
    if error is None:
        rec.error = None
    elif sig is not None:
        rec.error = f"interrupted by {signal.Signals(sig).name}"
    else:
        rec.error = redact_text(f"{type(error).__name__}: {error}")
    version_now = _version_now(ctx)
    wrote = error is not None and rec.version_before is not None and version_now not in (None, rec.version_before)
    if wrote and ctx.settings.on_error == "keep":
        # Every commit holds whole documents, so what was written is consistent and a
        # re-run skips it; the ledger says how to undo it instead, and a tag keeps that
        # version from being pruned until a later run of the table completes.
        rec.error += (
            f"; kept the batches committed before the error (table version {rec.version_before} -> "
            f"{version_now}); a re-run resumes from there; to undo them: "
            f"{undo_command(ctx.settings, ctx.store.table_name, rec.version_before)}"
        )
        _tag_undo(ctx, rec)
    elif wrote:
        # on_error=restore: the version before the run becomes the latest again (a new
        # version; the failed run's versions stay in history).
        try:
            restored = ctx.store.restore(rec.version_before)
            rec.error += f"; table restored to version {rec.version_before} (now version {restored})"
        except Exception as exc:  # noqa: BLE001 - the ledger must still say what happened
            rec.error += f"; restoring version {rec.version_before} failed: {exc!r}"
    rec.version_after = _version_now(ctx)
    vouch = ctx.manifest.vouch() if error is None and ctx.manifest is not None else None
    if vouch is not None:
        # The next run trusts every entry without reading a document's state while the
        # table is still at version_after (ingest/manifest.py).
        if ctx.scope is not None and not ctx.legacy_ids:
            # Nor looks for ids an older grainline made relative to this root: none then.
            vouch["no_legacy_ids_under"] = ctx.root
        rec.parameters["source_manifest"] = vouch
    else:
        rec.parameters.pop("source_manifest", None)
    try:
        ctx.ledger.write(rec)
    except Exception as exc:
        what = f"run {rec.run_id} {rec.status}" + (f" ({rec.error})" if rec.error else "")
        raise LedgerWriteFailed(f"could not record the end of the run in the ledger of {redact_text(ctx.settings.db)}: "
                                f"{type(exc).__name__}: {exc}; {what}") from exc
    return rec


def _version_now(ctx: RunContext) -> int | None:
    try:
        return ctx.store.version()
    except Exception:  # noqa: BLE001 - a damaged table cannot say; the ledger still can
        return None


def _tag_undo(ctx: RunContext, rec: RunRecord) -> None:
    """Tag the version a failed run's undo command names, so pruning keeps it."""
    try:
        ctx.store.table.tags.create(f"{UNDO_TAG_PREFIX}{rec.run_id}", rec.version_before)
    except Exception as exc:  # noqa: BLE001 - the hint stays; `restore` says when it is gone
        log.warning("could not tag version %s for the undo command: %s", rec.version_before, exc)


def drop_undo_tags(ctx: RunContext) -> None:
    """A run that gets to its end has resumed the failed runs before it: their undo
    tags go, so maintenance can prune those versions again."""
    if not ctx.store.exists:
        return
    try:
        for name in [n for n in ctx.store.table.tags.list() if n.startswith(UNDO_TAG_PREFIX)]:
            ctx.store.table.tags.delete(name)
    except Exception as exc:  # noqa: BLE001 - only pruning is held back
        log.warning("could not drop the undo tags of table %s: %s", ctx.store.table_name, exc)


def record_precision(rec: RunRecord, embedder: Embedder) -> None:
    """The precision and the backend the run's vectors were made with (what ``auto``
    chose, and why) in the record's parameters; only once the model is loaded: an
    unchanged run never loads it."""
    if embedder.loaded:
        choice = embedder.precision_choice
        rec.parameters["precision"] = {"setting": embedder.settings.precision, "chosen": embedder.precision,
                                       "reason": choice.reason if choice is not None else "set explicitly"}
        backend = embedder.backend_choice
        rec.parameters["backend"] = {"setting": embedder.settings.backend, "chosen": backend.backend,
                                     "reason": backend.reason, "speedup_over_torch": backend.speedup}
