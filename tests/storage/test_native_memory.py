"""The native libraries' memory bounds (grainline/memory.py): set once per process when
a local database is opened, never over what the user set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, os, sys
from grainline.storage.chunks import connect
db = connect(sys.argv[1])
db.create_table("t", data=[{"x": 1}])
from grainline.memory import bound_native_memory
print(json.dumps({"io": os.environ.get("LANCE_IO_THREADS"), "done": bound_native_memory(),
                  "rows": db.open_table("t").count_rows()}))
"""


def _run(db: str, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("LANCE_IO_THREADS", "MALLOC_ARENA_MAX")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", CODE, db], capture_output=True, text=True, timeout=120, env=full)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_local_database_gets_one_io_thread_per_cpu_and_capped_arenas(tmp_path):
    cpus = max(2, len(os.sched_getaffinity(0)))
    got = _run(str(tmp_path / "db"))
    assert got["rows"] == 1
    assert got["io"] == str(min(8, cpus))
    assert got["done"] == {"malloc_arena_max": str(cpus), "LANCE_IO_THREADS": str(min(8, cpus))}


def test_what_the_user_set_is_kept(tmp_path):
    got = _run(str(tmp_path / "db"), LANCE_IO_THREADS="6", MALLOC_ARENA_MAX="4")
    assert got["io"] == "6"
    assert got["done"] == {}
