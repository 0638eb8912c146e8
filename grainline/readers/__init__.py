"""Turn files on disk into Documents.

Every reader yields ``Document`` or ``Failure`` values and never raises for a bad
file: one unreadable PDF must not stop an ingestion of ten thousand files, and the
failure has to be reported with a location so it can be fixed. The package holds the
settings (``settings``), the suffix -> reader registry (``registry``), discovery
(``discovery``), reading a source (``source``), decoding and big-file parts
(``text``), file and document ids (``ids``), read errors (``errors``), metadata
limits (``metadata``), object-store prefixes (``object_store``: ``s3://bucket/prefix``
listed with ETags, objects read by the same readers) and one module per format
(``txt``, ``markdown``, ``html``, ``records``, ``pdf``). It may import only the base
modules of grainline (documents, registry, redact, tokens), never embedding, storage
or ingest.

Entry points:

* ``discover(source)`` finds the files a source (folder, single file or glob) names.
* ``open_source(source, settings, unchanged)`` gives a source's root and its documents
  lazily, a folder, file, glob or ``s3://`` prefix alike.
* ``iter_documents(source, settings)`` reads them lazily, file by file.
* ``read_file(path, root, settings)`` reads one file.
* ``READERS`` / ``register_reader`` / ``get_reader`` map a suffix to its reader.

May import: documents, redact.
"""

from __future__ import annotations

# The format modules register their readers when imported, in this order (READERS
# keeps it).
from grainline.readers import txt, markdown, html, records, pdf  # noqa: F401  # isort: skip
from grainline.readers.discovery import discover, sync_scope, unsupported_reason
from grainline.readers.html import html_main_text
from grainline.readers.ids import file_doc_id, file_id
from grainline.readers.object_store import ObjectSourceError, check_object_source, is_object_uri
from grainline.readers.registry import READERS, get_reader, register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.source import iter_documents, open_source, read_file

__all__ = [
    "READERS",
    "ObjectSourceError",
    "ReaderSettings",
    "check_object_source",
    "discover",
    "file_doc_id",
    "file_id",
    "get_reader",
    "html_main_text",
    "is_object_uri",
    "iter_documents",
    "open_source",
    "read_file",
    "register_reader",
    "sync_scope",
    "unsupported_reason",
]
