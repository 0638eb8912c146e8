"""Training a head from a labelled source, and the SQuAD experiment: top-k same-class
rate of raw versus tuned vectors as the number of labelled records grows, with plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grainline.documents import Document
from grainline.embedding import Embedder, EmbedderSettings, Head, get_embedder
from grainline.labels import LabelledRecords, labelled_subset, load_labelled_file, load_labelled_table, squad_paragraphs

from .train import HeadSettings, same_class_ceiling, same_class_rate, train_head

KS = (10, 100)


def default_cache_dir() -> Path:
    """Where embedded datasets are kept between runs (never inside the repository)."""
    base = os.environ.get("GRAINLINE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "grainline")
    return Path(base) / "tuning"


def base_embedder(settings: EmbedderSettings) -> Embedder:
    """The base model (any head in ``settings`` dropped): heads train on its vectors."""
    return get_embedder(settings.model_copy(update={"head": None}))


def embed_records(records: LabelledRecords, embedder: Embedder) -> np.ndarray:
    """Base vectors of the records' texts, each embedded as ingestion embeds a record's
    article chunk (a text longer than the model window is pooled over windows)."""
    from grainline.chunkers import ChunkContext, chunk_document

    ctx = ChunkContext.default(embedder.window)
    chunks = [chunk_document(Document(doc_id=i, text=t), "article", ctx=ctx)[0] for i, t in zip(records.ids, records.texts)]
    return embedder.embed_chunks(chunks)[0]


def ingest_labelled(records: LabelledRecords, db: str, table: str, settings: EmbedderSettings) -> LabelledRecords:
    """The records through ordinary ingestion (article chunks, label in the metadata)
    into ``table`` of ``db``, read back with their vectors. Unchanged records are not
    embedded again, so this is the embedding cache."""
    from grainline.ingest import IngestSettings, run_ingest

    docs = [Document(doc_id=i, text=t, metadata={"label": lab}) for i, t, lab in zip(records.ids, records.texts, records.labels)]
    run_ingest(IngestSettings(source=f"labelled:{records.source}", strategies=["article"], db=db, table=table,
                              export_parquet=False, embedder=settings.model_copy(update={"head": None})), documents=docs)
    out = load_labelled_table(db, table, "label", "article")
    row_of = {d: j for j, d in enumerate(out.info["doc_ids"])}
    got = out.subset([row_of[i] for i in records.ids])
    got.ids = list(records.ids)
    return got


def train_from_source(
    out: str | Path,
    labels_file: str | None = None,
    table: str | None = None,
    db: str | None = None,
    label_field: str = "label",
    text_field: str = "text",
    strategy: str | None = "article",
    holdout: float = 0.2,
    settings: HeadSettings | None = None,
    embedder_settings: EmbedderSettings | None = None,
) -> dict[str, Any]:
    """Train a head on a labelled file (embedded here with the base model) or on a
    table's stored vectors, save it to ``out`` and return its metadata. A stratified,
    seeded ``holdout`` share of each class is kept out of training to measure the
    same-class rate raw versus tuned; 0 trains on everything."""
    settings = settings or HeadSettings()
    embedder = base_embedder(embedder_settings or EmbedderSettings(device="cpu"))
    base = embedder.base_identity
    if (labels_file is None) == (table is None):
        raise ValueError("give either a labelled file or a table (with its --db)")
    t0 = time.perf_counter()
    if labels_file is not None:
        recs = load_labelled_file(labels_file, text_field=text_field, label_field=label_field)
        recs.vectors = embed_records(recs, embedder)
    else:
        recs = load_labelled_table(db or "", table or "", label_field=label_field, strategy=strategy)
        if recs.model_id != base.model_id:
            raise ValueError(f"table {table!r} holds vectors of {recs.model_id}, but the base model is {base.model_id}; "
                             "pass the --model that wrote it (a tuned table cannot be tuned again)")
    embed_seconds = time.perf_counter() - t0
    assert recs.vectors is not None
    train_idx, test_idx = _holdout_split(recs.labels, holdout, settings.seed)
    head = train_head(recs.vectors[train_idx], [recs.labels[i] for i in train_idx], settings,
                      meta={"base_model": base.as_dict(), "source": recs.source, "label_field": label_field})
    metrics = head.meta["metrics"]
    metrics["embed_seconds"] = round(embed_seconds, 3)
    metrics["skipped_unlabelled"] = recs.skipped
    if len(test_idx) > 1:
        test_vecs = recs.vectors[test_idx]
        test_labels = [recs.labels[i] for i in test_idx]
        metrics["holdout"] = {"n": int(len(test_idx)), "raw": same_class_rate(test_vecs, test_labels, KS),
                              "tuned": same_class_rate(head.apply(test_vecs), test_labels, KS),
                              "ceiling": same_class_ceiling(test_labels, KS)}
    head.meta["holdout_share"] = holdout
    head.save(out)
    return head.meta | {"weights_sha256": head.sha256, "dim": head.dim, "folder": str(out)}


def _holdout_split(labels: Sequence[str], share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded share of each class held out (rounded down, so a class of one stays in)."""
    if not 0 <= share < 1:
        raise ValueError(f"holdout must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    test = []
    for c in np.unique(lab):
        idx = rng.permutation(np.flatnonzero(lab == c))
        test.extend(idx[: int(len(idx) * share)])
    test_idx = np.sort(np.array(test, dtype=int))
    return np.setdiff1d(np.arange(len(lab)), test_idx), test_idx


# --------------------------------------------------------------------------- SQuAD


def squad_experiment(
    squad_path: str,
    sizes: Sequence[int] = (25, 100, 1000),
    out_dir: str | Path = "reports/tuning",
    cache_dir: str | Path | None = None,
    settings: HeadSettings | None = None,
    embedder_settings: EmbedderSettings | None = None,
) -> dict[str, Any]:
    """SQuAD paragraphs labelled by article: for each size, label that many paragraphs
    (:func:`labelled_subset`), train a head on them, and compare the top-k same-class
    rate of raw and tuned vectors among the other paragraphs. Writes JSON, Markdown
    and two PNGs to ``out_dir``."""
    settings = settings or HeadSettings()
    es = embedder_settings or EmbedderSettings(device="cpu")
    embedder = base_embedder(es)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    recs = squad_paragraphs(squad_path)
    source = recs.source
    t0 = time.perf_counter()
    recs = ingest_labelled(recs, str(cache / "lancedb"), f"{embedder.base_identity.table_name}__squad_paragraphs", es)
    embed_seconds = time.perf_counter() - t0
    assert recs.vectors is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    heads: dict[int, tuple[Head, np.ndarray]] = {}
    for n in sizes:
        train_idx = labelled_subset(recs.labels, n, seed=settings.seed)
        test_idx = np.setdiff1d(np.arange(len(recs)), train_idx)
        labels_tr = [recs.labels[i] for i in train_idx]
        labels_te = [recs.labels[i] for i in test_idx]
        head = train_head(recs.vectors[train_idx], labels_tr, settings,
                          meta={"base_model": embedder.base_identity.as_dict(), "source": recs.source, "label_field": "article title"})
        raw = same_class_rate(recs.vectors[test_idx], labels_te, KS)
        tuned = same_class_rate(head.apply(recs.vectors[test_idx]), labels_te, KS)
        rows.append({"labelled": int(n), "classes_labelled": len(set(labels_tr)), "held_out": int(len(test_idx)),
                     "raw": raw, "tuned": tuned, "ceiling": same_class_ceiling(labels_te, KS),
                     "train_seconds": head.meta["train_seconds"], "steps": head.meta["steps"], "head": head.hash8})
        head.meta["metrics"]["held_out"] = {"raw": raw, "tuned": tuned}
        head.save(out / f"head-{n}")
        heads[n] = (head, test_idx)
    result = {"dataset": source, "cache_table": recs.source, "n_paragraphs": len(recs), "n_classes": len(set(recs.labels)),
              "model_id": embedder.base_identity.model_id, "settings": settings.model_dump(), "seed": settings.seed,
              "embed_or_cache_seconds": round(embed_seconds, 2), "rows": rows}
    result["plots"] = [str(plot_rates(rows, out / "same_class_rate.png")),
                       str(plot_pca(recs, *heads[max(heads)], out / "pca_raw_vs_tuned.png", max(heads)))]
    (out / "tuning.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "tuning.md").write_text(markdown_table(result), encoding="utf-8")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The raw-versus-tuned table as Markdown."""
    lines = [
        f"Top-k same-class rate on held-out SQuAD paragraphs ({result['n_paragraphs']} paragraphs, "
        f"{result['n_classes']} articles; model `{result['model_id']}`, seed {result['seed']}).",
        "",
        "| labelled | articles labelled | held out | top-10 raw | top-10 tuned | top-10 ceiling | top-100 raw | top-100 tuned | top-100 ceiling | train s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['labelled']} | {r['classes_labelled']} | {r['held_out']} | {r['raw'][10]:.3f} | {r['tuned'][10]:.3f} | "
            f"{r['ceiling'][10]:.3f} | {r['raw'][100]:.3f} | {r['tuned'][100]:.3f} | {r['ceiling'][100]:.3f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_rates(rows: list[dict[str, Any]], path: Path) -> Path:
    """Same-class rate (k = 10, 100) against the number of labelled records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["labelled"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, colour in zip(KS, ("tab:blue", "tab:orange")):
        ax.plot(x, [r["raw"][k] for r in rows], "--o", color=colour, label=f"top-{k} raw")
        ax.plot(x, [r["tuned"][k] for r in rows], "-o", color=colour, label=f"top-{k} tuned")
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("labelled paragraphs")
    ax.set_ylabel("same-class rate of held-out neighbours")
    ax.set_title("SQuAD dev paragraphs, label = article")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pca2(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


def plot_pca(recs: LabelledRecords, head: Head, test_idx: np.ndarray, path: Path, n_labelled: int, n_classes: int = 12) -> Path:
    """Held-out records of the ``n_classes`` largest held-out classes, PCA to 2-D
    (fitted per panel), raw beside tuned, one colour per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert recs.vectors is not None
    lab = np.asarray(recs.labels)[test_idx]
    names, counts = np.unique(lab, return_counts=True)
    keep_names = names[np.argsort(-counts, kind="stable")[:n_classes]]
    sel = test_idx[np.isin(lab, keep_names)]
    sel_lab = np.asarray(recs.labels)[sel]
    raw = recs.vectors[sel]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    cmap = plt.get_cmap("tab20")
    for ax, (title, vecs) in zip(axes, (("raw", raw), (f"tuned (head on {n_labelled} labels)", head.apply(raw)))):
        xy = _pca2(vecs)
        for j, c in enumerate(keep_names):
            m = sel_lab == c
            ax.scatter(xy[m, 0], xy[m, 1], s=9, color=cmap(j % 20), label=c.replace("_", " ")[:28])
        ax.set_title(f"{title}: PCA of held-out paragraphs")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
