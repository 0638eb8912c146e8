"""Journey: `grainline ingest` killed at seeded moments (the process alone, and the
whole process group with its server), then the same command again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_files
from tests.journey import ingest_runs, table_rows, user_env, wait_for

pytestmark = pytest.mark.slow


def _ingest_cmd(src: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(db), "-s", "sentence,paragraph",
            "--device", "cpu", "--batch-docs", "4", "--no-progress"]


def _run(cmd: list[str], env: dict, log: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    with open(log, "ab") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.fixture(scope="module")
def kill_corpus(tmp_path_factory):
    """24 small documents and the table a clean `grainline ingest` makes of them (once
    for every seed)."""
    root = tmp_path_factory.mktemp("kill-corpus")
    rng = random.Random(0)
    files = {f"doc-{i:02d}.txt": f"Document {i}\n\n" + " ".join(
        f"Sentence {j} of document {i} talks about {rng.choice(['rivers', 'engines', 'violins', 'comets'])}."
        for j in range(3)) for i in range(24)}
    src = write_files(root / "src", files)
    log = root / "clean.log"
    t0 = time.monotonic()
    assert _run(_ingest_cmd(src, root / "clean"), user_env(root / "prefect-home"), log).returncode == 0, log.read_text()[-3000:]
    return src, root / "clean", time.monotonic() - t0


@pytest.mark.parametrize("seed", [0, 1])
def test_cli_ingest_killed_then_rerun_gives_the_clean_table(tmp_path, seed, kill_corpus):
    """SIGKILL `grainline ingest` at a seeded moment: the flow process alone, on the
    kept local server (seed 0), or its whole process group with Prefect's temporary
    server (seed 1, GRAINLINE_PREFECT_SERVER=temporary). The same command again starts
    at once (nothing holds the table) and ends with the clean run's table."""
    src, clean, clean_s = kill_corpus
    rng = random.Random(seed)
    env = user_env(tmp_path / "prefect-home", **({"GRAINLINE_PREFECT_SERVER": "temporary"} if seed % 2 else {}))
    log = tmp_path / "ingest.log"

    db = tmp_path / "db"
    proc = subprocess.Popen(_ingest_cmd(src, db), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Kill once the run holds the table (seen in the ledger), at a seeded moment after.
    wait_for("the run to start writing", lambda: ingest_runs(db, "running"), log, timeout=clean_s * 3, every=0.2)
    time.sleep(rng.uniform(0.0, 3.0))
    if seed % 2:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow process and its temporary server
    else:
        proc.kill()
    proc.wait(30)
    t1 = time.monotonic()
    out = _run(_ingest_cmd(src, db), env, log)
    rerun_s = time.monotonic() - t1
    assert out.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "waiting for the write lock" not in text.rsplit("Beginning flow run", 1)[-1]
    print(f"\nseed {seed}: clean run {clean_s:.0f}s, re-run after the kill {rerun_s:.0f}s")

    runs = ingest_runs(db)
    assert runs[-1]["status"] == "completed"
    assert all(r["status"] in ("completed", "interrupted") for r in runs), [r["status"] for r in runs]
    table = runs[-1]["table_name"]
    want, got = table_rows(clean, table), table_rows(db, table)
    assert got.keys() == want.keys()
    assert all(got[c]["text"] == want[c]["text"] for c in want)
    import numpy as np

    assert max(float(np.abs(np.asarray(got[c]["vector"]) - np.asarray(want[c]["vector"])).max()) for c in want) < 1e-5
