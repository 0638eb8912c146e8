"""The ledger row of a run never stays 'running' while the process can write it, and
the undo command it names keeps working after maintenance prunes old versions."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
import sys

import pytest

from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import exported_version, read_export

from tests.conftest import write_files
from tests.cli.test_cli_faults import cli_env


def settings(src, db, **kw) -> IngestSettings:
    return IngestSettings(source=str(src), db=str(db), strategies="paragraph", embedder=EmbedderSettings(device="cpu"), **kw)


def test_an_error_in_prepare_after_the_ledger_row_is_recorded(tmp_path, embedder):
    src = write_files(tmp_path / "src", {"a.txt": "Tides rise and fall twice a day.\n"})
    db = tmp_path / "db"
    run_ingest(settings(src, db))
    frag = next((db / f"{embedder.identity.table_name}.lance" / "data").iterdir())
    frag.write_bytes(frag.read_bytes()[:50])  # a damaged fragment: reading the table's state fails
    # Other chunker settings than the last run vouched for: the run checks the manifest
    # and looks for ids of an older grainline, both reading the table in prepare (an
    # unchanged re-run that trusts the vouch reads nothing of the table there).
    other = settings(src, db, chunker_overrides={"paragraph": {"max_tokens": 200}})
    with pytest.raises(Exception):
        run_ingest(other)
    last = Ledger(str(db)).runs()[-1]
    assert last["status"] == "failed" and last["error"], last


def test_the_undo_command_survives_pruning_and_restore_redoes_the_export(tmp_path, embedder):
    src = write_files(tmp_path / "src", {"a.txt": "Tides rise and fall twice a day.\n"})
    db = tmp_path / "db"
    table = embedder.identity.table_name
    # An earlier run writes the versions that pruning removes. Maintenance keeps every
    # version within a clock margin (1 s) of a tagged one, and on a fast machine a
    # whole run fits in that: the good run comes later, so these fall outside it.
    run_ingest(settings(src, db))
    time.sleep(1.5)
    (src / "a.txt").write_text("Tides rise and fall twice a day, pulled by the Moon.\n")
    good = run_ingest(settings(src, db))

    def documents():
        yield from [Document(f"new-{i}", f"New document {i} about coral reefs and their fish.") for i in range(3)]
        raise OSError("source went away mid-run")

    with pytest.raises(OSError):
        run_ingest(settings("dataset:x", db, batch_docs=1), documents=documents())
    failed = Ledger(str(db)).runs()[-1]
    undo = f"grainline restore {good.version_after} --db {db} --table {table}"
    assert undo in failed["error"]
    env = cli_env(tmp_path)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "grainline.cli", *args], env=env, capture_output=True, text=True, timeout=300)

    res = cli("maintain", "--db", str(db), "--table", table, "--prune-days", "0", "--keep-versions", "1", "--no-index")
    assert res.returncode == 0, res.stderr[-2000:]
    res = cli(*undo.split()[1:])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Parquet export" in res.stdout and "redone" in res.stdout
    store = ChunkStore(str(db), table, embedder.identity.dim)
    assert {Path(r).name for b in store.scan(["doc_id"]) for r in b.column("doc_id").to_pylist()} == {"a.txt"}
    export = db / "parquet" / table
    assert exported_version(str(export)) == store.version()
    assert read_export(str(export)).num_rows == store.count()
    res = cli("restore", "1", "--db", str(db), "--table", table)
    assert res.returncode == 2 and "pruned by maintenance" in res.stderr
