"""Sentence segmenters side by side on real text: speed on one core and boundary
agreement with pysbd (grainline's segmenter before blingfire became the default).

    .venv/bin/python scripts/compare_segmenters.py [--data ../shared/data] [--limit N]

For each corpus (SQuAD v1.1 dev paragraphs, SciFact abstracts) and each segmenter
registered in ``grainline.chunkers.segment`` it prints MB/s (text through
``sentence_spans`` on one thread) and boundary precision, recall and F1 against pysbd:
a boundary is a sentence end inside a document (its last end is left out, as every
segmenter has it)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def squad_texts(data: Path) -> list[str]:
    """Every paragraph (``context``) of SQuAD v1.1 dev, once."""
    raw = json.loads((data / "squad-v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    return [p["context"] for art in raw["data"] for p in art["paragraphs"]]


def scifact_texts(data: Path) -> list[str]:
    """Every SciFact abstract as BEIR stores it (one line of text)."""
    with open(data / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def boundaries(spans: list[tuple[int, int]]) -> set[int]:
    return {e for _, e in spans[:-1]}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N texts of each corpus")
    args = ap.parse_args()
    from grainline.chunkers.segment import SEGMENTERS, sentence_spans

    data = Path(args.data)
    for name, texts in (("squad-dev", squad_texts(data)), ("scifact", scifact_texts(data))):
        if args.limit:
            texts = texts[: args.limit]
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        found: dict[str, list[set[int]]] = {}
        for seg in SEGMENTERS.names():
            sentence_spans("Warm up. Once.", segmenter=seg)
            t0 = time.process_time()
            spans = [sentence_spans(t, segmenter=seg) for t in texts]
            cpu = time.process_time() - t0
            found[seg] = [boundaries(s) for s in spans]
            print(f"{name:10s} {seg:10s} {len(texts):6d} texts {mb:6.2f} MB  {sum(map(len, spans)):7d} sentences  "
                  f"{cpu:7.2f} s CPU  {mb / max(cpu, 1e-9):8.2f} MB/s")
        ref = found["pysbd"]
        for seg, got in found.items():
            if seg == "pysbd":
                continue
            tp = sum(len(a & b) for a, b in zip(got, ref))
            n_got, n_ref = sum(map(len, got)), sum(map(len, ref))
            p, r = tp / max(n_got, 1), tp / max(n_ref, 1)
            f1 = 2 * p * r / max(p + r, 1e-12)
            print(f"{name:10s} {seg:10s} vs pysbd: precision {p:.4f} recall {r:.4f} F1 {f1:.4f}")


if __name__ == "__main__":
    main()
