"""Faults met through the ``grainline`` command, as a user meets them: a disk that fills
up mid-run, a full disk before the run, a failing export, Ctrl-C and SIGTERM. Each
test runs the CLI in a subprocess (its own Prefect home and temporary server) on a
handful of tiny documents.

A full disk is a real one: a small tmpfs mounted over the table's folder, which needs
root (the tests that need it are skipped otherwise)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger

WORDS = "river mountain engine protein orbit harvest signal glacier membrane violin copper lantern meadow".split()


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(sentences))


def small_big_small(root: Path) -> Path:
    """a.txt and c.txt: one short paragraph each; b.txt: 100 long paragraphs, whose
    batch (about 250 KB of data) cannot fit in what the small disks below leave."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    (root / "a.txt").write_text(paragraph(rng, 3) + "\n")
    (root / "b.txt").write_text("\n\n".join(paragraph(rng, 8) for _ in range(100)) + "\n")
    (root / "c.txt").write_text(paragraph(rng, 3) + "\n")
    return root


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               # two cores shared by many processes: the temporary server can be slow to start
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    env.pop("PREFECT_API_URL", None)
    return env


def grainline(tmp_path: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """``grainline ARGS`` in a subprocess, as a user runs it."""
    try:
        return subprocess.run([sys.executable, "-m", "grainline.cli", *args], env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # show where it stopped
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"grainline {' '.join(args)} did not end within {timeout:.0f}s:\n{err[-4000:]}")


def ingest_args(src: Path, db: Path, *extra: str) -> list[str]:
    return ["ingest", str(src), "--db", str(db), "--strategy", "paragraph", "--batch-docs", "1", "--no-progress",
            "--no-maintain", "--device", "cpu", *extra]


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created empty), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root (mount -t tmpfs)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def rows(db: Path, embedder) -> list[tuple[str, str, str]]:
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    if not store.exists:
        return []
    return sorted((r["chunk_id"], r["doc_id"], r["text"]) for b in store.scan(["chunk_id", "doc_id", "text"]) for r in b.to_pylist())


def error_line(res: subprocess.CompletedProcess) -> str:
    """The CLI's own one-line error (Prefect's log lines come around it)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


def test_disk_full_mid_run_reports_the_error_and_restores_or_keeps(tmp_path, embedder):
    """b.txt's batch hits a full disk while c.txt's is in flight: the CLI reports the
    real error in one line (not Prefect's future lacking ``cancel``), the ledger says
    failed, --on-error restore rolls a.txt's commit back, --on-error keep keeps it and
    names the undo command; with space again, a re-run gives the clean run's table."""
    src = small_big_small(tmp_path / "src")
    db = tmp_path / "db"
    table = embedder.identity.table_name
    clean_db = tmp_path / "clean"
    run_ingest(IngestSettings(source=str(src), db=str(clean_db), strategies="paragraph", batch_docs=1,
                              embedder=EmbedderSettings(device="cpu")))
    with small_disk(db / f"{table}.lance", "128k") as disk:
        res = grainline(tmp_path, *ingest_args(src, db, "--on-error", "restore"))
        assert res.returncode == 1, res.stderr[-3000:]
        assert "AttributeError" not in res.stderr
        line = error_line(res)
        assert line.startswith("error: ingestion failed: ") and "No space left on device" in line, line
        (failed,) = Ledger(str(db)).runs()
        assert failed["status"] == "failed" and "No space left on device" in failed["error"]
        assert f"table restored to version {failed['version_before']}" in failed["error"] and line.endswith(failed["error"].split("; ")[-1])
        assert rows(db, embedder) == []  # a.txt's commit rolled back

        res = grainline(tmp_path, *ingest_args(src, db, "--on-error", "keep"))
        assert res.returncode == 1, res.stderr[-3000:]
        kept = Ledger(str(db)).runs()[-1]
        undo = f"grainline restore {kept['version_before']} --db {db} --table {table}"
        assert kept["status"] == "failed" and undo in kept["error"] and undo in error_line(res)
        assert {Path(d).name for _, d, _ in rows(db, embedder)} == {"a.txt"}

        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        res = grainline(tmp_path, *ingest_args(src, db))
        assert res.returncode == 0, res.stderr[-3000:]
        assert Ledger(str(db)).runs()[-1]["status"] == "completed"
        assert rows(db, embedder) == rows(clean_db, embedder)


def twelve_docs(root: Path) -> Path:
    rng = random.Random(1)
    root.mkdir(parents=True)
    for i in range(12):
        (root / f"d{i:02d}.txt").write_text("\n\n".join(paragraph(rng, 4) for _ in range(12)) + "\n")
    return root


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_process_group_ends_the_run_within_seconds(tmp_path, embedder, sig):
    """Ctrl-C (SIGINT) or systemd (SIGTERM) signals the whole process group, Prefect's
    temporary server too: the run ends within seconds, its lock released and its ledger
    row 'interrupted' with the undo command, exit status 128 + signal; the next run
    completes with the clean run's table."""
    src = twelve_docs(tmp_path / "src")
    db = tmp_path / "db"
    proc = subprocess.Popen([sys.executable, "-m", "grainline.cli", *ingest_args(src, db)], env=cli_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:  # Prefect logs each task run: a batch was written, the next is in flight
            seen.append(line)
            if "Task run 'write-" in line and "Finished in state Completed" in line:
                break
        else:
            pytest.fail("the run ended before its first batch was written:\n" + "".join(seen)[-3000:])
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert took < 15, (took, err[-3000:])
    assert proc.returncode in (128 + sig, -sig), (proc.returncode, err[-3000:])
    (run,) = Ledger(str(db)).runs()
    undo = f"grainline restore {run['version_before']} --db {db} --table {embedder.identity.table_name}"
    assert run["status"] == "interrupted" and run["error"].startswith(f"interrupted by {sig.name}") and undo in run["error"], run
    # the table's write lock is free: another writer gets it at once
    from grainline.storage.locks import TableLock

    TableLock(str(db), embedder.identity.table_name, timeout_s=0).acquire().release()
    clean_db = tmp_path / "clean"
    run_ingest(IngestSettings(source=str(src), db=str(clean_db), strategies="paragraph", batch_docs=1,
                              embedder=EmbedderSettings(device="cpu")))
    # A fresh Prefect home for the re-run: the Prefect concurrency slot of flows/ingest.py's
    # table_lock() leaks when its server dies (it is being replaced by the storage lease).
    (tmp_path / "rerun").mkdir()
    res = grainline(tmp_path / "rerun", *ingest_args(src, db))
    assert res.returncode == 0, res.stderr[-3000:]
    assert Ledger(str(db)).runs()[-1]["status"] == "completed"
    assert rows(db, embedder) == rows(clean_db, embedder)


def test_export_on_a_full_disk_and_a_disk_too_full_for_the_ledger(tmp_path, embedder):
    """The Parquet export hits a full disk: the run is 'failed' (not left 'running'),
    its half-written hidden export is gone, the CLI says so in one line. A disk too
    full for even the ledger row: one line, exit 1."""
    src = small_big_small(tmp_path / "src")
    db = tmp_path / "db"
    with small_disk(db / "parquet", "64k"):
        res = grainline(tmp_path, *ingest_args(src, db))
        assert res.returncode == 1, res.stderr[-3000:]
        line = error_line(res)
        assert "Parquet export" in line and "No space left on device" in line and "next run redoes the export" in line, line
        (run,) = Ledger(str(db)).runs()
        assert run["status"] == "failed" and "Parquet export" in run["error"]
        assert not [p.name for p in (db / "parquet").iterdir() if ".tmp-" in p.name]  # no half-written export left
    full = tmp_path / "full"
    with small_disk(full, "16k"):
        (full / "filler").write_bytes(b"\0" * (16 << 10))  # nothing left
        res = grainline(tmp_path, *ingest_args(src, full))
        assert res.returncode == 1, res.stderr[-3000:]
        assert "No space left on device" in error_line(res)
