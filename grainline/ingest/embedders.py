"""One loaded model per embedder settings per process."""

from __future__ import annotations

from grainline.embedding import Embedder, EmbedderSettings

_EMBEDDERS: dict[EmbedderSettings, Embedder] = {}


def get_embedder(settings: EmbedderSettings) -> Embedder:
    """One loaded model per settings per process (tasks in one process share it)."""
    if settings not in _EMBEDDERS:
        _EMBEDDERS[settings] = Embedder(settings)
    return _EMBEDDERS[settings]
