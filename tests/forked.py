"""Ingestion workers forked from one warm parent, for tests that start many of them
(the SIGKILL trials): each is a real process running the ordinary ``run_ingest``, and
is killed as one, but it skips the interpreter start and the imports of torch,
sentence-transformers and LanceDB, which cost more CPU than the small ingestions the
trials run. The parent (multiprocessing's fork server) only imports: it loads no
model and opens no table, so nothing it forks holds a thread pool or a connection.

Same protocol as ``processes.Worker``: the child builds its settings, says READY,
waits for go, runs, and sends one result."""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from typing import Any

# Imported once by the fork server; what a child would otherwise import itself.
PRELOAD = ["grainline.ingest", "grainline.storage.chunks", "grainline.storage.parquet", "torch",
           "sentence_transformers", "lancedb", "pyarrow.parquet", "tiktoken"]

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _child(conn: Any, payload: str, run_id: str, log_path: str) -> None:
    # Output to a file of the test's, as the subprocess workers' stderr: never a pipe
    # that could fill, never the fork server's inherited streams.
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from grainline.ingest import IngestSettings, run_ingest
    from grainline.embedding import get_embedder

    settings = IngestSettings(**json.loads(payload))
    get_embedder(settings.embedder)
    conn.send("READY")
    conn.recv()
    t0 = time.monotonic()
    rec = run_ingest(settings, run_id=run_id)
    conn.send({"run_id": rec.run_id, "status": rec.status, "version_after": rec.version_after,
               "counts": rec.counts.as_dict(), "seconds": time.monotonic() - t0})


def stop_fork_server() -> None:
    """Stop the fork server (and wait for it), so it neither outlives the tests that
    used it nor leaves its children's CPU time unaccounted. multiprocessing has no
    public call for this; its own tests use this one."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


class ForkedWorker:
    """One forked child running an ingestion."""

    def __init__(self, settings: Any, run_id: str = "") -> None:
        ctx = _context()
        self._log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self._conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child_conn, settings.model_dump_json(), run_id, self._log.name),
                                daemon=True)
        self.proc.start()
        child_conn.close()
        self.go_at: float | None = None

    def running(self) -> bool:
        return self.proc.is_alive()

    def errors(self) -> str:
        self._log.seek(0)
        return self._log.read()[-3000:]

    def wait_ready(self, timeout: float = 600) -> None:
        if not self._conn.poll(timeout) or self._recv() != "READY":
            self.proc.join(5)
            raise RuntimeError(f"worker did not start (exit {self.proc.exitcode}): {self.errors()}")

    def _recv(self) -> Any:
        try:
            return self._conn.recv()
        except EOFError:
            return None

    def go(self) -> None:
        self.go_at = time.monotonic()
        self._conn.send("go")

    def result(self, timeout: float = 300) -> dict[str, Any]:
        out = self._recv() if self._conn.poll(timeout) else None
        self.proc.join(timeout)
        if self.proc.exitcode != 0 or not isinstance(out, dict):
            raise RuntimeError(f"worker failed (exit {self.proc.exitcode}): {self.errors()}")
        return out

    def kill(self) -> bool:
        """SIGKILL; True when the process was still running."""
        alive = self.proc.is_alive()
        if alive:
            self.proc.kill()
        self.proc.join()
        self._conn.close()
        return alive
