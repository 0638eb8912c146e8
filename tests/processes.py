"""Real worker processes for the crash and concurrency tests: each loads the model,
says READY, waits for 'go' on stdin (so several can start writing at the same moment,
or be timed from a known instant), runs, and prints one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

# The child: settings come as JSON in argv; nothing is imported from the tests.
CHILD = r"""
import json, sys, time
kind, payload, run_id = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
from grainline.ingest import IngestSettings, run_ingest
from grainline.embedding import get_embedder
if kind == "ingest":
    settings = IngestSettings(**payload)
    get_embedder(settings.embedder)
else:
    from grainline.evaluation import EvalSettings, run_eval
    settings = EvalSettings(**payload)
    get_embedder(settings.embedder)
print("READY", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
if kind == "ingest":
    rec = run_ingest(settings, run_id=run_id)
    out = {"run_id": rec.run_id, "status": rec.status, "version_after": rec.version_after, "counts": rec.counts.as_dict()}
else:
    run = run_eval(settings)
    out = {"run_id": run.run_id, "n_results": len(run.results)}
out["seconds"] = time.monotonic() - t0
print("RESULT " + json.dumps(out), flush=True)
"""


class Worker:
    """One child process running an ingestion or an evaluation."""

    def __init__(self, kind: str, settings: Any, run_id: str = "", cwd: str | None = None) -> None:
        payload = settings.model_dump_json()
        # stderr to a file: a chatty child must never block on a full pipe
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, payload, run_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=cwd,
        )
        self.go_at: float | None = None

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.wait()
            raise RuntimeError(f"worker did not start: {line!r} {self.errors()}")

    def go(self) -> None:
        self.go_at = time.monotonic()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 300) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker failed (exit {self.proc.returncode}): {self.errors()}")
        return json.loads(lines[-1].removeprefix("RESULT "))

    def kill(self) -> bool:
        """SIGKILL; True when the process was still running."""
        alive = self.proc.poll() is None
        if alive:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stdin, self.stderr):
            f.close()
        return alive
