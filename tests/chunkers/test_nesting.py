"""Small-to-big parents: exact cases, and Hypothesis properties over the real chunkers
(a sentence lies in one paragraph, a paragraph in its article)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grainline.chunkers import chunk_document
from grainline.chunkers.nesting import Parents, check_coarser, expand, parse_pair
from grainline.documents import Document


def test_the_parent_is_the_one_overlapping_most():
    parents = Parents([("d", 0, 10, "p0"), ("d", 8, 30, "p1"), ("e", 0, 50, "q0")])
    assert parents.holding("d", 2, 6) == "p0"
    assert parents.holding("d", 7, 20) == "p1"  # 3 characters in p0, 12 in p1
    assert parents.holding("d", 8, 10) == "p0"  # a tie goes to the first parent
    assert parents.holding("d", 40, 45) is None  # past every parent of d
    assert parents.holding("x", 0, 5) is None  # a document without parents
    assert parents.holding("d", 10, 10) == "p1"  # an empty span: the parent holding its position


def test_expand_keeps_the_first_hit_of_each_parent_in_order():
    parents = Parents([("d", 0, 10, 0), ("d", 10, 20, 1), ("e", 0, 9, 2)])
    hits = [("d", 12, 15), ("d", 1, 4), ("d", 15, 19), ("x", 0, 1), ("e", 2, 3), ("d", 5, 6)]
    assert expand(hits, lambda h: h, parents) == [(("d", 12, 15), 1), (("d", 1, 4), 0), (("e", 2, 3), 2)]


@pytest.mark.parametrize("value, message", [
    ("sentence", "expects CHILD->PARENT"),
    ("paragraph->sentence", "paragraph chunks can only return a coarser strategy \\(article\\)"),
    ("article->article", "none is coarser than article"),
    ("line->paragraph", "unknown strategy 'line' \\(known: sentence, paragraph, article\\)"),
])
def test_bad_pairs_are_named(value, message):
    with pytest.raises(ValueError, match=message):
        parse_pair(value)


def test_pairs_parse_with_spaces():
    assert parse_pair(" sentence -> article ") == ("sentence", "article")
    check_coarser("sentence", "paragraph")


words = st.text(alphabet="abcdefgh ", min_size=1, max_size=12).map(lambda s: s.strip() or "a")
sentence = st.lists(words, min_size=1, max_size=6).map(lambda ws: " ".join(ws).capitalize() + ".")
paragraph = st.lists(sentence, min_size=1, max_size=5).map(" ".join)
article = st.lists(paragraph, min_size=1, max_size=5).map("\n\n".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(article)
def test_every_sentence_has_the_paragraph_that_contains_it(text):
    doc = Document("doc", text)
    paras = chunk_document(doc, "paragraph")
    sents = chunk_document(doc, "sentence")
    parents = Parents((c.doc_id, c.start, c.end, i) for i, c in enumerate(paras))
    for s in sents:
        i = parents.holding(s.doc_id, s.start, s.end)
        assert i is not None
        p = paras[i]
        # the chosen paragraph overlaps the sentence at least as much as any other
        best = max(min(s.end, q.end) - max(s.start, q.start) for q in paras)
        assert min(s.end, p.end) - max(s.start, p.start) == best > 0
    (art,) = chunk_document(doc, "article")
    up = Parents([(art.doc_id, art.start, art.end, "a")])
    assert all(up.holding(p.doc_id, p.start, p.end) == "a" for p in paras)
    # expanding every sentence in order gives each paragraph once, in document order
    order = [i for _s, i in expand(sents, lambda c: (c.doc_id, c.start, c.end), parents)]
    assert order == sorted(set(order)) and set(order) == set(range(len(paras)))
