"""PDF (.pdf): the text layer of its pages, read with pypdf; encrypted files tried with
the empty password; no text layer is a Failure (no OCR)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from grainline.documents import Document, Failure
from grainline.readers.ids import _rel, _uri
from grainline.readers.registry import register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.text import _normalise, _read_bytes


@register_reader(".pdf")
def read_pdf(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A PDF is one Document: the text of its pages joined by a blank line. Encrypted
    files are tried with the empty password; PDFs without a text layer fail (OCR is
    out of scope)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    rel = _rel(path, root)
    data = _read_bytes(path, settings.max_file_bytes)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                yield Failure(rel, f"encrypted PDF ({exc})")
                return
            if not ok:
                yield Failure(rel, "encrypted PDF")
                return
        pages = [_normalise(page.extract_text() or "") for page in reader.pages]
        title = ""
        try:
            meta = reader.metadata
            if meta is not None and meta.title:
                title = str(meta.title).strip()
        except Exception:  # noqa: BLE001 - a broken Info dict should not lose the text
            title = ""
    except FileNotDecryptedError:
        yield Failure(rel, "encrypted PDF")
        return
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on damaged files
        detail = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PdfReadError) else str(exc)
        yield Failure(rel, f"unreadable PDF: {detail}")
        return
    text = "\n\n".join(p for p in pages if p.strip())
    if not text:
        yield Failure(rel, "no text layer (image-only or empty PDF)")
        return
    yield Document(doc_id=rel, text=text, source=_uri(path), title=title, metadata={"pages": len(pages)})
