"""Peak memory of ingesting one big .txt file, measured in a child process.

    .venv/bin/python scripts/big_text_memory.py 5 50 --strategies article --long-article truncate

For each size (MB) it writes a file of paragraphs drawn from a small set, ingests it
with ``run_ingest`` in a fresh child process, and prints the child's peak RSS
(``os.wait4``) and wall time. Nothing is asserted: this is a measurement."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.readers import ReaderSettings
a = json.loads(sys.argv[1])
rec = run_ingest(IngestSettings(source=a["src"], db=a["db"], strategies=a["strategies"], long_article=a["long_article"],
                                batch_docs=a["batch_docs"], embedder=EmbedderSettings(device="cpu"),
                                reader=ReaderSettings(part_bytes=a["part_bytes"])))
print(json.dumps({"docs": rec.counts.docs_added, "failed": rec.counts.docs_failed, "chunks": rec.counts.chunks_written}))
"""


def write_corpus(path: Path, megabytes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    paragraphs = [
        f"Paragraph {i}. " + " ".join(f"The river number {i} carries {j} tonnes of silt to the delta." for j in range(3 + i % 6))
        for i in range(16)
    ]
    target = megabytes * 1024 * 1024
    with open(path, "w", encoding="utf-8") as f:
        n = f.write("River notes\n\n")
        while n < target:
            n += f.write(rng.choice(paragraphs) + "\n\n")


def measure(megabytes: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        write_corpus(src / "big.txt", megabytes)
        payload = json.dumps({"src": str(src), "db": str(Path(tmp) / "db"), "strategies": args.strategies,
                              "long_article": args.long_article, "batch_docs": args.batch_docs, "part_bytes": args.part_bytes})
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, payload], stdout=subprocess.PIPE)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"ingestion of {megabytes} MB failed")
        # ru_maxrss is in KiB on Linux
        return {"file_mb": megabytes, "peak_rss_mib": round(usage.ru_maxrss / 1024), "wall_s": round(wall, 1), **json.loads(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sizes", nargs="+", type=int, help="file sizes in MB")
    p.add_argument("--strategies", default="article")
    p.add_argument("--long-article", default="truncate")
    p.add_argument("--batch-docs", type=int, default=64)
    p.add_argument("--part-bytes", type=int, default=1024 * 1024)
    args = p.parse_args()
    for size in args.sizes:
        print(json.dumps(measure(size, args)), flush=True)


if __name__ == "__main__":
    main()
