"""A table written before the sentence segmenter was a chunker setting moves to the new
default (blingfire) on the next ``grainline ingest``: each document is re-chunked once,
its old rows are replaced (never kept beside the new ones), text whose sentences did
not move keeps its stored vectors, and the run after that changes nothing."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from grainline.chunkers import base as chunker_base
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import ChunkStore

from tests.cli.test_cli_faults import grainline
from tests.conftest import write_files

pytestmark = pytest.mark.slow

DOCS = {
    "tides.txt": "Tides\n\nThe Moon's gravity raises a bulge of water on the near side of the Earth. Spring tides come "
                 "when the Sun and Moon line up, e.g. at new moon. \"Is it the Moon?\" she asked. It is.\n\n"
                 "Neap tides are weaker. They come at the quarter moons.\n",
    "bees.md": "# Bees\n\nHoneybees dance to show their sisters where flowers are. The angle of the waggle run points "
               "towards the food; a longer run means the flowers are further away.\n",
}


def legacy_params(strategy, settings, ctx):
    """Chunker parameters as releases before the segmenter setting wrote them (their
    rows were cut by pysbd, and their parameters had no ``segmenter``)."""
    params = json.loads(ORIGINAL(strategy, settings, ctx))
    params.pop("segmenter", None)
    return chunker_base.canonical_json(params)


ORIGINAL = chunker_base.chunker_params


def rows(db, embedder) -> list[dict]:
    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    return [r for b in store.scan(["doc_id", "strategy", "chunker_key", "params", "start", "end"]) for r in b.to_pylist()]


def test_the_next_ingest_moves_a_legacy_table_to_the_new_segmenter(tmp_path, embedder, monkeypatch):
    src = write_files(tmp_path / "src", DOCS)
    db = tmp_path / "db"
    # The table as the earlier release left it: pysbd sentences, parameters without a segmenter.
    with monkeypatch.context() as m:
        for module in ("grainline.chunkers.base", "grainline.chunkers.strategies", "grainline.ingest.plan"):
            m.setattr(f"{module}.chunker_params", legacy_params)
        pysbd = {"segmenter": "pysbd"}
        run_ingest(IngestSettings(source=str(src), db=str(db), strategies="sentence,paragraph,article",
                                  chunker_overrides={"sentence": pysbd, "paragraph": pysbd},
                                  embedder=EmbedderSettings(device="cpu")))
    before = rows(db, embedder)
    assert not any("segmenter" in json.loads(r["params"]) for r in before)
    legacy_keys = {r["chunker_key"] for r in before if r["strategy"] != "article"}

    res = grainline(tmp_path, "ingest", str(src), "--db", str(db), "--strategy", "sentence,paragraph,article",
                    "--no-progress", "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 updated" in res.stdout, res.stdout
    after = rows(db, embedder)
    keys = {(r["strategy"], r["chunker_key"]) for r in after}
    # one cut per strategy: the legacy rows are gone, not kept beside the new ones
    assert Counter(s for s, _ in keys) == {"sentence": 1, "paragraph": 1, "article": 1}, keys
    assert not legacy_keys & {k for _, k in keys}
    for r in after:
        if r["strategy"] != "article":
            assert json.loads(r["params"])["segmenter"] == "blingfire"
    spans = Counter((r["doc_id"], r["strategy"], r["start"], r["end"]) for r in after)
    assert max(spans.values()) == 1
    # the article's key did not change, and text that was cut the same way kept its vectors
    assert {r["chunker_key"] for r in after if r["strategy"] == "article"} == \
           {r["chunker_key"] for r in before if r["strategy"] == "article"}
    written, embedded, reused = (int(x) for x in re.search(
        r"chunks: (\d+) written, \d+ deleted, (\d+) embedded, (\d+) reused", res.stdout).groups())
    assert reused > 0 and embedded < written, res.stdout

    again = grainline(tmp_path, "ingest", str(src), "--db", str(db), "--strategy", "sentence,paragraph,article",
                      "--no-progress", "--device", "cpu")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 unchanged" in again.stdout and "0 written" in again.stdout, again.stdout
