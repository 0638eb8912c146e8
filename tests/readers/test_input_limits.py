"""Resource limits on input (ReaderSettings) and inputs that are not what they seem:
each bad document fails alone with a one-line reason, the rest of its batch is
stored; ``grainline search`` prints one safe line per hit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.readers import ReaderSettings, iter_documents
from grainline.storage.chunks import ChunkStore

from tests.conftest import write_files
from tests.cli.test_cli_faults import cli_env


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """``a: &a [x, x, ...]``, then each level a list of aliases of the one before:
    a few hundred bytes that stand for width**levels values."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "---\n" + "\n".join(lines) + "\n---\n# Boom\n\nThe body of a bomb.\n"


PDF_AS_HTML = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def corpus(root: Path) -> Path:
    return write_files(root, {
        "bomb.md": alias_bomb(),
        "self.md": "---\na: &a [1, *a]\n---\nA list that contains itself.\n",
        # 10 KB of front matter, 80 KB of metadata (each alias is a copy in JSON)
        "fat.md": "---\nnote: &n " + json.dumps("n" * 10_000) + "\nnotes: [" + ", ".join(["*n"] * 7) + "]\n---\nSmall body.\n",
        "zero-width.txt": "\u200b\u200c\u200d\ufeff\u2060 \u200b\n",
        "bidi.txt": "\u202e\u202d\u2066\u2067\u2069\u200f\n",
        "fake.html": PDF_AS_HTML,
        "escape\nname.txt": "Volcanoes \x1b[31mturn red\x1b[0m when lava reaches the surface of the crust.\n",
        "good.md": "# Tides\n\nThe moon pulls the oceans and makes the tides rise and fall twice a day.\n",
        "records.jsonl": json.dumps({"id": "big", "text": "\n\n".join(f"Paragraph {i} about rivers and deltas." for i in range(6000))}) + "\n",
    })


def test_bad_front_matter_fails_fast_and_small(tmp_path):
    """An 8-level alias bomb fails in well under a second without growing memory; a
    self-referring alias and oversized front matter fail too, naming the setting."""
    src = corpus(tmp_path / "src")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = {getattr(d, "where", getattr(d, "doc_id", None)): d for d in iter_documents(src, ReaderSettings(part_bytes=64 * 1024))}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 100_000  # KiB
    assert "max_yaml_nodes" in got["bomb.md"].reason
    assert "refers to itself" in got["self.md"].reason
    assert "max_metadata_bytes" in got["fat.md"].reason
    small = {d.where: d for d in iter_documents(src / "fat.md", ReaderSettings(max_front_matter_bytes=1000))}
    assert "max_front_matter_bytes" in small["fat.md"].reason
    assert got["zero-width.txt"].reason.startswith("no visible text") and got["bidi.txt"].reason.startswith("no visible text")
    assert "PDF" in got["fake.html"].reason
    # the 200 KB record is cut into parts at paragraph breaks, like a big text file
    # (documents are named by their real path; a record by file#id)
    parts = sorted(k for k in got if k.rsplit("/", 1)[-1].startswith("records.jsonl#big#part-"))
    assert len(parts) >= 3 and all(len(got[k].text.encode()) <= 64 * 1024 for k in parts)
    assert "".join(got[k].text for k in parts) == "\n\n".join(f"Paragraph {i} about rivers and deltas." for i in range(6000))


def test_too_many_chunks_fails_that_document_only(tmp_path, embedder):
    src = write_files(tmp_path / "src", {
        "many.txt": " ".join(f"Sentence number {i} is here." for i in range(40)) + "\n",
        "few.txt": "One sentence about tides. Another about the moon.\n",
    })
    db = tmp_path / "db"
    rec = run_ingest(IngestSettings(source=str(src), db=str(db), strategies="sentence", embedder=EmbedderSettings(device="cpu"),
                                    reader=ReaderSettings(max_chunks_per_doc=10)))
    (f,) = rec.counts.failures
    assert f["where"].rsplit("/", 1)[-1] == "many.txt" and "max_chunks_per_doc 10" in f["reason"]
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    assert {r.rsplit("/", 1)[-1] for b in store.scan(["doc_id"]) for r in b.column("doc_id").to_pylist()} == {"few.txt"}


def test_cli_stores_the_good_documents_and_search_prints_safe_lines(tmp_path, embedder):
    src = corpus(tmp_path / "src")
    db = tmp_path / "db"
    env = cli_env(tmp_path)
    res = subprocess.run([sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(db), "--strategy", "paragraph",
                          "--no-progress", "--no-maintain", "--no-parquet", "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    failed = {ln.split()[1] for ln in res.stdout.splitlines() if ln.strip().startswith("FAILED")}
    assert {"bomb.md", "self.md", "fat.md", "zero-width.txt", "bidi.txt", "fake.html"} <= failed, res.stdout
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    # Files are stored under their real paths, a record as file#id.
    stored = {r.rsplit("/", 1)[-1].split("#part-")[0] for b in store.scan(["doc_id"]) for r in b.column("doc_id").to_pylist()}
    assert {"good.md", "escape\nname.txt", "records.jsonl#big"} <= stored and not stored & failed
    res = subprocess.run([sys.executable, "-m", "grainline.cli", "search", "lava turns red", "--db", str(db), "-k", "3",
                          "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    hits = [ln for ln in res.stdout.splitlines() if ln.startswith("  ") and ". " in ln]
    assert len(hits) == 3 and "\x1b" not in res.stdout
    assert any("escape\\nname.txt" in h and "\\x1b[31m" in h for h in hits), hits
