"""Sentence segmenters: the registry, exact cases for each, agreement of the default
(blingfire) with pysbd on real text, and text that breaks naive segmenters."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grainline.chunkers import CHUNKERS, DEFAULT_SEGMENTER, SEGMENTERS, chunk_document, settings_for
from grainline.chunkers.segment import sentence_spans
from grainline.documents import Document

from tests.conftest import SHARED_DATA

SEGMENTER_NAMES = SEGMENTERS.names()


def sentences(text: str, segmenter: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text, segmenter=segmenter)]


def test_the_registry_names_both_and_an_unknown_one_is_an_error_listing_them():
    assert SEGMENTER_NAMES == ["blingfire", "pysbd"] and DEFAULT_SEGMENTER == "blingfire"
    with pytest.raises(ValueError, match="unknown sentence segmenter 'punkt'; known: blingfire, pysbd"):
        sentence_spans("One. Two.", segmenter="punkt")
    with pytest.raises(ValueError, match="segmenter.*known: blingfire, pysbd"):
        settings_for("paragraph", segmenter="punkt")


@pytest.mark.parametrize("segmenter", SEGMENTER_NAMES)
def test_exact_cases_for_each_segmenter(segmenter):
    text = ('Dr. Smith moved to the U.S. in 1999, e.g. to work at St. Mary\'s. '
            "The rate rose to 3.5 percent, i.e. more than 0.75 points. "
            '"Is it true?" she asked. He nodded\n# Heading\nA line that is\nwrapped here. Last one.\n\nNew paragraph.')
    assert sentences(text, segmenter) == [
        "Dr. Smith moved to the U.S. in 1999, e.g. to work at St. Mary's.",
        "The rate rose to 3.5 percent, i.e. more than 0.75 points.",
        '"Is it true?" she asked.',
        "He nodded",
        "# Heading",
        "A line that is\nwrapped here.",
        "Last one.",
        "New paragraph.",
    ]


@pytest.mark.parametrize("segmenter", SEGMENTER_NAMES)
def test_non_ascii_offsets_are_characters_not_bytes(segmenter):
    text = "Café “naïve” – ok. Ünïcödé 😀 text here. 日本語の文です。 Last."
    spans = sentence_spans(text, segmenter=segmenter)
    assert "".join(text[s:e] for s, e in spans).replace(" ", "") == text.replace(" ", "")
    assert text[spans[0][0]:spans[0][1]] == "Café “naïve” – ok."


def test_the_segmenter_is_part_of_the_chunker_key():
    doc = Document("d.txt", "First sentence here. Second one follows it.\n\nA paragraph.")
    for strategy in ("sentence", "paragraph"):
        a = chunk_document(doc, strategy, settings_for(strategy, segmenter="blingfire"))
        b = chunk_document(doc, strategy, settings_for(strategy, segmenter="pysbd"))
        assert a[0].chunker_key != b[0].chunker_key and {c.chunk_id for c in a}.isdisjoint(c.chunk_id for c in b)
    # an article cuts no sentences: its key (and every stored article row) is unchanged
    assert "segmenter" not in settings_for("article").model_dump()


@pytest.mark.parametrize("segmenter", SEGMENTER_NAMES)
@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.sampled_from(list("ab .?!\"'\n\r\t\x00é😀日。") + ["Dr.", "3.5", "\r\n", "\n\n", "The", "end."]),
                     min_size=1, max_size=120).map("".join))
def test_spans_cover_every_character_once_in_order(segmenter, text):
    spans = sentence_spans(text, segmenter=segmenter)
    covered = bytearray(len(text))
    pos = 0
    for s, e in spans:
        assert pos <= s < e <= len(text), (spans, text)
        assert text[s:e] == text[s:e].strip()
        covered[s:e] = b"\x01" * (e - s)
        pos = e
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


BAD = {
    "no punctuation (one long line)": "word " * 200_000,
    "one paragraph of prose": "This is a plain sentence of prose, and it ends here. " * 20_000,
    "mixed scripts and emoji": "Καλημέρα κόσμε. Привет мир! مرحبا بالعالم. 你好，世界。 😀🎉 Done. " * 5_000,
    "NUL bytes": "Text with a\x00NUL byte. And\x00another one.\x00 " * 10_000,
    "CRLF line ends": "A line ends here.\r\nAnother line.\r\n\r\nNew paragraph.\r\n" * 10_000,
    "lone CR line ends": "Old Mac text.\rNext line.\r\rNew paragraph.\r" * 10_000,
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_text_round_trips_through_every_strategy(name):
    """Megabytes without a sentence end, odd line ends, NUL bytes and mixed scripts:
    no exception, and every chunk is its document's own text at its offsets."""
    doc = Document(f"{name}.txt", BAD[name])
    for strategy in CHUNKERS.names():
        chunks = chunk_document(doc, strategy)
        assert chunks
        for c in chunks:
            assert doc.text[c.start:c.end] == c.text and c.text.strip() == c.text
        if strategy != "article":
            assert max(c.n_tokens for c in chunks) <= settings_for(strategy).max_tokens


def boundary_f1(texts: list[str]) -> float:
    tp = n_got = n_ref = 0
    for t in texts:
        got = {e for _, e in sentence_spans(t, segmenter="blingfire")[:-1]}
        ref = {e for _, e in sentence_spans(t, segmenter="pysbd")[:-1]}
        tp, n_got, n_ref = tp + len(got & ref), n_got + len(got), n_ref + len(ref)
    p, r = tp / max(n_got, 1), tp / max(n_ref, 1)
    return 2 * p * r / max(p + r, 1e-12)


@pytest.mark.dataset
def test_blingfire_agrees_with_pysbd_on_squad_and_scifact():
    """Boundary F1 of the default segmenter against pysbd >= 0.97: every SQuAD dev
    paragraph, and the first 1,500 SciFact abstracts (scripts/compare_segmenters.py
    runs all of them: 0.975 and 0.982)."""
    squad = SHARED_DATA / "squad-v1.1" / "dev-v1.1.json"
    scifact = SHARED_DATA / "scifact" / "corpus.jsonl"
    if not squad.exists() or not scifact.exists():
        pytest.skip(f"datasets not found under {SHARED_DATA}")
    paragraphs = [p["context"] for a in json.loads(squad.read_text(encoding="utf-8"))["data"] for p in a["paragraphs"]]
    with open(scifact, encoding="utf-8") as f:
        abstracts = [json.loads(line)["text"] for line, _ in zip(f, range(1500))]
    for name, texts in (("squad", paragraphs), ("scifact", abstracts)):
        f1 = boundary_f1(texts)
        print(f"{name}: boundary F1 blingfire vs pysbd {f1:.4f}")
        assert f1 >= 0.97, (name, f1)
    assert re.sub(r"\s", "", paragraphs[0])  # the data is real text


@pytest.mark.parametrize("segmenter", SEGMENTER_NAMES)
def test_crlf_and_cr_line_ends_read_as_lf(segmenter):
    """Readers turn CRLF and CR into LF; text passed in directly keeps them, and a blank
    line or a wrapped line is the same whatever ends the lines."""
    from grainline.chunkers.segment import paragraph_spans

    for nl in ("\n", "\r\n", "\r"):
        text = f"A sentence that is{nl}wrapped here. Next one.{nl}# Heading{nl}{nl}New paragraph.{nl}"
        assert [text[s:e] for s, e in paragraph_spans(text)] == [
            f"A sentence that is{nl}wrapped here. Next one.{nl}# Heading", "New paragraph."]
        got = sentences(text, segmenter)
        assert got[1:] == ["Next one.", "# Heading", "New paragraph."]
        assert got[0] == f"A sentence that is{nl}wrapped here.", (nl, got)
