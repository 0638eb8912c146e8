"""The run's sets of ids held as hashes (ingest/hashed_ids.py) answer as a set of the
strings would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from grainline.ingest.hashed_ids import HashedIds

ids = st.text(alphabet="ab#/.x", max_size=8)


@given(added=st.lists(ids, max_size=40), asked=st.lists(ids, max_size=40), split=st.integers(0, 40))
def test_hashed_ids_answer_as_a_set_of_strings(added, asked, split):
    h = HashedIds(added[:split])
    for d in added[split:]:
        h.add(d)
    assert list(h.contains_many(asked)) == [d in set(added) for d in asked]
    assert all((d in h) == (d in set(added)) for d in asked)
    assert len(h) == len(set(added)) and bool(h) == bool(added)
    h.add("late")  # added after a question: merged at the next one
    assert "late" in h
    h.clear()
    assert not h and not h.contains_many(asked).any()


def test_exact_cases():
    h = HashedIds(["/a.txt", "/b.jsonl#r1"])
    assert list(h.contains_many(["/a.txt", "/b.jsonl", "/b.jsonl#r1", ""])) == [True, False, True, False]
    assert 3 not in h and len(HashedIds().contains_many([])) == 0
