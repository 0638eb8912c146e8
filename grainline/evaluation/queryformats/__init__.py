"""The query-file formats ``grainline queries import`` reads, one module each, all
registered in :data:`QUERY_FORMATS` by name: ``grainline`` (question rows,
``native``), ``ragas`` (Ragas test sets), ``llamaindex`` (LlamaIndex
``EmbeddingQAFinetuneDataset`` JSON) and ``beir`` (a BEIR folder's queries and qrels).
Each reads a file into :class:`SourceRow` values (the question, its passages or
document labels, or why the row is unusable); :mod:`grainline.evaluation.queryimport`
resolves them against the stored documents. Without ``--format`` the format is
detected when exactly one claims the file; a file whose records are of two formats
is read as the one most of its records are, the others reported row by row."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from . import beir, llamaindex, native, ragas  # noqa: F401  (they register themselves)
from .base import QUERY_FORMATS, Passage, QueryFileError, QueryFormat, SourceRow
from .records import record_format_counts

__all__ = ["QUERY_FORMATS", "Passage", "QueryFileError", "QueryFormat", "SourceRow", "detect_format", "read_rows"]


def detect_format(path: Path) -> str:
    """The one format that claims ``path``; an error naming the candidates otherwise."""
    if path.is_file():
        from .base import QueryFileError as _E

        try:
            with path.open(encoding="utf-8") as fh:
                head = fh.read(200)
        except (OSError, UnicodeDecodeError) as exc:
            raise _E(f"{path}: not readable as UTF-8 text ({exc})") from None
        if '"grainline-queryset"' in head:
            raise _E(f"{path}: is a grainline query set already; evaluate it with `grainline eval --queries {path}`")
    counts = record_format_counts(path)  # record formats: how many records each claims
    files = [n for n in QUERY_FORMATS.names() if _sniff(n, path)]  # whole-file formats
    if len(files) == 1 and not counts:
        return files[0]
    if len(counts) == 1 and not files:
        return next(iter(counts))
    if len(counts) > 1 and not files and path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        if ranked[0][1] > ranked[1][1]:
            return ranked[0][0]  # the other format's rows are reported one by one
        raise QueryFileError(f"{path}: mixes formats ({', '.join(f'{c} {n} rows' for n, c in ranked)}); "
                             f"pass --format {' or --format '.join(n for n, _ in ranked)}")
    if files or counts:
        raise QueryFileError(f"{path}: could be {' or '.join(sorted(set(files) | set(counts)))}; pass --format NAME")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".tsv", ".tab"):
        from .records import csv_header

        names = csv_header(path)
        raise QueryFileError(f"{path}:1: no 'question' column (columns: {', '.join(names) or 'none'}); "
                             "expected question plus any of doc_id, answer, evidence, or a Ragas test set "
                             "(user_input, reference_contexts, reference)")
    if path.is_file() and suffix not in (".jsonl", ".ndjson", ".json"):
        raise QueryFileError(f"{path}: unknown query file type {suffix!r}; expected .csv, .tsv, .jsonl, .json "
                             "or a BEIR folder")
    raise QueryFileError(f"{path}: not a query file of a known format ({_known()}); pass --format NAME")


def _sniff(name: str, path: Path) -> bool:
    from .records import RecordFormat

    fmt = QUERY_FORMATS.get(name)
    return not issubclass(fmt, RecordFormat) and fmt.sniff(path)


def _known() -> str:
    return "; ".join(f"{n}: {QUERY_FORMATS.get(n).describe}" for n in QUERY_FORMATS.names())


def read_rows(path: str | Path, fmt: str | None = None, split: str | None = None) -> tuple[str, Iterator[SourceRow]]:
    """The format (given or detected) and the rows of the file or folder ``path``."""
    path = Path(path)
    if not path.exists():
        raise QueryFileError(f"{path}: query file does not exist")
    name = fmt or detect_format(path)
    cls = QUERY_FORMATS.get(name)  # an unknown name: ValueError listing the known ones
    if split is not None and name != "beir":
        raise QueryFileError(f"--split picks a BEIR qrels file; the {name} format has no splits")
    if name == "beir":
        return name, cls.rows(path, split)
    if path.is_dir():
        raise QueryFileError(f"{path}: is a folder; the {name} format is one file")
    return name, cls.rows(path)
