"""``grainline bench``: grainline's ingestion against a plain sentence-transformers
encode loop on the same chunk texts.

Stages, each in a fresh child process so its peak RSS is its own (``os.wait4``):

1. baseline: ``SentenceTransformer(model).encode(texts, batch_size=32)`` in fp32;
2. grainline's embedding stage alone on the same chunks;
3. grainline's whole ingestion (read, chunk, embed, write LanceDB and Parquet) through
   the Prefect flow, against a Prefect server that is already running;
4. the same ingestion again with nothing changed.

May import: chunkers, documents, embedding, evaluation, flows, ingest, readers, server, storage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from grainline.documents import Document

WORDS = (
    "river mountain engine protein orbit harvest ledger signal glacier membrane violin "
    "harbor circuit pollen thunder archive lattice canyon enzyme turbine meadow quartz "
    "compass falcon ribbon vessel granite lantern mosaic voltage nectar spindle tundra "
    "beacon cipher delta ember fjord garnet helix iris jasper kelp lumen magnet nimbus"
).split()


def _paragraph(rng: random.Random) -> str:
    sents = []
    for _ in range(rng.randint(3, 6)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
        sents.append(" ".join(words).capitalize() + ".")
    return " ".join(sents)


def generated_documents(n_docs: int, seed: int = 0, reuse_pool: int | None = None) -> Iterator[Document]:
    """A synthetic corpus of any size, produced lazily: each document has 3 to 6
    paragraphs of 3 to 6 sentences of 8 to 18 words. With ``reuse_pool``, paragraphs are
    drawn from a fixed pool of that many, so most chunk texts repeat and their vectors
    are reused: the pipeline's reading, chunking, writing and export run at full scale
    while embedding stays small (for measuring memory at scale on a CPU)."""
    rng = random.Random(seed)
    pool = reuse_pool_paragraphs(reuse_pool, seed) if reuse_pool else None
    for i in range(n_docs):
        k = rng.randint(3, 6)
        paras = [rng.choice(pool) for _ in range(k)] if pool else [_paragraph(rng) for _ in range(k)]
        yield Document(doc_id=f"gen-{i:07d}", text="\n\n".join(paras), title=f"Generated {i}")


def reuse_pool_paragraphs(size: int, seed: int = 0) -> list[str]:
    """The paragraphs :func:`generated_documents` draws from with ``reuse_pool=size``."""
    return [_paragraph(random.Random(f"{seed}-pool-{i}")) for i in range(size)]


# Paragraph pool of ``generated-reuse:N`` corpora.
REUSE_POOL = 2000


def corpus_documents(spec: str) -> Iterator[Document]:
    """``squad:PATH`` (the dev contexts, one document per article), ``beir:PATH``,
    ``generated:N`` (N synthetic documents) or ``generated-reuse:N`` (N synthetic
    documents whose paragraphs come from a pool of 2,000)."""
    kind, _, arg = spec.partition(":")
    if kind in ("generated", "generated-reuse"):
        try:
            n = int(arg)
        except ValueError:
            raise ValueError(f"generated corpus size must be an integer, got {arg!r}") from None
        yield from generated_documents(n, reuse_pool=REUSE_POOL if kind == "generated-reuse" else None)
        return
    from grainline.evaluation.datasets import load_dataset

    yield from load_dataset(spec).documents


def write_corpus(spec: str, folder: Path) -> tuple[int, int]:
    """The corpus as JSONL files under ``folder`` (so ingestion reads it like any
    source), written in a streaming way; returns the number of documents and of
    UTF-8 bytes of their text."""
    folder.mkdir(parents=True, exist_ok=True)
    n = n_bytes = 0
    part = None
    for doc in corpus_documents(spec):
        if n % 10_000 == 0:
            if part:
                part.close()
            part = open(folder / f"part-{n // 10_000:05d}.jsonl", "w", encoding="utf-8")
        part.write(json.dumps({"id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
        n += 1
        n_bytes += len(doc.text.encode("utf-8"))
    if part:
        part.close()
    return n, n_bytes


# ----------------------------------------------------------------------------- stages


def _chunks(corpus: str, strategy: str, model: str, device: str) -> tuple[list[Any], Any]:
    from grainline.chunkers import ChunkContext, settings_for
    from grainline.chunkers.base import CHUNKERS
    from grainline.embedding import EmbedderSettings, get_embedder
    from grainline.readers import iter_documents

    embedder = get_embedder(EmbedderSettings(model=model, device=device))
    ctx = ChunkContext.default(embedder.window)
    fn, cs = CHUNKERS.get(strategy), settings_for(strategy)
    chunks = [c for d in iter_documents(corpus) if isinstance(d, Document) for c in fn(d, cs, ctx)]
    return chunks, embedder


def _model_tokens(chunks: list[Any], limit: int) -> int:
    # What the model actually processes: each text capped at its window (plus the
    # two special tokens); pooled articles count every window.
    return sum(min(c.n_model_tokens, limit) + 2 if c.handling != "pool" else c.n_model_tokens + 2 for c in chunks)


def stage_baseline(corpus: str, strategy: str, model: str, device: str, **_: Any) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from grainline.embedding import resolve_model_path

    chunks, embedder = _chunks(corpus, strategy, model, device)
    texts = [c.text for c in chunks]
    t0 = time.perf_counter()
    st = SentenceTransformer(resolve_model_path(model), device=embedder.device)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    st.encode(texts, batch_size=32)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "model_load_seconds": load, "chunks": len(texts),
            "model_tokens": _model_tokens(chunks, embedder.window.max_tokens)}


def stage_prepare(model: str, device: str, precision: str = "auto", backend: str = "auto", **_: Any) -> dict[str, Any]:
    """Load the model once, so that a converted model (backend openvino) is built and
    cached before anything is timed, as a downloaded model would be."""
    from grainline.embedding import Embedder, EmbedderSettings

    t0 = time.perf_counter()
    Embedder(EmbedderSettings(model=model, device=device, precision=precision, backend=backend)).model  # noqa: B018
    return {"seconds": time.perf_counter() - t0}


def stage_embed(corpus: str, strategy: str, model: str, device: str, batch_size: int = 64, precision: str = "auto",
                backend: str = "auto", **_: Any) -> dict[str, Any]:
    from grainline.embedding import Embedder, EmbedderSettings

    chunks, _e = _chunks(corpus, strategy, model, device)
    embedder = Embedder(EmbedderSettings(model=model, device=device, batch_size=batch_size, precision=precision, backend=backend))
    t0 = time.perf_counter()
    embedder.model  # noqa: B018 - load outside the timed part, as for the baseline
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder.embed_chunks(chunks)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "model_load_seconds": load, "chunks": len(chunks),
            "model_tokens": _model_tokens(chunks, embedder.window.max_tokens), "precision": embedder.precision,
            "backend": embedder.backend_choice.describe()}


def stage_ingest(corpus: str, strategy: str, model: str, device: str, db: str, batch_size: int = 64, precision: str = "auto",
                 backend: str = "auto", **_: Any) -> dict[str, Any]:
    from grainline.embedding import EmbedderSettings
    from grainline.flows.ingest import ingest_here
    from grainline.ingest import IngestSettings

    from grainline.storage.lance_import import import_lancedb

    settings = IngestSettings(source=corpus, strategies=strategy, db=db, batch_docs=256, embedder=EmbedderSettings(
        model=model, device=device, batch_size=batch_size, precision=precision, backend=backend))
    # LanceDB's import (about 1 s, once per process) is start-up, as Prefect's is: the
    # stage's seconds are the run's, its process's start-up is in process_seconds.
    import_lancedb()
    t0 = time.perf_counter()
    result = ingest_here(settings)
    secs = time.perf_counter() - t0
    c = result["counts"]
    return {"seconds": secs, "chunks_written": c["chunks_written"], "chunks_embedded": c["chunks_embedded"],
            "stage_seconds": c["stage_seconds"], "docs": c["docs_seen"],
            "precision": (result.get("precision") or {}).get("chosen")}


STAGES = {"prepare": stage_prepare, "baseline": stage_baseline, "embed": stage_embed, "ingest": stage_ingest}


def run_stage(stage: str, args: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one stage in a child process; adds its wall time and peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as out:
        out_path = out.name
    log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "grainline.bench", stage, json.dumps(args), out_path],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"bench stage {stage} failed ({proc.returncode}); log {log.name}:\n{Path(log.name).read_text()[-3000:]}")
    result = json.loads(Path(out_path).read_text())
    result["process_seconds"] = wall
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


BENCH_STAGES = ("baseline", "embed", "ingest", "rerun")


def parse_stages(value: str | Sequence[str]) -> list[str]:
    """'ingest,rerun' -> ['ingest', 'rerun'], in run order; rerun needs ingest."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in BENCH_STAGES]
    if unknown or not names:
        raise ValueError(f"unknown bench stages {unknown or names!r}; choose from {', '.join(BENCH_STAGES)}")
    if "rerun" in names and "ingest" not in names:
        raise ValueError("the rerun stage re-runs the ingest stage; add ingest")
    return [n for n in BENCH_STAGES if n in names]


def bench(dataset: str, strategy: str, output: str | None, model: str, device: str, batch_size: int = 64,
          precision: str = "auto", stages: str | Sequence[str] = BENCH_STAGES, keep: bool = False,
          backend: str = "auto") -> dict[str, Any]:
    """The chosen stages (default all four) on one corpus; returns (and writes, with
    ``output``) the figures. Ratios are given for the stages that ran. The corpus,
    database and Prefect home live in a temporary folder, removed unless ``keep``."""
    from grainline.embedding import pick_device
    from grainline.server import start_local_server

    wanted = parse_stages(stages)
    load_at_start = os.getloadavg()  # figures taken on a busy machine say so
    work = Path(tempfile.mkdtemp(prefix="grainline-bench-"))
    corpus = work / "corpus"
    n_docs, n_bytes = write_corpus(dataset, corpus)
    server_start = None
    server = None
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1")
    if "ingest" in wanted:
        t0 = time.perf_counter()
        server = start_local_server(work / "prefect-home")
        server_start = time.perf_counter() - t0
        env["PREFECT_API_URL"] = server.url
    args = {"corpus": str(corpus), "strategy": strategy, "model": model, "device": device,
            "db": str(work / "db"), "batch_size": batch_size, "precision": precision, "backend": backend}
    results: dict[str, dict[str, Any]] = {}
    prepare_seconds = None
    try:
        if backend != "torch":
            prepare_seconds = run_stage("prepare", args, env)["seconds"]
        for name in wanted:
            results[name] = run_stage("ingest" if name == "rerun" else name, args, env)
    finally:
        if server is not None:
            server.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    b = results.get("baseline")
    n_chunks = b["chunks"] if b else results["ingest"]["chunks_written"]
    n_tokens = b["model_tokens"] if b else None
    flops = model_flops_per_token(model, n_tokens / n_chunks) if n_tokens and n_chunks else None
    peak = fp32_fma_peak_gflops() if not pick_device(device).startswith(("cuda", "mps")) else None
    for st in results.values():
        # every stage handles the same chunk texts (the re-run finds them all stored)
        st["chunks_per_s"] = n_chunks / st["seconds"] if st["seconds"] else None
        st["model_tokens_per_s"] = n_tokens / st["seconds"] if st["seconds"] and n_tokens else None
        # Only stages that ran the model: a re-run that embeds nothing has no share.
        if flops and peak and st["model_tokens_per_s"] and st.get("chunks_embedded", 1):
            st["share_of_fp32_fma_peak"] = st["model_tokens_per_s"] * flops / 1e9 / peak["gflops"]
    if "ingest" in results:
        results["ingest"]["steps"] = ingest_steps(results["ingest"], n_bytes, n_tokens)
    import torch

    dev = pick_device(device)
    report = {
        "dataset": dataset, "strategy": strategy, "model": model, "device": dev, "precision": precision, "backend": backend,
        # What auto (or the setting) ran at: the embedding stages report it.
        "precision_chosen": next((st["precision"] for st in results.values() if st.get("precision")), None),
        "backend_chosen": next((st["backend"] for st in results.values() if st.get("backend")), None),
        "machine": machine_info(),
        "load_average_at_start": list(load_at_start),
        "device_name": torch.cuda.get_device_name(0) if dev.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads",
        "documents": n_docs, "corpus_mb": n_bytes / 1e6, "chunks": n_chunks, "model_tokens": n_tokens,
        "prefect_server_start_seconds": server_start,
        "model_prepare_seconds": prepare_seconds,
        "model_mflop_per_token": flops / 1e6 if flops else None,
        "fp32_fma_peak": peak,
        "work_dir": str(work) if keep else None,
        "stages": results,
    }
    for key, (num, den) in {"embed_vs_baseline": ("embed", "baseline"), "ingest_vs_baseline": ("ingest", "baseline"),
                            "rerun_vs_ingest": ("rerun", "ingest"), "ingest_vs_embed": ("ingest", "embed")}.items():
        if num in results and den in results:
            report[key] = results[num]["seconds"] / results[den]["seconds"]
    if output:
        Path(output).write_text(json.dumps(report, indent=2, default=str))
    return report


def ingest_steps(ingest: dict[str, Any], n_bytes: int, n_tokens: int | None) -> dict[str, Any]:
    """Where the ingest stage's time went: each step's seconds (as the run's ledger
    counts them, summed over batches), the corpus MB/s and model tokens/s at that step's
    pace, and the share of the stage spent outside the model (everything but the
    embed step, Prefect and start-up included)."""
    steps: dict[str, Any] = {}
    for name, secs in (ingest.get("stage_seconds") or {}).items():
        steps[name] = {"seconds": secs, "mb_per_s": n_bytes / 1e6 / secs if secs else None,
                       "model_tokens_per_s": n_tokens / secs if secs and n_tokens and name == "embed" else None}
    embed = (ingest.get("stage_seconds") or {}).get("embed")
    total = ingest.get("seconds")
    return {"by_step": steps, "outside_model_share": (total - embed) / total if total and embed is not None else None}


def model_flops_per_token(model: str, avg_tokens: float) -> float | None:
    """FLOPs a BERT-like encoder spends per token: two per multiply-add of every linear
    layer (attention projections, feed-forward), plus attention's scores and weighted
    sum over the ``avg_tokens`` of a text. None when the model's config.json is not on disk."""
    from grainline.embedding import resolve_model_path

    folder = Path(resolve_model_path(model))
    config = next((c for c in (folder / "config.json", *folder.glob("*/config.json")) if c.is_file()), None)
    if config is None:
        return None
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        hidden, layers, inner = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])
    except (ValueError, KeyError, TypeError):
        return None
    linear = layers * (4 * hidden * hidden + 2 * hidden * inner)
    attention = layers * 2 * hidden * avg_tokens
    return 2.0 * (linear + attention)


def fp32_fma_peak_gflops() -> dict[str, Any] | None:
    """This CPU's fp32 peak: CPUs x 2 FMA pipes x lanes (8 with AVX2, 16 with AVX-512)
    x 2 FLOPs x the clock /proc/cpuinfo reports (its current clock, not the boost)."""
    from grainline.embedding.precision import cpu_flags

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            mhz = next(float(line.partition(":")[2]) for line in fh if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    lanes = 16 if "avx512f" in cpu_flags() else 8
    cpus = os.cpu_count() or 1
    return {"gflops": cpus * 2 * lanes * 2 * mhz / 1000, "cpus": cpus, "fma_pipes": 2, "lanes": lanes, "mhz": mhz}


BENCH_LIBRARIES = ("torch", "sentence-transformers", "transformers", "lancedb", "pyarrow", "openvino", "nncf", "prefect", "pysbd", "blingfire")


def machine_info() -> dict[str, Any]:
    """What figures from different machines need to be compared: the CPU, its bf16
    matrix units, the core count and the versions of the libraries that do the work
    (None: not installed)."""
    from grainline.embedding.precision import BF16_FLAGS, cpu_flags, library_version

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = cpu_flags()
    return {
        # "AMD EPYC" alone names no generation: the family and model numbers do.
        "cpu": info.get("model name"), "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cpu_count": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in (*BF16_FLAGS, "amx_tile", "amx_int8", "avx512f", "avx512_vnni", "avx2")},
        "python": sys.version.split()[0],
        "libraries": {name: library_version(name) for name in BENCH_LIBRARIES},
    }


def format_report(rep: dict[str, Any]) -> str:
    tokens = f"{rep['model_tokens']} model tokens; " if rep.get("model_tokens") else ""
    lines = [
        f"grainline bench: {rep['dataset']} / {rep['strategy']}: {rep['documents']} documents, {rep['chunks']} chunks, "
        f"{tokens}model {rep['model']} on {rep['device']} ({rep['device_name']}, backend {rep.get('backend_chosen') or rep.get('backend', 'torch')}, "
        f"precision {rep['precision']}" + (f" -> {rep['precision_chosen']}" if rep.get("precision_chosen") else "") + ")",
    ]
    m = rep.get("machine") or {}
    if m.get("cpu"):
        on = [f for f, present in (m.get("cpu_flags") or {}).items() if present]
        lines.append(f"CPU: {m['cpu']} (family/model {m.get('cpu_family_model')}), {m.get('cpu_count')} CPUs; "
                     f"flags: {' '.join(on) or 'none of the listed'}")
    if rep.get("load_average_at_start"):
        lines.append("load average at start: " + " ".join(f"{x:.2f}" for x in rep["load_average_at_start"])
                     + f" ({rep['machine']['cpu_count']} CPUs)")
    if rep.get("prefect_server_start_seconds") is not None:
        lines.append(f"Prefect server start-up (not counted below): {rep['prefect_server_start_seconds']:.1f} s")
    if rep.get("model_prepare_seconds") is not None:
        lines.append(f"Model conversion, cached for later runs (not counted below): {rep['model_prepare_seconds']:.1f} s")
    peak = rep.get("fp32_fma_peak")
    if peak and rep.get("model_mflop_per_token"):
        lines.append(f"fp32 FMA peak: {peak['cpus']} CPUs x {peak['fma_pipes']} FMA pipes x {peak['lanes']} lanes x 2 x "
                     f"{peak['mhz'] / 1000:.2f} GHz = {peak['gflops']:.0f} GFLOP/s; the model costs "
                     f"{rep['model_mflop_per_token']:.1f} MFLOP per token")
    lines += ["", f"{'stage':<10} {'seconds':>9} {'chunks/s':>10} {'tokens/s':>11} {'peak RSS MiB':>13} {'of peak':>8}"]
    for name, s in rep["stages"].items():
        share = f"{100 * s['share_of_fp32_fma_peak']:>7.1f}%" if s.get("share_of_fp32_fma_peak") else f"{'':>8}"
        lines.append(f"{name:<10} {s['seconds']:>9.2f} {s['chunks_per_s'] or 0:>10.1f} {s['model_tokens_per_s'] or 0:>11.0f} "
                     f"{s['peak_rss_mib']:>13.0f} {share}")
    steps = (rep["stages"].get("ingest") or {}).get("steps")
    if steps and steps["by_step"]:
        lines += ["", f"ingest by step ({rep.get('corpus_mb', 0):.2f} MB of text): "
                  + ", ".join(f"{k} {v['seconds']:.2f} s" + (f" ({v['mb_per_s']:.2f} MB/s)" if v["mb_per_s"] else "")
                              for k, v in steps["by_step"].items())]
        if steps["outside_model_share"] is not None:
            lines.append(f"share of the ingest stage outside the model: {100 * steps['outside_model_share']:.1f}%")
    lines.append("")
    for key, label in (("embed_vs_baseline", "embed/baseline  (2/1)"), ("ingest_vs_baseline", "ingest/baseline (3/1)"),
                       ("rerun_vs_ingest", "rerun/ingest    (4/3)"), ("ingest_vs_embed", "ingest/embed    (3/2)")):
        if key in rep:
            lines.append(f"{label} = {rep[key]:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":  # child process entry: STAGE JSON_ARGS OUT_PATH
    stage, raw, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    res = STAGES[stage](**json.loads(raw))
    Path(out_path).write_text(json.dumps(res))
