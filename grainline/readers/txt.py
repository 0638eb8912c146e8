"""Plain text (.txt): one Document per file, or parts for a big one; the title is a
short first line that more paragraphs follow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from grainline.documents import Document, Failure
from grainline.readers.ids import _rel, _uri
from grainline.readers.registry import register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.text import _PARAGRAPH_BREAK, _document, _is_big, _read_text, _split_text_file

_MAX_TITLE_CHARS = 120


@register_reader(".txt")
def read_txt(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A .txt file is one Document. Its title is the first non-empty line when that
    line is short and more paragraphs follow (a lone line or paragraph is body, not a
    heading). The title line stays in the text so offsets match the file. A file over
    ``part_bytes`` becomes parts (see ``_split_text_file``) sharing the first's title."""
    if _is_big(path, settings):
        yield from _split_text_file(path, root, settings, lambda text: (text, 0, _txt_title(text), {}))
        return
    rel = _rel(path, root)
    text = _read_text(path, settings)
    yield _document(rel, text, _uri(path), _txt_title(text))


def _txt_title(text: str) -> str:
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) > 1:
        first_line = next(line.strip() for line in text.split("\n") if line.strip())
        if len(first_line) <= _MAX_TITLE_CHARS:
            return first_line
    return ""
