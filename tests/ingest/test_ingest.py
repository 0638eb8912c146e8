"""Ingestion end to end with the real bundled model and real LanceDB tables."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.search import search
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import read_export

from tests.conftest import DEMO_CORPUS, write_files

CPU = EmbedderSettings(device="cpu")

CORPUS = {
    "bees.md": "---\ntitle: Bees\ntags: [insects]\n---\n# Bees\n\nHoneybees dance to show their sisters where flowers are. "
    "The angle of the waggle run points towards the food.\n\nA longer run means the flowers are further away.\n",
    "tides.txt": "Tides\n\nThe Moon's gravity raises a bulge of water on the near side of the Earth. "
    "Spring tides come when the Sun and Moon line up.\n\nNeap tides are weaker.\n",
    "page.html": "<html><head><title>Bread</title><style>p{}</style><script>var x=1;</script></head><body>"
    "<h1>Sourdough</h1><p>A sourdough starter is a <b>living</b> culture of wild yeast and bacteria.</p>"
    "<p>Feed it flour and water every day.</p></body></html>",
    "records/items.jsonl": json.dumps({"id": "rec-1", "title": "Compilers", "text": "A compiler translates source code into machine code. "
                                       "The parser builds a syntax tree."}) + "\n",
}


def blank_pdf() -> bytes:
    """A valid PDF whose only page has no text layer, as a scanned image would."""
    import io

    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(200, 200)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def local(doc_id: str) -> str:
    """A stored doc id (a file's real path) relative to the source it came from: the
    test's ``src`` folder or the demo corpus."""
    for root in (os.path.realpath(DEMO_CORPUS), ):
        if doc_id.startswith(root + "/"):
            return doc_id[len(root) + 1:]
    head, sep, tail = doc_id.partition("/src/")
    return tail if sep else doc_id


def settings(src, db, **kw) -> IngestSettings:
    return IngestSettings(source=str(src), db=str(db), embedder=CPU, **kw)


def table_rows(db, embedder, columns=("chunk_id", "doc_id", "strategy", "text", "run_id", "doc_hash", "start", "end", "handling", "n_windows")):
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    return [r for b in store.scan(list(columns)) for r in b.to_pylist()]


def test_ingest_then_rerun_changes_nothing(tmp_path, embedder):
    src = write_files(tmp_path / "src", CORPUS)
    db = tmp_path / "db"
    first = run_ingest(settings(src, db))
    c = first.counts
    assert (c.docs_seen, c.docs_added, c.docs_failed) == (4, 4, 0)
    rows = table_rows(db, embedder)
    assert {r["strategy"] for r in rows} == {"sentence", "paragraph", "article"}
    assert {local(r["doc_id"]) for r in rows} == {"bees.md", "tides.txt", "page.html", "records/items.jsonl#rec-1"}
    assert len({r["chunk_id"] for r in rows}) == len(rows) == c.chunks_written
    # identical texts across strategies (a one-sentence paragraph) are embedded once
    assert c.chunks_embedded + c.chunks_reused == c.chunks_written
    assert c.chunks_reused > 0
    assert "var x" not in " ".join(r["text"] for r in rows)

    second = run_ingest(settings(src, db))
    c2 = second.counts
    assert (c2.docs_unchanged, c2.docs_added, c2.docs_updated, c2.chunks_written, c2.chunks_embedded) == (4, 0, 0, 0, 0)
    assert second.version_after == first.version_after
    assert sorted(r["chunk_id"] for r in table_rows(db, embedder)) == sorted(r["chunk_id"] for r in rows)
    ledger = Ledger(str(db)).runs("ingest")
    assert [r["status"] for r in ledger] == ["completed", "completed"]
    assert ledger[1]["docs_unchanged"] == 4


def test_editing_one_document_reembeds_only_its_new_text(tmp_path, embedder):
    src = write_files(tmp_path / "src", CORPUS)
    db = tmp_path / "db"
    first = run_ingest(settings(src, db))
    old_texts = {r["text"] for r in table_rows(db, embedder)}
    (src / "tides.txt").write_text(CORPUS["tides.txt"].replace("Neap tides are weaker.", "Neap tides are weaker, and come a week later."))
    second = run_ingest(settings(src, db))
    c = second.counts
    assert (c.docs_updated, c.docs_unchanged, c.docs_added) == (1, 3, 0)
    rows = table_rows(db, embedder)
    tides = [r for r in rows if local(r["doc_id"]) == "tides.txt"]
    # no orphans: every tides chunk belongs to the new text
    assert len({r["doc_hash"] for r in tides}) == 1
    assert any("a week later" in r["text"] for r in tides)
    assert not any(r["text"].endswith("Neap tides are weaker.") for r in tides)
    # only text never seen before was embedded (here the new sentence and the article,
    # which is also the single merged paragraph)
    new_texts = {r["text"] for r in tides} - old_texts
    assert c.chunks_embedded == len(new_texts) == 2
    assert c.chunks_reused > 0
    others = {r["run_id"] for r in rows if local(r["doc_id"]) != "tides.txt"}
    assert others == {first.run_id}


def test_full_sync_deletes_vanished_documents_incremental_keeps_them(tmp_path, embedder):
    src = write_files(tmp_path / "src", CORPUS)
    db = tmp_path / "db"
    run_ingest(settings(src, db))
    (src / "bees.md").unlink()
    inc = run_ingest(settings(src, db))
    assert inc.counts.docs_deleted == 0
    assert "bees.md" in {local(r["doc_id"]) for r in table_rows(db, embedder)}
    full = run_ingest(settings(src, db, sync="full"))
    assert full.counts.docs_deleted == 1 and full.counts.chunks_deleted > 0
    assert "bees.md" not in {local(r["doc_id"]) for r in table_rows(db, embedder)}
    # the Parquet export follows the table
    export_dir = db / "parquet" / embedder.identity.table_name
    export = read_export(str(export_dir))
    assert "bees.md" not in {local(d) for d in export.column("doc_id").to_pylist()}
    assert export.num_rows == len(table_rows(db, embedder))
    # other engines read the same export, strategy column restored from the paths
    import duckdb
    import polars as pl

    ((n, strategies),) = duckdb.sql(
        f"select count(*), count(distinct strategy) from read_parquet('{export_dir}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert (n, strategies) == (export.num_rows, 3)
    frame = pl.read_parquet(f"{export_dir}/**/*.parquet", hive_partitioning=True)
    assert frame.height == export.num_rows and frame.schema["vector"].size == 384


def test_bad_input_becomes_failures_and_good_documents_are_stored(tmp_path, embedder):
    files = dict(CORPUS)
    files.update({
        "garbage.txt": bytes(range(256)) * 4,
        "latin1.txt": "caf\xe9 au lait".encode("latin-1"),
        "empty.md": "",
        "blank.txt": "   \n\t\n  ",
        "records/mixed.jsonl": json.dumps({"id": "ok-1", "text": "A fine record about glaciers and ice."}) + "\n{not json\n"
        + json.dumps({"id": "no-text"}) + "\n",
        "scan.pdf": blank_pdf(),
        "utf16.txt": "Title\n\nA UTF-16 file about volcanoes and lava.".encode("utf-16"),
    })
    src = write_files(tmp_path / "src", files)
    rec = run_ingest(settings(src, tmp_path / "db"))
    failures = {f["where"]: f["reason"] for f in rec.counts.failures}
    assert set(failures) == {"garbage.txt", "latin1.txt", "empty.md", "blank.txt", "records/mixed.jsonl:2", "records/mixed.jsonl:3", "scan.pdf"}
    assert "binary" in failures["garbage.txt"] and "UTF-8" in failures["latin1.txt"]
    assert "text layer" in failures["scan.pdf"]
    stored = {local(r["doc_id"]) for r in table_rows(tmp_path / "db", embedder)}
    assert stored == {"bees.md", "tides.txt", "page.html", "records/items.jsonl#rec-1", "records/mixed.jsonl#ok-1", "utf16.txt"}
    (row,) = Ledger(str(tmp_path / "db")).runs()
    assert row["docs_failed"] == 7 and {f["where"] for f in row["failures"]} == set(failures)


def test_long_article_pool_and_truncate(tmp_path, embedder):
    long_text = "\n\n".join(
        f"Paragraph {i}. " + " ".join(f"The glacier number {i} moves {j} metres down the valley each year." for j in range(8))
        for i in range(10)
    )
    src = write_files(tmp_path / "src", {"long.txt": long_text})
    db = tmp_path / "db"
    run_ingest(settings(src, db, strategies="article"))
    run_ingest(settings(src, db, strategies="article", long_article="truncate"))
    cols = ("chunk_id", "text", "handling", "n_windows", "n_model_tokens", "exceeds_model_limit", "vector")
    rows = {r["handling"]: r for r in table_rows(db, embedder, cols)}
    assert set(rows) == {"pool", "truncate"}
    pool, trunc = rows["pool"], rows["truncate"]
    assert pool["exceeds_model_limit"] and pool["n_model_tokens"] > 254
    assert pool["n_windows"] >= 3 and trunc["n_windows"] == 1
    pv, tv = np.asarray(pool["vector"]), np.asarray(trunc["vector"])
    assert abs(np.linalg.norm(pv) - 1) < 1e-4 and abs(np.linalg.norm(tv) - 1) < 1e-4
    assert float(pv @ tv) < 0.999  # pooling saw the rest of the text
    # truncate embeds exactly the first window, nothing silently cut beyond it
    first = embedder.window.counter.windows(trunc["text"], embedder.window.max_tokens, 0)[0]
    ref = embedder.encode([trunc["text"][first[0]:first[1]]])[0]
    assert float(ref @ tv) > 0.999


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, embedder):
    db = tmp_path_factory.mktemp("demo") / "db"
    rec = run_ingest(IngestSettings(source=str(DEMO_CORPUS), db=str(db), embedder=CPU))
    assert rec.counts.docs_failed == 0 and rec.counts.docs_seen >= 20
    return str(db)


DEMO_QUERIES = {
    "how do insects tell each other where flowers are located": "science/honeybee-dance.md",
    "keeping a wild yeast culture alive to leaven bread": "food/sourdough-starter.md",
    "Gutenberg metal type and the spread of books in Renaissance Europe": "history/printing-press.html",
    "how do small songbirds find their way across continents at night": "nature/bird-migration.txt",
    "public and private keys, RSA and secure messaging over the internet": "records/articles.jsonl#rec-cryptography-basics",
}


@pytest.mark.parametrize("strategy", ["sentence", "paragraph", "article"])
def test_queries_find_the_document_they_were_written_from(demo_db, strategy):
    for query, doc_id in DEMO_QUERIES.items():
        hits = search(query, demo_db, strategy, 3, CPU)
        assert local(hits[0].row["doc_id"]) == doc_id, (query, [h.row["doc_id"] for h in hits])
        assert all(h.row["strategy"] == strategy for h in hits)
        assert hits[0].score > hits[-1].score - 1e-6


def test_rows_record_model_identity_and_offsets(demo_db, embedder):
    cols = ("doc_id", "text", "start", "end", "model_id", "model_max_seq_length", "vector", "n_model_tokens", "exceeds_model_limit", "strategy")
    rows = table_rows(demo_db, embedder, cols)
    assert {r["model_id"] for r in rows} == {embedder.identity.model_id}
    assert {r["model_max_seq_length"] for r in rows} == {256}
    norms = np.linalg.norm(np.asarray([r["vector"] for r in rows]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    # sentence and paragraph chunks always fit the model's window
    assert not any(r["exceeds_model_limit"] for r in rows if r["strategy"] != "article")
    assert all(r["end"] - r["start"] == len(r["text"]) for r in rows)


def test_any_model_path_works_and_gets_its_own_table(tmp_path, embedder):
    import shutil

    model_dir = tmp_path / "my-minilm"
    shutil.copytree(embedder.path, model_dir)
    src = write_files(tmp_path / "src", {"tides.txt": CORPUS["tides.txt"]})
    db = tmp_path / "db"
    run_ingest(settings(src, db, strategies="paragraph"))
    other = EmbedderSettings(model=str(model_dir), device="cpu")
    rec = run_ingest(IngestSettings(source=str(src), db=str(db), strategies="paragraph", embedder=other))
    assert rec.table_name.startswith("chunks_my_minilm_") and rec.table_name != embedder.identity.table_name
    assert rec.model_id.startswith("my-minilm@")
    hits = search("spring tides and the moon", str(db), "paragraph", 1, other)
    assert local(hits[0].row["doc_id"]) == "tides.txt"


@pytest.mark.parametrize("on_error", ["keep", "restore"])
def test_a_failed_run_restores_the_table_and_says_so(tmp_path, embedder, on_error):
    """on_error=keep leaves the whole documents committed before the failure (a re-run
    resumes and embeds only the rest); on_error=restore rolls the table back. Either
    way the ledger says failed, with the version before the run."""
    from grainline.documents import Document

    src = write_files(tmp_path / "src", CORPUS)
    db = tmp_path / "db"
    good = run_ingest(settings(src, db, strategies="paragraph"))
    before = sorted((r["chunk_id"], r["text"]) for r in table_rows(db, embedder))
    new_docs = [Document(f"new-{i}", f"New document {i} about coral reefs and their fish.") for i in range(6)]

    def documents(fail: bool):
        # new documents are written batch by batch, then the source breaks mid-run
        yield from new_docs[:4]
        if fail:
            raise OSError("source went away mid-run")
        yield from new_docs[4:]

    broken = settings("dataset:broken", db, strategies="paragraph", batch_docs=1, on_error=on_error)
    with pytest.raises(OSError, match="source went away"):
        run_ingest(broken, documents=documents(fail=True))
    after = sorted((r["chunk_id"], r["text"]) for r in table_rows(db, embedder))
    failed = Ledger(str(db)).runs("ingest")[-1]
    assert failed["status"] == "failed" and failed["version_before"] == good.version_after
    assert "source went away" in failed["error"]
    if on_error == "restore":
        assert after == before
        assert f"restored to version {good.version_after}" in failed["error"]
        return
    # keep: the four documents written before the error stay, whole
    new_rows = [r for r in table_rows(db, embedder) if r["doc_id"].startswith("new-")]
    assert {r["doc_id"] for r in new_rows} == {f"new-{i}" for i in range(4)}
    assert sorted(after) == sorted(before + [(r["chunk_id"], r["text"]) for r in new_rows])
    assert failed["version_after"] == good.version_after + 4
    restore_cmd = f"grainline restore {good.version_after} --db {db} --table {embedder.identity.table_name}"
    assert restore_cmd in failed["error"], failed["error"]
    # the re-run embeds only the two documents the failed run never reached
    rerun = run_ingest(broken, documents=documents(fail=False))
    assert (rerun.counts.docs_unchanged, rerun.counts.docs_added, rerun.counts.chunks_embedded) == (4, 2, 2)
    # and the documented command rolls the table back to the version before the failed run
    from typer.testing import CliRunner

    from grainline.cli import app

    res = CliRunner().invoke(app, restore_cmd.split()[1:])
    assert res.exit_code == 0, res.output
    assert sorted((r["chunk_id"], r["text"]) for r in table_rows(db, embedder)) == before


def test_int8_fast_path_stays_close_to_fp32_and_gets_its_own_table(embedder):
    from grainline.embedding import get_embedder

    int8 = get_embedder(EmbedderSettings(device="cpu", precision="int8"))
    assert int8.identity.table_name == embedder.identity.table_name + "_int8"
    assert int8.identity.model_id.endswith("+int8")
    assert_close_with_same_top_documents(embedder, int8, min_cos=0.95, mean_cos=0.97)


def assert_close_with_same_top_documents(embedder, fast, min_cos: float, mean_cos: float) -> None:
    """A fast path's vectors of the demo paragraphs stay within these cosines of fp32's,
    and what matters for retrieval holds: each demo query finds the same document first."""
    from grainline.documents import Document
    from grainline.readers import iter_documents

    docs = [d for d in iter_documents(str(DEMO_CORPUS)) if isinstance(d, Document)]
    texts = [p for d in docs for p in d.text.split("\n\n") if len(p) > 80]
    owners = [local(d.doc_id) for d in docs for p in d.text.split("\n\n") if len(p) > 80]
    a, b = embedder.encode(texts), fast.encode(texts)
    cos = (a * b).sum(axis=1)
    assert cos.min() > min_cos and cos.mean() > mean_cos, (cos.min(), cos.mean())
    qa, qb = embedder.embed_queries(list(DEMO_QUERIES)), fast.embed_queries(list(DEMO_QUERIES))
    for i, doc_id in enumerate(DEMO_QUERIES.values()):
        assert owners[int(np.argmax(a @ qa[i]))] == doc_id
        assert owners[int(np.argmax(b @ qb[i]))] == doc_id


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_paths_match_fp32_per_chunk(fp32_embedder, precision):
    """The GPU fast paths (fp16 is the CUDA default) checked on CPU: every chunk's vector,
    pooled long articles included, within cosine 0.999 of the fp32 baseline's, and in the
    same table (the vectors are interchangeable)."""
    from grainline.chunkers import ChunkContext, chunk_document, settings_for
    from grainline.documents import Document
    from grainline.embedding import Embedder
    from grainline.readers import iter_documents

    half = Embedder(EmbedderSettings(device="cpu", precision=precision, backend="torch"))
    assert half.identity.table_name == fp32_embedder.identity.table_name
    doc = next(d for d in iter_documents(str(DEMO_CORPUS)) if isinstance(d, Document) and len(d.text) > 3000)
    doc = Document(doc.doc_id, doc.text[:3000], doc.title)  # an article of a few model windows
    ctx = ChunkContext.default(fp32_embedder.window)
    chunks = chunk_document(doc, "sentence", settings_for("sentence"), ctx)[:16]
    chunks += chunk_document(doc, "article", settings_for("article", long_article="pool"), ctx)
    assert chunks[-1].handling == "pool"
    ref = fp32_embedder.model.encode([c.text for c in chunks if c.handling != "pool"], batch_size=32, normalize_embeddings=True)
    got, _ = half.embed_chunks(chunks)
    base, _ = fp32_embedder.embed_chunks(chunks)
    plain = got[[i for i, c in enumerate(chunks) if c.handling != "pool"]]
    assert got.dtype == np.float32 and got.shape == (len(chunks), 384)
    assert float((plain * ref).sum(axis=1).min()) > 0.999
    assert float((got * base).sum(axis=1).min()) > 0.999


def test_budgeted_batches_match_a_plain_encode(fp32_embedder):
    """grainline's batching (length-sorted, token budget) gives sentence-transformers'
    own vectors, in input order."""
    texts = ["short one", "a much longer text " * 40, "medium length sentence about tides and the moon", "x"] * 5
    ref = fp32_embedder.model.encode(texts, batch_size=32, normalize_embeddings=True)
    got = fp32_embedder.encode(texts)
    assert got.shape == (20, 384) and got.dtype == np.float32
    assert float((ref * got).sum(axis=1).min()) > 0.9999


def test_model_identity_is_cached_and_keyed_by_the_weight_files(tmp_path, embedder):
    import shutil

    from grainline.embedding import Embedder, read_cached_identity

    ident = embedder.identity
    assert read_cached_identity(embedder.path, "") == (ident, embedder.window.max_tokens)
    # A copy of the model is its own folder: no entry until it is loaded; editing a
    # weight file afterwards makes the entry stale (a new key), never wrong.
    copy = tmp_path / "model"
    shutil.copytree(embedder.path, copy)
    assert read_cached_identity(str(copy), "") is None
    other = Embedder(EmbedderSettings(model=str(copy), device="cpu"))
    assert other.identity.weights_sha256 == ident.weights_sha256 and other.loaded
    assert read_cached_identity(str(copy), "")[0] == other.identity
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert read_cached_identity(str(copy), "") is None


def test_unchanged_rerun_never_loads_the_model(tmp_path, embedder):
    """A re-run with nothing to embed reads the model identity from the cache: no torch,
    no sentence-transformers, no weights (the bulk of a no-op run's time otherwise)."""
    import subprocess
    import sys

    src = write_files(tmp_path / "src", CORPUS)
    db = tmp_path / "db"
    run_ingest(settings(src, db, strategies=["paragraph"]))
    code = (
        "import sys, json\n"
        "from grainline.embedding import EmbedderSettings\n"
        "from grainline.ingest import IngestSettings, run_ingest\n"
        f"rec = run_ingest(IngestSettings(source={str(src)!r}, db={str(db)!r}, strategies=['paragraph'], embedder=EmbedderSettings(device='cpu')))\n"
        "print(json.dumps([rec.counts.docs_unchanged, rec.counts.chunks_embedded,\n"
        "                  [m in sys.modules for m in ('torch', 'sentence_transformers', 'openvino')]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [4, 0, [False, False, False]]
    # ... and once a document changes, the model loads (on torch, or on OpenVINO where
    # backend auto chose it) and embeds it.
    (src / "tides.txt").write_text("Tides\n\nThe Moon pulls the oceans.\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    unchanged, embedded, (torch_loaded, _, openvino_loaded) = json.loads(out.stdout.strip().splitlines()[-1])
    assert unchanged == 3 and (torch_loaded or openvino_loaded) and embedded >= 1
