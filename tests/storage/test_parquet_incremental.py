"""The Parquet export rewrites only what changed: a file per (segment of a lance
fragment, strategy), the unchanged ones kept (hard-linked locally, so their inode and
mtime stay), the changed and new ones written, the gone ones deleted; and whatever
came before (no export, an old-format one, one damaged by hand, a restored or
compacted table), the export read back equals the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from grainline.storage.export_segments import SEGMENT_ROWS
from grainline.storage.parquet import DUCKDB_VIEW, MARKER, export_table, exported_files, exported_version, read_export
from grainline.storage.schema import chunks_schema
from tests.conftest import write_files

DIM = 4
STRATEGIES = ("paragraph", "sentence")


def chunk_rows(start: int, n: int, tag: str = "", dim: int = DIM) -> pa.Table:
    """``n`` rows of the chunks schema, chunk ids ``c{start}``..., strategies alternating."""
    schema = chunks_schema(dim)
    rng = np.random.default_rng(start)
    cols = {}
    for f in schema:
        if f.name == "vector":
            cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, dtype=np.float32)), dim)
        elif f.name == "chunk_id":
            cols[f.name] = pa.array([f"c{i:07d}" for i in range(start, start + n)])
        elif f.name == "doc_id":
            cols[f.name] = pa.array([f"d{i // 10}" for i in range(start, start + n)])
        elif f.name == "strategy":
            cols[f.name] = pa.array([STRATEGIES[i % 2] for i in range(start, start + n)])
        elif f.name == "text":
            cols[f.name] = pa.array([f"{tag}text {i}" for i in range(start, start + n)])
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([f.name] * n)
        elif pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array([0] * n, pa.int64()).cast(f.type)
        elif pa.types.is_boolean(f.type):
            cols[f.name] = pa.array([False] * n)
        else:
            cols[f.name] = pa.array(range(start, start + n), pa.int64()).cast(f.type)
    return pa.table(cols, schema=schema)


def table_of(tmp_path: Path, *sizes: int):
    """A chunks table with a fragment per size (one append each)."""
    db = lancedb.connect(str(tmp_path / "db"))
    table, at = None, 0
    for n in sizes:
        if table is None:
            table = db.create_table("chunks", chunk_rows(at, n))
        else:
            table.add(chunk_rows(at, n))
        at += n
    return table


def same_rows(out: Path, table) -> None:
    """The export, read back by pyarrow and by DuckDB through its view, equals the table."""
    import duckdb

    want = table.to_arrow().select(["chunk_id", "strategy", "text", "vector"]).sort_by("chunk_id").to_pylist()
    got = read_export(str(out)).select(["chunk_id", "strategy", "text", "vector"]).sort_by("chunk_id").to_pylist()
    assert got == want
    con = duckdb.connect()
    con.execute((out / DUCKDB_VIEW).read_text())
    rows = con.sql('select chunk_id, strategy, text, vector from "chunks" order by chunk_id').fetchall()
    assert [dict(zip(("chunk_id", "strategy", "text", "vector"), (*r[:3], list(r[3])))) for r in rows] == want
    assert exported_version(str(out)) == table.version


def files_of(out: Path) -> dict[str, tuple[int, int]]:
    """Each Parquet file of the export: (inode, mtime in ns)."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*/*.parquet")}


def test_an_export_after_a_deletion_rewrites_only_that_fragment(tmp_path):
    table = table_of(tmp_path, 100, 100, 100)
    out = tmp_path / "export"
    first = export_table(table, str(out))
    assert (first.full, first.rows, first.rows_written, first.files_written, first.files_kept) == \
        ("no previous export", 300, 300, 6, 0)
    same_rows(out, table)
    before = files_of(out)
    assert sorted(exported_files(str(out))) == sorted(before)

    table.delete("chunk_id = 'c0000150'")  # in the second fragment
    again = export_table(table, str(out))
    assert (again.full, again.rows, again.rows_written, again.files_written, again.files_kept, again.files_deleted) == \
        (None, 299, 99, 2, 4, 2)
    after = files_of(out)
    kept = {f: v for f, v in after.items() if f in before}
    assert len(kept) == 4 and all(before[f] == v for f, v in kept.items())  # same inode, same mtime
    assert {f.split("/")[1][:11] for f in set(after) - set(before)} == {"frag-000001"}
    same_rows(out, table)

    # Nothing changed: nothing written (the caller skips this, the export is cheap anyway).
    assert export_table(table, str(out)).files_written == 0
    assert files_of(out) == after


def test_only_the_fragments_that_changed_have_their_rows_scanned(tmp_path):
    from grainline.storage.export_segments import live_segments, schema_fingerprint

    table = table_of(tmp_path, 100, 100, 100)
    out = tmp_path / "export"
    export_table(table, str(out))
    marker = json.loads((out / MARKER).read_text())
    assert sorted(marker["fragments"]) == ["0", "1", "2"]
    table.delete("chunk_id = 'c0000150'")  # its deletion file changes fragment 1's metadata
    fp = schema_fingerprint(table.schema)
    segments, fps = live_segments(table, fp, marker)
    # fragments 0 and 2 are taken from the marker unread; fragment 1 is scanned
    assert [(s.key, s.row_ids is None) for s in segments] == [((0, 0), True), ((1, 0), False), ((2, 0), True)]
    assert {k for k in fps if fps[k] != marker["fragments"][k]} == {"1"}
    # the same segments (fingerprints, rows) as a scan of every fragment gives
    whole, _ = live_segments(table, fp, None)
    assert [(s.key, s.fingerprint, s.rows) for s in segments] == [(s.key, s.fingerprint, s.rows) for s in whole]
    assert export_table(table, str(out)).rows_written == 99
    same_rows(out, table)
    # an export whose marker has no fragment hashes (an older grainline) scans them all
    marker = json.loads((out / MARKER).read_text())
    del marker["fragments"]
    assert all(s.row_ids is not None for s in live_segments(table, fp, marker)[0])


def test_a_change_in_a_big_fragment_rewrites_one_segment_of_it(tmp_path):
    n = 2 * SEGMENT_ROWS + 100
    table = table_of(tmp_path, n)
    out = tmp_path / "export"
    assert export_table(table, str(out)).files_written == 3 * len(STRATEGIES)
    table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(
        chunk_rows(SEGMENT_ROWS + 5, 3, tag="edited "))
    rep = export_table(table, str(out))
    # the edited rows' segment (less the 3 rows) and the new fragment of 3 rows
    assert rep.rows_written == SEGMENT_ROWS - 3 + 3
    assert (rep.files_written, rep.files_kept) == (2 * len(STRATEGIES), 2 * len(STRATEGIES))
    same_rows(out, table)


def test_an_old_format_export_is_replaced_whole(tmp_path):
    table = table_of(tmp_path, 50, 50)
    out = tmp_path / "export"
    (out / "strategy=paragraph").mkdir(parents=True)
    old = out / "strategy=paragraph" / "part-0.parquet"
    import pyarrow.parquet as pq

    pq.write_table(chunk_rows(0, 10).filter(pa.compute.equal(chunk_rows(0, 10)["strategy"], "paragraph")), old)
    (out / MARKER).write_text(json.dumps({"table": "chunks", "version": table.version - 1, "rows": 5}))
    rep = export_table(table, str(out))
    assert rep.full == "the previous export is of an older format" and rep.files_written == 4
    assert not old.exists()
    same_rows(out, table)
    assert json.loads((out / MARKER).read_text())["format"] == 2


def test_an_export_damaged_by_hand_is_mended(tmp_path):
    table = table_of(tmp_path, 40, 40)
    out = tmp_path / "export"
    export_table(table, str(out))
    # A file deleted by hand: its segment is written again, the others kept.
    gone = sorted(out.glob("strategy=sentence/frag-000001-*.parquet"))[0]
    gone.unlink()
    table.delete("chunk_id = 'c0000000'")
    rep = export_table(table, str(out))
    assert (rep.full, rep.files_written, rep.files_kept) == (None, 4, 0)
    same_rows(out, table)
    # The whole export deleted by hand: written whole.
    import shutil

    shutil.rmtree(out)
    table.delete("chunk_id = 'c0000001'")
    rep = export_table(table, str(out))
    assert rep.full == "no previous export" and rep.rows == 78
    same_rows(out, table)


def test_a_restored_table_with_other_deletions_of_as_many_rows_exports_its_own_rows(tmp_path):
    table = table_of(tmp_path, 30, 30)
    v = table.version
    table.delete("chunk_id = 'c0000003'")
    out = tmp_path / "export"
    export_table(table, str(out))
    table.restore(v)
    table.delete("chunk_id = 'c0000004'")  # as many live rows in that fragment, not the same ones
    rep = export_table(table, str(out))
    assert rep.files_written == len(STRATEGIES) and rep.files_kept == len(STRATEGIES)
    same_rows(out, table)


def test_a_new_column_rewrites_every_file(tmp_path):
    table = table_of(tmp_path, 20, 20)
    out = tmp_path / "export"
    export_table(table, str(out))
    table.add_columns({"extra": "cast(ordinal * 2 as bigint)"})
    rep = export_table(table, str(out))
    assert rep.full == "the table's columns changed" and rep.files_written == 4
    assert read_export(str(out)).column("extra").to_pylist() is not None
    same_rows(out, table)


def test_an_object_store_export_writes_new_files_then_the_marker_then_deletes(tmp_path, s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    from grainline.storage.parquet import filesystem

    table = table_of(tmp_path, 30, 30)
    uri = s3_server.uri("incremental/export")
    assert export_table(table, uri).files_written == 4
    table.delete("chunk_id = 'c0000040'")
    rep = export_table(table, uri)
    assert (rep.full, rep.files_written, rep.files_kept, rep.files_deleted) == (None, 2, 2, 2)
    assert exported_version(uri) == table.version
    fs, path = filesystem(uri)
    import pyarrow.fs as pafs

    present = sorted(i.path[len(path) + 1:] for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                     if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    assert present == exported_files(uri)  # the replaced files are gone
    with fs.open_input_stream(f"{path}/{DUCKDB_VIEW}") as f:
        view = f.read().decode()
    assert all(p in view for p in present) and "*/*.parquet" not in view
    want = table.to_arrow().select(["chunk_id", "text"]).sort_by("chunk_id")
    assert read_export(uri, columns=["chunk_id", "text"]).sort_by("chunk_id") == want


@pytest.fixture
def s3_server(tmp_path_factory):
    from tests.s3 import start_seaweed

    server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m grainline.cli ARGS`` as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "PREFECT_HOME": str(cwd / "prefect")}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_ingest_edit_delete_maintain_keep_the_export_equal_to_the_table_rewriting_only_what_changed(tmp_path, embedder):
    src = write_files(tmp_path / "src", {f"n{i}.txt": f"Note {i} about the harbour.\n\nBoats {i} leave at dawn." for i in range(4)})
    db = tmp_path / "db"
    common = ["--db", str(db), "--device", "cpu", "--no-progress", "-s", "paragraph", "-s", "sentence", "--batch-docs", "1"]
    cli("ingest", str(src), *common, "--no-maintain", cwd=tmp_path)
    name = embedder.identity.table_name
    table = lancedb.connect(str(db)).open_table(name)
    out = db / "parquet" / name
    same_rows_of(out, table)
    before = files_of(out)
    edited = str((src / "n2.txt").resolve())
    old_frags = {a >> 32 for a in table.search().select(["_rowaddr"]).where(f"doc_id = '{edited}'")
                 .limit(None).to_arrow()["_rowaddr"].to_pylist()}
    frags_before = {a >> 32 for a in table.search().select(["_rowaddr"]).limit(None).to_arrow()["_rowaddr"].to_pylist()}
    assert len(frags_before) > len(old_frags)  # one commit per document: other fragments to keep

    # (a) one file edited: only the files of its fragments, and of the new one, are new
    write_files(src, {"n2.txt": "Note 2, rewritten.\n\nThe ferry is late again."})
    cli("ingest", str(src), *common, "--no-maintain", cwd=tmp_path)
    table = lancedb.connect(str(db)).open_table(name)
    same_rows_of(out, table)
    after = files_of(out)
    for f in before.keys() & after.keys():
        assert before[f] == after[f], f  # a kept file: same inode and mtime
    new = set(after) - set(before)
    new_frags = {int(f.split("/")[1].split("-")[1]) for f in new}
    assert new and new_frags <= (old_frags | ({a >> 32 for a in table.search().select(["_rowaddr"]).limit(None)
                                               .to_arrow()["_rowaddr"].to_pylist()} - frags_before))
    kept = [f for f in after if int(f.split("/")[1].split("-")[1]) not in old_frags and f in before]
    assert kept and {int(f.split("/")[1].split("-")[1]) for f in kept} == frags_before - old_frags

    # (b) a document removed, --sync full: its rows leave the export
    (src / "n0.txt").unlink()
    cli("ingest", str(src), *common, "--no-maintain", "--sync", "full", cwd=tmp_path)
    table = lancedb.connect(str(db)).open_table(name)
    assert not any("n0.txt" in d for d in read_export(str(out), columns=["doc_id"])["doc_id"].to_pylist())
    same_rows_of(out, table)

    # (c) compacted by `grainline maintain`: the next run's export follows it
    cli("maintain", "--db", str(db), "--table", name, cwd=tmp_path)
    cli("ingest", str(src), *common, cwd=tmp_path)
    table = lancedb.connect(str(db)).open_table(name)
    same_rows_of(out, table)


def same_rows_of(out: Path, table) -> None:
    """:func:`same_rows` for a table of the model (its own view name and doc ids)."""
    import duckdb

    cols = ["chunk_id", "doc_id", "text", "vector"]
    want = table.to_arrow().select(cols).sort_by("chunk_id").to_pylist()
    assert read_export(str(out)).select(cols).sort_by("chunk_id").to_pylist() == want
    con = duckdb.connect()
    con.execute((out / DUCKDB_VIEW).read_text())
    rows = con.sql(f'select {", ".join(cols)} from "{table.name}" order by chunk_id').fetchall()
    assert [dict(zip(cols, (*r[:3], list(r[3])))) for r in rows] == want
    assert exported_version(str(out)) == table.version


def test_fingerprints_do_not_depend_on_how_the_scan_cuts_or_orders_its_batches(tmp_path):
    from grainline.storage.export_segments import _OutOfOrder, _scan, _segments_of, _segments_sorted, live_segments

    table = table_of(tmp_path, SEGMENT_ROWS + 10, 50)
    table.delete("ordinal % 7 = 0")
    want = [(s.key, s.fingerprint, s.row_ids.tolist()) for s in live_segments(table, "fp")[0]]
    assert [k for k, _, _ in want] == [(0, 0), (0, 1), (1, 0)]
    whole = _scan(table).read_all()
    for size in (1, 333, 100_000):
        got = _segments_of(whole.to_batches(max_chunksize=size), "fp", in_order=True)
        assert [(s.key, s.fingerprint, s.row_ids.tolist()) for s in got] == want
    # out of order: refused, and live_segments then sorts the scan whole, to the same
    shuffled = pa.Table.from_batches(list(reversed(whole.to_batches(max_chunksize=100))))
    with pytest.raises(_OutOfOrder):
        _segments_of(shuffled.to_batches(), "fp", in_order=True)
    assert [(s.key, s.fingerprint, s.row_ids.tolist()) for s in _segments_sorted(shuffled, "fp")] == want
