"""A run's ledger record as the Markdown summary the flow publishes."""

from __future__ import annotations

from grainline.redact import redact_text
from grainline.storage.ledger import RunRecord


def summary_markdown(rec: RunRecord) -> str:
    """The run's counts as a Markdown table (the flow publishes it as an artifact)."""
    c = rec.counts
    lines = [
        f"# grainline ingestion `{rec.run_id}`",
        "",
        f"Source `{rec.source}` -> table `{rec.table_name}` (model `{rec.model_id}`), status **{rec.status}**, "
        f"table version {rec.version_before} -> {rec.version_after}.",
        "",
        "| documents seen | added | updated | unchanged | deleted | failed | chunks written | chunks deleted | embedded | reused |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c.docs_seen} | {c.docs_added} | {c.docs_updated} | {c.docs_unchanged} | {c.docs_deleted} | {c.docs_failed} "
        f"| {c.chunks_written} | {c.chunks_deleted} | {c.chunks_embedded} | {c.chunks_reused} |",
        *(["", f"Files: {c.files_read} read, {c.files_unchanged} unchanged by stat (not read)."]
          if c.files_read or c.files_unchanged else []),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in c.stage_seconds.items()],
    ]
    if c.failures:
        lines += ["", "## Failures", "", "| where | stage | reason |", "|---|---|---|"]
        lines += [f"| `{f['where']}` | {f['stage']} | {f['reason']} |" for f in c.failures]
    if c.skipped:
        lines += ["", f"## Skipped ({c.docs_skipped} files no reader reads)", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{f['where']}` | {f['reason']} |" for f in c.skipped]
    if not (c.docs_seen or c.docs_failed or c.docs_skipped):
        lines += ["", f"**Warning: the source `{rec.source}` holds no documents.**"]
    return redact_text("\n".join(lines) + "\n")
