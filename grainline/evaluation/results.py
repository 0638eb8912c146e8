"""The ``eval_results`` table (LanceDB, exported to Parquet) and the comparison with
the previous run of the same dataset."""

from __future__ import annotations

from typing import Any

from grainline.storage.chunks import connect, open_table_if_exists
from grainline.storage.eval_results import EVAL_TABLE, append_eval_results
from grainline.storage.parquet import default_export_dir, export_table
from grainline.storage.sql import quote


def previous_results(db_uri: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the latest earlier run on the same dataset, split, model and sample."""
    if not rows:
        return []
    table = open_table_if_exists(connect(db_uri), EVAL_TABLE)
    if table is None:
        return []
    r0 = rows[0]
    where = " AND ".join(
        [
            f"dataset = {quote(r0['dataset'])}",
            f"split = {quote(r0['split'])}",
            f"model_id = {quote(r0['model_id'])}",
            f"sample = {int(r0['sample'])}",
            f"run_id != {quote(r0['run_id'])}",
        ]
    )
    prev = table.search().where(where).limit(None).to_arrow().to_pylist()
    if not prev:
        return []
    last = max(prev, key=lambda r: r["time"])["run_id"]
    return [r for r in prev if r["run_id"] == last]


def results_of_version(db_uri: str, dataset: str, split: str, table_name: str, table_version: int,
                       metric: str) -> list[dict[str, Any]]:
    """The ``metric`` rows of the latest run that scored the whole of ``dataset``
    (``split``; no sample) on exactly this version of ``table_name``, or []: what a
    promotion reuses instead of scoring the same table version again."""
    table = open_table_if_exists(connect(db_uri), EVAL_TABLE)
    if table is None:
        return []
    where = " AND ".join([f"dataset = {quote(dataset)}", f"split = {quote(split)}", f"table_name = {quote(table_name)}",
                          f"table_version = {int(table_version)}", f"metric = {quote(metric)}", "sample = 0"])
    rows = table.search().where(where).limit(None).to_arrow().to_pylist()
    if not rows:
        return []
    last = max(rows, key=lambda r: r["time"])["run_id"]
    return [r for r in rows if r["run_id"] == last]


def find_regressions(rows: list[dict[str, Any]], previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics that fell below the previous run's 95% interval (same chunker, method,
    metric). Costs (``cost_*``) are not quality: a lower cost is no regression, and an
    unknown one (null) compares with nothing."""
    before = {(r["chunker_key"], r["method"], r["metric"]): r for r in previous}
    out = []
    for r in rows:
        if r["metric"].startswith("cost_") or r["value"] is None:
            continue
        p = before.get((r["chunker_key"], r["method"], r["metric"]))
        if p is not None and p["ci_low"] is not None and r["value"] < p["ci_low"]:
            out.append({
                "strategy": r["strategy"], "method": r["method"], "metric": r["metric"],
                "value": r["value"], "previous": p["value"], "previous_ci_low": p["ci_low"], "previous_run": p["run_id"],
            })
    return out


def write_results(db_uri: str, rows: list[dict[str, Any]], export: bool = True) -> str | None:
    """Append the rows to ``eval_results`` and refresh its Parquet export."""
    table = append_eval_results(db_uri, rows)
    if export:
        out = default_export_dir(db_uri, EVAL_TABLE)
        export_table(table, out)
        return out
    return None


def latest_by_model(db_uri: str, dataset: str, split: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """model_id -> the rows of that model's latest run on ``dataset`` (and ``split``):
    what a comparison of models reads. Each model has its own tables, so the runs are
    independent; run the evaluation once per model first."""
    table = open_table_if_exists(connect(db_uri), EVAL_TABLE)
    if table is None:
        return {}
    where = f"dataset = {quote(dataset)}" + (f" AND split = {quote(split)}" if split else "")
    rows = table.search().where(where).limit(None).to_arrow().to_pylist()
    latest: dict[str, tuple[Any, str]] = {}
    for r in rows:
        if r["model_id"] not in latest or r["time"] > latest[r["model_id"]][0]:
            latest[r["model_id"]] = (r["time"], r["run_id"])
    return {m: [r for r in rows if r["run_id"] == run_id] for m, (_, run_id) in sorted(latest.items())}


def metric_history(db_uri: str, dataset: str, model_id: str, metric: str, split: str | None = None) -> list[dict[str, Any]]:
    """Every stored row of one metric for a dataset (a query set's name) and model,
    oldest first: what the history plot draws across scheduled runs."""
    table = open_table_if_exists(connect(db_uri), EVAL_TABLE)
    if table is None:
        return []
    where = f"dataset = {quote(dataset)} AND model_id = {quote(model_id)} AND metric = {quote(metric)}"
    if split is not None:
        where += f" AND split = {quote(split)}"
    rows = table.search().where(where).limit(None).to_arrow().to_pylist()
    return sorted(rows, key=lambda r: r["time"])
