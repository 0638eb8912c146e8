"""The CLI as a user meets it, in subprocesses, on one small database: unsupported
and empty sources reported, one document per file whatever path names it, a dry run
that writes nothing, and the runs / tables / sources commands (JSON included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_files


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200",
           # A loaded machine can take more than Prefect's default to start its server.
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)


@pytest.mark.slow
def test_cli_reports_skips_keeps_one_identity_and_lists_what_is_stored(tmp_path):
    src = write_files(tmp_path / "docs", {
        "notes/kafka-incident.txt": "Kafka incident\n\nThe broker ran out of disk and the consumers stalled for an hour.\n",
        "bees.md": "---\ntopic: insects\n---\n# Bees\n\nHoneybees dance to show their sisters where the flowers are.\n",
        "report.docx": b"PK\x03\x04 a word document",
    })
    (tmp_path / "empty").mkdir()
    common = ["--db", "db", "--strategy", "paragraph", "--no-progress", "--no-maintain"]
    out = run(tmp_path, "ingest", "docs", *common)
    assert out.returncode == 0, out.stderr
    assert "2 added" in out.stdout and "1 skipped" in out.stdout and "report.docx" in out.stdout
    # the same file named on its own, through a relative path: the same document
    out = run(tmp_path, "ingest", "docs/notes/kafka-incident.txt", *common)
    assert out.returncode == 0 and "1 unchanged" in out.stdout and "0 added" in out.stdout, out.stdout
    out = run(tmp_path, "ingest", "empty", *common)
    assert out.returncode == 0 and "holds no documents" in out.stderr
    # a dry run after an edit: says what would change, writes nothing
    (src / "bees.md").write_text((src / "bees.md").read_text() + "\nA longer run means the flowers are further away.\n")
    before = json.loads(run(tmp_path, "tables", "--db", "db", "--json").stdout.splitlines()[0])
    out = run(tmp_path, "ingest", "docs", "--dry-run", *common)
    assert out.returncode == 0, out.stderr
    assert "would be updated: 1" in out.stdout and "would be added: 0" in out.stdout
    assert "0 embedded" not in out.stdout
    after = json.loads(run(tmp_path, "tables", "--db", "db", "--json").stdout.splitlines()[0])
    assert after["version"] == before["version"] and after["rows"] == before["rows"] == 2
    assert after["strategies"] == {"paragraph": 2}

    ledger = [json.loads(line) for line in run(tmp_path, "runs", "--db", "db", "--json").stdout.splitlines()]
    assert len(ledger) == 3 and {r["kind"] for r in ledger} == {"production"}
    first = ledger[0]
    assert first["docs_skipped"] == 1 and first["skipped"][0]["where"] == "report.docx"
    assert first["duration_s"] > 0 and first["table_name"] == after["table"]
    assert run(tmp_path, "runs", "--db", "db", "--kind", "evaluation").stdout.startswith("no evaluation runs")

    (source,) = [json.loads(line) for line in run(tmp_path, "sources", "--db", "db", "--json").stdout.splitlines()]
    assert source["documents"] == 2
    out = run(tmp_path, "sources", "--db", "db", "--delete", "docs")
    assert out.returncode == 0 and "2 documents" in out.stdout and "grainline restore" in out.stdout, out.stderr
    assert json.loads(run(tmp_path, "tables", "--db", "db", "--json").stdout.splitlines()[0])["rows"] == 0
    assert json.loads(run(tmp_path, "runs", "--db", "db", "--json").stdout.splitlines()[-1])["flow"] == "delete-source"
