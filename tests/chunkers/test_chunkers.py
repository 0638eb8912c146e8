"""Chunkers: exact small cases and Hypothesis properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grainline.chunkers import (
    CHUNKERS,
    ChunkContext,
    ModelWindow,
    chunk_document,
    settings_for,
)
from grainline.chunkers.segment import paragraph_spans, sentence_spans
from grainline.documents import Document
from grainline.tokens import HFTokenCounter, TiktokenCounter

TOK = TiktokenCounter()


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


# --- sentence segmentation -------------------------------------------------------


def test_abbreviations_decimals_and_quotes_do_not_split():
    text = (
        'Dr. Smith moved to the U.S. in 1999, e.g. to work at St. Mary\'s. '
        "The rate rose to 3.5 percent, i.e. more than 0.75 points. "
        '"Is it true?" she asked. He nodded'
    )
    assert sentences(text) == [
        "Dr. Smith moved to the U.S. in 1999, e.g. to work at St. Mary's.",
        "The rate rose to 3.5 percent, i.e. more than 0.75 points.",
        '"Is it true?" she asked.',
        "He nodded",
    ]


def test_missing_final_punctuation_and_blank_lines():
    text = "First sentence here. Second one without a stop\n\nNew paragraph starts. And ends"
    assert sentences(text) == [
        "First sentence here.",
        "Second one without a stop",
        "New paragraph starts.",
        "And ends",
    ]


def test_hard_wrapped_lines_stay_in_one_sentence_but_headings_and_lists_split():
    text = "A sentence that is\nwrapped over two lines. Next one.\n# Heading\n- item one\n- item two"
    assert sentences(text) == [
        "A sentence that is\nwrapped over two lines.",
        "Next one.",
        "# Heading",
        "- item one",
        "- item two",
    ]


def test_paragraph_spans_split_on_blank_lines_only():
    text = "\n\n  Para one line one\nline two.  \n \n\nPara two.\n"
    spans = paragraph_spans(text)
    assert [text[s:e] for s, e in spans] == ["Para one line one\nline two.", "Para two."]


# --- strategies, exact cases ------------------------------------------------------

DOC = Document(
    doc_id="notes.md",
    text=(
        "# Tides\n\n"
        "The Moon pulls on the oceans. The Sun does too, but less.\n\n"
        "Twice a month the pulls line up and spring tides follow. "
        "Between them come the weaker neap tides."
    ),
)


def test_sentence_chunks_merge_tiny_heading():
    chunks = chunk_document(DOC, "sentence")
    texts = [c.text for c in chunks]
    # "# Tides" is under min_tokens and joins the next sentence.
    assert texts[0] == "# Tides\n\nThe Moon pulls on the oceans."
    assert texts[1:] == [
        "The Sun does too, but less.",
        "Twice a month the pulls line up and spring tides follow.",
        "Between them come the weaker neap tides.",
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]


def test_paragraph_chunks_merge_heading_into_next_paragraph():
    chunks = chunk_document(DOC, "paragraph", settings_for("paragraph", min_tokens=8))
    assert [c.text for c in chunks] == [
        "# Tides\n\nThe Moon pulls on the oceans. The Sun does too, but less.",
        "Twice a month the pulls line up and spring tides follow. Between them come the weaker neap tides.",
    ]


def test_article_is_whole_text():
    (chunk,) = chunk_document(DOC, "article")
    assert chunk.text == DOC.text.strip()
    assert chunk.handling == "plain"
    assert chunk.n_model_tokens == -1  # no model window given


def test_long_paragraph_splits_at_sentences_with_overlap():
    sents = [f"Sentence number {i} talks about topic {i} at some length here." for i in range(40)]
    doc = Document("long.txt", " ".join(sents))
    cs = settings_for("paragraph", max_tokens=64, overlap=16, min_tokens=0)
    chunks = chunk_document(doc, "paragraph", cs)
    assert len(chunks) > 5
    for c in chunks:
        assert TOK.count(c.text) <= 64
        assert c.text.startswith("Sentence number") and c.text.endswith(".")
    # neighbours share trailing sentences (overlap), and every sentence is somewhere
    assert any(a.end > b.start for a, b in zip(chunks, chunks[1:]))
    for s in sents:
        assert any(s in c.text for c in chunks)


def test_sentence_longer_than_max_is_cut_at_token_boundaries():
    doc = Document("run-on.txt", " ".join(["word"] * 500))
    chunks = chunk_document(doc, "sentence", settings_for("sentence", max_tokens=50))
    assert len(chunks) >= 10
    assert all(TOK.count(c.text) <= 50 for c in chunks)
    assert all(doc.text[c.start:c.end] == c.text for c in chunks)


def test_model_window_splits_paragraphs_and_marks_long_articles(model_tokenizer):
    window = ModelWindow(HFTokenCounter(model_tokenizer), max_tokens=40)
    ctx = ChunkContext.default(window)
    # Rare words cost the model's tokenizer far more tokens than cl100k.
    text = " ".join(["Pneumonoultramicroscopicsilicovolcanoconiosis xylophonist."] * 12)
    doc = Document("dense.txt", text)
    para = chunk_document(doc, "paragraph", ctx=ctx)
    assert len(para) > 1
    assert all(c.n_model_tokens <= 40 and not c.exceeds_model_limit for c in para)
    assert {c.handling for c in para} == {"split"}
    (art,) = chunk_document(doc, "article", settings_for("article", long_article="truncate"), ctx)
    assert art.exceeds_model_limit and art.handling == "truncate" and art.n_model_tokens > 40
    (pooled,) = chunk_document(doc, "article", ctx=ctx)
    assert pooled.handling == "pool"
    assert pooled.chunk_id != art.chunk_id  # the policy is part of the parameters


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ValueError, match="article, paragraph, sentence"):
        chunk_document(DOC, "word")


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="overlap"):
        settings_for("paragraph", max_tokens=64, overlap=40)
    with pytest.raises(ValueError, match="min_tokens"):
        settings_for("sentence", max_tokens=16, min_tokens=20)


def test_ids_depend_on_parameters_not_on_chance():
    cs = settings_for("paragraph", min_tokens=8)
    a = chunk_document(DOC, "paragraph", cs)
    b = chunk_document(DOC, "paragraph", cs)
    c = chunk_document(DOC, "paragraph", settings_for("paragraph", min_tokens=8, max_tokens=128))
    assert [x.chunk_id for x in a] == [x.chunk_id for x in b]
    assert {x.chunk_id for x in a}.isdisjoint(x.chunk_id for x in c)
    moved = Document("other.md", DOC.text)
    assert {x.chunk_id for x in a}.isdisjoint(x.chunk_id for x in chunk_document(moved, "paragraph", cs))


# --- properties --------------------------------------------------------------------

words = st.sampled_from(
    ["the", "Moon", "Dr.", "U.S.", "3.5", "e.g.", "tide", "ocean", "é", "—", "antidisestablishmentarianism", "?", "!", '"'])
sentence_st = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + st_end())


def st_end() -> str:
    return "."


paragraph_st = st.lists(sentence_st, min_size=1, max_size=8).map(" ".join)
separators = st.sampled_from(["\n\n", "\n", " \n\n\n ", "\n\n# Heading\n\n", "  "])
text_st = st.lists(st.tuples(paragraph_st, separators), min_size=1, max_size=6).map(
    lambda parts: "".join(p + s for p, s in parts)
)


@pytest.mark.parametrize("strategy", CHUNKERS.names())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=text_st, max_tokens=st.integers(16, 120), min_tokens=st.integers(0, 8))
def test_properties(strategy, text, max_tokens, min_tokens):
    doc = Document("d.txt", text)
    overrides = {} if strategy == "article" else {"max_tokens": max_tokens, "min_tokens": min_tokens, "overlap": max_tokens // 4}
    cs = settings_for(strategy, **overrides)
    chunks = chunk_document(doc, strategy, cs)
    # offsets round-trip, nothing empty or padded with whitespace
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert c.n_tokens == TOK.count(c.text)
        if strategy != "article":
            assert c.n_tokens <= max_tokens
    # every non-whitespace character is covered by some chunk
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start:c.end] = b"\x01" * (c.end - c.start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    # chunks come in document order and ids are unique and stable
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert [c.chunk_id for c in chunk_document(doc, strategy, cs)] == [c.chunk_id for c in chunks]


@settings(max_examples=30, deadline=None)
@given(text=st.text(min_size=1, max_size=400).filter(lambda t: t.strip()))
def test_arbitrary_unicode_round_trips(text):
    doc = Document("u.txt", text)
    for strategy in CHUNKERS.names():
        for c in chunk_document(doc, strategy, settings_for(strategy) if strategy == "article" else settings_for(strategy, max_tokens=16, min_tokens=0, overlap=0)):
            assert doc.text[c.start:c.end] == c.text
            assert re.sub(r"\s", "", c.text)


def test_chunking_is_thread_safe():
    """Chunking from several threads at once gives what one thread gives."""
    from concurrent.futures import ThreadPoolExecutor

    docs = [
        Document(f"d{i}", " ".join(f"Sentence {j} of doc {i} talks about topic {i}. Dr. Who came by at 3.5 p.m. on day {j}." for j in range(40 + i)))
        for i in range(16)
    ]
    expected = [[c.text for c in chunk_document(d, "sentence")] for d in docs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(2):
            got = list(pool.map(lambda d: [c.text for c in chunk_document(d, "sentence")], docs))
            assert got == expected


def test_sentence_splitting_compiles_no_pattern_per_sentence():
    """pysbd's segment() compiled every sentence into a regex, which flooded Python's re
    cache and evicted pysbd's own rules (recompiled on every call): grainline locates
    the sentences itself, so new sentences add no patterns."""
    import re

    from grainline.chunkers.segment import sentence_spans

    sentence_spans("Warm up. The rules compile once.")
    before = set(re._cache)
    text = " ".join(f"Sentence number {i} talks about topic {i * 7}." for i in range(120))
    spans = sentence_spans(text)
    assert len(spans) == 120 and text[spans[5][0]:spans[5][1]] == "Sentence number 5 talks about topic 35."
    assert len(set(re._cache) - before) < 10


def test_article_rejects_settings_that_shape_nothing():
    """An article is the whole document: an overlap or min_tokens of its own would be
    accepted and change no vector, so it is an error naming the setting it takes; the
    fixed values (as stored in every article row's parameters) still read back."""
    for name, value in (("overlap", 64), ("min_tokens", 5)):
        with pytest.raises(ValueError, match=f"{name} changes nothing.*long_article"):
            settings_for("article", **{name: value})
    stored = settings_for("article").model_dump()
    assert settings_for("article", **stored) == settings_for("article")


def _reference_token_starts(text: str) -> list[int]:
    """tiktoken's own offsets (decode_with_offsets), one per character that starts a token."""
    _, offsets = TOK._enc.decode_with_offsets(TOK._enc.encode(text, disallowed_special=()))
    out: list[int] = []
    for off in offsets:
        if not out or off > out[-1]:
            out.append(off)
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_token_starts_are_tiktokens_offsets(text):
    starts = TOK.token_starts(text)
    assert starts == _reference_token_starts(text)
    assert all(0 <= s < len(text) for s in starts) and starts == sorted(set(starts))


@pytest.mark.parametrize("text", ["", "😀", "é" * 5, "a\x00b", "Καλημέρα 你好，世界。 😀🎉 مرحبا", "word " * 400])
def test_token_starts_exact_cases(text):
    assert TOK.token_starts(text) == _reference_token_starts(text)
