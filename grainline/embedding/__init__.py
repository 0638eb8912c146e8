"""Embedding (layer 2): the settings, the :class:`Embedder` and ``get_embedder`` (one
loaded model per settings per process), model identity and its cache (``identity``),
the torch and OpenVINO backends, ``--precision auto`` (``precision``), long-text pooling
(``pooling``) and loading and applying tuned heads (``head``). It may import the base
modules (``grainline.documents``, ``defaults``, ``tokens`` ...), the chunkers and, for
OpenVINO's int8 calibration texts, the readers; nothing of ingest, storage, tuning or
above. Its modules import each other one way only: identity <- head <- settings,
identity <- precision <- torch_backend, identity <- openvino_backend, and embedder on
top of them all. torch, sentence-transformers and OpenVINO are imported only when a
model is loaded.

May import: chunkers, defaults, documents, readers, tokens.
"""

from grainline.defaults import DEFAULT_MODEL

from .embedder import Embedder, LazyTokenCounter, get_embedder
from .head import Head, base_identity_of, check_head_folder
from .identity import (
    ModelIdentity,
    identity_cache_dir,
    is_bundled,
    read_cached_identity,
    resolve_model_path,
    weights_hash,
    write_cached_identity,
)
from .settings import DEVICES, PRECISIONS, EmbedderSettings
from .torch_backend import pick_device

__all__ = [
    "DEFAULT_MODEL", "DEVICES", "PRECISIONS", "Embedder", "EmbedderSettings", "Head", "LazyTokenCounter",
    "ModelIdentity", "base_identity_of", "check_head_folder", "get_embedder", "identity_cache_dir", "is_bundled",
    "pick_device", "read_cached_identity", "resolve_model_path", "weights_hash", "write_cached_identity",
]
