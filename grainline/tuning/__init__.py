"""Label tuning (layer 4): training a head on frozen vectors with class labels and the
same-class rate that measures it (``train``), and training from a labelled source plus
the SQuAD raw-versus-tuned experiment (``report``). The head itself (loading, applying)
is :class:`grainline.embedding.Head`; applying a head to a stored table is
:func:`grainline.reembed.reembed_with_head`. It may import the base modules, chunkers,
embedding, ingest and the labelled-record readers; nothing of flows, the API or the CLI.
matplotlib and torch are imported only where a plot is drawn or a head is trained.

May import: chunkers, documents, embedding, ingest, labels, storage.
"""

from .report import KS, base_embedder, embed_records, ingest_labelled, markdown_table, squad_experiment, train_from_source
from .train import HeadSettings, same_class_ceiling, same_class_rate, supcon_loss, train_head

__all__ = [
    "KS", "HeadSettings", "base_embedder", "embed_records", "ingest_labelled", "markdown_table", "same_class_ceiling",
    "same_class_rate", "squad_experiment", "supcon_loss", "train_from_source", "train_head",
]
