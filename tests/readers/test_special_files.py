"""A FIFO, a socket or a device in a source folder, through the command line as a user
meets it: skipped (a FIFO would block the read; none holds a document), named in the
ingest summary with what it is, and counted in the run's ledger row, beside the
documents that were ingested."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grainline.storage.ledger import Ledger
from tests.conftest import write_files

pytestmark = pytest.mark.slow

BEES = "Honeybees dance to tell their sisters where the flowers are.\n\nThe angle of the waggle run points at the sun."
TIDES = "The moon pulls the oceans into two bulges.\n\nThe earth turns under them, so most coasts see two tides a day."


def test_a_fifo_a_socket_and_a_device_are_skipped_named_and_counted(tmp_path, monkeypatch):
    src = write_files(tmp_path / "src", {"bees.md": BEES, "sub/tides.txt": TIDES})
    os.mkfifo(src / "pipe.md")
    monkeypatch.chdir(src / "sub")  # a socket's path is short when bound relative (108 bytes at most)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock.txt")
    sock.close()  # the socket file stays behind, as a crashed server's does
    (src / "null.md").symlink_to("/dev/null")  # a link to a character device
    db = tmp_path / "db"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    got = subprocess.run([sys.executable, "-m", "grainline.cli", "ingest", str(src), "--strategy", "paragraph",
                          "--db", str(db)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "Traceback" not in got.stderr
    out = got.stdout.splitlines()
    assert any("2 seen, 2 added" in ln and "3 skipped" in ln for ln in out), got.stdout
    said = {name: [ln for ln in out if ln.strip().startswith("skipped ") and name in ln] for name in
            ("pipe.md", "sock.txt", "null.md")}
    assert "FIFO" in said["pipe.md"][0] and "socket" in said["sock.txt"][0] and "character device" in said["null.md"][0], said
    (run,) = Ledger(str(db)).runs("ingest")
    assert run["status"] == "completed"
    skipped = {Path(s["where"]).name: s["reason"] for s in run["skipped"]}
    assert set(skipped) == {"pipe.md", "sock.txt", "null.md"}, skipped
    assert all("not a regular file" in r for r in skipped.values()), skipped
    assert (run["docs_skipped"], run["docs_added"]) == (3, 2), run
