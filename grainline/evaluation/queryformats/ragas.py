"""Ragas test sets (``--format ragas``): the records ``Testset.to_jsonl``, ``to_csv``,
``to_list`` or ``to_pandas().to_csv`` write, one single-turn sample each, with
``user_input`` (the question), ``reference_contexts`` (the passages it was written
from: each one a gold span, searched in every document) and ``reference`` (the
answer). In CSV the contexts cell holds the list in JSON or in the Python form those
writers give it. Multi-turn samples (``user_input`` a list of messages) are refused
row by row."""

from __future__ import annotations

from .base import FieldError, SourceRow, cell_list, kind_of, passages, register, text
from .records import Record, RecordFormat


@register("ragas", "a Ragas test set: user_input plus reference_contexts and/or reference")
class RagasTestset(RecordFormat):
    marker = "user_input"

    @classmethod
    def from_record(cls, where: str, rec: Record) -> SourceRow:
        if isinstance(rec.get("user_input"), list):
            raise FieldError("a multi-turn sample ('user_input' is a list of messages); only single-turn samples are questions")
        row = SourceRow(where, question=text(rec, "user_input"))
        row.answers = [a for a in [text(rec, "reference")] if a]
        contexts = rec.get("reference_contexts")
        if rec.from_csv:
            if isinstance(contexts, list):  # repeated columns
                contexts = [c for cell in contexts for c in _as_list(cell_list(cell))]
            elif isinstance(contexts, str):
                contexts = cell_list(contexts) if contexts.strip() else None
        if contexts is not None:
            if isinstance(contexts, str):
                contexts = [contexts]
            if not isinstance(contexts, list):
                raise FieldError(f"field 'reference_contexts' is {kind_of(contexts)}, expected a list of texts")
            row.passages = passages(contexts, "reference_contexts")
        return row


def _as_list(value):
    return value if isinstance(value, list) else [value]
