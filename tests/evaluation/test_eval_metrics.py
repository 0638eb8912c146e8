"""Metric and statistics functions against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from grainline.evaluation.datasets import GoldSpan, Query
from grainline.evaluation.metrics import (
    DOC_METRICS,
    Hit,
    answer_metrics,
    doc_ranking,
    document_metrics,
    mean_metrics,
    metric_vector,
    normalize_answer,
    span_metrics,
    token_budget_prefix,
)
from grainline.evaluation.stats import bootstrap_ci, paired_permutation_test, pairwise_significance
from grainline.tokens import tiktoken_encoding


def hits_for(doc_ids: list[str]) -> list[Hit]:
    """One chunk per doc id, scores falling with rank."""
    return [Hit(d, 0, 1, "x", 1.0 - i / 100) for i, d in enumerate(doc_ids)]


def q(qid: str = "q", relevant: dict[str, int] | None = None, **kw) -> Query:
    return Query(qid, "question", relevant if relevant is not None else {"rel": 1}, **kw)


# --------------------------------------------------------------------------- doc_ranking


def test_doc_ranking_keeps_best_chunk_per_document():
    hits = [
        Hit("d1", 0, 5, "a", 0.9),
        Hit("d2", 0, 5, "b", 0.8),
        Hit("d1", 5, 9, "c", 0.7),
        Hit("d3", 0, 5, "d", 0.6),
        Hit("d2", 9, 12, "e", 0.5),
    ]
    assert doc_ranking(hits) == [("d1", 0.9), ("d2", 0.8), ("d3", 0.6)]


def test_doc_ranking_uses_list_order_not_score():
    hits = [Hit("d1", 0, 1, "a", 0.1), Hit("d2", 0, 1, "b", 0.9), Hit("d1", 1, 2, "c", 0.95)]
    assert doc_ranking(hits) == [("d1", 0.1), ("d2", 0.9)]


# --------------------------------------------------------------------------- document metrics


def test_one_relevant_doc_at_rank_3():
    m = document_metrics({"q": hits_for(["a", "b", "rel", "c"])}, {"q": q()})["q"]
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4))  # = 0.5
    assert m["ndcg@10"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == 1.0
    assert m["recall@20"] == 1.0
    assert m["recall@100"] == 1.0


def test_relevant_doc_at_rank_11_is_outside_the_top_10():
    ranking = [f"n{i}" for i in range(10)] + ["rel"]
    m = document_metrics({"q": hits_for(ranking)}, {"q": q()})["q"]
    assert m["ndcg@10"] == 0.0
    assert m["mrr@10"] == 0.0  # recip_rank alone would say 1/11
    assert m["recall@5"] == 0.0
    assert m["recall@20"] == 1.0


def test_relevant_at_rank_25_counts_for_recall_100_only():
    ranking = [f"n{i}" for i in range(24)] + ["rel"]
    m = document_metrics({"q": hits_for(ranking)}, {"q": q()})["q"]
    assert (m["recall@20"], m["recall@100"]) == (0.0, 1.0)


def test_two_relevant_docs_at_ranks_1_and_3():
    m = document_metrics({"q": hits_for(["r1", "x", "r2"])}, {"q": q(relevant={"r1": 1, "r2": 1})})["q"]
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # 1.5
    idcg = 1 / math.log2(2) + 1 / math.log2(3)  # 1.6309
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["recall@1"] == 0.5
    assert m["recall@5"] == 1.0
    assert m["mrr@10"] == 1.0


def test_graded_relevance_uses_linear_gain():
    m = document_metrics({"q": hits_for(["b", "a"])}, {"q": q(relevant={"a": 2, "b": 1})})["q"]
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)


def test_chunks_map_to_documents_before_ranking():
    hits = [Hit("d1", 0, 5, "", 0.9), Hit("d1", 5, 9, "", 0.8), Hit("d2", 0, 5, "", 0.7), Hit("rel", 0, 5, "", 0.6)]
    m = document_metrics({"q": hits}, {"q": q()})["q"]
    # Fourth chunk, but third document.
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx(0.5)


def test_equal_scores_are_ranked_in_list_order():
    # pytrec_eval would break this tie by doc id descending and put "z" first.
    hits = [Hit("a", 0, 1, "", 1.0), Hit("z", 0, 1, "", 1.0)]
    m = document_metrics({"q": hits}, {"q": q(relevant={"z": 1})})["q"]
    assert m["mrr@10"] == pytest.approx(0.5)


def test_scores_out_of_order_do_not_reorder_the_list():
    hits = [Hit("a", 0, 1, "", 0.1), Hit("rel", 0, 1, "", 0.9)]
    m = document_metrics({"q": hits}, {"q": q()})["q"]
    assert m["mrr@10"] == pytest.approx(0.5)


def test_queries_without_hits_score_zero_and_unlabelled_runs_are_ignored():
    queries = {"empty": q("empty"), "missing": q("missing"), "found": q("found")}
    runs = {"empty": [], "found": hits_for(["rel"]), "unknown": hits_for(["rel"])}
    out = document_metrics(runs, queries)
    assert set(out) == {"empty", "missing", "found"}
    assert out["empty"] == dict.fromkeys(DOC_METRICS, 0.0)
    assert out["missing"] == dict.fromkeys(DOC_METRICS, 0.0)
    assert out["found"]["ndcg@10"] == 1.0
    assert out["found"]["mrr@10"] == 1.0


def test_document_metrics_many_queries():
    queries = {f"q{i}": q(f"q{i}", relevant={f"d{i}": 1}) for i in range(50)}
    runs = {f"q{i}": hits_for([f"d{j}" for j in range(i, i + 20)]) for i in range(50)}
    out = document_metrics(runs, queries)
    assert all(out[qid]["mrr@10"] == 1.0 for qid in queries)
    assert mean_metrics(out)["recall@1"] == 1.0
    assert metric_vector(out, "ndcg@10", ["q0", "q1"]).tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- answers


def test_normalize_answer_is_squads():
    assert normalize_answer("The  DENVER Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"


def answer_hits(texts: list[str]) -> list[Hit]:
    return [Hit(f"d{i}", 0, len(t), t, 1.0 - i / 100) for i, t in enumerate(texts)]


def test_answer_inside_vs_outside_k():
    query = q(answers=("Denver Broncos",))
    texts = ["Carolina lost.", "Nothing here.", "x", "y", "z", "The denver broncos, champions."]
    m = answer_metrics(answer_hits(texts), query)
    assert m["answer@1"] == 0.0
    assert m["answer@5"] == 0.0  # the answer is the sixth chunk
    assert m["answer@20"] == 1.0
    m = answer_metrics(answer_hits(["the Denver Broncos won"] + texts), query)
    assert (m["answer@1"], m["answer@5"], m["answer@20"]) == (1.0, 1.0, 1.0)


def test_any_of_several_answers_counts():
    m = answer_metrics(answer_hits(["it was in 1990"]), q(answers=("nineteen ninety", "1990")))
    assert m["answer@1"] == 1.0


def test_answer_match_is_whole_word():
    m = answer_metrics(answer_hits(["in 1990 and 2010"]), q(answers=("1",)))
    assert m["answer@1"] == 0.0


def test_answer_within_vs_beyond_token_budget():
    enc = tiktoken_encoding()
    filler = " ".join(["filler"] * 300)
    n_filler = len(enc.encode_ordinary(filler))
    assert 100 < n_filler < 480  # the fixture's premise
    query = q(answers=("Denver Broncos",))
    # Answer at the end of one long chunk: inside the top 1, beyond 100 tokens.
    m = answer_metrics(answer_hits([filler + " the Denver Broncos."]), query)
    assert m["answer@1"] == 1.0
    assert m["answer@100tok"] == 0.0
    assert m["answer@500tok"] == 1.0
    # Short chunk first: inside both budgets.
    m = answer_metrics(answer_hits(["Denver Broncos.", filler]), query)
    assert (m["answer@100tok"], m["answer@500tok"]) == (1.0, 1.0)
    # Answer beyond 500 tokens of retrieved text.
    m = answer_metrics(answer_hits([filler, filler, "Denver Broncos"]), query)
    assert (m["answer@5"], m["answer@100tok"], m["answer@500tok"]) == (1.0, 0.0, 0.0)


def test_token_budget_prefix_is_the_first_tokens_of_the_joined_text():
    enc = tiktoken_encoding()
    texts = ["alpha beta gamma " * 400, "delta epsilon " * 300, "zeta"]
    joined = "\n\n".join(texts)
    for budget in (1, 7, 100, 500, 2000):
        assert token_budget_prefix(texts, budget) == enc.decode(enc.encode_ordinary(joined)[:budget])
    assert token_budget_prefix(["short", "text"], 500) == "short\n\ntext"
    assert token_budget_prefix([], 100) == ""


def test_answer_metrics_undefined_without_answers():
    assert answer_metrics(answer_hits(["text"]), q()) == {}
    assert answer_metrics(answer_hits(["text"]), q(answers=("the",))) == {}  # normalises to nothing


def test_answer_metrics_with_no_hits_is_zero():
    m = answer_metrics([], q(answers=("x",)))
    assert set(m) == {"answer@1", "answer@5", "answer@20", "answer@100tok", "answer@500tok"}
    assert all(v == 0.0 for v in m.values())


# --------------------------------------------------------------------------- spans

DOC = "The cat sat on the mat. The dog ran."
#      0         1         2         3
#      0123456789012345678901234567890123456


def test_span_fixture_tokens():
    enc = tiktoken_encoding()
    pieces = [enc.decode([t]) for t in enc.encode_ordinary(DOC)]
    assert pieces == ["The", " cat", " sat", " on", " the", " mat", ".", " The", " dog", " ran", "."]
    assert DOC[0:23] == "The cat sat on the mat."  # 7 tokens
    assert DOC[24:36] == "The dog ran."  # 4 tokens


def span_hit(doc_id: str, start: int, end: int, score: float = 1.0) -> Hit:
    return Hit(doc_id, start, end, DOC[start:end], score)


GOLD_SECOND = q(relevant={"doc": 1}, spans=(GoldSpan("doc", 24, 36),))


@pytest.mark.parametrize(
    "hits,k,expected",
    [
        ([span_hit("doc", 0, 23)], 5, (0.0, 0.0, 0.0)),
        ([span_hit("doc", 24, 36)], 5, (1.0, 1.0, 1.0)),
        # Whole document: R = 11 tokens, G = 4, R∩G = 4.
        ([span_hit("doc", 0, 36)], 5, (1.0, 4 / 11, 4 / 11)),
        # Outside k / inside k.
        ([span_hit("doc", 0, 23), span_hit("doc", 24, 36)], 1, (0.0, 0.0, 0.0)),
        ([span_hit("doc", 0, 23), span_hit("doc", 24, 36)], 2, (1.0, 4 / 11, 4 / 11)),
        # Overlapping chunks of one document are a union, not counted twice.
        ([span_hit("doc", 0, 36), span_hit("doc", 24, 36)], 5, (1.0, 4 / 11, 4 / 11)),
        # Half the gold: "The dog" = 2 of its 4 tokens.
        ([span_hit("doc", 24, 31)], 5, (0.5, 1.0, 0.5)),
    ],
)
def test_span_metrics_hand_computed(hits, k, expected):
    m = span_metrics(hits, GOLD_SECOND, {"doc": DOC}, k=k)
    assert set(m) == {f"span_recall@{k}", f"span_precision@{k}", f"span_iou@{k}",
                      f"span_precision_summed@{k}", f"span_iou_summed@{k}"}
    got = (m[f"span_recall@{k}"], m[f"span_precision@{k}"], m[f"span_iou@{k}"])
    assert got == pytest.approx(expected)


def test_summed_variants_pay_for_overlapping_chunks():
    # Whole document (11 tokens) and the gold sentence again (4): merged R = 11,
    # summed R = 15; R∩G = 4 either way.
    m = span_metrics([span_hit("doc", 0, 36), span_hit("doc", 24, 36)], GOLD_SECOND, {"doc": DOC})
    assert m["span_precision@5"] == pytest.approx(4 / 11) and m["span_iou@5"] == pytest.approx(4 / 11)
    assert m["span_precision_summed@5"] == pytest.approx(4 / 15)
    assert m["span_iou_summed@5"] == pytest.approx(4 / (15 + 4 - 4))
    # Without overlap the two variants agree.
    m = span_metrics([span_hit("doc", 0, 23), span_hit("doc", 24, 36)], GOLD_SECOND, {"doc": DOC})
    assert m["span_precision_summed@5"] == pytest.approx(m["span_precision@5"])


def test_span_recall_within_a_token_budget_cuts_the_last_chunk():
    from grainline.evaluation.metrics import span_budget_metrics

    # The whole document first: its first 8 tokens hold one gold token ("The").
    whole = span_budget_metrics([span_hit("doc", 0, 36)], GOLD_SECOND, {"doc": DOC}, budgets=(4, 8, 11))
    assert whole == pytest.approx({"span_recall@4tok": 0.0, "span_recall@8tok": 0.25, "span_recall@11tok": 1.0})
    # The gold sentence first fills 4 tokens with gold: the shorter chunk wins in budget.
    short = span_budget_metrics([span_hit("doc", 24, 36), span_hit("doc", 0, 23)], GOLD_SECOND, {"doc": DOC}, budgets=(4,))
    assert short == {"span_recall@4tok": 1.0}
    # Each chunk pays its own tokens: a duplicate of the first chunk uses budget, adds nothing.
    dup = span_budget_metrics([span_hit("doc", 0, 23), span_hit("doc", 0, 23), span_hit("doc", 24, 36)],
                              GOLD_SECOND, {"doc": DOC}, budgets=(14, 16))
    assert dup == pytest.approx({"span_recall@14tok": 0.0, "span_recall@16tok": 0.5})


def test_one_word_gold_span_holds_its_token_despite_the_leading_space():
    # " dog" starts at the space (27); the gold word starts at 28.
    query = q(relevant={"doc": 1}, spans=(GoldSpan("doc", 28, 31),))
    m = span_metrics([span_hit("doc", 24, 36)], query, {"doc": DOC})
    assert m["span_recall@5"] == 1.0
    assert m["span_precision@5"] == pytest.approx(1 / 4)
    assert m["span_iou@5"] == pytest.approx(1 / 4)


def test_gold_span_starting_mid_word_holds_that_word():
    query = q(relevant={"doc": 1}, spans=(GoldSpan("doc", 29, 31),))  # "og"
    m = span_metrics([span_hit("doc", 28, 31)], query, {"doc": DOC})
    assert m["span_recall@5"] == 1.0 and m["span_precision@5"] == 1.0


def test_span_metrics_sum_over_documents():
    other = "One two three."  # 4 tokens
    docs = {"doc": DOC, "other": other}
    hits = [Hit("other", 0, len(other), other, 1.0), span_hit("doc", 24, 36)]
    m = span_metrics(hits, GOLD_SECOND, docs)
    assert m["span_recall@5"] == 1.0
    assert m["span_precision@5"] == pytest.approx(4 / 8)
    assert m["span_iou@5"] == pytest.approx(4 / 8)
    # Gold in two documents: 4 + 4 gold tokens, half found.
    two_gold = q(relevant={"doc": 1, "other": 1}, spans=(GoldSpan("doc", 24, 36), GoldSpan("other", 0, 14)))
    m = span_metrics([span_hit("doc", 24, 36)], two_gold, docs)
    assert m["span_recall@5"] == pytest.approx(0.5)
    assert m["span_precision@5"] == 1.0


def test_span_metrics_no_hits_and_no_spans():
    assert span_metrics([], GOLD_SECOND, {"doc": DOC}) == {
        "span_recall@5": 0.0,
        "span_precision@5": 0.0,
        "span_iou@5": 0.0,
        "span_precision_summed@5": 0.0,
        "span_iou_summed@5": 0.0,
    }
    assert span_metrics([span_hit("doc", 0, 5)], q(), {"doc": DOC}) == {}


def test_span_metrics_unknown_document_is_a_clear_error():
    with pytest.raises(KeyError, match="nowhere"):
        span_metrics([Hit("nowhere", 0, 1, "x", 1.0)], GOLD_SECOND, {"doc": DOC})


def test_same_doc_id_with_another_text_is_not_served_from_cache():
    span_metrics([span_hit("doc", 0, 36)], GOLD_SECOND, {"doc": DOC})
    longer = DOC + " More words here."
    m = span_metrics([Hit("doc", 0, len(longer), longer, 1.0)], GOLD_SECOND, {"doc": longer})
    assert m["span_precision@5"] == pytest.approx(4 / 15)


# --------------------------------------------------------------------------- stats


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(42)
    small = rng.normal(0.5, 0.2, size=30)
    large = rng.normal(0.5, 0.2, size=3000)
    m_s, lo_s, hi_s = bootstrap_ci(small)
    m_l, lo_l, hi_l = bootstrap_ci(large)
    assert m_s == pytest.approx(small.mean())
    assert lo_s < m_s < hi_s
    assert lo_l < m_l < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~ sqrt(100) = 10 times narrower
    assert lo_l < 0.5 < hi_l


def test_bootstrap_ci_is_seeded_and_handles_binary_data():
    v = np.array([0.0] * 70 + [1.0] * 30)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    mean, lo, hi = bootstrap_ci(v, method="percentile")
    assert mean == pytest.approx(0.3)
    assert 0.18 < lo < 0.3 < hi < 0.42


@pytest.mark.parametrize("values", [[0.7], [2.0, 2.0, 2.0], np.zeros(500)])
def test_bootstrap_ci_constant_input_without_warnings(values):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, lo, hi = bootstrap_ci(values)
    assert mean == lo == hi == float(np.asarray(values)[0])


def test_bootstrap_ci_rejects_empty():
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_permutation_test_clear_difference_gives_small_p():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.1, size=200)
    b = a - 0.05 + rng.normal(0, 0.02, size=200)
    assert paired_permutation_test(a, b) < 0.001


def test_permutation_test_noise_gives_large_p():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.2, size=300)
    b = a + rng.normal(0, 0.2, size=300)
    b = b - (b - a).mean()  # no difference in means at all
    assert paired_permutation_test(a, b) > 0.5


def test_permutation_test_identical_inputs_give_one():
    a = np.array([0.1, 0.5, 0.9, 0.3])
    assert paired_permutation_test(a, a.copy()) == 1.0


def test_permutation_test_unequal_lengths_names_both():
    with pytest.raises(ValueError, match=r"3.*2"):
        paired_permutation_test([1, 2, 3], [1, 2])


@pytest.mark.parametrize("n", [4, 7, 11])
def test_permutation_test_matches_scipy_exact(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n) + 0.4
    ref = st.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        rng=0,
    ).pvalue
    assert paired_permutation_test(a, b) == pytest.approx(ref)


def test_permutation_test_is_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.random(500), rng.random(500)
    assert paired_permutation_test(a, b, seed=1) == paired_permutation_test(a, b, seed=1)


def test_pairwise_significance_covers_every_pair():
    rng = np.random.default_rng(2)
    base = rng.random(100)
    per_query = {"sentence": base, "paragraph": base + 0.2, "article": base.copy()}
    out = pairwise_significance(per_query, n_resamples=2000)
    assert set(out) == {("sentence", "paragraph"), ("sentence", "article"), ("paragraph", "article")}
    assert out[("sentence", "article")] == 1.0
    assert out[("sentence", "paragraph")] < 0.01
