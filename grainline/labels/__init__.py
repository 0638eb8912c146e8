"""Labelled records: the one record type (``records``), its readers (``read``: JSONL,
CSV and TSV files, an ingested table's metadata, SQuAD paragraphs by article) and the
seeded train/test splits (``split``). Tuning, classification and their evaluations read
labels only through here. It may import the base modules, storage and the evaluation
datasets (their file errors and JSONL reader); an ingested table's document vectors
come from :mod:`grainline.related`, imported where they are read.

May import: documents, errors, evaluation, related, storage.
"""

from .read import (
    LabelError, file_rows, load_labelled_file, load_labelled_table, read_records, squad_paragraphs, table_records,
)
from .records import LabelledRecords
from .split import labelled_subset, split_per_class

__all__ = [
    "LabelError", "LabelledRecords", "file_rows", "labelled_subset", "load_labelled_file", "load_labelled_table",
    "read_records", "split_per_class", "squad_paragraphs", "table_records",
]
