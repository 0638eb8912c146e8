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


def _brute_holding(spans, start, end):
    """The definition, spelled out: the most-overlapping parent, the first on a tie."""
    best, best_overlap = None, 0
    for p_start, p_end, value in sorted(spans, key=lambda s: (s[0], s[1])):
        overlap = min(end, p_end) - max(start, p_start)
        if end == start and p_start <= start < p_end:
            overlap = 1
        if overlap > best_overlap:
            best, best_overlap = value, overlap
    return best


span = st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(span, max_size=25), st.lists(span, min_size=1, max_size=10))
def test_holding_agrees_with_a_pass_over_every_parent(parent_spans, queries):
    """Overlapping, nested, empty and disjoint parents: the bisected lookup answers
    what the definition does for every span."""
    spans = [(a, b, i) for i, (a, b) in enumerate(parent_spans)]
    parents = Parents(("d", a, b, v) for a, b, v in spans)
    for start, end in queries:
        assert parents.holding("d", start, end) == _brute_holding(spans, start, end)


def test_a_lookup_examines_the_parents_near_the_span_not_all_before_it():
    """A long document's last sentence is found among a few of its 100,000 parents
    (counted: the parent spans the lookup reads), not by a pass over all before it."""

    class Counting(list):
        reads = 0

        def __getitem__(self, i):
            Counting.reads += len(range(*i.indices(len(self)))) if isinstance(i, slice) else 1
            return super().__getitem__(i)

    n = 100_000
    parents = Parents(("d", 10 * i, 10 * i + 10, i) for i in range(n))
    parents._docs["d"] = Counting(parents._docs["d"])
    assert parents.holding("d", 10 * (n - 1) + 2, 10 * (n - 1) + 5) == n - 1
    assert parents.holding("d", 15, 25) == 1  # 5 characters in each of 1 and 2: the first
    assert Counting.reads <= 6, Counting.reads
