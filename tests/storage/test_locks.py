"""The table write lock as a user meets it: a run that waits says once which table and
who holds it, goes on the moment the holder dies (SIGKILL included), and `grainline
unlock` shows, refuses or (with --force) releases a lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from grainline.storage.ledger import Ledger
from grainline.storage.locks import TableLock, lock_status, read_holder

from tests.conftest import write_files

HOLD = """
import sys, time
from grainline.storage.locks import TableLock
lock = TableLock(sys.argv[1], sys.argv[2], timeout_s=5, run_id="holder-run").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(db, table) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db), table], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, timeout=300, **kw)


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    db = str(tmp_path / "db")
    holder = hold(db, "t")
    assert lock_status(db, "t")[0] and read_holder(db, "t")["pid"] == holder.pid
    with pytest.raises(TimeoutError) as err:
        TableLock(db, "t", timeout_s=0.5).acquire()
    assert f"pid {holder.pid}" in str(err.value) and "holder-run" in str(err.value)
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    with TableLock(db, "t", timeout_s=5):
        assert time.monotonic() - t0 < 1
    assert not lock_status(db, "t")[0]


@pytest.mark.slow
@pytest.mark.usefixtures("embedder")
def test_a_waiting_ingest_says_who_holds_the_table_once_and_goes_on_when_it_dies(tmp_path, embedder):
    src = write_files(tmp_path / "src", {"a.txt": "Alpha text here.", "b.txt": "Beta text there."})
    db = tmp_path / "db"
    table = embedder.identity.table_name
    holder = hold(db, table)
    log = tmp_path / "ingest.log"
    proc = subprocess.Popen([sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(db), "--device", "cpu",
                             "--no-progress", "-s", "paragraph"], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home")))
    deadline = time.monotonic() + 240
    while "waiting for the write lock" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(3)
    holder.kill()
    holder.wait()
    assert proc.wait(240) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("waiting for the write lock") == 1, text[-3000:]
    line = next(line for line in text.splitlines() if "waiting for the write lock" in line)
    assert table in line and f"pid {holder.pid}" in line and "holder-run" in line
    assert Ledger(str(db)).runs("ingest")[-1]["status"] == "completed"


def test_unlock_shows_refuses_and_forces(tmp_path):
    db = tmp_path / "db"
    holder = hold(db, "chunks_x")
    try:
        out = cli("unlock", "--db", str(db), "--table", "chunks_x")
        assert out.returncode == 1 and f"pid {holder.pid}" in out.stderr and "--force" in out.stderr, out
        assert "Traceback" not in out.stderr
        out = cli("unlock", "--db", str(db), "--table", "chunks_x", "--force")
        assert out.returncode == 0 and "released" in out.stdout, out
        with TableLock(str(db), "chunks_x", timeout_s=1):  # a new writer gets in beside the stuck one
            pass
    finally:
        holder.kill()
        holder.wait()
    out = cli("unlock", "--db", str(db))
    assert out.returncode == 0 and "not locked" in out.stdout, out
    out = cli("unlock", "--db", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "does not exist" in out.stderr
