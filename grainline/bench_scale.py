"""``grainline bench --scale N1,N2``: what a scheduled run costs as the table grows.

For each size N a table of N synthetic documents is built (``.txt`` files whose
paragraphs come from the pool of :data:`grainline.bench.REUSE_POOL`, so most vectors are
reused and the model embeds little); then each step of a scheduled run is timed as a
real ``grainline`` command in a fresh child process (wall seconds and peak RSS from
``os.wait4``), the ingest runs' own phase seconds read from the ledger:

* ``add``: a batch of new documents (the same ones at every size);
* ``unchanged``: a re-run with nothing changed;
* ``edit1``: one document edited (one new paragraph: one chunk embedded);
* ``edit_new_delete``: one edit, one new file and one deleted file, ``--sync full``;
* ``search`` and ``search_hybrid``: ``grainline search`` (dense, then hybrid).

Every size's corpus lives at the same path, so a document keeps its id (its real path)
from one size to the next: a larger table starts as a copy of the previous size's
table as built (before its steps ran) and its build run adds only the documents it
lacks, reusing the stored vectors. Each build's per-batch cost is read from the rows it
wrote (one ``ingested_at`` per batch commit).

May import: bench, defaults, server, storage.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

STEPS = ("add", "unchanged", "edit1", "edit_new_delete", "search", "search_hybrid")
INGEST_STEPS = ("add", "unchanged", "edit1", "edit_new_delete")
PHASES = ("read", "chunk", "embed", "write", "delete", "maintain", "export")
DEFAULT_QUERY = "glacier membrane protein signal"
# Appended as a paragraph of its own, so an edit changes one chunk and the model embeds
# it; text no generated document holds, so its vector is never stored already.
EDIT_TEXTS = {"edit1": "Scale bench edit one: the harbor ledger was rewritten by hand.",
              "edit_new_delete": "Scale bench edit two: a falcon crossed the quartz canyon at dawn."}
FILES_PER_FOLDER = 1000
# The steps edit two documents and delete one (see _step_documents).
MIN_SIZE = 3
POOL_PARAGRAPHS_PER_DOC = 5


class ScaleBenchError(RuntimeError):
    """A command of the scale benchmark failed; the message names it and its log."""


def parse_scale(value: str) -> list[int]:
    """'1000,4000' -> [1000, 4000]: two or more increasing positive sizes."""
    try:
        sizes = [int(v.strip().replace("_", "")) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--scale takes sizes separated by commas (e.g. 1000,4000), got {value!r}") from None
    if len(sizes) < 2 or any(n < MIN_SIZE for n in sizes) or sizes != sorted(set(sizes)):
        raise ValueError(f"--scale needs two or more increasing sizes of at least {MIN_SIZE} documents "
                         f"(e.g. 1000,4000), got {value!r}")
    return sizes


# ----------------------------------------------------------------------------- corpus


def _doc_path(corpus: Path, i: int) -> Path:
    # Folders of 1,000 files: a 100,000-document corpus is not one huge directory.
    return corpus / f"{i // FILES_PER_FOLDER:04d}" / f"gen-{i:07d}.txt"


def pool_documents() -> int:
    """How many documents at the head of every corpus hold the paragraph pool (each
    :data:`POOL_PARAGRAPHS_PER_DOC` of its paragraphs, in order)."""
    from grainline.bench import REUSE_POOL

    return -(-REUSE_POOL // POOL_PARAGRAPHS_PER_DOC)


def _texts(start: int, stop: int) -> Iterator[tuple[int, str]]:
    # The pool first: once its documents are stored, every later document (the add
    # batch, the new file, a larger size's) finds all its paragraphs' vectors stored, so
    # the model embeds nothing for it and each step does the same work at every size.
    from grainline.bench import REUSE_POOL, generated_documents, reuse_pool_paragraphs

    pool = reuse_pool_paragraphs(REUSE_POOL)
    head = pool_documents()
    docs = generated_documents(stop, reuse_pool=REUSE_POOL)
    for i, doc in enumerate(itertools.islice(docs, start, stop), start):
        if i < head:
            yield i, "\n\n".join(pool[i * POOL_PARAGRAPHS_PER_DOC:(i + 1) * POOL_PARAGRAPHS_PER_DOC])
        else:
            yield i, doc.text


def write_corpus(corpus: Path, n_docs: int) -> int:
    """Documents 0..n_docs-1 as .txt files under ``corpus`` (emptied first); the same
    texts at the same paths whatever the size. Returns their UTF-8 bytes."""
    shutil.rmtree(corpus, ignore_errors=True)
    n_bytes = 0
    for i, text in _texts(0, n_docs):
        path = _doc_path(corpus, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        n_bytes += len(text.encode("utf-8"))
    return n_bytes


def _write_extra(corpus: Path, folder: str, start: int, stop: int) -> list[Path]:
    out = []
    for i, text in _texts(start, stop):
        path = corpus / folder / f"gen-{i:07d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out


# ----------------------------------------------------------------------------- commands


def run_command(args: Sequence[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """``python -m grainline.cli ARGS`` in a child process: its wall seconds, CPU
    seconds and peak RSS (MiB, from ``os.wait4``), and its output (also in ``log_path``)."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "grainline.cli", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise ScaleBenchError(f"`grainline {' '.join(args)}` exited {proc.returncode}; log {log_path}:\n{output[-3000:]}")
    return {"command": ["grainline", *args], "seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
            "load_average_before": list(load), "output": output}


_RUN_LINE = re.compile(r"^run (\S+) (\S+): table (\S+) v", re.M)


def _ledger_row(db: Path, run_id: str) -> dict[str, Any]:
    from grainline.storage.ledger import Ledger

    row = next((r for r in Ledger(str(db)).runs("ingest") if r["run_id"] == run_id), None)
    if row is None:
        raise ScaleBenchError(f"run {run_id} is not in the ledger of {db}")
    return row


def ingest_step(db: Path, corpus: Path, opts: dict[str, Any], env: dict[str, str], log_path: Path,
                sync: str = "incremental") -> dict[str, Any]:
    """One ``grainline ingest`` of the corpus: the child's figures, and the run's own
    (ledger) seconds per phase, counts and table figures after maintenance."""
    args = ["ingest", str(corpus), "--db", str(db), "--strategy", opts["strategy"], "--model", opts["model"],
            "--device", opts["device"], "--precision", opts["precision"], "--backend", opts["backend"],
            "--batch-size", str(opts["batch_size"]), "--batch-docs", str(opts["batch_docs"]), "--sync", sync, "--no-progress"]
    res = run_command(args, env, log_path)
    m = _RUN_LINE.search(res.pop("output"))
    if not m:
        raise ScaleBenchError(f"`grainline ingest` printed no run line; log {log_path}")
    row = _ledger_row(db, m.group(1))
    if row["status"] != "completed":
        raise ScaleBenchError(f"run {row['run_id']} ended {row['status']}: {row.get('error')}; log {log_path}")
    keys = ("docs_seen", "docs_added", "docs_updated", "docs_unchanged", "docs_deleted", "docs_failed",
            "chunks_written", "chunks_deleted", "chunks_embedded", "chunks_reused")
    res.update(
        run_id=row["run_id"], table=row["table_name"], dim=(row["parameters"].get("model") or {}).get("dim"),
        run_seconds=(row["finished"] - row["started"]).total_seconds(),
        phase_seconds=dict(row["stage_seconds"]), counts={k: row[k] for k in keys},
        # What no phase counts: the lock, the model's identity, taking stock of the
        # table's documents, the ledger's writes (negative where phases overlapped).
        outside_phases_seconds=(row["finished"] - row["started"]).total_seconds() - sum(row["stage_seconds"].values()),
        table_after={"fragments": row.get("fragments"), "versions": row.get("versions"),
                     "unindexed_rows": row.get("unindexed_rows")},
        maintenance=row.get("maintenance"),
        # What auto chose, as the ledger records it: only a run that loaded the model has it.
        **{k: v["chosen"] for k in ("precision", "backend") if isinstance(v := row["parameters"].get(k), dict)},
    )
    return res


def search_step(db: Path, opts: dict[str, Any], env: dict[str, str], log_path: Path, method: str) -> dict[str, Any]:
    """One ``grainline search`` in a fresh process; the number of hits it printed."""
    args = ["search", opts["query"], "--db", str(db), "--strategy", opts["strategy"], "--method", method,
            "-k", "10", "--model", opts["model"], "--device", opts["device"], "--precision", opts["precision"],
            "--backend", opts["backend"], "--json"]
    res = run_command(args, env, log_path)
    res["hits"] = sum(1 for line in res.pop("output").splitlines() if line.startswith('{"rank"'))
    return res


# ----------------------------------------------------------------------------- the table


def table_figures(db: Path, table: str, dim: int, run_id: str | None = None) -> dict[str, Any]:
    """Rows and distinct documents of the chunks table; with ``run_id``, that run's
    batches as the table records them (see :func:`batch_costs`)."""
    from grainline.storage.chunks import ChunkStore

    store = ChunkStore(str(db), table, dim)
    docs: set[str] = set()
    rows = 0
    stamps: dict[Any, set[str]] = {}
    for batch in store.scan(["doc_id", "run_id", "ingested_at"]):
        cols = batch.to_pydict()
        rows += batch.num_rows
        docs.update(cols["doc_id"])
        if run_id:
            for d, r, t in zip(cols["doc_id"], cols["run_id"], cols["ingested_at"]):
                if r == run_id:
                    stamps.setdefault(t, set()).add(d)
    from dataclasses import asdict

    from grainline.storage.maintenance import figures

    # Whether search ran on a vector index, and how fragmented the table was.
    fig = asdict(figures(store.table))
    out: dict[str, Any] = {"rows": rows, "documents": len(docs), **{k: v for k, v in fig.items() if k != "rows"}}
    if run_id:
        out["batches"] = batch_costs(sorted(stamps.items()), pool_documents())
    return out


_INDEX = re.compile(r"gen-(\d+)\.txt$")


def batch_costs(stamps: list[tuple[Any, set[str]]], pool_docs: int) -> dict[str, Any]:
    """One build's cost per batch, from its batch commits: each stamps its rows with one
    ``ingested_at``, so the gap between consecutive stamps is one batch's read, chunk,
    embed and write while the table grows. Left out of the comparison: the first batch
    (its time includes the run's start-up) and the warm-up, the batches holding the
    pool documents (they embed the pool's paragraphs) and the one after the last of them
    (chunked and embedded while it was written, it may embed some again). Then the mean
    of the first and the last tenth of the batches left (at least one each) and the
    ratio last/first."""
    def warm(docs: set[str]) -> bool:
        return any((m := _INDEX.search(d)) and int(m.group(1)) < pool_docs for d in docs)

    warm_upto = max((j for j, (_t, d) in enumerate(stamps) if warm(d)), default=-1) + 1
    first_timed = max(1, warm_upto + 1)
    secs = [(b[0] - a[0]).total_seconds() for a, b in zip(stamps, stamps[1:])]  # secs[j-1]: batch j
    timed = secs[first_timed - 1:]
    out: dict[str, Any] = {
        "count": len(stamps), "docs_per_batch": [len(d) for _t, d in stamps],
        "seconds": [None, *secs],  # batch 0 has no gap before it
        "first_compared": first_timed, "compared": len(timed),
        "first_tenth_mean_s": None, "last_tenth_mean_s": None, "last_vs_first": None, "tenth": None,
    }
    if len(timed) >= 2:
        k = max(1, round(len(timed) / 10))
        first, last = sum(timed[:k]) / k, sum(timed[-k:]) / k
        out.update(tenth=k, first_tenth_mean_s=first, last_tenth_mean_s=last, last_vs_first=last / first if first else None)
    return out


# ----------------------------------------------------------------------------- the benchmark


def scale_bench(sizes: Sequence[int], strategy: str = "paragraph", output: str | None = None, model: str | None = None,
                device: str = "cpu", precision: str = "auto", backend: str = "auto", add_docs: int = 200,
                batch_docs: int = 64, query: str = DEFAULT_QUERY, keep: bool = False,
                announce: Any = None, batch_size: int = 64) -> dict[str, Any]:
    """Build a table of each size and time the steps of a scheduled run on it; returns
    (and writes, with ``output``) the figures. See the module docstring for the steps."""
    import json

    from grainline.bench import machine_info, run_stage
    from grainline.defaults import DEFAULT_MODEL
    from grainline.server import start_local_server

    say = announce or (lambda _msg: None)
    sizes = sorted(sizes)
    opts = {"strategy": strategy, "model": model or DEFAULT_MODEL, "device": device, "precision": precision,
            "backend": backend, "batch_docs": batch_docs, "batch_size": batch_size, "query": query}
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="grainline-scale-"))
    corpus, logs = work / "corpus", work / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", PREFECT_HOME=str(work / "prefect-client"))
    # Documents beyond the largest corpus: the add batch (the same at every size) and
    # the new file of edit_new_delete.
    extra = max(sizes[-1], pool_documents())
    results: dict[int, dict[str, Any]] = {}
    prepare_seconds = server = None
    try:
        t0 = time.perf_counter()
        server = start_local_server(work / "prefect-home")
        server_start = time.perf_counter() - t0
        env["PREFECT_API_URL"] = server.url
        if backend != "torch":  # a conversion or backend timing is cached before anything is timed
            prepare_seconds = run_stage("prepare", {"model": opts["model"], "device": device, "precision": precision,
                                                    "backend": backend}, env)["seconds"]
        for k, n in enumerate(sizes):
            db = work / f"db-{n}"
            say(f"size {n}: writing the corpus")
            n_bytes = write_corpus(corpus, n)
            say(f"size {n}: building the table" + (f" (from the {sizes[k - 1]}-document table)" if k else ""))
            build = ingest_step(db, corpus, opts, env, logs / f"{n}-build.log")
            build["from_documents"] = sizes[k - 1] if k else 0
            table, dim = build["table"], build["dim"]
            build["table_after_build"] = table_figures(db, table, dim, build["run_id"])
            if k + 1 < len(sizes):
                # The next size starts from this table as built, before the steps change it.
                shutil.copytree(db, work / f"db-{sizes[k + 1]}")
            steps: dict[str, Any] = {}
            say(f"size {n}: add {add_docs} documents")
            _write_extra(corpus, "add", extra, extra + add_docs)
            steps["add"] = ingest_step(db, corpus, opts, env, logs / f"{n}-add.log")
            say(f"size {n}: unchanged re-run")
            steps["unchanged"] = ingest_step(db, corpus, opts, env, logs / f"{n}-unchanged.log")
            say(f"size {n}: one edit")
            edited, deleted, edited2 = _step_documents(n)
            _append(_doc_path(corpus, edited), EDIT_TEXTS["edit1"])
            steps["edit1"] = ingest_step(db, corpus, opts, env, logs / f"{n}-edit1.log")
            say(f"size {n}: one edit, one new file, one deleted file (--sync full)")
            _append(_doc_path(corpus, edited2), EDIT_TEXTS["edit_new_delete"])
            _write_extra(corpus, "new", extra + add_docs, extra + add_docs + 1)
            _doc_path(corpus, deleted).unlink()
            steps["edit_new_delete"] = ingest_step(db, corpus, opts, env, logs / f"{n}-edit_new_delete.log", sync="full")
            say(f"size {n}: search (dense, hybrid)")
            steps["search"] = search_step(db, opts, env, logs / f"{n}-search.log", "dense")
            steps["search_hybrid"] = search_step(db, opts, env, logs / f"{n}-search_hybrid.log", "hybrid")
            results[n] = {"documents": n, "corpus_mb": n_bytes / 1e6, "build": build, "steps": steps,
                          "table_after_steps": table_figures(db, table, dim)}
    finally:
        if server is not None:
            server.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "kind": "scale", "sizes": list(sizes), "strategy": strategy, "model": opts["model"], "device": device,
        "precision": precision, "backend": backend, "batch_docs": batch_docs, "batch_size": batch_size,
        "add_docs": add_docs, "query": query,
        "reuse_pool": _reuse_pool(), "machine": machine_info(), "load_average_at_start": list(load_at_start),
        "load_average_at_end": list(os.getloadavg()), "prefect_server_start_seconds": server_start,
        "model_prepare_seconds": prepare_seconds, "work_dir": str(work) if keep else None,
        "precision_chosen": _chosen(results, "precision"), "backend_chosen": _chosen(results, "backend"),
        "results": {str(n): r for n, r in results.items()},
        "ratios": growth_ratios(results),
    }
    if output:
        Path(output).write_text(json.dumps(report, indent=2, default=str))
    return report


def _reuse_pool() -> int:
    from grainline.bench import REUSE_POOL

    return REUSE_POOL


def _step_documents(n: int) -> tuple[int, int, int]:
    """The documents edit1 edits and edit_new_delete deletes and edits: the first ones
    after the pool documents, so the pool stays stored; the first three of a corpus too
    small for that."""
    first = pool_documents() if n >= pool_documents() + 3 else 0
    return first, first + 1, first + 2


def _chosen(results: dict[int, dict[str, Any]], key: str) -> list[str]:
    """What the runs that loaded the model ran at (``precision`` or ``backend``), each once."""
    runs = [r["build"] for r in results.values()] + [s for r in results.values() for s in r["steps"].values()]
    return sorted({r[key] for r in runs if r.get(key)})


def _append(path: Path, paragraph: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + paragraph, encoding="utf-8")


def growth_ratios(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Each larger size against the smallest: the table's growth (documents) and, per
    step, the ratio of the child's wall seconds, of the run's own (ledger) seconds and
    of each phase's seconds. A step whose cost follows the change stays near 1; one that
    follows the table approaches the table's growth."""
    sizes = sorted(results)
    base = results[sizes[0]]
    out: dict[str, Any] = {}
    for n in sizes[1:]:
        cur = results[n]
        per: dict[str, Any] = {"table_growth": cur["table_after_steps"]["rows"] / base["table_after_steps"]["rows"]}
        for step in STEPS:
            a, b = base["steps"][step], cur["steps"][step]
            r: dict[str, Any] = {"seconds": _ratio(b["seconds"], a["seconds"]),
                                 "cpu_seconds": _ratio(b["cpu_seconds"], a["cpu_seconds"]),
                                 "peak_rss": _ratio(b["peak_rss_mib"], a["peak_rss_mib"])}
            if "run_seconds" in a:
                r["run_seconds"] = _ratio(b["run_seconds"], a["run_seconds"])
                r["phases"] = {p: _ratio(b["phase_seconds"].get(p), a["phase_seconds"].get(p))
                               for p in PHASES if p in a["phase_seconds"] or p in b["phase_seconds"]}
                r["outside_phases"] = _ratio(b["outside_phases_seconds"], a["outside_phases_seconds"])
            per[step] = r
        out[f"{n}/{sizes[0]}"] = per
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def format_scale_report(rep: dict[str, Any]) -> str:
    """The figures as a readable table: per step, seconds and peak RSS at each size and
    the growth ratio; then each ingest step's phases; then each build's batch costs."""
    sizes = rep["sizes"]
    res = {int(n): r for n, r in rep["results"].items()}
    m = rep["machine"]
    lines = [
        f"grainline bench --scale {','.join(map(str, sizes))}: strategy {rep['strategy']}, model {rep['model']} on "
        f"{rep['device']} (backend {rep['backend']} -> {', '.join(rep['backend_chosen']) or '?'}, precision "
        f"{rep['precision']} -> {', '.join(rep['precision_chosen']) or '?'}), --batch-docs {rep['batch_docs']}, "
        f"add batch {rep['add_docs']} documents; paragraphs from a pool of {rep['reuse_pool']}",
        f"CPU: {m.get('cpu')} (family/model {m.get('cpu_family_model')}), {m.get('cpu_count')} CPUs; load average "
        + " ".join(f"{x:.2f}" for x in rep["load_average_at_start"]) + " at start, "
        + " ".join(f"{x:.2f}" for x in rep["load_average_at_end"]) + " at end",
        f"Prefect server start-up (not counted below): {rep['prefect_server_start_seconds']:.1f} s",
    ]
    if rep.get("model_prepare_seconds") is not None:
        lines.append(f"Model load/conversion, cached before the timings: {rep['model_prepare_seconds']:.1f} s")
    lines.append("")
    for n in sizes:
        r = res[n]
        b = r["build"]
        t, a = r["build"]["table_after_build"], r["table_after_steps"]
        src = f"the {b['from_documents']}-document table + {n - b['from_documents']} documents" if b["from_documents"] else "empty"
        lines.append(f"N={n}: built from {src} in {b['seconds']:.1f} s (run {b['run_seconds']:.1f} s, "
                     f"{b['counts']['chunks_embedded']} chunks embedded, {b['counts']['chunks_reused']} reused; "
                     f"peak RSS {b['peak_rss_mib']:.0f} MiB): {t['rows']} rows, {t['documents']} documents; after the steps "
                     f"{a['rows']} rows, {a['documents']} documents, {a['fragments']} fragments, vector index "
                     f"{a['vector_index'] or 'none (exact search)'}, {a['unindexed_rows']} rows unindexed")
    base = sizes[0]
    head = f"{'step':<16}" + "".join(f"{'wall s @' + str(n):>14}" for n in sizes)
    head += "".join(f"{'x' + str(n) + '/' + str(base):>13}" for n in sizes[1:])
    head += "".join(f"{'run s @' + str(n):>14}" for n in sizes)
    head += "".join(f"{'x' + str(n) + '/' + str(base):>13}" for n in sizes[1:])
    head += "".join(f"{'cpu s @' + str(n):>14}" for n in sizes)
    head += "".join(f"{'x' + str(n) + '/' + str(base):>13}" for n in sizes[1:])
    head += "".join(f"{'RSS MiB @' + str(n):>16}" for n in sizes) + "  embedded"
    lines += ["", "each step a fresh `grainline` process: its wall seconds (start-up and imports included), the run's own "
              "seconds (ledger: started -> finished), the process's CPU seconds (user + system: less sensitive to other "
              "load than wall time), growth ratios, peak RSS, chunks embedded", head]
    for step in STEPS:
        cells = [res[n]["steps"][step] for n in sizes]
        ratios = [rep["ratios"][f"{n}/{base}"][step] for n in sizes[1:]]
        row = f"{step:<16}" + "".join(f"{c['seconds']:>14.2f}" for c in cells)
        row += "".join(f"{_fmt_ratio(r['seconds']):>13}" for r in ratios)
        row += "".join(f"{c['run_seconds']:>14.2f}" if "run_seconds" in c else f"{'-':>14}" for c in cells)
        row += "".join(f"{_fmt_ratio(r.get('run_seconds')):>13}" for r in ratios)
        row += "".join(f"{c['cpu_seconds']:>14.2f}" for c in cells)
        row += "".join(f"{_fmt_ratio(r['cpu_seconds']):>13}" for r in ratios)
        row += "".join(f"{c['peak_rss_mib']:>16.0f}" for c in cells)
        row += "  " + ("/".join(str(c["counts"]["chunks_embedded"]) for c in cells) if "counts" in cells[0] else "-")
        lines.append(row)
    add = [res[n]["steps"]["add"]["seconds"] / rep["add_docs"] for n in sizes]
    lines.append("add per document: " + ", ".join(f"{1000 * a:.1f} ms @{n}" for a, n in zip(add, sizes)))
    for n in sizes[1:]:
        lines.append(f"table grew x{rep['ratios'][f'{n}/{sizes[0]}']['table_growth']:.2f} (rows, {n} vs {sizes[0]}): "
                     "a step whose cost follows the change stays near x1, one that follows the table nears that")
    lines += ["", "ingest phases (ledger seconds) per step, " + " -> ".join(f"@{n}" for n in sizes)
              + "; outside phases: the run's seconds less its phases' (lock, taking stock of the table, ledger; "
              "negative where phases overlapped: the next batch is read while one is chunked and embedded)"]
    for step in INGEST_STEPS:
        phases = [p for p in PHASES if any(p in res[n]["steps"][step]["phase_seconds"] for n in sizes)]
        parts = []
        for p in phases:
            vals = [res[n]["steps"][step]["phase_seconds"].get(p) for n in sizes]
            parts.append(f"{p} " + " -> ".join("-" if v is None else f"{v:.2f}" for v in vals))
        parts.append("outside phases " + " -> ".join(f"{res[n]['steps'][step]['outside_phases_seconds']:.2f}" for n in sizes))
        lines.append(f"  {step:<16}" + ", ".join(parts))
    lines += ["", "per-batch cost of each build (gap between batch commits; left out: the first batch and the "
              "warm-up batches holding the pool documents, and the one after them)"]
    for n in sizes:
        bt = res[n]["build"]["table_after_build"]["batches"]
        if bt["last_vs_first"] is None:
            lines.append(f"  N={n}: {bt['count']} batches, {bt['compared']} after the warm-up: too few to compare")
            continue
        lines.append(f"  N={n}: {bt['count']} batches, {bt['compared']} compared (from batch {bt['first_compared']}); "
                     f"first {bt['tenth']}: {bt['first_tenth_mean_s']:.3f} s/batch, last {bt['tenth']}: "
                     f"{bt['last_tenth_mean_s']:.3f} s/batch; last/first = {bt['last_vs_first']:.2f}")
    return "\n".join(lines)


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
