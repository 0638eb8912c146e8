"""What an evaluation run is: its settings, its configurations, the run record the
steps fill in, and the rules read off a finished run (the primary metric, the
recommendation line). :mod:`.runner` fills an :class:`EvalRun`; :mod:`.report` and the
flow read it. Imports nothing of the runner or the report, so both can import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grainline.embedding import EmbedderSettings
from grainline.ingest import parse_strategies
from grainline.storage.chunks import DEFAULT_DB

from .costs import COST_KINDS, COST_NAMES, ConfigCost
from .datasets import EvalDataset, Query
from .retrieval import RETRIEVERS, SvmSettings

# Retrieved-token budgets for answer recall; 100 and 500 are the headline ones, the
# rest draw the curve in the report.
ANSWER_BUDGETS = (50, 100, 200, 500, 1000)
# Paired-test p-value at or above which a configuration counts as tied with the best.
TIE_ALPHA = 0.05

SPAN_BUDGETS = (100, 200, 500)

# Metrics shown in the report table and tested for significance. span_iou@5 merges
# overlapping chunks; span_iou_summed@5 pays for each chunk (as published benchmarks do).
HEADLINE_METRICS = ("ndcg@10", "recall@5", "mrr@10", "answer@5", "answer@100tok", "answer@500tok",
                    "span_recall@200tok", "span_iou@5", "span_iou_summed@5")


class CostError(ValueError):
    """A ``--cost`` name that is not one of :data:`~.costs.COST_NAMES`."""


def parse_costs(value: str | list[str] | None) -> list[str]:
    """'embed_seconds,vectors' -> ['embed_seconds', 'vectors'] (the order is the order of
    fallback), each checked; an unknown name raises :class:`CostError` naming the known ones."""
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value or [])
    items = [p for p in items if p]
    for name in items:
        if name not in COST_KINDS:
            raise CostError(f"--cost {name!r} is not a known cost; known: {', '.join(COST_NAMES)}")
    if not items:
        raise CostError(f"--cost names no cost; known: {', '.join(COST_NAMES)}")
    return list(dict.fromkeys(items))


def parse_methods(value: str | list[str]) -> list[str]:
    """'dense,bm25' -> ['dense', 'bm25'], each checked against the registry."""
    return RETRIEVERS.parse_names(value)


class EvalSettings(BaseModel):
    """One evaluation run; defaults are grainline's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str | None = None  # KIND:PATH, KIND one of squad, beir, scifact, spans
    # Or a query set (grainline queries ...): the production table is scored as it is.
    queries: str | None = None
    table: str | None = None  # production table; default: the model's chunks table
    # A query set scored on another table of the same corpus (a promotion candidate,
    # grainline/promote.py): the set's own table and model are not required to match;
    # its documents must be in the table with the content hashes the set records.
    same_corpus: bool = False
    at: str | None = None  # its version number or tag; default: the current version
    split: str | None = None
    strategies: list[str] = Field(default_factory=lambda: ["sentence", "paragraph", "article"])
    methods: list[str] = Field(default_factory=lambda: ["dense", "bm25", "hybrid"])
    db: str = DEFAULT_DB
    long_article: Literal["pool", "truncate"] = "pool"
    sample: int | None = Field(default=None, ge=1)  # a seeded sample of the queries
    sample_docs: int | None = Field(default=None, ge=1)  # a seeded sample of the dataset's documents
    seed: int = 0
    # What the recommendation maximises; "auto": span recall within 200 retrieved
    # tokens where there are gold spans, else answer recall within 200 tokens, else nDCG@10.
    primary: str = "auto"
    # Among the configurations tied with the best: "cost" recommends the cheapest by
    # ``cost`` (names tried in order while a figure is unknown), "quality" the highest mean.
    prefer: Literal["cost", "quality"] = "cost"
    cost: list[str] = Field(default_factory=lambda: ["vectors"])
    progress: bool = False
    depth: int = Field(default=1000, ge=10)  # chunks retrieved per query and method
    reports_dir: str = "reports"
    n_bootstrap: int = Field(default=1000, ge=100)
    n_permutations: int = Field(default=5000, ge=100)
    batch_docs: int = Field(default=128, ge=1)
    chunker_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Swept chunker settings: every combination is its own configuration.
    chunk_sweep: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    svm: SvmSettings = Field(default_factory=SvmSettings)  # options of the ``svm`` method
    # Small-to-big configurations, scored beside the flat ones wherever the run holds
    # both strategies (each once, not swept): search CHILD's chunks, return each hit's
    # enclosing PARENT chunk, parents deduplicated.
    small_to_big: list[str] = Field(default_factory=lambda: ["sentence->paragraph", "paragraph->article"])

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, v: Any) -> list[str]:
        return parse_strategies(v)

    @field_validator("cost", mode="before")
    @classmethod
    def _cost(cls, v: Any) -> list[str]:
        return parse_costs(v)

    @field_validator("db")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        from grainline.redact import check_uri

        return check_uri(v)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> list[str]:
        return parse_methods(v)

    @field_validator("chunk_sweep", mode="before")
    @classmethod
    def _sweep(cls, v: Any) -> dict[str, dict[str, list[Any]]]:
        from grainline.chunkers import settings_for

        sweep = parse_chunk_sweep(v)
        for strategy in sweep:
            for combo in sweep_combos(strategy, sweep):
                settings_for(strategy, **combo)  # a bad value fails here, naming the setting
        return sweep

    @field_validator("small_to_big", mode="before")
    @classmethod
    def _small_to_big(cls, v: Any) -> list[str]:
        from grainline.chunkers.nesting import parse_pair

        if v is None or v == "none":
            return []
        items = [p.strip() for p in v.split(",")] if isinstance(v, str) else list(v)
        return list(dict.fromkeys("->".join(parse_pair(p)) for p in items if p))

    @model_validator(mode="after")
    def _one_source(self) -> "EvalSettings":
        if (self.dataset is None) == (self.queries is None):
            raise ValueError("give either a dataset (KIND:PATH) or a query set (--queries), not both or neither")
        if self.queries is not None and self.sample_docs is not None:
            raise ValueError("sample_docs samples a dataset's documents before ingestion; a query set scores the table as it is")
        return self


@dataclass
class Config:
    """One strategy x method cell of the comparison."""

    strategy: str
    chunker_key: str
    params: str
    method: str
    table_name: str = ""
    table_version: int | None = None
    # The tag on that version: pruning never removes it, so the run can be reproduced.
    table_tag: str | None = None
    # How the report names the chunking: the strategy, or with the settings that tell
    # apart several configurations of one strategy (a sweep).
    label: str = ""
    # Small-to-big: the labels of the configuration searched (its table and version
    # above) and of the one whose enclosing chunks are returned; None for a flat one.
    child: str | None = None
    parent: str | None = None

    def __post_init__(self) -> None:
        self.label = self.label or self.strategy

    @property
    def name(self) -> str:
        return f"{self.label}/{self.method}"


@dataclass
class EvalRun:
    """One run: its settings, dataset and queries, then what each runner step adds
    (configurations, per-query scores, result rows, tests, regressions, timings)."""

    settings: EvalSettings
    run_id: str
    dataset: EvalDataset
    queries: list[Query]
    model_id: str = ""
    configs: list[Config] = field(default_factory=list)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # config -> qid -> metric -> v
    results: list[dict[str, Any]] = field(default_factory=list)
    significance: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ingest_counts: dict[str, Any] = field(default_factory=dict)
    production: bool = False  # scored on the production table, nothing ingested
    sweep_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> swept settings to ingest
    recommendation: dict[str, Any] = field(default_factory=dict)
    # Config name -> what it costs (filled while scoring; see :mod:`.costs`).
    costs: dict[str, ConfigCost] = field(default_factory=dict)
    cpu: str = ""  # the machine that timed the queries


def parse_chunk_sweep(items: list[str] | dict[str, dict[str, Any]] | None) -> dict[str, dict[str, list[Any]]]:
    """``['paragraph.max_tokens=128,256', 'paragraph.overlap=0,32']`` ->
    ``{'paragraph': {'max_tokens': [128, 256], 'overlap': [0, 32]}}``; each value is
    an integer, ``none`` or a string."""
    from grainline.chunkers import CHUNKERS

    if not items:
        return {}
    if isinstance(items, dict):
        return {st: {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in d.items()} for st, d in items.items()}
    out: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        strategy, dot, name = key.strip().partition(".")
        if not eq or not dot or not name or not value.strip():
            raise ValueError(f"--chunk expects STRATEGY.SETTING=VALUE[,VALUE...] (e.g. paragraph.max_tokens=128,256), got {item!r}")
        CHUNKERS.get(strategy)
        vals = [v.strip() for v in value.split(",") if v.strip()]
        out.setdefault(strategy, {})[name] = [None if v.lower() == "none" else int(v) if v.lstrip("-").isdigit() else v
                                              for v in vals]
    return out


def sweep_combos(strategy: str, sweep: dict[str, dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the swept settings of one strategy (``[{}]`` when none)."""
    import itertools

    settings = sweep.get(strategy) or {}
    names = sorted(settings)
    return [dict(zip(names, values)) for values in itertools.product(*(settings[n] for n in names))] or [{}]


def primary_metric(run: EvalRun) -> str:
    """The metric the recommendation maximises: the user's, or by default span recall
    within 200 retrieved tokens (gold spans), else answer recall within 200 tokens
    (answer strings), else nDCG@10."""
    if run.settings.primary != "auto":
        return run.settings.primary
    if any(q.spans for q in run.queries):
        return "span_recall@200tok"
    if any(q.answers for q in run.queries):
        return "answer@200tok"
    return "ndcg@10"


def _share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``, rounded, never a misleading "0 %" for a
    small non-zero share."""
    if whole <= 0:
        return "100 %" if part <= 0 else "more than"
    pct = 100.0 * part / whole
    return "<1 %" if 0 < pct < 0.5 else f"{pct:.0f} %"


def recommendation_line(rec: dict[str, Any]) -> str:
    """One line: the recommended configuration, its primary metric with interval, how
    it was chosen among the configurations tied with the best (the cheapest by the
    named cost, with its share of the best's cost; or the highest mean), why a named
    cost was passed over, and the others tied."""
    if not rec:
        return "recommendation: none (nothing was scored)"
    if "error" in rec:
        return f"recommendation: none ({rec['error']})"
    line = (f"recommendation: {rec['config']}: {rec['metric']} {rec['value']:.3f} "
            f"[{rec['ci_low']:.3f}-{rec['ci_high']:.3f}], {rec['n_queries']} queries")
    best, cost, tied = rec.get("best"), rec.get("cost"), rec["tied"]
    if tied and cost and best and best["config"] != rec["config"]:
        line += (f", tied with the best {best['config']} {best['value']:.3f} (p = {rec['p']:.2f}) at "
                 f"{_share(rec['cost_value'], best['cost_value'])} of its {COST_KINDS[cost].label} "
                 f"(the cheapest of the {len(tied) + 1} tied, --cost {cost})")
    elif tied and cost:
        line += f"; the best, and the cheapest of the {len(tied) + 1} tied by {COST_KINDS[cost].label}"
    elif tied:
        line += "; the highest mean of the tied" + (" (--prefer quality)" if rec.get("prefer") == "quality" else "")
    if rec.get("cost_note"):
        line += f"; {rec['cost_note']}"
    if rec.get("fallback"):
        line += f" [{rec['fallback']}]"
    others = [t for t in tied if t["config"] != rec["config"]]
    if others:
        line += "; statistically tied (p >= %.2f): " % TIE_ALPHA + ", ".join(
            f"{t['config']} {t['value']:.3f} (p={t['p']:.2g})" for t in others)
    elif not tied:
        line += "; no configuration is statistically tied with it"
    return line
