"""Damaged indexes, data files and manifests of a real table, found, repaired and read
around, through the command line as a user runs it.

One real ingestion of the demo corpus (sentence and paragraph chunks: 877 rows, so
maintenance builds every index grainline keeps: IVF_PQ, full-text, two BTREE) is built
once per module; each case copies it and damages one file one way: cut short, zeroed,
deleted, or replaced by the same file of another table's index. ``grainline check``
names it in one line and exits 1, ``grainline check --repair`` rebuilds the index, and
a search answers the same hits as before the damage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grainline import DEMO_CORPUS
from grainline.storage.chunks import connect
from grainline.storage.ledger import Ledger

pytestmark = pytest.mark.slow

WAYS = ("truncate", "zero", "delete", "replace")
# The index of each kind, and a search whose answer goes through it.
QUERIES = {
    "vector": dict(query="how do bees share directions", strategy="paragraph", method="dense"),
    "full-text": dict(query="bee dances", strategy="sentence", method="bm25"),
    # Small-to-big finds each hit's paragraph by doc_id: through the doc_id index.
    "scalar": dict(query="glacier ice", strategy="sentence", method="bm25", returns="paragraph"),
}
# A replacement that leaves the index whole: the full-text index's metadata.lance of
# another table built with the same settings differs only in the order of its keys.
EQUIVALENT = {("text_idx", "metadata.lance", "replace")}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m grainline.cli ARGS`` as a user runs it (LanceDB's log level unset, as
    in a user's shell)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANCEDB_LOG", "LANCE_LOG")}
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**env, "PREFECT_HOME": str(cwd / "prefect")}, timeout=300)


def chunk_table(db: Path) -> str:
    return next(n for n in connect(str(db)).table_names() if n.startswith("chunks_"))


def search(db: Path, kind: str) -> list[tuple[str, float]]:
    """The hits of ``kind``'s query, as (chunk id, score), through the Python API."""
    from grainline.embedding import EmbedderSettings
    from grainline.search import search as do_search

    q = QUERIES[kind]
    hits = do_search(q["query"], str(db), q["strategy"], 5, EmbedderSettings(device="cpu"), method=q["method"],
                     returns=q.get("returns"))
    return [(h.row["chunk_id"], round(h.score, 4)) for h in hits]


def cli_search(db: Path, kind: str) -> subprocess.CompletedProcess:
    q = QUERIES[kind]
    extra = ["--return", q["returns"]] if "returns" in q else []
    return cli("search", q["query"], "--strategy", q["strategy"], "--method", q["method"], "-k", "5", "--json",
               "--db", str(db), *extra, cwd=db.parent)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The demo corpus (a FIFO beside its files) ingested with sentence and paragraph
    chunks; another table's indexes to take files from; the hits before any damage."""
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, run_ingest
    from grainline.storage.maintenance import maintain

    base = tmp_path_factory.mktemp("repair")
    src = base / "corpus"
    shutil.copytree(DEMO_CORPUS, src)
    os.mkfifo(src / "science" / "pipe.md")
    db = base / "db"
    rec = run_ingest(IngestSettings(source=str(src), db=str(db), strategies=["sentence", "paragraph"],
                                    embedder=EmbedderSettings(device="cpu")))
    assert rec.status == "completed", rec.error
    name = rec.table_name
    # Another table, another set of rows: its index files are the same files of other
    # indexes. Without the rows holding the smallest and largest doc_id and content_hash,
    # so its BTREE page lookups record narrower ranges than this table's (a lookup with
    # the same range would be the same index, no damage at all).
    import pyarrow as pa
    import pyarrow.compute as pc

    everything = connect(str(db)).open_table(name).to_arrow()
    keep = None
    for col in ("doc_id", "content_hash"):
        ends = pa.array([pc.min(everything[col]).as_py(), pc.max(everything[col]).as_py()])
        out = pc.invert(pc.is_in(everything[col], value_set=ends))
        keep = out if keep is None else pc.and_(keep, out)
    rows = everything.filter(keep).slice(100, 320)
    other = base / "other"
    maintain(connect(str(other)).create_table(name, rows))
    before = {kind: search(db, kind) for kind in QUERIES}
    assert all(before.values()), before
    return db, other, name, rec, before


def index_files(db: Path, name: str) -> list[tuple[str, str, str]]:
    """(index name, kind, file name) for every file of every index of the table."""
    from grainline.storage.index_check import index_kind

    ds = connect(str(db)).open_table(name).to_lance()
    out = []
    for d in ds.describe_indices():
        for seg in d.segments:
            for f in sorted((db / f"{name}.lance" / "_indices" / seg.uuid).iterdir()):
                out.append((d.name, index_kind(d), f.name))
    return out


@pytest.fixture
def copy(built, tmp_path):
    db, other, name, rec, before = built
    shutil.copytree(db, tmp_path / "db")
    return tmp_path / "db", other, name, before


def damage(db: Path, name: str, index: str, file: str, way: str, other: Path) -> Path:
    """Damage ``file`` of ``index`` one ``way``; returns its path."""
    ds = connect(str(db)).open_table(name).to_lance()
    uuid = next(d for d in ds.describe_indices() if d.name == index).segments[0].uuid
    path = db / f"{name}.lance" / "_indices" / uuid / file
    size, was = path.stat().st_size, path.read_bytes()
    if way == "truncate":
        os.truncate(path, size // 2)
    elif way == "zero":
        path.write_bytes(b"\0" * size)
    elif way == "delete":
        path.unlink()
    else:
        theirs = [p for p in sorted((other / f"{name}.lance" / "_indices").glob(f"*/{file}"))
                  if p.read_bytes() != path.read_bytes()]
        assert theirs, f"another table has no different {file}"
        # One of the same size first: no size check finds it, only the index's use does.
        theirs.sort(key=lambda p: p.stat().st_size != size)
        shutil.copyfile(theirs[0], path)
    assert not path.exists() or path.read_bytes() != was, f"{way} left {path} as it was"
    return path


def test_every_index_file_is_found_and_the_demo_table_has_every_index_kind(built):
    db, _, name, rec, _ = built
    kinds = {kind for _, kind, _ in index_files(db, name)}
    assert kinds == {"vector", "full-text", "scalar"}
    # The FIFO beside the documents: counted as skipped, with what it is.
    assert rec.counts.docs_skipped == 1
    (skip,) = rec.counts.skipped
    assert skip["where"].endswith("pipe.md") and "FIFO" in skip["reason"]


CASES = [(ix, f, way) for ix, f in [
    ("vector_ivfpq_rows_877", "index.idx"), ("vector_ivfpq_rows_877", "auxiliary.idx"),
    ("text_idx", "metadata.lance"), ("text_idx", "part_0_docs.lance"), ("text_idx", "part_0_invert.lance"),
    ("text_idx", "part_0_tokens.lance"),
    ("doc_id_idx", "page_data.lance"), ("doc_id_idx", "page_lookup.lance"),
    ("content_hash_idx", "page_data.lance"), ("content_hash_idx", "page_lookup.lance"),
] for way in WAYS]


def test_the_cases_cover_every_file_of_every_index(built):
    db, _, name, _, _ = built
    assert sorted({(ix, f) for ix, _, f in index_files(db, name)}) == sorted({(ix, f) for ix, f, _ in CASES})


@pytest.mark.parametrize("index,file,way", CASES, ids=[f"{i}-{f}-{w}" for i, f, w in CASES])
def test_a_damaged_index_file_is_named_repaired_and_search_answers_as_before(copy, index, file, way):
    db, other, name, before = copy
    kind = next(k for ix, k, f in index_files(db, name) if ix == index and f == file)
    rows = connect(str(db)).open_table(name).count_rows()
    damage(db, name, index, file, way, other)
    found = cli("check", "--db", str(db), cwd=db.parent)
    assert "Traceback" not in found.stderr and "WARN" not in found.stderr, found.stderr
    query_kind = "scalar" if kind == "scalar" else kind
    if (index, file, way) in EQUIVALENT:
        assert found.returncode == 0, found.stdout
        assert search(db, query_kind) == before[query_kind]
        return
    assert found.returncode == 1, found.stdout
    lines = [ln for ln in found.stdout.splitlines() if ln.startswith("index:")]
    assert len(lines) == 1, found.stdout
    assert f"table {name}" in lines[0] and f"index {index} ({kind})" in lines[0] and "_indices/" in lines[0]
    if way != "replace":  # a file of another size is named by its folder when Lance names no file
        assert file in lines[0] or way == "delete" and file == "metadata.lance", lines[0]

    fixed = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    out = fixed.stdout.splitlines()
    assert out[0] == lines[0]
    assert any(ln.startswith(f"repaired: table {name}: index {index} ({kind}) rebuilt") for ln in out), out
    assert out[-1].startswith("ok: ") and f" {rows} chunk rows," in out[-1], out[-1]
    assert connect(str(db)).open_table(name).count_rows() == rows
    assert search(db, query_kind) == before[query_kind]
    repairs = [r for r in Ledger(str(db)).runs("repair") if r["status"] == "completed"]
    assert [ix["index"] for ix in repairs[-1]["parameters"]["indexes"]] == [index]


@pytest.mark.parametrize("index,kind", [("vector_ivfpq_rows_877", "vector"), ("text_idx", "full-text"),
                                        ("doc_id_idx", "scalar")])
def test_search_does_without_a_damaged_index_in_one_warning_line(copy, index, kind):
    db, other, name, before = copy
    files = {"vector": "index.idx", "full-text": "part_0_invert.lance", "scalar": "page_data.lance"}
    damage(db, name, index, files[kind], "truncate", other)
    got = cli_search(db, kind)
    assert got.returncode == 0, got.stderr
    assert "Traceback" not in got.stderr and "WARN" not in got.stderr, got.stderr
    warnings = [ln for ln in got.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and f"index {index}" in warnings[0] and "grainline check --repair" in warnings[0], got.stderr
    hits = [(h["chunk_id"], round(h["score"], 4)) for h in map(json.loads, got.stdout.splitlines())]
    if kind == "full-text":
        assert hits and "dense search instead" in warnings[0]  # BM25's question, answered densely
    else:
        assert [c for c, _ in hits] == [c for c, _ in before[kind]]


def test_a_repair_on_a_healthy_table_changes_nothing_and_says_so(copy):
    db, _, name, _ = copy
    version = connect(str(db)).open_table(name).version
    runs = len(Ledger(str(db)).runs())
    got = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert got.returncode == 0, got.stdout
    (line,) = got.stdout.splitlines()
    assert line.startswith("ok: ") and line.endswith("nothing to repair: nothing changed")
    assert connect(str(db)).open_table(name).version == version and len(Ledger(str(db)).runs()) == runs


def test_a_repair_killed_after_the_drop_is_reported_and_finished_by_the_next(copy):
    """What a SIGKILL between dropping and building leaves: the repair run 'running' in
    the ledger, its index gone."""
    from grainline.storage.ledger import RunRecord

    db, _, name, before = copy
    Ledger(str(db)).write(RunRecord(run_id="repair-killed", flow="repair", source="", table_name=name, model_id="",
                                    parameters={"indexes": [{"index": "text_idx", "kind": "full-text", "column": "text"}]}))
    connect(str(db)).open_table(name).drop_index("text_idx")
    found = cli("check", "--db", str(db), cwd=db.parent)
    assert found.returncode == 1
    assert any("index text_idx (full-text)" in ln and "repair run repair-killed, which did not finish" in ln
               for ln in found.stdout.splitlines()), found.stdout
    fixed = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert search(db, "full-text") == before["full-text"]
    assert next(r for r in Ledger(str(db)).runs("repair") if r["run_id"] == "repair-killed")["status"] == "interrupted"


def test_maintain_repairs_a_damaged_index_first(copy):
    db, other, name, before = copy
    damage(db, name, "text_idx", "metadata.lance", "truncate", other)
    got = cli("maintain", "--db", str(db), "--table", name, cwd=db.parent)
    assert got.returncode == 0, got.stdout + got.stderr
    assert any(ln.startswith(f"repaired: table {name}: index text_idx") for ln in got.stdout.splitlines()), got.stdout
    assert cli("check", "--db", str(db), cwd=db.parent).returncode == 0
    assert search(db, "full-text") == before["full-text"]


@pytest.mark.parametrize("way", ["truncate", "delete"])
def test_a_damaged_data_file_is_named_with_its_documents_and_the_version_to_restore(copy, way):
    db, _, name, _ = copy
    data = sorted((db / f"{name}.lance" / "data").glob("*.lance"))[-1]
    ds = connect(str(db)).open_table(name).to_lance()
    (frag,) = [f for f in ds.get_fragments() if any(df.path == data.name for df in f.metadata.files)]
    held = set(frag.to_table(columns=["doc_id"]).column("doc_id").to_pylist())
    if way == "truncate":
        os.truncate(data, data.stat().st_size // 2)
    else:  # its documents come from the doc_id index then
        data.unlink()
    found = cli("check", "--db", str(db), cwd=db.parent)
    assert found.returncode == 1 and any(data.name in ln for ln in found.stdout.splitlines()), found.stdout
    got = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert got.returncode == 1
    (line,) = [ln for ln in got.stdout.splitlines() if ln.startswith("not repairable:")]
    assert data.name in line and f"it held {len(held)} documents (" in line, line
    assert "grainline restore" in line and f"--table {name}" in line, line
    for kind in ("vector", "full-text"):
        s = cli_search(db, kind)
        assert s.returncode == 1 and "Traceback" not in s.stderr, s.stderr
        (err,) = s.stderr.strip().splitlines()
        assert err.startswith(f"error: table {name} is damaged") and "grainline check" in err
        if way == "delete":  # Lance names the missing file: by its place in the table's folder
            assert f"Not found: {name}.lance/data/{data.name}" in err, err


def test_a_lance_error_is_one_short_line_naming_the_file_in_the_table():
    from grainline.storage.damage import damage_line

    assert damage_line(RuntimeError("lance error: Not found: tmp/x/db/t.lance/data/f.lance, /rustc/ab/core/f.rs:250:5\n"
                                    "more")) == "lance error: Not found: t.lance/data/f.lance more"
    assert damage_line(OSError("open '/tmp/x/db/t.lance/_indices/u/tokens.lance'")) == "open 't.lance/_indices/u/tokens.lance'"


@pytest.mark.parametrize("way", ["truncate", "zero"])
def test_a_damaged_manifest_is_one_line_and_the_repair_sets_it_aside(copy, way):
    db, _, name, before = copy
    newest = sorted((db / f"{name}.lance" / "_versions").glob("*.manifest"))[0]  # u64::MAX - version: newest first
    size = newest.stat().st_size
    if way == "truncate":
        os.truncate(newest, 50)
    else:
        newest.write_bytes(b"\0" * size)
    found = cli("check", "--db", str(db), cwd=db.parent)
    assert found.returncode == 1 and "Traceback" not in found.stderr, found.stderr
    (line,) = [ln for ln in found.stdout.splitlines() if ln.startswith("manifest:")]
    assert newest.name in line and "restore" in line
    s = cli_search(db, "full-text")
    assert s.returncode == 1 and "Traceback" not in s.stderr
    (err,) = s.stderr.strip().splitlines()
    assert newest.name in err
    fixed = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert "Traceback" not in fixed.stderr
    assert any(ln.startswith(f"repaired: table {name}: manifest of version") for ln in fixed.stdout.splitlines()), fixed.stdout
    # The Parquet export named the lost version: redone, so the repair leaves nothing behind.
    assert any("Parquet export" in ln and "redone" in ln for ln in fixed.stdout.splitlines()), fixed.stdout
    assert fixed.returncode == 0 and fixed.stdout.splitlines()[-1].startswith("ok: "), fixed.stdout
    assert (db / f"{name}.lance" / "_damaged" / newest.name).exists()
    # The newest version was maintenance's last step (the full-text index, which the next
    # ingestion's maintenance builds again): every row is in the version before it.
    assert search(db, "vector") == before["vector"]


def test_lance_s_own_warnings_show_only_with_verbose(copy):
    """The user's terminal: LanceDB's Rust warnings about the damaged index are kept out
    unless ``grainline --verbose`` (the quieting is shown to matter: they are there then)."""
    db, other, name, before = copy
    damage(db, name, "text_idx", "metadata.lance", "truncate", other)
    quiet = cli_search(db, "full-text")
    loud = cli("--verbose", "search", QUERIES["full-text"]["query"], "--strategy", "sentence", "--method", "bm25", "-k", "5",
               "--json", "--db", str(db), cwd=db.parent)
    for got in (quiet, loud):
        assert got.returncode == 0 and "Traceback" not in got.stderr, got.stderr
        assert len([ln for ln in got.stderr.splitlines() if ln.startswith("warning: index text_idx")]) == 1, got.stderr
        assert got.stdout == quiet.stdout
    # Quiet: the one warning line is all of stderr, and it names the damaged file.
    (line,) = quiet.stderr.strip().splitlines()
    assert "WARN" not in line and f"{name}.lance/_indices/" in line and "answered with dense search instead" in line, line
    assert any(" WARN " in ln and "lancedb" in ln for ln in loud.stderr.splitlines()), loud.stderr


def _queryset(db: Path, name: str) -> tuple[Path, str]:
    """A two-question query set on the healthy table (made before any damage), and a
    document it asks about."""
    docs = sorted({r["doc_id"] for r in connect(str(db)).open_table(name).search().select(["doc_id"]).limit(None).to_list()})
    bees = next(d for d in docs if d.endswith("honeybee-dance.md"))
    ice = next(d for d in docs if d.endswith("glaciers.md"))
    csv = db.parent / "q.csv"
    csv.write_text(f"question,doc_id\nhow do bees share directions,{bees}\nwhat moves a glacier,{ice}\n", encoding="utf-8")
    out = db.parent / "q.jsonl"
    got = cli("queries", "import", str(csv), "--db", str(db), "--out", str(out), cwd=db.parent)
    assert got.returncode == 0, got.stdout + got.stderr
    return out, bees


def _one_error_line(got: subprocess.CompletedProcess) -> str:
    assert got.returncode == 1 and "Traceback" not in got.stderr + got.stdout, got.stdout + got.stderr
    errors = [ln for ln in (got.stdout + got.stderr).splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, got.stdout + got.stderr
    return errors[0]


def test_related_classify_and_eval_on_a_damaged_table_say_one_line(copy):
    db, other, name, _ = copy
    queries, doc = _queryset(db, name)
    # A damaged full-text index: eval refuses BM25 in one line, does dense without it.
    damage(db, name, "text_idx", "part_0_invert.lance", "truncate", other)
    err = _one_error_line(cli("eval", "--queries", str(queries), "--db", str(db), "--method", "bm25",
                              "--strategy", "paragraph", "--reports", str(db.parent / "r"), cwd=db.parent))
    assert "index text_idx" in err and "BM25 needs it" in err and "grainline check --repair" in err
    dense = cli("eval", "--queries", str(queries), "--db", str(db), "--method", "dense", "--strategy", "paragraph",
                "--reports", str(db.parent / "r"), cwd=db.parent)
    assert dense.returncode == 0 and "Traceback" not in dense.stderr, dense.stdout + dense.stderr
    assert "2 queries scored" in dense.stdout, dense.stdout
    assert [ln for ln in dense.stderr.splitlines() if ln.startswith("warning: index text_idx")], dense.stderr
    # A damaged data file: every reader is one line naming the table and the file or the damage.
    data = sorted((db / f"{name}.lance" / "data").glob("*.lance"))[-1]
    os.truncate(data, data.stat().st_size // 2)
    for args in (["related", doc, "--db", str(db), "--table", name],
                 ["classify", "--db", str(db), "--table", name, "--label-field", "topic"],
                 ["eval", "--queries", str(queries), "--db", str(db), "--method", "dense", "--strategy", "paragraph",
                  "--reports", str(db.parent / "r")]):
        err = _one_error_line(cli(*args, cwd=db.parent))
        assert err.startswith(f"error: table {name} is damaged"), (args[0], err)
        assert "grainline check" in err and (args[0] != "eval" or data.name in err), (args[0], err)


def test_a_repair_killed_by_sigkill_while_it_waits_leaves_the_damage_reported_and_the_next_repair_finishes(copy):
    """A real SIGKILL of ``check --repair``: it is killed while it waits for the table's
    write lock (held here, as a running ingestion would), so the kill lands at a known
    point; nothing is half done, the next check names the same damage, the next repair
    mends it."""
    import signal
    import time

    from grainline.storage.locks import TableLock

    db, other, name, before = copy
    damage(db, name, "text_idx", "part_0_docs.lance", "truncate", other)
    first = cli("check", "--db", str(db), cwd=db.parent)
    assert first.returncode == 1
    env = {k: v for k, v in os.environ.items() if k not in ("LANCEDB_LOG", "LANCE_LOG")}
    with TableLock(str(db), name, 60):
        proc = subprocess.Popen([sys.executable, "-m", "grainline.cli", "check", "--repair", "--db", str(db)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=db.parent,
                                env={**env, "PREFECT_HOME": str(db.parent / "prefect")})
        deadline, seen = time.monotonic() + 180, ""
        while "waiting for the write lock" not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, seen + proc.stdout.read()
            seen += proc.stderr.readline()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    again = cli("check", "--db", str(db), cwd=db.parent)
    assert again.returncode == 1 and again.stdout == first.stdout, again.stdout
    fixed = cli("check", "--repair", "--db", str(db), cwd=db.parent)
    assert fixed.returncode == 0 and fixed.stdout.splitlines()[-1].startswith("ok: "), fixed.stdout + fixed.stderr
    assert search(db, "full-text") == before["full-text"]


def test_a_damaged_data_file_restored_and_ingested_again_leaves_the_table_whole(built, tmp_path):
    """What ``check --repair`` tells a user with a damaged data file, done as told:
    restore the version it names, ingest the source again; the older versions that
    still name the damaged file are then set aside by the next repair, and the table
    holds every row again."""
    import re

    db0, _, name, rec, before = built
    db = tmp_path / "db"
    shutil.copytree(db0, db)
    rows = connect(str(db)).open_table(name).count_rows()
    data = sorted((db / f"{name}.lance" / "data").glob("*.lance"))[-1]
    os.truncate(data, data.stat().st_size // 2)
    told = cli("check", "--repair", "--db", str(db), cwd=tmp_path)
    assert told.returncode == 1, told.stdout
    m = re.search(r"grainline restore (\d+) --db (\S+) --table (\S+), then ingest", told.stdout)
    assert m and m.group(3) == name, told.stdout
    restored = cli("restore", m.group(1), "--db", m.group(2), "--table", name, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    ingested = cli("ingest", rec.source, "--strategy", "sentence,paragraph", "--db", str(db), cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert any("skipped" in ln and "pipe.md" in ln and "FIFO" in ln for ln in ingested.stdout.splitlines()), ingested.stdout
    assert connect(str(db)).open_table(name).count_rows() == rows
    # The current version is whole; the versions before the restore still name the file.
    found = cli("check", "--db", str(db), cwd=tmp_path)
    assert found.returncode == 1, found.stdout
    (line,) = found.stdout.splitlines()
    assert line.startswith(f"history: table {name}: ") and data.name in line and "not the current one" in line, line
    fixed = cli("check", "--repair", "--db", str(db), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert any(ln.startswith(f"repaired: table {name}: damaged data file {data.name} set aside")
               for ln in fixed.stdout.splitlines()), fixed.stdout
    assert (db / f"{name}.lance" / "_damaged" / "data" / data.name).exists() and not data.exists()
    assert cli("check", "--db", str(db), cwd=tmp_path).returncode == 0
    assert search(db, "full-text") == before["full-text"]


def test_the_python_api_warns_for_a_damaged_index_and_raises_one_line_for_a_damaged_data_file(copy):
    from grainline import api
    from grainline.storage import damage as dmg

    db, other, name, before = copy
    damage(db, name, "vector_ivfpq_rows_877", "index.idx", "zero", other)
    dmg._said.clear()  # said once per process: this test's own table
    q = QUERIES["vector"]
    with pytest.warns(dmg.IndexDamagedWarning, match="index vector_ivfpq_rows_877 .* searched exactly instead"):
        hits = api.search(q["query"], str(db), strategy=q["strategy"], k=5, method="dense", device="cpu")
    assert [h.row["chunk_id"] for h in hits] == [c for c, _ in before["vector"]]
    data = sorted((db / f"{name}.lance" / "data").glob("*.lance"))[-1]
    os.truncate(data, data.stat().st_size // 2)
    with pytest.raises(dmg.TableDamaged) as err:
        api.search(q["query"], str(db), strategy=q["strategy"], k=5, method="dense", device="cpu")
    assert "\n" not in str(err.value) and f"table {name} is damaged" in str(err.value)
