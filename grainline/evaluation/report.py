"""The report of an evaluation run: a Markdown table with intervals and significance
marks, and PNG plots (metrics by granularity; answer recall by retrieved-token budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .costs import COST_KINDS, LATENCY_QUERIES
from .model import HEADLINE_METRICS, TIE_ALPHA, EvalRun, primary_metric, recommendation_line

GRANULARITY_ORDER = ["sentence", "paragraph", "article"]
ALPHA = 0.05


def _cell(r: dict[str, Any]) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _order(strategies: list[str]) -> list[str]:
    known = [s for s in GRANULARITY_ORDER if s in strategies]
    return known + [s for s in strategies if s not in known]


def markdown(run: EvalRun) -> str:
    """The whole report as Markdown."""
    by = {(r["config"], r["method"], r["metric"]): r for r in run.results}
    configs = [(c.label, c.method) for c in run.configs]
    metrics = [m for m in dict.fromkeys(HEADLINE_METRICS + (primary_metric(run),)) if any((s, meth, m) in by for s, meth in configs)]
    ds = run.dataset
    tables = ("The production table, as ingested: " if run.production else
              "Tables (one per strategy, so BM25's statistics come from one granularity): ")
    lines = [
        f"# grainline evaluation `{run.run_id}`",
        "",
        f"**{recommendation_line(run.recommendation)}**",
        "",
        f"Dataset **{ds.name}** (split `{ds.split}`), {len(run.queries)} queries scored"
        + (f" (seeded sample of {len(ds.queries)})" if run.settings.sample else "")
        + f", {len(ds.skipped_queries)} skipped for lack of gold labels; {len(ds.documents)} documents.",
        f"Model `{run.model_id}`, long articles: `{run.settings.long_article}`. {tables}"
        + ", ".join(f"`{t}` v{v}" + (f" (tag `{g}`)" if g else "")
                    for t, v, g in dict.fromkeys((c.table_name, c.table_version, c.table_tag) for c in run.configs)) + ".",
        "",
        "Each cell: mean over queries [95% bootstrap interval]. **▲** best in its column; "
        f"**≈** not significantly different from the best (paired permutation test, p ≥ {ALPHA}); "
        "no mark: significantly worse than the best.",
        "",
        "| strategy | method | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    best = {}
    for m in metrics:
        cands = [(by[(s, meth, m)]["value"], f"{s}/{meth}") for s, meth in configs if (s, meth, m) in by]
        best[m] = max(cands)[1] if cands else None
    for s, meth in configs:
        cells = []
        for m in metrics:
            r = by.get((s, meth, m))
            if r is None:
                cells.append("-")
                continue
            name = f"{s}/{meth}"
            mark = ""
            if name == best[m]:
                mark = " ▲"
            else:
                p = _p(run, m, name, best[m])
                if p is not None and p >= ALPHA:
                    mark = " ≈"
            cells.append(_cell(r) + mark)
        lines.append(f"| {s} | {meth} | " + " | ".join(cells) + " |")
    lines += cost_section(run)
    s = run.settings
    how = ("the highest mean of them is recommended (`--prefer quality`)" if s.prefer == "quality" else
           "the cheapest of them by " + ", else ".join(f"{COST_KINDS[c].label} (`{c}`)" for c in s.cost)
           + " is recommended (`--prefer cost --cost " + ",".join(s.cost) + "`; equal costs: the higher mean; a cost "
           "unknown for any of them is passed over, with the reason, for the next one named, and with none left the "
           "highest mean is recommended)")
    lines += ["", "## Recommendation", "", recommendation_line(run.recommendation), "",
              f"Rule: the configuration with the highest mean `{primary_metric(run)}` (the primary metric, "
              "`--primary`; by default span recall within 200 retrieved tokens, so long chunks cannot win by "
              f"returning more text) is the best; every configuration whose paired permutation test against it "
              f"gives p >= {TIE_ALPHA} is statistically tied with it, and {how}. "
              "Intervals are 95% bootstrap intervals.",
              "",
              "Span precision and IoU come in two variants: `span_precision@5` / `span_iou@5` merge overlapping "
              "retrieved chunks before counting (a token retrieved twice counts once); `span_precision_summed@5` / "
              "`span_iou_summed@5` sum the retrieved chunks' lengths, as the widely cited chunking benchmark does, "
              "so overlap is paid for. The recommendation uses neither unless chosen as `--primary`; "
              "`span_recall@Btok` pays for every retrieved token (summed)."]
    for m in dict.fromkeys(("ndcg@10", "answer@100tok", primary_metric(run))):
        if m in run.significance:
            names = [c.name for c in run.configs]
            lines += ["", f"## Paired permutation p-values, {m}", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for a in names:
                row = []
                for b in names:
                    p = None if a == b else _p(run, m, a, b)
                    row.append("" if p is None else f"{p:.3g}")
                lines.append(f"| {a} | " + " | ".join(row) + " |")
    lines += ["", "## Regressions against the previous run", ""]
    if run.regressions:
        lines += ["| strategy | method | metric | now | previous | previous CI low | previous run |", "|---|---|---|---:|---:|---:|---|"]
        lines += [
            f"| {g['strategy']} | {g['method']} | {g['metric']} | {g['value']:.4f} | {g['previous']:.4f} | {g['previous_ci_low']:.4f} | `{g['previous_run']}` |"
            for g in run.regressions
        ]
    else:
        lines.append("None: no metric fell below the previous run's interval (or there is no previous run).")
    lines += ["", "## Time", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in run.seconds.items()]
    return "\n".join(lines) + "\n"


def _num(v: float | None, kind: str) -> str:
    if v is None:
        return "unknown"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "bytes":
        return _bytes(v)
    return f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def _bytes(v: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


COST_COLUMNS = (("chunks / doc", "cost_chunks_per_doc", "float"), ("vectors", "cost_vectors", "int"),
                ("vector bytes", "cost_vector_bytes", "bytes"), ("index bytes", "cost_index_bytes", "bytes"),
                ("model tokens / doc", "cost_model_tokens_per_doc", "float"),
                ("embed s / 1k docs", "cost_embed_seconds_per_1k_docs", "float"),
                ("latency p50 ms", "cost_latency_p50_ms", "float"), ("latency p95 ms", "cost_latency_p95_ms", "float"))


def frontier(run: EvalRun) -> set[str]:
    """The configurations (``label/method``) on the quality-per-cost frontier: none
    other has at least as high a mean primary metric for at most as many vectors
    stored, better in one of the two. Those with vectors unknown are left out."""
    pts = {name: (v, float(r["value"])) for name, v, r in cost_points(run)}
    return {n for n, (c, q) in pts.items()
            if not any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in pts.values())}


def cost_points(run: EvalRun) -> list[tuple[str, float, dict[str, Any]]]:
    """(``label/method``, vectors stored, primary-metric result row) of each
    configuration whose vector count and score are known."""
    metric = primary_metric(run)
    out = []
    for r in run.results:
        name = f"{r['config']}/{r['method']}"
        cost = run.costs.get(name)
        v = cost.values.get("cost_vectors") if cost is not None else None
        if r["metric"] == metric and v is not None and r["value"] is not None:
            out.append((name, float(v), r))
    return out


def cost_section(run: EvalRun) -> list[str]:
    """The cost of each configuration beside its primary metric, with where each figure
    comes from and why any is unknown."""
    if not run.costs:
        return []
    metric = primary_metric(run)
    by = {(r["config"], r["method"]): r for r in run.results if r["metric"] == metric}
    lines = ["", "## Cost", "",
             "Measured on the evaluated tables. Vector bytes: vectors x the model's dimension x 4 (float32). "
             "Index bytes: the size on disk of the indexes the method reads (dense: the vector index; "
             "BM25: the full-text index; hybrid: both), \"none\" where there is none. Embedding seconds per 1,000 "
             "documents: from the ingest ledger, on the machine that ran the ingestion. Latency: the retrieval call of "
             f"each of the first {LATENCY_QUERIES} queries timed one query at a time (depth {run.settings.depth}) on this machine ({run.cpu}).",
             "",
             f"| strategy | method | {metric} | " + " | ".join(c[0] for c in COST_COLUMNS) + " | on the frontier |",
             "|---|---|---|" + "---:|" * len(COST_COLUMNS) + "---|"]
    front = frontier(run)
    unknown: dict[str, list[str]] = {}
    sources: dict[str, set[str]] = {}
    for c in run.configs:
        cost = run.costs.get(c.name)
        if cost is None:
            continue
        r = by.get((c.label, c.method))
        cells = [_cell(r) if r else "-"]
        for _, m, kind in COST_COLUMNS:
            v = cost.values.get(m)
            cell = "none" if m == "cost_index_bytes" and cost.notes.get(m) == "none" else _num(v, kind)
            cells.append(cell)
            if v is None and m in cost.why:
                unknown.setdefault(cost.why[m], []).append(f"{c.name} {m}")
        for m, note in cost.notes.items():
            if m != "cost_index_bytes":
                sources.setdefault(m, set()).add(note)
        lines.append(f"| {c.label} | {c.method} | " + " | ".join(cells) + f" | {'yes' if c.name in front else ''} |")
    lines += ["", f"On the frontier: no other configuration scores at least as high on {metric} with at most as "
                  "many vectors stored (the plot `quality_per_cost.png` draws it)."]
    for m, notes in sources.items():
        for note in sorted(notes):
            lines.append(f"- `{m}`: {note}")
    for why, where in unknown.items():
        lines.append(f"- unknown ({len(where)}: {', '.join(where[:4])}{', ...' if len(where) > 4 else ''}): {why}")
    idx: dict[str, list[str]] = {}
    for c in run.configs:
        note = run.costs[c.name].notes.get("cost_index_bytes", "none") if c.name in run.costs else "none"
        idx.setdefault(note, []).append(c.method)
    for note, methods in idx.items():
        lines.append(f"- `cost_index_bytes` of {', '.join(dict.fromkeys(methods))}: {note}")
    return lines


def _p(run: EvalRun, metric: str, a: str, b: str | None) -> float | None:
    if b is None:
        return None
    sig = run.significance.get(metric, {})
    return sig.get((a, b), sig.get((b, a)))


def _errorbar(ax, points: list[tuple[float, dict[str, Any] | None]], label: str) -> None:
    """One line of means with their 95% intervals; points without a result are skipped."""
    pts = [(x, r) for x, r in points if r]
    if pts:
        ax.errorbar(
            [x for x, _ in pts], [r["value"] for _, r in pts],
            yerr=[[r["value"] - r["ci_low"] for _, r in pts], [r["ci_high"] - r["value"] for _, r in pts]],
            marker="o", capsize=3, label=label,
        )


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(run: EvalRun, out_dir: Path) -> list[Path]:
    """PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["config"], r["method"], r["metric"]): r for r in run.results}
    strategies = list(dict.fromkeys(c.label for c in run.configs))
    methods = list(dict.fromkeys(c.method for c in run.configs))
    paths = []
    metrics = [m for m in dict.fromkeys(("ndcg@10", "recall@5", "answer@100tok", "span_recall@200tok", "span_iou@5",
                                         "span_iou_summed@5", primary_metric(run))) if any(k[2] == m for k in by)]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            for meth in methods:
                _errorbar(ax, [(i, by.get((s, meth, m))) for i, s in enumerate(strategies)], meth)
            ax.set_xticks(range(len(strategies)), strategies, rotation=20 if len(strategies) > 3 else 0)
            ax.set_ylim(0, 1.02)  # every axis from zero: small differences are not magnified
            ax.set_title(m)
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(f"{run.dataset.name}: metric by granularity (95% CI)")
        paths.append(_save(plt, fig, out_dir / "metric_by_granularity.png"))
    for prefix, what in (("answer@", "answer recall"), ("span_recall@", "span recall")):
        path = _budget_plot(plt, run, by, strategies, methods, prefix, what, out_dir)
        if path is not None:
            paths.append(path)
    path = _history_plot(plt, run, out_dir)
    if path is not None:
        paths.append(path)
    path = _cost_plot(plt, run, out_dir)
    if path is not None:
        paths.append(path)
    return paths


def _cost_plot(plt, run: EvalRun, out_dir: Path) -> Path | None:
    """Quality per cost: each configuration's primary metric (95% interval) against the
    vectors it stores, log scale (symmetric: BM25 stores none and sits at 0), the
    frontier drawn through the configurations no other beats on both."""
    metric = primary_metric(run)
    pts = cost_points(run)
    if not pts:
        return None
    front = frontier(run)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for name, v, r in pts:
        on = name in front
        ax.errorbar([v], [r["value"]], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]], marker="o",
                    capsize=3, color="tab:blue" if on else "tab:gray", alpha=1.0 if on else 0.6)
        ax.annotate(name, (v, r["value"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    line = sorted((v, r["value"]) for name, v, r in pts if name in front)
    if line:
        ax.step([x for x, _ in line], [y for _, y in line], where="post", color="tab:blue", lw=1.2,
                label="frontier (no other config is as good for fewer vectors)")
        ax.legend(fontsize=7, loc="best")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=-0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("vectors stored (log scale; 0: no vectors)")
    ax.set_ylabel(metric)
    ax.set_title(f"{run.dataset.name}: {metric} per cost (95% CI)")
    ax.grid(alpha=0.3)
    return _save(plt, fig, out_dir / "quality_per_cost.png")


def _history_plot(plt, run: EvalRun, out_dir: Path) -> Path | None:
    """The primary metric of each configuration across the stored runs of this dataset
    and model (scheduled runs), when there is more than one run."""
    from .results import metric_history

    metric = primary_metric(run)
    try:
        rows = metric_history(run.settings.db, run.dataset.name, run.model_id, metric, run.dataset.split)
    except Exception:  # noqa: BLE001 - a history that cannot be read must not cost the report
        return None
    runs = list(dict.fromkeys(r["run_id"] for r in rows))
    if len(runs) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    series: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        series.setdefault(f"{r.get('config') or r['strategy']}/{r['method']}", []).append((r["time"], r["value"]))
    for name, pts in series.items():
        ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(metric)
    ax.set_title(f"{run.dataset.name}: {metric} across {len(runs)} runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    return _save(plt, fig, out_dir / "primary_metric_history.png")


def _budget_plot(plt, run: EvalRun, by: dict, strategies: list[str], methods: list[str], prefix: str, what: str,
                 out_dir: Path) -> Path | None:
    budgets = sorted({int(k[2][len(prefix):-3]) for k in by if k[2].startswith(prefix) and k[2].endswith("tok")})
    if budgets:
        fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False)
        for ax, meth in zip(axes[0], methods):
            for s in strategies:
                _errorbar(ax, [(b, by.get((s, meth, f"{prefix}{b}tok"))) for b in budgets], s)
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("retrieved tokens (cl100k)")
            ax.set_ylabel(what)
            ax.set_title(meth)
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(f"{run.dataset.name}: {what} by retrieved-token budget")
        name = "answer_by_token_budget.png" if prefix == "answer@" else "span_recall_by_token_budget.png"
        return _save(plt, fig, out_dir / name)
    return None


def plot_images(paths: list[str | Path]) -> list[dict[str, str]]:
    """The report's PNG plots as ``{"name", "png_base64", "data_uri"}``, ready to embed
    in Markdown (``![name](data_uri)``), e.g. in a Prefect artifact, which shows no
    ``file://`` image."""
    import base64

    out = []
    for p in paths:
        p = Path(p)
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append({"name": p.stem, "png_base64": b64, "data_uri": f"data:image/png;base64,{b64}"})
    return out


def embedded_markdown(md: str, pngs: list[str | Path]) -> str:
    """The report's Markdown with each plot's relative link replaced by the image itself
    (a data URI): a Prefect artifact is shown by the UI, which cannot read the report
    folder, so a link to a file there would be a broken image."""
    for img in plot_images(pngs):
        md = md.replace(f"]({Path(img['name']).name}.png)", f"]({img['data_uri']})")
    return md


def write_report(run: EvalRun) -> tuple[Path, list[Path], str]:
    """reports/<run_id>/report.md plus the plots; returns (report path, plot paths, markdown)."""
    out = Path(run.settings.reports_dir) / run.run_id
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(run)
    pngs = plots(run, out)
    if pngs:
        md += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    path = out / "report.md"
    path.write_text(md, encoding="utf-8")
    return path, pngs, md


def compare_models_markdown(by_model: dict[str, list[dict[str, Any]]], metrics: list[str] | None = None) -> str:
    """One table per metric: strategy/method rows, one column per model (its latest
    run), each cell the mean [95% interval]."""
    metrics = metrics or ["ndcg@10", "recall@5", "answer@100tok"]
    models = list(by_model)
    idx = {(m, r["strategy"], r["method"], r["metric"]): r for m, rows in by_model.items() for r in rows}
    pairs = {(r["strategy"], r["method"]) for rows in by_model.values() for r in rows}
    order = _order(sorted({s for s, _ in pairs}))
    configs = sorted(pairs, key=lambda c: (order.index(c[0]), c[1]))
    first = next((rows[0] for rows in by_model.values() if rows), None)
    lines = [f"# Models compared on {first['dataset'] if first else '?'}", ""]
    lines += [f"- `{m}`: run `{rows[0]['run_id']}`, {rows[0]['n_queries']} queries" for m, rows in by_model.items() if rows]
    for metric in metrics:
        if not any(k[3] == metric for k in idx):
            continue
        lines += ["", f"## {metric}", "", "| strategy | method | " + " | ".join(f"`{m}`" for m in models) + " |",
                  "|---|---|" + "---|" * len(models)]
        for s, meth in configs:
            cells = [(_cell(idx[(m, s, meth, metric)]) if (m, s, meth, metric) in idx else "-") for m in models]
            lines.append(f"| {s} | {meth} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
