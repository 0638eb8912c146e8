"""grainline's own question rows (``--format grainline``): CSV, TSV, JSONL or a JSON
list with ``question`` and any of ``doc_id``, ``answer``, ``evidence``, ``id``.

``evidence`` is a passage, an object ``{"text": ..., "start": ..., "end": ...}`` (the
offsets into the document, when the file has them), or a list of either; in CSV/TSV
the ``evidence`` column may repeat (``evidence``, ``evidence``, or ``evidence_1``,
``evidence_2``), a cell may hold a JSON list, and ``start``/``end`` columns give the
offsets of a single passage. ``answer`` is a text or a list of texts."""

from __future__ import annotations

from .base import FieldError, SourceRow, cell_list, ident, passages, register, text, texts
from .records import Record, RecordFormat


@register("grainline", "question plus any of doc_id, answer, evidence (optional id)")
class GrainlineRows(RecordFormat):
    marker = "question"

    @classmethod
    def from_record(cls, where: str, rec: Record) -> SourceRow:
        row = SourceRow(where, question=text(rec, "question"), qid=ident(rec, "id"), doc_id=ident(rec, "doc_id"))
        answer = rec.get("answer")
        row.answers = texts(cell_list(answer) if rec.from_csv and isinstance(answer, str) else answer, "answer")
        evidence = rec.get("evidence")
        if rec.from_csv:
            evidence = _csv_evidence(rec, evidence)
        if evidence is not None and evidence != "":
            row.passages = passages(evidence)
        return row


def _csv_evidence(rec: Record, evidence):
    """A CSV row's evidence: the cells of the evidence columns, a JSON list in a cell
    taken as its items; ``start``/``end`` cells give one passage's offsets."""
    if evidence is None:
        return None
    cells = evidence if isinstance(evidence, list) else [evidence]
    items = []
    for cell in cells:
        value = cell_list(cell)
        items.extend(value if isinstance(value, list) else [value])
    start, end = (rec.get("start") or "").strip(), (rec.get("end") or "").strip()
    if start or end:
        if len(items) != 1:
            raise FieldError(f"start/end columns give one passage's offsets, but the row has {len(items)} passages "
                             "(give each its offsets as {\"text\", \"start\", \"end\"} in a JSON list)")
        if not (start.isdigit() and end.isdigit()):
            raise FieldError(f"start/end {start!r}-{end!r} are not character offsets (integers)")
        if not isinstance(items[0], str):
            raise FieldError("start/end columns go with a passage given as text")
        return {"text": items[0], "start": int(start), "end": int(end)}
    if not isinstance(evidence, list) and len(items) == 1 and isinstance(items[0], str):
        return items[0]
    return items
