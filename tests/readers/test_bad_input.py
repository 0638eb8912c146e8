"""Every kind of bad input the ingestion must survive, in one real run beside good
documents: each becomes a failure with a reason, and every good document is stored.

The run happens in a child process so that an unreadable file is really unreadable:
as root (CI) the child gives up the capabilities that let root read any file
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so ``chmod 0`` holds for it too."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.readers import ReaderSettings
from grainline.readers.text import _read_text
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger

from tests.conftest import write_files
from tests.readers.test_readers import make_pdf

pytestmark = pytest.mark.slow

BIG_BYTES = 50 * 1024 * 1024

# The child: discover the source, start reading it lazily, delete a file the iterator
# has discovered but not read yet, and ingest everything with the real run_ingest.
CHILD = r"""
import json, os, sys
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.readers import open_source

a = json.loads(sys.argv[1])
root, documents = open_source(a["src"])

def reading():
    for i, item in enumerate(documents):
        yield item
        if i == 0:
            os.unlink(a["victim"])  # discovered, not yet read

settings = IngestSettings(source=str(root.resolve()), db=a["db"], strategies="article", long_article="truncate",
                          embedder=EmbedderSettings(device="cpu"))
rec = run_ingest(settings, run_id="bad-input", documents=reading())
print(json.dumps({"status": rec.status, "counts": rec.counts.as_dict()}))
"""


def encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Secret text about volcanoes"]))))
    w.encrypt(user_password="hunter2", owner_password="owner", algorithm="RC4-128")
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def image_only_pdf() -> bytes:
    """One page showing an 8x8 grey image and no text, as a scan would."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    w = PdfWriter()
    page = w.add_blank_page(72, 72)
    img = DecodedStreamObject()
    img.set_data(bytes(range(64)))
    img.update({
        NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
        NameObject("/Width"): NumberObject(8), NameObject("/Height"): NumberObject(8),
        NameObject("/ColorSpace"): NameObject("/DeviceGray"), NameObject("/BitsPerComponent"): NumberObject(8),
    })
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): w._add_object(img)})})
    content = DecodedStreamObject()
    content.set_data(b"q 72 0 0 72 0 0 cm /Im0 Do Q")
    page[NameObject("/Contents")] = w._add_object(content)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def write_big_text(path: Path, size: int) -> None:
    """``size`` bytes of paragraphs drawn from a small set (their vectors are reused)
    with CRLF breaks now and then, so chunking still sees every byte."""
    rng = random.Random(6)
    paragraphs = [
        f"Delta {i}. " + " ".join(f"The river number {i} carries {j} tonnes of silt to the sea." for j in range(2 + i % 7))
        for i in range(16)
    ]
    with open(path, "w", encoding="utf-8", newline="") as f:
        n = f.write("River notes\n\n")
        while n < size:
            n += f.write(rng.choice(paragraphs) + ("\r\n\r\n" if rng.random() < 0.05 else "\n\n"))


def drop_read_anything() -> None:
    """In the child, before exec: remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the bounding set, so root after exec obeys file permission bits like anyone else."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


# where -> a phrase its failure reason must hold
EXPECTED_FAILURES = {
    "garbage.txt": "binary content",
    "latin1.txt": "invalid UTF-8 at byte 3",
    "empty.md": "empty document",
    "blank.txt": "whitespace-only document",
    "deep.html": "HTML nested deeper than 10000 levels",
    "records/mixed.jsonl:2": "bad JSON",
    "records/mixed.jsonl:3": "missing text field 'text'",
    "records/mixed.jsonl:5": "not a JSON object",
    "encrypted.pdf": "encrypted PDF",
    "scan.pdf": "no text layer",
    "unreadable.txt": "permission denied",
    "zz/gone.txt": "file not found (deleted after discovery?)",
    "loop-a.txt": "symlink loop",
    "loop-b.txt": "symlink loop",
    "folder-loop": "symlink loop",
    "escape.txt": "symlink points outside the ingested root",
}
GOOD = {"good/bees.md", "good/tides.txt", "good/page.html", "utf16.txt", "deep-ok.html", "records/mixed.jsonl#ok-1",
        "records/mixed.jsonl#ok-2"}


def test_every_bad_input_in_one_run(tmp_path, embedder):
    preexec = None
    if os.geteuid() == 0:
        try:  # can this process give the capabilities up at all?
            subprocess.run(["true"], preexec_fn=drop_read_anything, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE to make a file unreadable: {exc}")
        preexec = drop_read_anything
    src, db = tmp_path / "src", tmp_path / "db"
    outside = write_files(tmp_path / "outside", {"secret.txt": "OUTSIDE-SENTINEL text that must not be ingested."})
    write_files(src, {
        "good/bees.md": "---\ntitle: Bees\n---\n# Bees\n\nHoneybees dance to show their sisters where flowers are.\n",
        "good/tides.txt": "Tides\n\nThe Moon's gravity raises a bulge of water.\n\nNeap tides are weaker.\n",
        "good/page.html": "<html><head><title>Bread</title></head><body><p>A sourdough starter is a living culture.</p></body></html>",
        "utf16.txt": "Lava\n\nA UTF-16 file about volcanoes and lava.".encode("utf-16"),
        "deep-ok.html": "<div>" * 5000 + "deep <b>text</b>" + "</div>" * 5000,
        "deep.html": "<div>" * 50_000 + "too deep" + "</div>" * 50_000,
        "garbage.txt": bytes(range(256)) * 4,
        "latin1.txt": "caf\xe9 au lait".encode("latin-1"),
        "empty.md": "",
        "blank.txt": "   \n\t\n  ",
        "records/mixed.jsonl": "\n".join([
            json.dumps({"id": "ok-1", "text": "A fine record about glaciers and ice."}),
            "{not json",
            json.dumps({"id": "no-text"}),
            json.dumps({"id": "ok-2", "text": "Another good record, about deserts."}),
            "[1, 2]",
        ]) + "\n",
        "encrypted.pdf": encrypted_pdf(),
        "scan.pdf": image_only_pdf(),
        "unreadable.txt": "Nobody may read this.",
        "zz/gone.txt": "Deleted after discovery, before reading.",
    })
    write_big_text(src / "big.txt", BIG_BYTES)
    (src / "unreadable.txt").chmod(0)
    (src / "loop-a.txt").symlink_to(src / "loop-b.txt")
    (src / "loop-b.txt").symlink_to(src / "loop-a.txt")
    (src / "folder-loop").symlink_to(src, target_is_directory=True)
    (src / "escape.txt").symlink_to(outside / "secret.txt")

    args = json.dumps({"src": str(src), "db": str(db), "victim": str(src / "zz/gone.txt")})
    proc = subprocess.run([sys.executable, "-c", CHILD, args], preexec_fn=preexec, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed"

    # every bad input is a failure with its reason, in the RunRecord and in the ledger
    failures = {f["where"]: f["reason"] for f in result["counts"]["failures"]}
    assert set(failures) == set(EXPECTED_FAILURES), failures
    for where, phrase in EXPECTED_FAILURES.items():
        assert phrase in failures[where], (where, failures[where])
    (row,) = Ledger(str(db)).runs()
    assert row["status"] == "completed" and row["docs_failed"] == len(EXPECTED_FAILURES)
    assert {f["where"]: f["reason"] for f in row["failures"]} == failures

    # every good document is stored, and the 50 MB file as parts of at most part_bytes
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    rows = [r for b in store.scan(["doc_id", "text", "start", "end", "metadata", "handling"]) for r in b.to_pylist()]
    for r in rows:  # ids are real paths: compare them relative to the source
        r["doc_id"] = r["doc_id"].removeprefix(os.path.realpath(src) + "/")
    stored = {r["doc_id"] for r in rows}
    parts = sorted((r for r in rows if r["doc_id"].startswith("big.txt#part-")), key=lambda r: r["doc_id"])
    assert stored - {r["doc_id"] for r in parts} == GOOD
    assert not any("OUTSIDE-SENTINEL" in r["text"] or "too deep" in r["text"] for r in rows)
    assert next(r["text"] for r in rows if r["doc_id"] == "deep-ok.html") == "deep text"

    limit = ReaderSettings().part_bytes
    text = _read_text(src / "big.txt", ReaderSettings())  # the whole file's text, as the reader sees it
    assert len(parts) >= BIG_BYTES // limit
    assert [r["doc_id"] for r in parts] == [f"big.txt#part-{i:04d}" for i in range(len(parts))]
    covered = 0
    for r in parts:
        part = json.loads(r["metadata"])["file_part"]
        assert part["char_start"] == covered  # the parts tile the file, in order
        assert len(text[part["char_start"]:part["char_end"]].encode("utf-8")) <= limit
        # the article chunk is the part, offsets within the part
        assert 0 <= r["start"] <= r["end"] <= part["char_end"] - part["char_start"]
        assert text[part["char_start"] + r["start"]:part["char_start"] + r["end"]] == r["text"]
        assert r["handling"] == "truncate"
        covered = part["char_end"]
    assert covered == len(text)


def test_full_sync_drops_the_parts_a_shrunk_file_lost(tmp_path, embedder):
    src = write_files(tmp_path / "src", {"other.txt": "A short note about owls and the night."})
    db = tmp_path / "db"
    write_big_text(src / "big.txt", 6000)

    def ingest(sync="full"):
        return run_ingest(IngestSettings(source=str(src), db=str(db), strategies="paragraph", sync=sync,
                                         embedder=EmbedderSettings(device="cpu"), reader=ReaderSettings(part_bytes=1024)))

    def stored():
        store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
        return {r["doc_id"].removeprefix(os.path.realpath(src) + "/") for b in store.scan(["doc_id"]) for r in b.to_pylist()}

    first = ingest()
    n = first.counts.docs_added - 1
    assert n >= 6 and stored() == {"other.txt"} | {f"big.txt#part-{i:04d}" for i in range(n)}
    # the same file again: nothing to do
    assert ingest().counts.docs_unchanged == n + 1
    # a broken file fails as a whole and keeps what it had in the table
    good = (src / "big.txt").read_bytes()
    (src / "big.txt").write_bytes(good + b"\xff")
    broken = ingest()
    assert [f["where"] for f in broken.counts.failures] == ["big.txt"] and broken.counts.docs_deleted == 0
    assert len(stored()) == n + 1
    # shrunk to two parts: the vanished parts go, the rest stay
    (src / "big.txt").write_bytes(good[:1500])
    shrunk = ingest()
    assert shrunk.counts.docs_deleted == n - 2
    assert stored() == {"other.txt", "big.txt#part-0000", "big.txt#part-0001"}
