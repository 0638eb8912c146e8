"""One identity per document: a file is the same document whatever path it is
ingested through, two files never share an id, and a full sync deletes what is gone
from the source whichever run wrote it. Real model, real LanceDB tables."""

from __future__ import annotations

import json
import os

from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.readers import file_id
from grainline.storage.chunks import ChunkStore
from grainline.storage.maintenance import MaintenanceSettings

from tests.conftest import write_files

CPU = EmbedderSettings(device="cpu")
FILES = {
    "notes/a.txt": "Kafka incident\n\nThe broker ran out of disk and the consumers stalled for an hour.\n",
    "notes/b.txt": "Bees\n\nHoneybees dance to show their sisters where the flowers are.\n",
    "c.md": "# Tides\n\nThe Moon's gravity raises a bulge of water on the near side of the Earth.\n",
}


def ingest(src, db, **kw):
    s = IngestSettings(source=str(src), db=str(db), embedder=CPU, strategies=["paragraph"], export_parquet=False,
                       maintenance=MaintenanceSettings(enabled=False), **kw)
    return run_ingest(s)


def stored(db, embedder) -> dict[str, int]:
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    out: dict[str, int] = {}
    for b in store.scan(["doc_id"]):
        for d in b.column("doc_id").to_pylist():
            out[d] = out.get(d, 0) + 1
    return out


def counts(rec):
    c = rec.counts
    return {k: v for k, v in (("added", c.docs_added), ("updated", c.docs_updated), ("unchanged", c.docs_unchanged),
                              ("deleted", c.docs_deleted), ("failed", c.docs_failed)) if v}


def test_same_file_through_any_path_is_one_document(tmp_path, embedder, monkeypatch):
    src = write_files(tmp_path / "corpus", FILES)
    db = tmp_path / "db"
    assert counts(ingest(src, db)) == {"added": 3}
    ids = stored(db, embedder)
    assert set(ids) == {file_id(src / r) for r in FILES}
    # a single file, a subfolder, a relative path, a trailing slash, a symlinked path, a glob
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for source in (src / "notes/a.txt", src / "notes", "corpus/notes/a.txt", "corpus/", tmp_path / "alias",
                   tmp_path / "alias/notes/a.txt", str(src / "**/*.txt")):
        rec = ingest(source, db)
        assert rec.counts.docs_added == rec.counts.docs_updated == 0, (source, counts(rec))
        assert stored(db, embedder) == ids, source
    # an edit through another path updates the one document
    (src / "notes/a.txt").write_text(FILES["notes/a.txt"] + "\nIt was fixed by adding a disk.\n")
    assert counts(ingest(tmp_path / "alias/notes/a.txt", db)) == {"updated": 1}
    assert set(stored(db, embedder)) == set(ids)


def test_same_relative_names_under_two_roots_do_not_collide(tmp_path, embedder):
    x = write_files(tmp_path / "x", {"notes/a.txt": "Glaciers move down the valley a few metres a year.\n"})
    y = write_files(tmp_path / "y", {"notes/a.txt": "Sourdough needs a starter of wild yeast and bacteria.\n"})
    db = tmp_path / "db"
    assert counts(ingest(x, db)) == {"added": 1}
    assert counts(ingest(y, db)) == {"added": 1}
    # alternating runs find everything unchanged: nothing is replaced or re-embedded
    for root in (x, y, x):
        rec = ingest(root, db)
        assert counts(rec) == {"unchanged": 1} and rec.counts.chunks_embedded == 0
    assert set(stored(db, embedder)) == {file_id(x / "notes/a.txt"), file_id(y / "notes/a.txt")}
    # the parent holds both: nothing is stored a second time
    assert counts(ingest(tmp_path, db)) == {"unchanged": 2}
    assert len(stored(db, embedder)) == 2


def test_record_id_equal_to_a_file_path_does_not_collide(tmp_path, embedder):
    src = write_files(tmp_path / "src", {
        "notes/a.txt": "Volcanoes erupt when magma rises through the crust.\n",
        "records.jsonl": json.dumps({"id": "notes/a.txt", "text": "A record about compilers and parsers."}) + "\n",
    })
    db = tmp_path / "db"
    rec = ingest(src, db)
    assert counts(rec) == {"added": 2} and not rec.counts.failures
    assert set(stored(db, embedder)) == {file_id(src / "notes/a.txt"), file_id(src / "records.jsonl") + "#notes/a.txt"}


def test_full_sync_deletes_what_is_gone_whichever_run_wrote_it(tmp_path, embedder):
    src = write_files(tmp_path / "corpus", FILES)
    other = write_files(tmp_path / "other", {"notes/a.txt": "Another a.txt about comets and their tails.\n"})
    db = tmp_path / "db"
    ingest(src, db)
    ingest(other, db)
    ingest(src / "notes", db)  # the notes are last written by a subfolder run
    (src / "notes/b.txt").unlink()
    # a full sync of a subfolder touches only the subfolder
    assert counts(ingest(src / "notes", db, sync="full")) == {"unchanged": 1, "deleted": 1}
    (src / "c.md").unlink()
    assert counts(ingest(src, db, sync="full")) == {"unchanged": 1, "deleted": 1}
    assert set(stored(db, embedder)) == {file_id(src / "notes/a.txt"), file_id(other / "notes/a.txt")}
    # a glob's full sync covers the files it matches, not the rest of its base folder
    write_files(src, {"d.md": "# Comets\n\nA comet's tail points away from the Sun.\n"})
    ingest(src, db)
    os.unlink(src / "notes/a.txt")
    assert counts(ingest(str(src / "*.md"), db, sync="full")) == {"unchanged": 1}
    assert file_id(src / "notes/a.txt") in stored(db, embedder)


def test_rows_with_ids_of_an_older_grainline_are_replaced_by_a_full_sync_only(tmp_path, embedder):
    src = write_files(tmp_path / "corpus", {"a.txt": FILES["notes/a.txt"]})
    root = os.path.realpath(src)
    db = tmp_path / "db"
    # What an older grainline stored: the path relative to the root, with that root.
    old = Document("a.txt", FILES["notes/a.txt"], (src / "a.txt").as_uri(), "Kafka incident")
    run_ingest(IngestSettings(source=root, db=str(db), embedder=CPU, strategies=["paragraph"], export_parquet=False,
                              maintenance=MaintenanceSettings(enabled=False)), documents=[old])
    rec = ingest(src, db)
    assert counts(rec) == {"added": 1} and rec.counts.chunks_embedded == 0  # the old vectors are reused
    assert set(stored(db, embedder)) == {"a.txt", file_id(src / "a.txt")}  # both, until a full sync
    assert counts(ingest(src, db, sync="full")) == {"unchanged": 1, "deleted": 1}
    assert set(stored(db, embedder)) == {file_id(src / "a.txt")}
