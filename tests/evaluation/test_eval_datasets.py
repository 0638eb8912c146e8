"""Dataset loaders: small fixtures in every format (good and bad), then the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from grainline.evaluation.datasets import (
    DATASET_KINDS,
    DatasetError,
    GoldSpan,
    load_beir,
    load_dataset,
    load_scifact_spans,
    load_spans,
    load_squad,
    write_spans_dataset,
)

DATA = SHARED_DATA


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- SQuAD

P1 = "Super Bowl 50 was an American football game. The Denver Broncos won."
P2 = "The game was played at Levi's Stadium."
P3 = "Normans were a people."


def squad_fixture(tmp_path: Path, bad_start: bool = False) -> Path:
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": P1,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who won?",
                                "answers": [
                                    {"text": "Denver Broncos", "answer_start": P1.index("Denver")},
                                    {"text": "Denver Broncos", "answer_start": P1.index("Denver")},
                                    {"text": "The Denver Broncos", "answer_start": P1.index("The Denver")},
                                ],
                            }
                        ],
                    },
                    {
                        "context": P2,
                        "qas": [
                            {
                                "id": "q2",
                                "question": "Where?",
                                "answers": [
                                    {
                                        "text": "Levi's Stadium",
                                        "answer_start": P2.index("Levi") + (3 if bad_start else 0),
                                    }
                                ],
                            }
                        ],
                    },
                ],
            },
            {
                "title": "Normans",
                "paragraphs": [
                    {"context": P3, "qas": [{"id": "q3", "question": "Who?", "answers": [{"text": "Normans", "answer_start": 0}]}]}
                ],
            },
        ],
    }
    path = tmp_path / "dev-mini.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_squad_one_document_per_article_with_shifted_spans(tmp_path):
    ds = load_squad(squad_fixture(tmp_path))
    assert [d.doc_id for d in ds.documents] == ["Super_Bowl_50", "Normans"]
    doc = ds.documents[0]
    assert doc.title == "Super Bowl 50"
    assert doc.text == P1 + "\n\n" + P2
    assert ds.split == "dev"
    queries = ds.queries_by_id()
    assert len(queries) == 3 and ds.skipped_queries == []
    q1 = queries["q1"]
    assert q1.relevant == {"Super_Bowl_50": 1}
    assert q1.answers == ("Denver Broncos", "The Denver Broncos")  # deduplicated, order kept
    assert len(q1.spans) == 2
    q2 = queries["q2"]
    (span,) = q2.spans
    assert span.start == len(P1) + 2 + P2.index("Levi")
    assert doc.text[span.start : span.end] == "Levi's Stadium"
    texts = ds.texts_by_id()
    for qq in ds.queries:
        for s in qq.spans:
            assert texts[s.doc_id][s.start : s.end] in qq.answers
    assert ds.stats["span_mismatches"] == 0


def test_squad_span_mismatch_is_counted_not_fatal(tmp_path):
    ds = load_squad(squad_fixture(tmp_path, bad_start=True))
    assert ds.stats["span_mismatches"] == 1
    q2 = ds.queries_by_id()["q2"]
    assert q2.spans == () and q2.answers == ("Levi's Stadium",)
    assert q2.relevant == {"Super_Bowl_50": 1}


def test_squad_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n  oops}\n]}', encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        load_squad(path)
    assert str(path) in str(err.value) and ":3:" in str(err.value)
    assert err.value.line == 3


def test_squad_wrong_shape(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"version": 1}', encoding="utf-8")
    with pytest.raises(DatasetError, match="'data'"):
        load_squad(path)


def test_squad_folder_with_one_json_file_is_accepted(tmp_path):
    path = squad_fixture(tmp_path)
    assert [d.doc_id for d in load_squad(path.parent).documents] == [d.doc_id for d in load_squad(path).documents]
    (path.parent / "other.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetError, match="exactly one .json"):
        load_squad(path.parent)


# --------------------------------------------------------------------------- BEIR


def beir_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "beir-mini"
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Title One", "text": "Body one."},
            {"_id": "d2", "title": "", "text": "Body two."},
            {"_id": "d3", "title": "Three", "text": "Body three.", "metadata": {"year": 2020}},
        ],
    )
    write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "first"},
            {"_id": "q2", "text": "second"},
            {"_id": "q3", "text": "negatives only"},
            {"_id": "q4", "text": "not in this split"},
        ],
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t1\nq2\td1\t0\nq3\td3\t0\n", encoding="utf-8"
    )
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td2\t1\n", encoding="utf-8")
    return root


def test_beir_loads_documents_queries_and_skips(tmp_path):
    ds = load_beir(beir_fixture(tmp_path))
    docs = ds.documents_by_id()
    assert docs["d1"].text == "Title One Body one."  # BEIR: title + " " + text
    assert docs["d1"].title == "Title One"
    assert docs["d2"].text == "Body two."  # no title: no leading space
    assert docs["d3"].metadata == {"year": 2020}
    queries = ds.queries_by_id()
    assert set(queries) == {"q1", "q2"}  # q4 is not in the test split
    assert queries["q1"].relevant == {"d1": 1, "d3": 2}
    assert queries["q2"].relevant == {"d2": 1}  # score-0 rows are not relevant
    assert queries["q1"].text == "first"
    assert ds.skipped_queries == [("q3", "no positive judgement")]
    assert ds.split == "test" and ds.name == "beir-mini"


def test_beir_other_split(tmp_path):
    ds = load_beir(beir_fixture(tmp_path), split="train")
    assert [q.query_id for q in ds.queries] == ["q4"]
    with pytest.raises(DatasetError, match="available: test, train"):
        load_beir(beir_fixture(tmp_path / "again"), split="dev")


def test_beir_malformed_json_line_names_file_and_line(tmp_path):
    root = beir_fixture(tmp_path)
    write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "ok"}, '{"_id": "d2", "text": '])
    with pytest.raises(DatasetError) as err:
        load_beir(root)
    assert err.value.path == str(root / "corpus.jsonl") and err.value.line == 2
    assert "corpus.jsonl:2:" in str(err.value) and "malformed JSON" in str(err.value)


def test_beir_qrels_id_missing_from_corpus(tmp_path):
    root = beir_fixture(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\tghost\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        load_beir(root)
    assert err.value.line == 3 and "test.tsv:3:" in str(err.value) and "'ghost'" in str(err.value)


def test_beir_qrels_query_missing_from_queries(tmp_path):
    root = beir_fixture(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: query-id 'q9'"):
        load_beir(root)


def test_beir_bad_qrels_row(tmp_path):
    root = beir_fixture(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: score 'high'"):
        load_beir(root)


def test_beir_duplicate_document_id(tmp_path):
    root = beir_fixture(tmp_path)
    write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: duplicate"):
        load_beir(root)


def test_beir_missing_files(tmp_path):
    root = beir_fixture(tmp_path)
    (root / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match="queries.jsonl"):
        load_beir(root)


# --------------------------------------------------------------------------- SciFact spans


def scifact_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "scifact-mini"
    write_jsonl(
        root / "corpus.jsonl",
        [
            # The title's words also open the abstract: the search must start after it.
            {"_id": "11", "title": "Cats sleep a lot.", "text": "Cats sleep a lot. Dogs  bark loudly. Birds sing."},
            {"_id": "22", "title": "Fish", "text": "Fish swim. Fish swim."},
        ],
    )
    write_jsonl(
        root / "corpus_sentences.jsonl",
        [
            # Whitespace differs from the corpus text, as in the real file.
            {"doc_id": 11, "title": "Cats sleep a lot.", "abstract": ["Cats sleep a lot.", "Dogs bark loudly.  \n", "Birds sing."]},
            {"doc_id": 22, "title": "Fish", "abstract": ["Fish swim.", "Fish swim.", "Not in the text at all."], "structured": False},
        ],
    )
    write_jsonl(
        root / "claims_dev.jsonl",
        [
            {"id": 1, "claim": "Dogs bark.", "evidence": {"11": [{"sentences": [1], "label": "SUPPORT"}]}, "cited_doc_ids": [11]},
            {"id": 2, "claim": "No evidence.", "evidence": {}, "cited_doc_ids": [11]},
            {
                "id": 3,
                "claim": "Fish swim twice.",
                "evidence": {"22": [{"sentences": [1, 2], "label": "CONTRADICT"}], "11": [{"sentences": [0], "label": "SUPPORT"}]},
                "cited_doc_ids": [22, 11],
            },
        ],
    )
    write_jsonl(root / "claims_train.jsonl", [{"id": 9, "claim": "c", "evidence": {}, "cited_doc_ids": []}])
    return root


def test_scifact_spans_locate_evidence_sentences(tmp_path):
    ds = load_scifact_spans(scifact_fixture(tmp_path))
    texts = ds.texts_by_id()
    assert texts["11"] == "Cats sleep a lot. Cats sleep a lot. Dogs  bark loudly. Birds sing."
    queries = ds.queries_by_id()
    assert set(queries) == {"1", "3"}
    assert ds.skipped_queries == [("2", "no evidence")]
    (s,) = queries["1"].spans
    assert texts["11"][s.start : s.end] == "Dogs  bark loudly."
    assert queries["1"].relevant == {"11": 1}
    q3 = queries["3"]
    assert q3.relevant == {"22": 1, "11": 1}
    by_doc = {(sp.doc_id, texts[sp.doc_id][sp.start : sp.end], sp.start) for sp in q3.spans}
    # Sentence 0 of doc 11 is in the abstract, not the identical title before it.
    assert ("11", "Cats sleep a lot.", len("Cats sleep a lot. ")) in by_doc
    # Sentence 1 of doc 22 is the second "Fish swim." of the abstract.
    second = texts["22"].rindex("Fish swim.")
    assert ("22", "Fish swim.", second) in by_doc
    assert ds.stats == {"evidence_sentences": 4, "unlocated_sentences": 1}
    assert ds.split == "dev"


def test_scifact_split_aliases_and_errors(tmp_path):
    root = scifact_fixture(tmp_path)
    assert load_scifact_spans(root, "test").split == "dev"
    train = load_scifact_spans(root, "train")
    assert train.queries == [] and train.skipped_queries == [("9", "no evidence")]
    with pytest.raises(DatasetError, match="unknown SciFact split"):
        load_scifact_spans(root, "validation")


def test_scifact_evidence_document_missing(tmp_path):
    root = scifact_fixture(tmp_path)
    write_jsonl(root / "claims_dev.jsonl", [{"id": 1, "claim": "x", "evidence": {"99": [{"sentences": [0]}]}}])
    with pytest.raises(DatasetError, match=r"claims_dev\.jsonl:1: evidence document '99'"):
        load_scifact_spans(root)


def test_scifact_sentence_index_out_of_range(tmp_path):
    root = scifact_fixture(tmp_path)
    write_jsonl(root / "claims_dev.jsonl", [{"id": 1, "claim": "x", "evidence": {"11": [{"sentences": [7]}]}}])
    with pytest.raises(DatasetError, match=r"claims_dev\.jsonl:1: .*out of range"):
        load_scifact_spans(root)


# --------------------------------------------------------------------------- generic spans


def spans_fixture(tmp_path: Path, queries: list | None = None) -> Path:
    root = tmp_path / "spans-mini"
    write_jsonl(
        root / "documents.jsonl",
        [
            {"id": "a", "text": "Alpha text here.", "title": "A", "metadata": {"k": 1}},
            {"id": "b", "text": "Beta text."},
        ],
    )
    if queries is None:
        queries = [
            {"id": "q1", "text": "alpha?", "spans": [{"doc_id": "a", "start": 0, "end": 5}], "answers": ["Alpha"]},
            {"id": "q2", "text": "graded", "spans": [], "relevant": {"a": 2, "b": 0}},
            {"id": "q3", "text": "nothing"},
            {"id": "q4", "text": "zero only", "relevant": {"b": 0}},
        ]
    write_jsonl(root / "queries.jsonl", queries)
    return root


def test_spans_format_loads_and_skips_unlabelled(tmp_path):
    ds = load_spans(spans_fixture(tmp_path))
    docs = ds.documents_by_id()
    assert docs["a"].title == "A" and docs["a"].metadata == {"k": 1}
    queries = ds.queries_by_id()
    assert queries["q1"].relevant == {"a": 1}  # defaults to the span documents
    assert queries["q1"].spans == (GoldSpan("a", 0, 5),)
    assert queries["q1"].answers == ("Alpha",)
    assert queries["q2"].relevant == {"a": 2}
    assert ds.skipped_queries == [("q3", "no spans or relevant documents"), ("q4", "no spans or relevant documents")]
    assert ds.name == "spans-mini"


@pytest.mark.parametrize(
    "span,match",
    [
        ({"doc_id": "a", "start": 0, "end": 99}, r"out of range for document 'a' \(length 16"),
        ({"doc_id": "a", "start": -1, "end": 3}, "out of range"),
        ({"doc_id": "a", "start": 5, "end": 5}, "out of range"),
        ({"doc_id": "zz", "start": 0, "end": 1}, "span document 'zz' is not in documents.jsonl"),
        ({"doc_id": "a", "start": "0", "end": 1}, "span start must be an integer"),
    ],
)
def test_spans_bad_span_names_file_and_line(tmp_path, span, match):
    root = spans_fixture(
        tmp_path,
        [{"id": "ok", "text": "t", "spans": [{"doc_id": "b", "start": 0, "end": 4}]}, {"id": "bad", "text": "t", "spans": [span]}],
    )
    with pytest.raises(DatasetError, match=match) as err:
        load_spans(root)
    assert err.value.path == str(root / "queries.jsonl") and err.value.line == 2
    assert "queries.jsonl:2:" in str(err.value)


def test_spans_malformed_json_line(tmp_path):
    root = spans_fixture(tmp_path, [{"id": "ok", "text": "t", "relevant": {"a": 1}}, "", "[1, 2]"])
    with pytest.raises(DatasetError, match=r"queries\.jsonl:3: expected a JSON object"):
        load_spans(root)
    root = spans_fixture(tmp_path / "2", ["{not json"])
    with pytest.raises(DatasetError, match=r"queries\.jsonl:1: malformed JSON"):
        load_spans(root)


def test_spans_relevant_unknown_document(tmp_path):
    root = spans_fixture(tmp_path, [{"id": "q", "text": "t", "relevant": {"nope": 1}}])
    with pytest.raises(DatasetError, match=r"queries\.jsonl:1: relevant document 'nope'"):
        load_spans(root)


def test_write_spans_round_trips_squad_and_scifact(tmp_path):
    for i, original in enumerate((load_squad(squad_fixture(tmp_path)), load_scifact_spans(scifact_fixture(tmp_path)))):
        out = tmp_path / f"written-{i}"
        write_spans_dataset(original, out)
        again = load_dataset(f"spans:{out}")
        # ``source`` names the file read, so it differs by design; the hash covers the rest.
        assert [(d.doc_id, d.text, d.title, d.metadata, d.content_hash) for d in again.documents] == [
            (d.doc_id, d.text, d.title, d.metadata, d.content_hash) for d in original.documents
        ]
        assert again.queries == original.queries
        assert again.skipped_queries == original.skipped_queries
        assert (again.name, again.split, again.stats) == (original.name, original.split, original.stats)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_dispatches(tmp_path):
    assert len(load_dataset(f"squad:{squad_fixture(tmp_path)}").documents) == 2
    assert len(load_dataset(f"beir:{beir_fixture(tmp_path)}").queries) == 2
    assert len(load_dataset(f"beir:{beir_fixture(tmp_path / 'x')}", split="train").queries) == 1
    assert len(load_dataset(f"scifact:{scifact_fixture(tmp_path)}").queries) == 2
    assert len(load_dataset(f"spans:{spans_fixture(tmp_path)}").queries) == 2


@pytest.mark.parametrize("spec", ["trec:/x", "nocolon", ":/x"])
def test_load_dataset_unknown_kind_lists_valid_kinds(spec):
    with pytest.raises(DatasetError) as err:
        load_dataset(spec)
    for kind in DATASET_KINDS:
        assert kind in str(err.value)


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_load_dataset_nonexistent_path_is_named(tmp_path, kind):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DatasetError) as err:
        load_dataset(f"{kind}:{missing}")
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_loaders_name_nonexistent_paths(tmp_path):
    missing = tmp_path / "nope"
    for loader in (load_squad, load_beir, load_scifact_spans, load_spans):
        with pytest.raises(DatasetError, match="does not exist"):
            loader(missing)


# --------------------------------------------------------------------------- real data

SQUAD_DEV = DATA / "squad-v1.1" / "dev-v1.1.json"
SCIFACT = DATA / "scifact"

needs_squad = pytest.mark.skipif(not SQUAD_DEV.exists(), reason=f"SQuAD dev set not found at {SQUAD_DEV}")
needs_scifact = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").exists(), reason=f"SciFact not found at {SCIFACT}")


@pytest.mark.dataset
@needs_squad
def test_real_squad_dev():
    ds = load_dataset(f"squad:{SQUAD_DEV}")
    assert len(ds.documents) == 48
    assert len(ds.queries) == 10_570
    assert ds.skipped_queries == []
    assert ds.stats["span_mismatches"] == 0
    texts = ds.texts_by_id()
    n_spans = 0
    for q in ds.queries:
        assert q.answers and q.spans
        for s in q.spans:
            assert texts[s.doc_id][s.start : s.end] in q.answers
            n_spans += 1
    assert n_spans > 10_570
    assert sum(d.metadata["n_paragraphs"] for d in ds.documents) == 2067


@pytest.mark.dataset
@needs_scifact
def test_real_scifact_test_split():
    ds = load_dataset(f"beir:{SCIFACT}", split="test")
    assert len(ds.documents) == 5_183
    assert len(ds.queries) == 300
    assert ds.skipped_queries == []
    assert sum(len(q.relevant) for q in ds.queries) == 339


@pytest.mark.dataset
@needs_scifact
def test_real_scifact_spans():
    ds = load_dataset(f"scifact:{SCIFACT}")
    assert len(ds.documents) == 5_183
    # 300 dev claims = the BEIR test queries; those without sentence evidence are skipped.
    assert len(ds.queries) + len(ds.skipped_queries) == 300
    assert all(reason == "no evidence" for _q, reason in ds.skipped_queries)
    total, unlocated = ds.stats["evidence_sentences"], ds.stats["unlocated_sentences"]
    print(f"scifact dev: {len(ds.queries)} claims with evidence, {len(ds.skipped_queries)} skipped, "
          f"{total} evidence sentences, {unlocated} not located")
    assert total > 0 and unlocated <= 0.01 * total
    texts = ds.texts_by_id()
    docs = ds.documents_by_id()
    for q in ds.queries:
        for s in q.spans:
            assert s.start >= len(docs[s.doc_id].title)  # found in the abstract, not the title
            assert texts[s.doc_id][s.start : s.end].strip()
    beir_ids = {q.query_id for q in load_beir(SCIFACT, "test").queries}
    assert {q.query_id for q in ds.queries} <= beir_ids
