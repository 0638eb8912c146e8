"""The labelled-record type: parallel ids, texts and class labels, with the base
model's vectors once known. Tuning, classification and the SQuAD article-label task
all pass records of this one shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass
class LabelledRecords:
    """Records with a class label: ``texts[i]`` (None for records known only by their
    vectors) has class ``labels[i]`` (None where a record has none) and stable id
    ``ids[i]`` (``<title>#<paragraph index>`` for SQuAD); ``vectors`` are the base
    model's, when known."""

    ids: list[str]
    texts: list[str] | None
    labels: list[str | None]
    source: str = ""
    vectors: np.ndarray | None = None
    model_id: str | None = None
    skipped: int = 0  # table rows without a label
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({lab for lab in self.labels if lab is not None})

    def subset(self, index: Sequence[int] | np.ndarray) -> "LabelledRecords":
        """The records at ``index``, in that order (``skipped`` and ``info`` describe
        the whole input, so they are not carried over)."""
        idx = list(map(int, index))
        return LabelledRecords(
            ids=[self.ids[i] for i in idx], texts=None if self.texts is None else [self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx], source=self.source,
            vectors=None if self.vectors is None else self.vectors[idx], model_id=self.model_id,
        )

    def labelled(self) -> "LabelledRecords":
        """Only the records that have a label."""
        return self.subset([i for i, lab in enumerate(self.labels) if lab is not None])

    def unlabelled(self) -> "LabelledRecords":
        """Only the records without a label."""
        return self.subset([i for i, lab in enumerate(self.labels) if lab is None])
