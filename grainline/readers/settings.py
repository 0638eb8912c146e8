"""How files are read: the one settings model of the readers."""

from __future__ import annotations

import pydantic

class ReaderSettings(pydantic.BaseModel):
    """How files are read. Every default lives here, in one place."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    id_field: str = "id"
    """Field holding a record's id in .jsonl/.parquet files."""
    text_field: str = "text"
    """Field holding a record's text in .jsonl/.parquet files."""
    title_field: str = "title"
    """Field holding a record's title in .jsonl/.parquet files."""
    metadata_fields: list[str] | None = None
    """Record fields kept as metadata. None keeps every field other than id/text/title;
    a nested ``metadata`` mapping is merged in (top-level fields win on a clash)."""
    follow_symlinks: bool = False
    """Follow symlinks that stay inside the ingested root while discovering files.
    A symlink that resolves outside the root is never followed, whatever this says."""
    include_hidden: bool = False
    """Descend into / read dot-files and dot-directories (.git, .venv, ...) when
    walking a folder. Glob patterns follow shell rules instead: a segment starting
    with '.' matches hidden names."""
    max_file_bytes: int = pydantic.Field(default=200 * 1024 * 1024, gt=0)
    """Whole-file readers (txt, md, html, pdf) refuse larger files; streaming readers
    (jsonl, parquet) apply it per record line instead."""
    max_html_depth: int = pydantic.Field(default=10_000, gt=0)
    """HTML nested deeper than this fails instead of being parsed: the parser's time
    grows with the square of the depth (40,000 nested divs take seconds, 200,000 minutes)."""
    html_extractor: str = pydantic.Field(default="main", pattern="^(main|all)$")
    """``main``: the page's main content, by trafilatura (navigation, cookie banners,
    footers, sidebars, comments and help dialogs dropped), falling back to ``all`` when
    it finds none; ``all``: every visible text block (the selectolax walk)."""
    part_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024)
    """A .txt/.md file whose text is larger than this (UTF-8 bytes) is read streaming
    and becomes several Documents (``big.txt#part-0003``) of at most this many bytes,
    cut at paragraph breaks, so memory follows the part size, not the file size. A
    .jsonl/.parquet record whose text is larger is cut the same way (``id#part-0003``)."""
    max_front_matter_bytes: int = pydantic.Field(default=64 * 1024, gt=0)
    """Markdown front matter larger than this (UTF-8 bytes) fails the file unparsed."""
    max_yaml_nodes: int = pydantic.Field(default=10_000, gt=0)
    """Front matter holding more values than this once its YAML aliases are expanded
    fails the file (a 300-byte alias bomb expands to hundreds of millions), as does
    an alias that refers to itself."""
    max_metadata_bytes: int = pydantic.Field(default=64 * 1024, gt=0)
    """A document whose metadata (front matter, record fields) is larger than this as
    JSON fails: it is copied onto every one of its chunk rows."""
    max_chunks_per_doc: int = pydantic.Field(default=50_000, gt=0)
    """A document (or part) cut into more chunks than this by one strategy fails at
    chunking, the rest of its batch is stored."""
