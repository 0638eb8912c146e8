"""Label-tuned embeddings: the head, its training, its identity and table, ingestion and
re-embedding with it, labelled inputs and their errors, and the same-class metric."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grainline.embedding import Embedder, EmbedderSettings, Head
from grainline.ingest import IngestSettings, run_ingest
from grainline.embedding import get_embedder
from grainline.reembed import reembed_with_head
from grainline.storage.chunks import connect
from grainline.labels import LabelError, labelled_subset, load_labelled_file, load_labelled_table
from grainline.tuning import HeadSettings, same_class_ceiling, same_class_rate, train_from_source, train_head

from tests.conftest import write_files

# Two labels that cut across four subjects: raw sentence vectors group these texts by
# subject, so only a head trained on the labels can put same-sentiment texts together.
SUBJECTS = ["the hotel room", "the pizza", "the new phone", "the film"]
POSITIVE = ["I loved {s}, it was wonderful", "{s} was excellent and I was delighted", "{s} made me really happy",
            "what a fantastic experience {s} was", "{s} exceeded every expectation I had"]
NEGATIVE = ["I hated {s}, it was awful", "{s} was terrible and I was furious", "{s} made me really miserable",
            "what a dreadful experience {s} was", "{s} was a complete disappointment"]


def sentiment_records() -> list[dict[str, str]]:
    recs = []
    for s in SUBJECTS:
        for i, (p, n) in enumerate(zip(POSITIVE, NEGATIVE)):
            recs.append({"id": f"{s}-pos-{i}", "text": p.format(s=s).capitalize() + ".", "label": "positive"})
            recs.append({"id": f"{s}-neg-{i}", "text": n.format(s=s).capitalize() + ".", "label": "negative"})
    return recs


def synthetic(n_per_class: int = 40, n_classes: int = 4, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors whose class sits in a few tight dimensions while wide noise fills
    the rest: raw cosine neighbours follow the noise, a linear map can remove it."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(0, 0.5, (len(y), dim))
    x[:, :n_classes] = rng.normal(0, 0.15, (len(y), n_classes))
    x[np.arange(len(y)), y] += 1.0
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"c{c}" for c in y]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, embedder):
    """A head trained on the bundled model's vectors of a labelled JSONL file."""
    root = tmp_path_factory.mktemp("tuned")
    path = root / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sentiment_records()), encoding="utf-8")
    meta = train_from_source(root / "head", labels_file=str(path), holdout=0.5, settings=HeadSettings(epochs=60, seed=1),
                             embedder_settings=EmbedderSettings(device="cpu"))
    return root / "head", meta


def test_zero_initialised_head_is_the_identity():
    x, _ = synthetic()
    head = Head.identity(x.shape[1])
    assert np.allclose(head.apply(x), x, atol=1e-6)
    trained = train_head(x, _, HeadSettings(epochs=1))
    assert not np.allclose(trained.apply(x), x, atol=1e-3)  # one epoch already moves it


def test_tuned_head_raises_same_class_rate_on_held_out_synthetic_vectors():
    x, labels = synthetic()
    idx = np.arange(len(x))
    train, test = idx % 2 == 0, idx % 2 == 1
    head = train_head(x[train], [labels[i] for i in idx[train]], HeadSettings(epochs=30, lr=1e-2, per_class=8, seed=0))
    test_labels = [labels[i] for i in idx[test]]
    raw = same_class_rate(x[test], test_labels, (10,))[10]
    tuned = same_class_rate(head.apply(x[test]), test_labels, (10,))[10]
    assert tuned >= raw + 0.2, (raw, tuned)


def test_training_is_deterministic_for_a_seed():
    x, labels = synthetic(n_per_class=10)
    a = train_head(x, labels, HeadSettings(epochs=5, seed=3))
    b = train_head(x, labels, HeadSettings(epochs=5, seed=3))
    c = train_head(x, labels, HeadSettings(epochs=5, seed=4))
    assert a.sha256 == b.sha256 and a.sha256 != c.sha256


def test_head_on_real_vectors_separates_a_label_the_model_does_not(tuned):
    _, meta = tuned
    held = meta["metrics"]["holdout"]
    # the base model groups these texts by subject, so raw neighbours are mixed
    raw, tuned_rate = held["raw"][10], held["tuned"][10]
    assert tuned_rate >= raw + 0.1, (raw, tuned_rate)
    assert meta["base_model"]["model_id"].startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert meta["n_records"] == 20 and meta["labels"] == ["negative", "positive"]


def test_saved_head_round_trip_and_metadata(tuned, tmp_path):
    folder, meta = tuned
    head = Head.load(folder)
    assert head.sha256 == meta["weights_sha256"]
    x = np.random.default_rng(0).normal(size=(5, head.dim)).astype(np.float32)
    again = Head.load(head.save(tmp_path / "copy"))
    assert np.array_equal(head.apply(x), again.apply(x)) and again.sha256 == head.sha256
    saved = json.loads((folder / "head.json").read_text())
    for key in ("base_model", "settings", "labels", "n_records", "seed", "metrics", "weights_sha256", "dim"):
        assert key in saved
    # weights that no longer match their recorded hash are refused
    from safetensors.numpy import save_file

    save_file({"weight": head.weight * 2, "bias": head.bias}, str(tmp_path / "copy" / "head.safetensors"))
    with pytest.raises(ValueError, match="differs from the one in head.json"):
        Head.load(tmp_path / "copy")


def test_tuned_model_has_its_own_identity_and_table(tuned, embedder):
    folder, meta = tuned
    emb = Embedder(EmbedderSettings(device="cpu", head=str(folder)))
    base, ident = embedder.identity, emb.identity
    assert ident.model_id == f"{base.model_id}+head-{meta['weights_sha256'][:8]}"
    assert ident.table_name == f"{base.table_name}_head_{meta['weights_sha256'][:8]}"
    assert ident.dim == base.dim
    with pytest.raises(ValueError, match="not a saved head folder"):
        EmbedderSettings(head=str(folder.parent))


def test_ingestion_with_head_writes_its_own_table_and_equals_reembedding(tuned, tmp_path, embedder):
    folder, _ = tuned
    src = write_files(tmp_path / "docs", {
        "a.md": "Bees dance to show where flowers are.\n\nThe hive follows the dance to the food.",
        "b.md": "Tides follow the Moon.\n\n" + "A long paragraph about the sea and the shore. " * 60,
    })
    db = str(tmp_path / "db")
    common = dict(source=str(src), strategies=["paragraph", "article"], db=db, export_parquet=False)
    base_rec = run_ingest(IngestSettings(**common, embedder=EmbedderSettings(device="cpu")))
    head_settings = EmbedderSettings(device="cpu", head=str(folder))
    tuned_rec = run_ingest(IngestSettings(**common, embedder=head_settings))
    tuned_ident = get_embedder(head_settings).identity
    assert tuned_rec.table_name == tuned_ident.table_name != base_rec.table_name
    assert tuned_rec.model_id == tuned_ident.model_id
    conn = connect(db)
    from_text = conn.open_table(tuned_rec.table_name).to_arrow()
    assert set(from_text.column("model_id").to_pylist()) == {tuned_ident.model_id}
    assert "pool" in from_text.column("handling").to_pylist()  # the long article was pooled before the head

    res = reembed_with_head(db, folder, target_table="reembedded")
    assert res["source"] == base_rec.table_name and res["rows"] == from_text.num_rows
    from_vectors = conn.open_table("reembedded").to_arrow()

    def by_id(t):
        vecs = np.asarray(t.column("vector").to_pylist(), dtype=np.float32)
        return dict(zip(t.column("chunk_id").to_pylist(), vecs))

    a, b = by_id(from_text), by_id(from_vectors)
    assert a.keys() == b.keys()
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert diff < 1e-5
    base_vecs = by_id(conn.open_table(base_rec.table_name).to_arrow())
    assert max(float(np.abs(a[k] - base_vecs[k]).max()) for k in a) > 1e-3  # the head did change them
    # the tuned model's query vectors carry the head too
    q = "where are the flowers"
    assert np.allclose(get_embedder(head_settings).embed_queries([q])[0], Head.load(folder).apply(embedder.embed_queries([q]))[0], atol=1e-5)


def test_labels_from_an_ingested_table_train_a_head(tmp_path, embedder):
    recs = sentiment_records()
    for r in recs[:3]:
        r.pop("label")  # unlabelled rows are skipped, not errors
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    db = str(tmp_path / "db")
    rec = run_ingest(IngestSettings(source=str(path), strategies=["article"], db=db, export_parquet=False,
                                    embedder=EmbedderSettings(device="cpu")))
    got = load_labelled_table(db, rec.table_name, "label")
    assert len(got) == len(recs) - 3 and got.skipped == 3 and got.model_id == embedder.identity.model_id
    assert got.vectors is not None and got.vectors.shape == (len(recs) - 3, embedder.identity.dim)
    meta = train_from_source(tmp_path / "head", table=rec.table_name, db=db, holdout=0.0, settings=HeadSettings(epochs=3))
    assert meta["n_records"] == len(recs) - 3 and meta["source"].endswith(rec.table_name)
    with pytest.raises(LabelError, match="no row has a 'topic' field"):
        load_labelled_table(db, rec.table_name, "topic")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"text": "fine", "label": "x"}\n{"text": "also", "label": "y"}\n{"text": "bad", "label": ["x"]}\n',
         r"a\.jsonl:3 column 'label': label must be a string or integer, got list"),
        ("b.jsonl", '{"text": "fine", "label": "x"}\n{"text": "no label"}\n', r"b\.jsonl:2 column 'label': missing or empty label"),
        ("c.jsonl", '{"text": "fine", "label": "x"}\n{"text": \n', r"c\.jsonl:2: malformed JSON"),
        ("d.csv", "text,category\nhello,x\n", r"d\.csv:1 column 'label': no column 'label' in the header \(columns: text, category\)"),
        ("e.csv", "text,label\nhello,x\nworld,\n", r"e\.csv:3 column 'label': missing or empty label"),
        ("f.csv", "text,label\n,x\n", r"f\.csv:2 column 'text': missing or empty text"),
        ("g.txt", "text label\n", r"unknown labelled file type '\.txt'"),
    ],
)
def test_bad_label_input_names_file_line_and_column(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(LabelError, match=message):
        load_labelled_file(tmp_path / name)


def test_csv_and_tsv_labels_load(tmp_path):
    (tmp_path / "l.csv").write_text('id,text,label\n1,"Hello, world",greeting\n,Bye now,farewell\n', encoding="utf-8")
    (tmp_path / "l.tsv").write_text("text\tlabel\nHello\t7\n", encoding="utf-8")
    got = load_labelled_file(tmp_path / "l.csv")
    assert got.ids == ["1", "line-3"] and got.texts == ["Hello, world", "Bye now"] and got.labels == ["greeting", "farewell"]
    assert load_labelled_file(tmp_path / "l.tsv").labels == ["7"]


def test_same_class_rate_by_hand():
    # two tight pairs far apart: each record's nearest other record is its classmate
    v = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    labels = ["a", "a", "b", "b"]
    assert same_class_rate(v, labels, (1, 3)) == {1: 1.0, 3: pytest.approx(1 / 3)}
    assert same_class_rate(v, ["a", "b", "a", "b"], (1,)) == {1: 0.0}
    assert same_class_ceiling(labels, (1, 3)) == {1: 1.0, 3: pytest.approx(1 / 3)}


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(3, 30), min_size=2, max_size=8), n=st.integers(2, 200), seed=st.integers(0, 5))
def test_labelled_subset_is_exact_seeded_and_keeps_pairs(sizes, n, seed):
    labels = [f"c{c}" for c, size in enumerate(sizes) for _ in range(size)]
    cap = sum(s - 1 for s in sizes)
    if n > cap:
        with pytest.raises(ValueError, match="cannot label"):
            labelled_subset(labels, n, seed)
        return
    idx = labelled_subset(labels, n, seed)
    assert len(idx) == n == len(set(idx.tolist()))
    assert np.array_equal(idx, labelled_subset(labels, n, seed))
    taken = Counter(labels[i] for i in idx)
    assert sum(1 for c in taken.values() if c < 2) <= n % 2  # only an odd n leaves one single
    for c, size in enumerate(sizes):
        assert taken[f"c{c}"] <= size - 1  # every class keeps a held-out record
