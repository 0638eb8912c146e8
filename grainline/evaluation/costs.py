"""What each configuration of an evaluation costs, measured on the table it was scored
on: chunks per document, vectors stored and their bytes, index bytes, model tokens
embedded per document, embedding seconds per 1,000 documents (from the ingest ledger)
and query latency p50 / p95 (timed while the evaluation runs its queries).

The figures become ``cost_*`` rows of ``eval_results`` (a metric of their own each,
``ci_low = ci_high = value``; an unknown figure is a null value, never 0), a table in
the report, and what ``--cost`` prices the recommendation by. A configuration's costs
are what serving it needs: BM25 reads the text index only, so it stores no vectors and
embeds nothing; small-to-big searches the child's chunks (their vectors) and returns
the parent's text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

# numpy is imported where used: the CLI's argument check reads COST_NAMES from here.

# Methods that read no vectors: their vector costs are a true 0, not an unknown.
TEXT_ONLY_METHODS = frozenset({"bm25"})
# The index each method reads when it serves queries (dense kNN: the vector index;
# BM25: the full-text index on text). Scalar indexes (doc_id, content_hash) serve
# ingestion's bookkeeping, not search, and are not counted.
INDEX_KINDS = {"dense": ("vector",), "svm": ("vector",), "bm25": ("text",), "hybrid": ("vector", "text")}
BYTES_PER_FLOAT32 = 4

# Queries whose retrieval is timed one by one for the latency figures (the same ones,
# the first of the set, for every method): enough for a p95, while a large query set
# keeps block retrieval for the rest.
LATENCY_QUERIES = 200
# Stored metric names, in the report's column order.
COST_METRICS = ("cost_chunks_per_doc", "cost_vectors", "cost_vector_bytes", "cost_index_bytes",
                "cost_model_tokens_per_doc", "cost_embed_seconds_per_1k_docs", "cost_latency_p50_ms",
                "cost_latency_p95_ms")


@dataclass(frozen=True)
class CostKind:
    """One cost the recommendation can be priced by (``--cost NAME``)."""

    name: str
    label: str  # how the recommendation line names it ("at 22 % of its <label>")
    metrics: tuple[str, ...]  # the stored metrics it sums


# The names ``--cost`` accepts; "bytes" is what a configuration keeps on disk to serve
# queries (its vectors and the indexes its method reads).
COST_KINDS: dict[str, CostKind] = {
    "vectors": CostKind("vectors", "vectors stored", ("cost_vectors",)),
    "bytes": CostKind("bytes", "bytes stored (vectors and index)", ("cost_vector_bytes", "cost_index_bytes")),
    "embed_seconds": CostKind("embed_seconds", "embedding seconds per 1,000 documents",
                              ("cost_embed_seconds_per_1k_docs",)),
    "latency": CostKind("latency", "p50 query latency", ("cost_latency_p50_ms",)),
}
COST_NAMES = tuple(COST_KINDS)


@dataclass
class ConfigCost:
    """The costs of one configuration: ``values`` (metric -> figure, None when
    unknown), ``why`` (metric -> the reason a figure is unknown) and ``notes`` (metric ->
    where a known figure comes from, when it needs saying)."""

    values: dict[str, float | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def unknown(self, metric: str, reason: str) -> None:
        """Record ``metric`` as unknown, with the reason (never a 0 standing in for it)."""
        self.values[metric] = None
        self.why[metric] = reason


def kind_value(cost: ConfigCost | None, kind: str) -> tuple[float | None, str | None]:
    """A configuration's figure for one ``--cost`` name and, when it is unknown, why."""
    if cost is None:
        return None, "not measured"
    total = 0.0
    for m in COST_KINDS[kind].metrics:
        v = cost.values.get(m)
        if v is None:
            return None, cost.why.get(m, "not measured")
        total += v
    return total, None


def percentiles_ms(seconds: list[float]) -> tuple[float | None, float | None]:
    """p50 and p95 of per-query latencies, in milliseconds (None without queries)."""
    import numpy as np

    if not seconds:
        return None, None
    arr = np.asarray(seconds, dtype=float) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


@dataclass
class TableFacts:
    """What one table (at the evaluated version) holds, read once per chunker key."""

    rows: int  # chunks of the key
    docs: int  # documents holding chunks of the key
    model_tokens: float | None  # model tokens embedded for the key's chunks (None: no counts stored)
    tokens_source: str
    share_rows: float  # the key's share of the table's rows (indexes shared by several keys)
    share_tokens: float  # its share of the table's cl100k tokens (the text index)
    keys_in_table: int
    model_tokens_all: float | None  # over every key of the table
    rows_all: int


def table_facts(table: Any, chunker_key: str) -> TableFacts:
    """Counts of ``chunker_key``'s chunks in ``table`` (as checked out) and of the table
    as a whole, from the stored token counts."""
    import numpy as np

    cols = ["chunker_key", "doc_id", "n_tokens", "n_model_tokens", "handling", "model_max_seq_length"]
    have = set(table.schema.names)
    t = table.search().select([c for c in cols if c in have]).limit(None).to_arrow()
    keys = np.asarray(t.column("chunker_key").to_pylist(), dtype=object)
    mine = keys == chunker_key
    rows = int(mine.sum())
    docs = len(set(np.asarray(t.column("doc_id").to_pylist(), dtype=object)[mine]))
    cl100k = np.asarray([x or 0 for x in t.column("n_tokens").to_pylist()], dtype=float) if "n_tokens" in have else None
    share_tokens = float(cl100k[mine].sum() / cl100k.sum()) if cl100k is not None and cl100k.sum() else (rows / max(len(keys), 1))
    embedded = _embedded_tokens(t) if "n_model_tokens" in have else None
    return TableFacts(
        rows=rows, docs=docs,
        model_tokens=float(embedded[mine].sum()) if embedded is not None else None,
        tokens_source="counted from the stored chunks' n_model_tokens" if embedded is not None else "",
        share_rows=rows / max(len(keys), 1), share_tokens=share_tokens, keys_in_table=len(set(keys.tolist())),
        model_tokens_all=float(embedded.sum()) if embedded is not None else None, rows_all=len(keys),
    )


def _embedded_tokens(t: Any) -> Any:
    """Model tokens each chunk's embedding read: its n_model_tokens, cut to the model's
    window where the chunk was truncated (pooled and split chunks embed every window).
    None when any chunk lacks the count (a table from an older grainline)."""
    import numpy as np

    n = t.column("n_model_tokens").to_pylist()
    if any(x is None for x in n):
        return None
    out = np.asarray(n, dtype=float)
    if "handling" in t.column_names and "model_max_seq_length" in t.column_names:
        handling = np.asarray(t.column("handling").to_pylist(), dtype=object)
        cap = np.asarray([x or 0 for x in t.column("model_max_seq_length").to_pylist()], dtype=float)
        cut = (handling == "truncate") & (cap > 0)
        out[cut] = np.minimum(out[cut], cap[cut])
    return out


def index_bytes(table: Any) -> dict[str, tuple[int, list[str]]]:
    """Bytes of the table's indexes by what they serve (``"vector"``: on the vector
    column; ``"text"``: full-text), with their names: the size on disk of each index's
    folder where the table is local, else the size LanceDB reports."""
    out: dict[str, tuple[int, list[str]]] = {}
    try:
        configs = table.list_indices()
    except Exception:  # noqa: BLE001 - a table without index support has none
        return out
    root = None
    try:
        uri = table.to_lance().uri
        root = uri if os.path.isdir(uri) else None
    except Exception:  # noqa: BLE001 - a remote table: fall back to the reported sizes
        root = None
    for ix in configs:
        kind = "vector" if list(ix.columns) == ["vector"] else "text" if str(ix.index_type).upper() in ("FTS", "INVERTED") else None
        if kind is None:
            continue
        size = None
        folder = os.path.join(root, "_indices", str(ix.index_uuid)) if root else None
        if folder and os.path.isdir(folder):
            size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
        if size is None:
            size = int(getattr(ix, "size_bytes", 0) or 0)
        total, names = out.get(kind, (0, []))
        out[kind] = (total + size, names + [ix.name])
    return out


@dataclass
class EmbedRate:
    """Embedding speed from the ingest ledger of one table: seconds per model token
    (or per chunk where the table stores no token counts), or why it is unknown."""

    per_token: float | None = None
    per_chunk: float | None = None
    source: str = ""
    why: str | None = None


def embed_rate(db: str, table_name: str, version: int | None, facts: TableFacts) -> EmbedRate:
    """Seconds the ingestions of ``table_name`` spent embedding (stage ``embed`` of its
    completed ledger rows up to ``version``) over the chunks they embedded. Chunks reused
    by content hash cost no embedding time and are not counted. A chunk's cost grows
    with its length, so the rate is spread per model token (the table's mean tokens per
    chunk): a table holding several strategies then charges each its own length."""
    from grainline.storage.ledger import Ledger

    try:
        runs = [r for r in Ledger(db).runs() if r.get("table_name") == table_name and r.get("flow") != "eval"]
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger leaves the figure unknown, with why
        return EmbedRate(why=f"the ledger of {db} could not be read ({type(exc).__name__})")
    if not runs:
        return EmbedRate(why=f"no ingestion of table {table_name} in the ledger (no runs rows)")
    done = [r for r in runs if r.get("status") == "completed"
            and (version is None or r.get("version_after") is None or r["version_after"] <= version)]
    seconds = sum(float((r.get("stage_seconds") or {}).get("embed", 0.0)) for r in done)
    chunks = sum(int(r.get("chunks_embedded") or 0) for r in done)
    if not done:
        return EmbedRate(why=f"no completed ingestion of table {table_name} up to v{version} in the ledger")
    if chunks == 0 or seconds <= 0:
        # Every vector came from another table (reused by content hash, or pooled from
        # stored windows): the same model's speed, measured where it did embed, prices
        # this table's tokens.
        model_id = next((r.get("model_id") for r in done if r.get("model_id")), None)
        sibling = _sibling_rate(db, model_id, table_name, version) if model_id else None
        if sibling is None:
            return EmbedRate(why=f"the ledger's {len(done)} ingestion(s) of {table_name} embedded no chunks "
                                 "(every vector was reused from another table) and no other table of the model did")
        per_token, source = sibling
        return EmbedRate(per_token=per_token, source=source + f" ({table_name} itself embedded nothing: "
                                                              "every vector was reused)")
    source = f"ledger: {seconds:.3g} s embedding {chunks} chunks in {len(done)} ingestion(s) of {table_name}"
    if facts.model_tokens_all and facts.rows_all:
        mean_tokens = facts.model_tokens_all / facts.rows_all
        return EmbedRate(per_token=seconds / (chunks * mean_tokens), per_chunk=seconds / chunks, source=source)
    return EmbedRate(per_chunk=seconds / chunks, source=source + " (per chunk: the table stores no token counts)")


def _sibling_rate(db: str, model_id: str, table_name: str, version: int | None) -> tuple[float, str] | None:
    """Seconds per model token of ``model_id`` from the ledger rows of the database's
    other tables that embedded chunks (each table's tokens per chunk from its rows)."""
    from grainline.storage.chunks import connect, open_table_if_exists
    from grainline.storage.ledger import Ledger

    seconds = tokens = 0.0
    names: list[str] = []
    conn = connect(db)
    by_table: dict[str, list[dict[str, Any]]] = {}
    for r in Ledger(db).runs():
        if (r.get("model_id") == model_id and r.get("table_name") != table_name and r.get("flow") != "eval"
                and r.get("status") == "completed" and int(r.get("chunks_embedded") or 0) > 0):
            by_table.setdefault(r["table_name"], []).append(r)
    for name, runs in by_table.items():
        table = open_table_if_exists(conn, name)
        if table is None or "n_model_tokens" not in table.schema.names:
            continue
        counts = [x for x in table.search().select(["n_model_tokens"]).limit(None).to_arrow()
                  .column("n_model_tokens").to_pylist() if x is not None]
        if not counts:
            continue
        mean = sum(counts) / len(counts)
        seconds += sum(float((r.get("stage_seconds") or {}).get("embed", 0.0)) for r in runs)
        tokens += sum(int(r["chunks_embedded"]) for r in runs) * mean
        names.append(name)
    if not names or tokens <= 0 or seconds <= 0:
        return None
    return seconds / tokens, f"ledger: {seconds:.3g} s embedding about {tokens:,.0f} model tokens of {model_id} in " + ", ".join(names)


def measure(table: Any, db: str, table_name: str, version: int | None, chunker_key: str, dim: int,
            methods: list[str]) -> dict[str, ConfigCost]:
    """The stored costs (everything but latency) of one chunking configuration in
    ``table`` at ``version``, for each method: method -> :class:`ConfigCost`."""
    facts = table_facts(table, chunker_key)
    indexes = index_bytes(table)
    rate = embed_rate(db, table_name, version, facts)
    shared = facts.keys_in_table > 1
    out: dict[str, ConfigCost] = {}
    for method in methods:
        c = ConfigCost()
        c.values["cost_chunks_per_doc"] = facts.rows / facts.docs if facts.docs else 0.0
        if method in TEXT_ONLY_METHODS:
            # A true zero: BM25 needs no vectors, no model and no embedding at all.
            for m in ("cost_vectors", "cost_vector_bytes", "cost_model_tokens_per_doc", "cost_embed_seconds_per_1k_docs"):
                c.values[m] = 0.0
            c.notes["cost_vectors"] = "BM25 stores no vectors: it reads the text index only"
        else:
            c.values["cost_vectors"] = float(facts.rows)
            c.values["cost_vector_bytes"] = float(facts.rows * dim * BYTES_PER_FLOAT32)
            c.notes["cost_vector_bytes"] = f"vectors x {dim} dimensions x {BYTES_PER_FLOAT32} bytes"
            if facts.model_tokens is None:
                c.unknown("cost_model_tokens_per_doc", "the table stores no model token counts (n_model_tokens)")
            else:
                c.values["cost_model_tokens_per_doc"] = facts.model_tokens / facts.docs if facts.docs else 0.0
                c.notes["cost_model_tokens_per_doc"] = facts.tokens_source
            if rate.why is not None:
                c.unknown("cost_embed_seconds_per_1k_docs", rate.why)
            elif facts.docs == 0:
                c.values["cost_embed_seconds_per_1k_docs"] = 0.0
            else:
                if rate.per_token is not None and facts.model_tokens is not None:
                    seconds = rate.per_token * facts.model_tokens
                else:
                    seconds = (rate.per_chunk or 0.0) * facts.rows
                c.values["cost_embed_seconds_per_1k_docs"] = seconds / facts.docs * 1000.0
                c.notes["cost_embed_seconds_per_1k_docs"] = rate.source + (
                    f"; the ledger times the embedding of the table's {facts.keys_in_table} chunkings together, so "
                    "each is charged by its model tokens (chunkings of the same text cost about the same; the "
                    "per-sequence overhead is not separated)" if shared and rate.per_token is not None else "")
        total, names = 0.0, []
        for kind in INDEX_KINDS.get(method, ("vector",)):
            if kind not in indexes:
                continue
            size, n = indexes[kind]
            # An index over several strategies' chunks is charged to each by its share:
            # rows for the vector index, tokens for the text index.
            total += size * (facts.share_rows if kind == "vector" else facts.share_tokens) if shared else size
            names += n
        c.values["cost_index_bytes"] = float(total)
        c.notes["cost_index_bytes"] = (", ".join(names) + (
            f" (shared by the table's {facts.keys_in_table} chunkings: each charged its share, by rows for the "
            "vector index and by tokens for the text index)" if shared else "") if names else "none")
        out[method] = c
    return out


def add_latency(cost: ConfigCost, seconds: list[float]) -> None:
    """Latency p50 / p95 (ms) of the per-query retrieval times."""
    p50, p95 = percentiles_ms(seconds)
    if p50 is None:
        cost.unknown("cost_latency_p50_ms", "no query was retrieved")
        cost.unknown("cost_latency_p95_ms", "no query was retrieved")
    else:
        cost.values["cost_latency_p50_ms"], cost.values["cost_latency_p95_ms"] = p50, p95


def cpu_name() -> str:
    """This machine's CPU as /proc/cpuinfo names it (model name, family, model), for
    the figures timed here."""
    import platform

    try:
        info = {}
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
                if not line.strip():
                    break
        name = info.get("model name") or platform.processor() or platform.machine()
        fam = f", family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else ""
        return f"{name}{fam}, {os.cpu_count()} CPUs"
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"

