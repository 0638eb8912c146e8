"""grainline on a real S3-compatible server (SeaweedFS on loopback), through the CLI in
subprocesses whose environment carries the credentials and the endpoint: ingestion,
an unchanged re-run, an edit with ``--sync full``, the Parquet export on the store,
search, maintenance, restore, a SIGKILL mid-run and its re-run, two writers at once,
and ``grainline unlock``. Credentials never show up in output, ledger, export, lease
or the Prefect server's database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grainline.readers import file_id
from grainline.server import free_port, start_local_server
from grainline.storage.chunks import ChunkStore
from grainline.storage.lease import Lease, LeaseSettings, read_lease
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import default_export_dir, exported_version, read_export

from tests.journey import table_rows
from tests.s3 import S3Server, s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

# Short enough that a killed writer's lease lapses within the test; long enough that
# a loaded CI machine renews it in time (every TTL/3).
LEASE_TTL_S = 15
TABLE = "chunks_sentence_transformers_all_minilm_l6_v2_5076c604"
COLUMNS = ("chunk_id", "doc_id", "strategy", "text", "content_hash", "start", "end", "chunker_key")


def write_notes(root: Path, ids: range, extra: str = "") -> Path:
    """Small documents; a given id always gets the same text."""
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (root / f"note-{i:02d}.txt").write_text(
            f"Note {i}\n\nThe station logged {i} storms this season. Wind from the west brought rain on day {i}."
            f"\n\nHarbour {i} kept its boats in until the swell dropped.{extra}\n")
    return root


@pytest.fixture(scope="module")
def stack(s3_server, tmp_path_factory):  # noqa: F811
    """The S3 server plus one Prefect server for every CLI run of the module (as a team
    would run them; it also spares each run a temporary server)."""
    home = tmp_path_factory.mktemp("prefect-home")
    prefect = start_local_server(home)
    env = {**os.environ, **s3_server.env(), "PREFECT_API_URL": prefect.url, "PREFECT_HOME": str(home),
           "GRAINLINE_LEASE_TTL_S": str(LEASE_TTL_S)}
    try:
        yield s3_server, env, home
    finally:
        prefect.stop()
        assert prefect.process.poll() is not None


@pytest.fixture
def s3_env(stack, monkeypatch):
    """The test process reads the store with the same environment as the CLI."""
    server, env, _ = stack
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    return env


class Cli:
    """``python -m grainline.cli`` in its own process group, output kept in files."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.out = tempfile.TemporaryFile("w+")
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "grainline.cli", *args], env=env, stdout=self.out,
                                     stderr=self.err, stdin=subprocess.DEVNULL, text=True, start_new_session=True)

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def wait(self, timeout: float = 600) -> "Cli":
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"grainline {' '.join(self.proc.args[3:])} did not end within {timeout:.0f}s:\n{self.stderr()[-4000:]}")
        self.out.seek(0)
        self.stdout = self.out.read()
        return self

    def kill(self) -> bool:
        """SIGKILL the whole group (the CLI and anything it started); True if it ran."""
        alive = self.proc.poll() is None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        return alive


def cli(env: dict[str, str], *args: str, ok: bool = True, timeout: float = 600) -> Cli:
    run = Cli(list(args), env).wait(timeout)
    if ok:
        assert run.proc.returncode == 0, f"grainline {' '.join(args)} exited {run.proc.returncode}:\n{run.stderr()[-4000:]}"
    return run


def ingest(env: dict[str, str], src: Path, db: str, *extra: str) -> Cli:
    return cli(env, "ingest", str(src), "--db", db, "--strategy", "sentence,paragraph", "--no-progress", *extra)


def rows(db: str) -> dict[str, dict[str, Any]]:
    store = ChunkStore(db, TABLE, 384)
    out: dict[str, dict[str, Any]] = {}
    for b in store.scan([*COLUMNS, "run_id", "vector"]):
        for r in b.to_pylist():
            assert r["chunk_id"] not in out, f"duplicate chunk_id {r['chunk_id']}"
            out[r["chunk_id"]] = r
    return out


def assert_same_rows(got: dict[str, dict], ref: dict[str, dict]) -> None:
    assert got.keys() == ref.keys(), sorted(set(got) ^ set(ref))[:5]
    for cid, r in ref.items():
        assert {k: got[cid][k] for k in COLUMNS} == {k: r[k] for k in COLUMNS}, cid
        np.testing.assert_allclose(got[cid]["vector"], r["vector"], atol=1e-5)


def made_with(db: str) -> tuple[str, str]:
    """(backend, precision) the last ingestion run of ``db`` records its vectors came from."""
    p = Ledger(db).runs("ingest")[-1]["parameters"]
    return p["backend"]["chosen"], p["precision"]["chosen"]


def versions_on_store(db: str) -> int:
    """Committed versions of the chunks table, from the manifests on the store."""
    import obstore
    from obstore.store import from_url

    store = from_url(f"{db}/{TABLE}.lance")
    try:
        return sum(1 for batch in obstore.list(store, "_versions") for m in batch if m["path"].endswith(".manifest"))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def assert_no_secret(server: S3Server, *texts: str) -> None:
    for t in texts:
        assert server.secret_key not in t and server.access_key not in t


@pytest.fixture(scope="module")
def clean(stack, tmp_path_factory):
    """A clean run of the 12-note corpus into its own prefix, with the default (local)
    runner: the table every faulty or distributed run must end up with."""
    server, env, _ = stack
    src = write_notes(tmp_path_factory.mktemp("clean") / "src", range(12))
    db = server.uri("clean")
    ingest(env, src, db, "--batch-docs", "2")
    os.environ.update(server.env())
    try:
        ref = rows(db)
    finally:
        for k in server.env():
            os.environ.pop(k, None)
    assert {r["doc_id"] for r in ref.values()} == {file_id(src / f"note-{i:02d}.txt") for i in range(12)}
    return src, ref


def test_ingest_rerun_edit_sync_export_search_maintain_restore(stack, s3_env, tmp_path):
    server, env, home = stack
    db = server.uri("journey")
    src = write_notes(tmp_path / "src", range(4))
    outputs = []

    first = ingest(env, src, db)
    outputs += [first.stdout, first.stderr()]
    assert "4 added" in first.stdout, first.stdout
    v1 = ChunkStore(db, TABLE, 384).version()
    rows1 = rows(db)
    assert {r["doc_id"] for r in rows1.values()} == {file_id(src / f"note-{i:02d}.txt") for i in range(4)}
    # The export sits on the store beside the tables, holds the table's rows and version.
    export = default_export_dir(db, TABLE)
    assert export.startswith(f"s3://{server.bucket}/journey/parquet/")
    assert exported_version(export) == v1
    assert sorted(read_export(export).column("chunk_id").to_pylist()) == sorted(rows1)

    again = ingest(env, src, db)
    outputs += [again.stdout, again.stderr()]
    assert "4 unchanged" in again.stdout and "0 embedded" in again.stdout, again.stdout
    assert ChunkStore(db, TABLE, 384).version() == v1

    (src / "note-01.txt").write_text("Note 1\n\nA volcano erupted near the station and ash covered the harbour.\n")
    (src / "note-03.txt").unlink()
    synced = ingest(env, src, db, "--sync", "full")
    outputs += [synced.stdout, synced.stderr()]
    assert "1 updated, 2 unchanged, 1 deleted" in synced.stdout, synced.stdout
    rows2 = rows(db)
    docs2 = {r["doc_id"] for r in rows2.values()}
    edited = file_id(src / "note-01.txt")
    assert docs2 == {file_id(src / f"note-{i:02d}.txt") for i in range(3)}
    # Exactly that document was rewritten: the others' rows are the first run's.
    for cid, r in rows2.items():
        if r["doc_id"] != edited:
            assert cid in rows1 and r["run_id"] == rows1[cid]["run_id"]
    assert any("volcano" in r["text"] for r in rows2.values() if r["doc_id"] == edited)
    v2 = ChunkStore(db, TABLE, 384).version()
    assert exported_version(export) == v2
    assert sorted(read_export(export).column("chunk_id").to_pylist()) == sorted(rows2)

    hits = cli(env, "search", "volcano ash", "--db", db, "--strategy", "paragraph", "-k", "2", "--json")
    outputs += [hits.stdout, hits.stderr()]
    top = json.loads(hits.stdout.splitlines()[0])
    assert top["doc_id"] == edited and "volcano" in top["text"]

    maint = cli(env, "maintain", "--db", db, "--table", TABLE, "--no-index")
    outputs += [maint.stdout, maint.stderr()]
    assert f"table {TABLE}: {len(rows2)} rows" in maint.stdout, maint.stdout

    back = cli(env, "restore", str(v1), "--db", db, "--table", TABLE)
    outputs += [back.stdout, back.stderr()]
    assert f"version {v1} restored" in back.stdout, back.stdout
    restored = rows(db)
    assert {cid: r["text"] for cid, r in restored.items()} == {cid: r["text"] for cid, r in rows1.items()}

    ledger = cli(env, "runs", "--db", db)
    outputs += [ledger.stdout, ledger.stderr()]
    runs = Ledger(db).runs("ingest")
    assert [r["status"] for r in runs] == ["completed"] * 3
    # The credentials are nowhere: output, ledger, export marker, lease, Prefect's database.
    lease_obj = read_lease(db, TABLE)
    assert lease_obj is None  # released by every run
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(export)
    with fs.open_input_stream(f"{path}/_grainline_export.json") as f:
        marker = f.read().decode()
    prefect_db = b"".join(p.read_bytes() for p in home.glob("*.db*"))
    assert_no_secret(server, *outputs, json.dumps(runs, default=str), marker, prefect_db.decode("latin-1"))


def test_sigkill_mid_run_then_rerun_gives_the_clean_table(stack, s3_env, clean):
    server, env, _ = stack
    src, ref = clean
    db = server.uri("killed")
    args = ["ingest", str(src), "--db", db, "--strategy", "sentence,paragraph", "--no-progress", "--batch-docs", "1"]
    victim = Cli(args, env)
    # Killed after its second data commit (version 1 is the empty table), lease held.
    deadline = time.monotonic() + 300
    while versions_on_store(db) < 3 and victim.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    holder = read_lease(db, TABLE)
    assert victim.kill(), f"the run ended before it could be killed:\n{victim.stderr()[-3000:]}"
    killed_at = time.monotonic()
    assert holder is not None and holder.pid == victim.proc.pid
    assert 0 < ChunkStore(db, TABLE, 384).count() < len(ref), "killed before or after its writes"

    rerun = cli(env, *args)
    took = time.monotonic() - killed_at
    err = rerun.stderr()
    # The dead run's lease was taken over once it lapsed (or at once, if it had already).
    assert f"took over the write lease of table {TABLE} from pid {victim.proc.pid}" in err, err[-3000:]
    assert err.count("waiting for its write lease") <= 1
    assert "completed" in rerun.stdout
    assert_same_rows(rows(db), ref)
    statuses = {r["run_id"]: r["status"] for r in Ledger(db).runs("ingest")}
    assert sorted(statuses.values()) == ["completed", "interrupted"], statuses
    print(f"re-run after SIGKILL finished {took:.1f}s after the kill (lease TTL {LEASE_TTL_S}s)")


def test_two_writers_on_one_table_take_turns_through_the_lease(stack, s3_env, clean):
    server, env, _ = stack
    src, ref = clean
    db = server.uri("two-writers")
    # The whole folder, and a glob of two of its files: those two are in both sources.
    a, b = src, f"{src}/note-1*.txt"
    # This test holds the lease first, so both writers meet it at the same moment:
    # each says once that it waits, and whom for.
    gate = Lease(db, TABLE, 5, LeaseSettings(ttl_s=LEASE_TTL_S), run_id="test-gate").acquire()
    try:
        writers = [Cli(["ingest", str(src), "--db", db, "--strategy", "sentence,paragraph", "--no-progress",
                        "--batch-docs", "2"], env) for src in (a, b)]
        deadline = time.monotonic() + 300
        while not all("waiting for its write lease" in w.stderr() for w in writers):
            assert time.monotonic() < deadline and all(w.proc.poll() is None for w in writers), [w.stderr()[-2000:] for w in writers]
            time.sleep(0.2)
    finally:
        gate.release()
    for w in writers:
        w.wait()
        assert w.proc.returncode == 0, w.stderr()[-3000:]
        err = w.stderr()
        assert err.count("waiting for its write lease") == 1 and "run test-gate" in err
    assert_same_rows(rows(db), ref)
    runs = sorted(Ledger(db).runs("ingest"), key=lambda r: r["started"])
    assert [r["status"] for r in runs] == ["completed", "completed"]
    first, second = runs
    assert second["started"] >= first["finished"], "the two runs wrote at the same time"
    # Whichever went first, the second found the shared files stored and embedded nothing twice.
    assert first["docs_added"] + second["docs_added"] == 12 and second["docs_unchanged"] == 2, runs


def test_unlock_breaks_an_object_store_lease(stack, s3_env):
    server, env, _ = stack
    db = server.uri("unlock")
    held = Lease(db, "notes", 5, LeaseSettings(ttl_s=LEASE_TTL_S), run_id="run-stuck").acquire()
    try:
        out = cli(env, "unlock", "--db", db, "--table", "notes").stdout
        assert "broke the write lease" in out and "run run-stuck" in out, out
        assert read_lease(db, "notes") is None
        # The next writer gets the table at once.
        with Lease(db, "notes", 1, LeaseSettings(ttl_s=LEASE_TTL_S)) as nxt:
            assert nxt.held
        assert "no write lease is held" in cli(env, "unlock", "--db", db, "--table", "notes").stdout
    finally:
        held.release()


class DaskCluster:
    """A ``dask scheduler`` and ``dask worker`` processes, each in its own process group
    with its own working, temporary and cache folders: they share nothing on disk but
    the store (and the sources, which only the flow process reads)."""

    def __init__(self, root: Path, env: dict[str, str], n_workers: int = 2) -> None:
        from grainline.server import free_port

        self.root, self.port = root, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        exe = str(Path(sys.executable).with_name("dask"))
        self.scheduler = self._start("scheduler", [exe, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                   "--no-dashboard"], env)
        self.workers = [
            self._start(f"worker-{i}", [exe, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                        "--name", f"w{i}", "--memory-limit", "0"], env)
            for i in range(n_workers)
        ]

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        d = self.root / name
        (d / "tmp").mkdir(parents=True)
        (d / "cache").mkdir()
        args += ["--pid-file", str(d / "pid")] + (["--local-directory", str(d / "dask")] if "worker" in args else [])
        own = {**env, "TMPDIR": str(d / "tmp"), "GRAINLINE_CACHE_DIR": str(d / "cache"), "PREFECT_HOME": str(d / "prefect")}
        log = open(d / "log", "wb")
        return subprocess.Popen(args, env=own, cwd=d, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def wait_for_workers(self, n: int, timeout: float = 180) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def busy_worker(self, deadline: float) -> int | None:
        """The index of a worker that is running a task right now (its batch is lost
        with it), waiting for one until ``deadline``."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            while time.monotonic() < deadline:
                workers = client.scheduler_info()["workers"]
                for addr, keys in client.processing().items():
                    if keys and addr in workers:
                        return int(workers[addr]["name"].removeprefix("w"))
                time.sleep(0.05)
        return None

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            self.kill(p)


@pytest.fixture
def dask_cluster(stack, tmp_path):
    from tests.s3 import processes_under

    _, env, _ = stack
    cluster = DaskCluster(tmp_path / "dask", env)
    try:
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.stop()
        assert not processes_under(tmp_path / "dask"), "dask processes left behind"


def test_dask_workers_share_the_store_and_survive_losing_one(stack, s3_env, clean, dask_cluster):
    server, env, _ = stack
    src, ref = clean
    args = ["--strategy", "sentence,paragraph", "--no-progress", "--batch-docs", "2", "--runner",
            dask_cluster.address.replace("tcp://", "dask://")]
    db = server.uri("dask")
    cli(env, "ingest", str(src), "--db", db, *args)
    # The workers embedded with the backend and precision the writing process chose
    # (the clean run's, from the same cache): each has a cache of its own, and neither
    # timed the backends nor probed a precision into it (a worker choosing for itself
    # under its own load could choose another backend, and mix two in one table).
    assert made_with(db) == made_with(server.uri("clean"))
    for w in dask_cluster.root.glob("worker-*"):
        verdicts = [p.name for kind in ("backends", "precisions") for p in (w / "cache" / kind).glob("*.json")]
        assert not verdicts, f"{w.name} chose for itself: {verdicts}"
    assert_same_rows(rows(db), ref)

    # Again into a fresh prefix, losing one worker (SIGKILL, nanny and all) after the
    # first commits: its batches run again on the other one.
    db = server.uri("dask-kill")
    run = Cli(["ingest", str(src), "--db", db, *args], env)
    deadline = time.monotonic() + 300
    while versions_on_store(db) < 3 and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    busy = dask_cluster.busy_worker(deadline)
    assert busy is not None and run.proc.poll() is None, f"the run ended before a worker could be killed:\n{run.stderr()[-3000:]}"
    dask_cluster.kill(dask_cluster.workers[busy])
    run.wait()
    assert run.proc.returncode == 0, run.stderr()[-4000:]
    assert_same_rows(rows(db), ref)


def test_eval_on_a_spans_dataset_writes_its_results_to_the_store(stack, s3_env, tmp_path):
    from grainline.storage.chunks import connect

    from tests.evaluation.test_evaluate import write_spans_fixture

    server, env, _ = stack
    db = server.uri("eval")
    spans = write_spans_fixture(tmp_path / "spans")
    run = cli(env, "eval", "--dataset", f"spans:{spans}", "--db", db, "--strategy", "sentence,paragraph",
              "--method", "dense,bm25", "--reports", str(tmp_path / "reports"))
    assert "spans: 5 queries; best nDCG@10" in run.stdout, run.stdout[-2000:]
    results = connect(db).open_table("eval_results").to_arrow()
    # the two flat strategies and the small-to-big pair of them
    assert set(results.column("strategy").to_pylist()) == {"sentence", "paragraph", "sentence->paragraph"}
    assert set(results.column("method").to_pylist()) == {"dense", "bm25"}
    assert_no_secret(server, run.stdout, run.stderr(), json.dumps(Ledger(db).runs(), default=str))


# --- An object-store source: `grainline ingest s3://bucket/prefix` -----------------


def object_store(server: S3Server):
    """An obstore store of the test bucket, as the test puts and deletes objects."""
    from obstore.store import S3Store

    return S3Store(server.bucket, endpoint=server.endpoint, access_key_id=server.access_key,
                   secret_access_key=server.secret_key, region="us-east-1", client_options={"allow_http": True})


def note_text(i: int, extra: str = "") -> bytes:
    return (f"Note {i}\n\nThe lighthouse keeper counted {i} ships passing in the fog.{extra}\n\n"
            f"On day {i} the tide came in early.\n").encode()


def put_notes(store, prefix: str, ids: range) -> None:
    import obstore

    for i in ids:
        obstore.put(store, f"{prefix}/notes/note-{i:02d}.txt", note_text(i))


def last_run(db: str) -> dict[str, Any]:
    """The ledger's row of the latest ingestion of ``db`` (its counts are columns)."""
    return Ledger(db).runs("ingest")[-1]


def test_ingest_an_s3_prefix_downloads_only_changed_objects_and_syncs_deletions(stack, s3_env, tmp_path):
    """Objects under a prefix are ingested by the CLI like a folder's files (ids are
    their URIs, the same readers by suffix); a re-run downloads nothing (the listing's
    ETags equal the manifest's); an edited object, a new one and a deleted one make a
    ``--sync full`` read exactly the two changed objects and delete the third's rows."""
    import obstore

    server, env, _ = stack
    store = object_store(server)
    prefix = "src-journey"
    put_notes(store, prefix, range(4))
    obstore.put(store, f"{prefix}/guide.md", b"---\ntopic: tides\n---\n# Tides\n\nThe moon pulls the sea twice a day.\n")
    obstore.put(store, f"{prefix}/report.docx", b"PK\x03\x04 not a reader's")  # skipped and named
    obstore.put(store, f"{prefix}/.hidden/secret.txt", b"Hidden files are left out, as in a folder.\n")
    obstore.put(store, f"{prefix}-other/note.txt", b"Another prefix that merely starts the same.\n")
    source = f"s3://{server.bucket}/{prefix}"
    db = str(tmp_path / "db")
    uri = lambda rel: f"{source}/{rel}"  # noqa: E731
    outputs = []

    first = cli(env, "ingest", source, "--db", db, "--strategy", "sentence,paragraph", "--no-progress")
    outputs += [first.stdout, first.stderr()]
    assert "5 seen, 5 added" in first.stdout and "1 skipped" in first.stdout, first.stdout
    assert "files: 5 read, 0 unchanged" in first.stdout, first.stdout
    rows1 = table_rows(Path(db), TABLE)
    docs = {uri(f"notes/note-{i:02d}.txt") for i in range(4)} | {uri("guide.md")}
    assert {r["doc_id"] for r in rows1.values()} == docs
    assert any("moon pulls the sea" in r["text"] for r in rows1.values())
    assert [s["where"] for s in last_run(db)["skipped"]] == ["report.docx"]
    assert last_run(db)["source"] == source
    v1 = ChunkStore(db, TABLE, 384).version()

    again = cli(env, "ingest", source, "--db", db, "--strategy", "sentence,paragraph", "--no-progress")
    outputs += [again.stdout, again.stderr()]
    assert "files: 0 read, 5 unchanged by stat (not read)" in again.stdout, again.stdout
    assert "5 unchanged" in again.stdout and "0 embedded" in again.stdout, again.stdout
    c = last_run(db)
    assert (c["files_read"], c["files_unchanged"]) == (0, 5)  # no object body fetched
    assert ChunkStore(db, TABLE, 384).version() == v1

    obstore.put(store, f"{prefix}/notes/note-01.txt", note_text(1, " A whale surfaced beside the pier."))
    obstore.put(store, f"{prefix}/notes/note-07.txt", note_text(7))
    obstore.delete(store, f"{prefix}/notes/note-03.txt")
    dry = cli(env, "ingest", source, "--db", db, "--strategy", "sentence,paragraph", "--sync", "full", "--dry-run")
    assert f"would be added: 1  ({uri('notes/note-07.txt')})" in dry.stdout, dry.stdout
    assert f"would be updated: 1  ({uri('notes/note-01.txt')})" in dry.stdout, dry.stdout
    assert f"would be deleted: 1  ({uri('notes/note-03.txt')})" in dry.stdout, dry.stdout
    assert ChunkStore(db, TABLE, 384).version() == v1
    synced = cli(env, "ingest", source, "--db", db, "--strategy", "sentence,paragraph", "--no-progress", "--sync", "full")
    outputs += [synced.stdout, synced.stderr()]
    assert "1 added, 1 updated, 3 unchanged, 1 deleted" in synced.stdout, synced.stdout
    assert "files: 2 read, 3 unchanged by stat (not read)" in synced.stdout, synced.stdout
    rows2 = table_rows(Path(db), TABLE)
    assert {r["doc_id"] for r in rows2.values()} == docs - {uri("notes/note-03.txt")} | {uri("notes/note-07.txt")}
    assert any("whale" in r["text"] for r in rows2.values() if r["doc_id"] == uri("notes/note-01.txt"))
    # The untouched objects' rows are the first run's, not rewritten.
    for cid, r in rows2.items():
        if r["doc_id"] not in (uri("notes/note-01.txt"), uri("notes/note-07.txt")):
            assert cid in rows1 and r["run_id"] == rows1[cid]["run_id"]
    # The manifest now vouches for the new ETags: nothing is downloaded again.
    last = cli(env, "ingest", source, "--db", db, "--strategy", "sentence,paragraph", "--no-progress", "--sync", "full")
    assert "files: 0 read, 5 unchanged" in last.stdout and "0 deleted" in last.stdout, last.stdout
    assert_no_secret(server, *outputs)


def test_an_s3_source_with_wrong_credentials_or_no_endpoint_is_one_line(stack, s3_env, tmp_path):
    server, env, _ = stack
    source = f"s3://{server.bucket}/src-journey"
    db = str(tmp_path / "db")
    for bad, said in (({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "the secret key does not match"),
                      ({"AWS_ACCESS_KEY_ID": "AKNOTKNOWN"}, "the access key is not known"),
                      ({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}, "connection refused")):
        run = cli({**env, **bad}, "ingest", source, "--db", db, "--no-progress", ok=False, timeout=120)
        err = run.stderr()
        assert run.proc.returncode != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: source {source}: cannot list the objects: {said}"), err
        assert_no_secret(server, run.stdout, err)
    assert not Path(db).exists()  # refused before anything was created
    # Credentials in the URI are refused, and not echoed.
    run = cli(env, "ingest", f"s3://AKIAEXAMPLE:{server.secret_key}@{server.bucket}/src-journey", "--db", db, ok=False)
    assert run.proc.returncode == 2 and "s3://***@" in run.stderr() and server.secret_key not in run.stderr()
    # serve checks the source the same way, before any server starts.
    run = cli({**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "serve", "--source", source, "--db", db,
              "--port", str(free_port()), ok=False, timeout=120)
    assert run.proc.returncode == 2 and "the secret key does not match" in run.stderr(), run.stderr()


def test_serve_deploys_an_s3_source_as_given(stack, s3_env):
    """A scheduled ingestion of an object-store prefix: the deployment's settings keep
    the URI as it is (a local source is made absolute)."""
    from grainline.deployments.schedules import ScheduleSettings, build_deployments
    from grainline.ingest import IngestSettings

    server, _, _ = stack
    source = f"s3://{server.bucket}/src-journey"
    cfg = ScheduleSettings(ingest=IngestSettings(source=source, db="/tmp/grainline-db", sync="full"))
    (dep,) = build_deployments(cfg)
    assert dep.parameters["settings"]["source"] == source
    with pytest.raises(ValueError, match=r"s3://\*\*\*@"):
        IngestSettings(source=f"s3://AKIAEXAMPLE:secret@{server.bucket}/x")


def test_serve_runs_scheduled_ingestions_of_an_s3_prefix(stack, s3_env, tmp_path):
    """``grainline serve --source s3://bucket/prefix`` on the module's Prefect server:
    the deployment keeps the URI, and its runs (triggered through the API, executed
    by serve's own process) ingest the objects, then read only the edited one and,
    a full sync being the schedules' default, delete the rows of the one deleted."""
    import obstore
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.journey import deployment_names, stop_tree, wait_for

    server, env, _ = stack
    store = object_store(server)
    put_notes(store, "src-serve", range(3))
    source, db, log = f"s3://{server.bucket}/src-serve", tmp_path / "db", tmp_path / "serve.log"
    api = env["PREFECT_API_URL"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "grainline.cli", "serve", "--api-url", api, "--source", source, "--db", str(db),
         "-s", "paragraph", "--ingest-cron", "0 0 1 1 *"],
        env=env, cwd=tmp_path, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("the ingestion deployment", lambda: "scheduled-ingest" in deployment_names(api), log)
        with temporary_settings({PREFECT_API_URL: api}):
            run = run_deployment("grainline-ingest/scheduled-ingest", timeout=300)
            assert run.parameters["settings"]["source"] == source
            assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
            first = last_run(str(db))
            assert (first["source"], first["docs_added"], first["files_read"]) == (source, 3, 3), first
            rows1 = table_rows(db, TABLE)
            assert {r["doc_id"] for r in rows1.values()} == {f"{source}/notes/note-{i:02d}.txt" for i in range(3)}

            obstore.put(store, "src-serve/notes/note-00.txt", note_text(0, " A seal slept on the slipway."))
            obstore.delete(store, "src-serve/notes/note-02.txt")
            run = run_deployment("grainline-ingest/scheduled-ingest", timeout=300)
            assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
        c = last_run(str(db))
        assert (c["files_read"], c["files_unchanged"], c["docs_updated"], c["docs_deleted"]) == (1, 1, 1, 1), c
        rows2 = table_rows(db, TABLE)
        assert {r["doc_id"] for r in rows2.values()} == {f"{source}/notes/note-{i:02d}.txt" for i in range(2)}
        assert any("seal slept" in r["text"] for r in rows2.values())
        assert_no_secret(server, log.read_text(errors="replace"))
    finally:
        stop_tree(proc, signal.SIGTERM)


def test_an_object_gone_between_listing_and_download_is_a_counted_failure(stack, s3_env, monkeypatch):
    """Listed pages of two objects (so the listing goes on past the first page); the
    manifest's predicate, asked after the listing and before the download, deletes one
    object: that one is a failure with its reason, kept out of a full sync's deletions
    (its id on the failure), and the others are read."""
    import obstore

    from grainline.documents import Document, Failure, FileRead
    from grainline.readers import object_store as objects
    from grainline.readers import open_source

    server, _, _ = stack
    store = object_store(server)
    put_notes(store, "src-vanish", range(5))
    monkeypatch.setattr(objects, "LIST_PAGE", 2)
    source = f"s3://{server.bucket}/src-vanish"
    victim = f"{source}/notes/note-02.txt"

    def unchanged(fid, stat):
        assert stat.etag
        if fid == victim:
            obstore.delete(store, "src-vanish/notes/note-02.txt")
        return None

    root, items = open_source(source, None, unchanged)
    items = list(items)
    assert root == source
    docs = [i.doc_id for i in items if isinstance(i, Document)]
    assert docs == [f"{source}/notes/note-{i:02d}.txt" for i in (0, 1, 3, 4)]
    (failure,) = [i for i in items if isinstance(i, Failure)]
    assert (failure.where, failure.reason, failure.doc_id) == ("notes/note-02.txt", "object not found (deleted after listing?)", victim)
    reads = {i.file_id: i.complete for i in items if isinstance(i, FileRead)}
    assert reads == {**{f"{source}/notes/note-{i:02d}.txt": True for i in (0, 1, 3, 4)}, victim: False}


def test_the_listing_is_read_one_page_at_a_time_as_objects_are_handled(stack, s3_env, monkeypatch):
    """A listing is never held whole: with pages of 2 keys, the objects of page n are
    read while n pages have been asked for, no more (so a million objects cost one
    page of memory)."""
    import obstore

    from grainline.documents import Document
    from grainline.readers import object_store as objects
    from grainline.readers import open_source

    server, _, _ = stack
    put_notes(object_store(server), "src-pages", range(6))
    monkeypatch.setattr(objects, "LIST_PAGE", 2)
    real_list, pages = obstore.list, []

    def listing(*args, **kw):
        for page in real_list(*args, **kw):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(obstore, "list", listing)
    pulled_at_doc = [len(pages) for i in open_source(f"s3://{server.bucket}/src-pages")[1] if isinstance(i, Document)]
    assert pulled_at_doc == [1, 1, 2, 2, 3, 3] and pages == [2, 2, 2]


def spy_gets(monkeypatch, after=None) -> list[tuple[str, Any]]:
    """Record each ``obstore.get`` asked (key, range) and pass it to the real store; ``after(key, n)`` runs once the n-th GET of that key has been answered."""
    import obstore

    real, gets = obstore.get, []

    def get(store, key, **kw):
        gets.append((key, (kw.get("options") or {}).get("range")))
        res = real(store, key, **kw)
        if after is not None:
            after(key, sum(1 for k, _ in gets if k == key))
        return res

    monkeypatch.setattr(obstore, "get", get)
    return gets


def tide_book(word: str, n: int) -> bytes:
    return ("Tide book\n\n" + "\n\n".join(f"Paragraph {i}: the {word} tables for harbour {i} were reprinted."
                                          for i in range(n))).encode()


def test_an_object_bigger_than_a_range_is_downloaded_in_ranges_whole(stack, s3_env, monkeypatch):
    """Ranged GETs (each pinned to the first one's ETag) put a big object together
    byte for byte: a text file of 39 ranges gives the document a local copy gives; an
    object that fits in one range is one plain GET."""
    import obstore

    from grainline.documents import Document
    from grainline.readers import object_store as objects
    from grainline.readers import open_source

    server, _, _ = stack
    monkeypatch.setattr(objects, "RANGE_BYTES", 1000)
    body = tide_book("tide", 600)
    assert len(body) > 38_000  # 39 ranges
    obstore.put(object_store(server), "src-ranges/big.txt", body)
    obstore.put(object_store(server), "src-ranges/small.txt", b"Small note\n\nOne short paragraph.\n")
    gets = spy_gets(monkeypatch)
    docs = {i.doc_id.rsplit("/", 1)[1]: i for i in open_source(f"s3://{server.bucket}/src-ranges")[1] if isinstance(i, Document)}
    assert docs["big.txt"].text == body.decode() and docs["big.txt"].title == "Tide book"
    assert docs["small.txt"].text == "Small note\n\nOne short paragraph.\n"
    # 39 ranges of the big object, in order, and one plain GET of the small one.
    assert [r for k, r in gets if k.endswith("big.txt")] == [(i, min(i + 1000, len(body))) for i in range(0, len(body), 1000)]
    assert [r for k, r in gets if k.endswith("small.txt")] == [None]


def test_an_object_replaced_between_two_ranges_is_a_counted_failure_and_read_again(stack, s3_env, tmp_path, monkeypatch):
    """An ingestion of an edited object that is replaced again after its first range
    came: the run counts one failure with the reason, stores nothing of either new
    version (the table keeps the first run's rows and version), deletes nothing with
    ``--sync full``, and does not record the object in the manifest; the next run
    reads it and stores the latest version."""
    import obstore

    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, run_ingest
    from grainline.readers import object_store as objects

    server, _, _ = stack
    store = object_store(server)
    monkeypatch.setattr(objects, "RANGE_BYTES", 1000)
    key = "src-torn/tides/big.txt"
    obstore.put(store, key, tide_book("tide", 100))
    obstore.put(store, "src-torn/small.txt", b"Small note\n\nOne short paragraph.\n")
    source, db = f"s3://{server.bucket}/src-torn", str(tmp_path / "db")
    settings = IngestSettings(source=source, db=db, strategies="paragraph", sync="full", embedder=EmbedderSettings(device="cpu"))
    assert run_ingest(settings).counts.docs_added == 2
    rows1, v1 = table_rows(Path(db), TABLE), ChunkStore(db, TABLE, 384).version()

    obstore.put(store, key, tide_book("storm", 100))

    def replace_after_first_range(k, n):
        if k == key and n == 1:
            obstore.put(store, key, tide_book("flood", 100))

    real_get = obstore.get
    gets = spy_gets(monkeypatch, replace_after_first_range)
    c = run_ingest(settings).counts
    assert [r for k, r in gets if k == key] == [(0, 1000), (1000, 2000)]  # stopped at the first range refused
    assert c.failures == [{"where": "tides/big.txt", "reason": objects.CHANGED_WHILE_DOWNLOADED, "stage": "read"}]
    assert (c.docs_failed, c.docs_updated, c.docs_deleted, c.docs_unchanged) == (1, 0, 0, 1)
    assert ChunkStore(db, TABLE, 384).version() == v1
    assert table_rows(Path(db), TABLE).keys() == rows1.keys()

    monkeypatch.setattr(obstore, "get", real_get)
    c = run_ingest(settings).counts
    assert (c.files_read, c.files_unchanged, c.docs_updated, c.docs_failed) == (1, 1, 1, 0)
    texts = [r["text"] for r in table_rows(Path(db), TABLE).values() if r["doc_id"] == f"{source}/tides/big.txt"]
    assert any("flood tables" in t for t in texts) and not any("storm tables" in t or "tide tables" in t for t in texts)
