"""Processes that need one shared table at the same instant (the runs ledger of a
database that an ingestion and an evaluation start on together): exactly one creates
it, nobody overwrites it, and every row each of them wrote is there."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from grainline.storage.chunks import connect
from grainline.storage.ledger import RUNS_TABLE, Ledger

WORKERS = 3
ROUNDS = 20


def _writer(dbs: list[str], barrier, n: int, errors) -> None:
    from grainline.storage.ledger import Ledger, RunRecord

    for db in dbs:
        barrier.wait(timeout=60)  # all writers meet the fresh database at once
        try:
            Ledger(db).write(RunRecord(run_id=f"run-{n}", flow="ingest", source="src", table_name=f"t{n}",
                                       model_id="m", parameters={}))
        except Exception as exc:  # reported to the test, which names it
            errors.put(f"{db} writer {n}: {exc!r}"[:300])


def test_writers_that_start_a_database_together_never_overwrite_each_other(tmp_path: Path) -> None:
    dbs = [str(tmp_path / f"db{r}") for r in range(ROUNDS)]
    ctx = mp.get_context("spawn")  # LanceDB's runtime threads do not survive a fork
    barrier, errors = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(dbs, barrier, n, errors)) for n in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    assert failed == []

    for db in dbs:
        runs = Ledger(db).runs()
        assert sorted(r["run_id"] for r in runs) == [f"run-{n}" for n in range(WORKERS)], db
        # one creation and one commit per row: a creation that lost the race and was
        # committed as an overwrite would add a version (and may drop a row)
        versions = connect(db).open_table(RUNS_TABLE).list_versions()
        assert len(versions) == 1 + WORKERS, (db, versions)
