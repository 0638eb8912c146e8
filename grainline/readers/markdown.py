"""Markdown (.md, .markdown): YAML front matter as metadata (held to the size and
alias limits), the title from front matter or the first ``# `` heading outside code,
the body after the front matter; parts for a big file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grainline.documents import Document, Failure
from grainline.readers.ids import _rel, _uri
from grainline.readers.metadata import _expanded_nodes, _json_safe, _metadata_too_large
from grainline.readers.registry import register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.text import _document, _is_big, _read_text, _split_text_file

_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _first_h1(text: str) -> str:
    """First ``# `` heading outside fenced code (shell comments in code blocks look
    exactly like headings)."""
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            h = _ATX_H1.match(line)
            if h:
                return h.group(1).strip()
    return ""


@register_reader(".md", ".markdown")
def read_md(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """A Markdown file is one Document: YAML front matter becomes metadata, the title
    comes from front matter ``title`` or the first ``# `` heading, and the text is the
    body after the front matter. A file over ``part_bytes`` becomes parts (see
    ``_split_text_file``), front matter and title taken from the first."""
    rel = _rel(path, root)
    if _is_big(path, settings):
        yield from _split_text_file(path, root, settings, lambda text: _md_head(text, rel, settings))
        return
    got = _md_head(_read_text(path, settings), rel, settings)
    if isinstance(got, Failure):
        yield got
        return
    body, _, title, metadata = got
    yield _document(rel, body, _uri(path), title, metadata)


def _md_head(text: str, rel: str, settings: ReaderSettings) -> tuple[str, int, str, dict[str, Any]] | Failure:
    """Markdown text -> (body, where the body starts, title, front matter as metadata),
    or the Failure of malformed front matter."""
    import yaml
    from frontmatter.default_handlers import YAMLHandler

    metadata: dict[str, Any] = {}
    body = text
    handler = YAMLHandler()
    # frontmatter.parse() strips the whole text; use the handler directly so the
    # body is kept verbatim.
    if handler.detect(text):
        try:
            fm, content = handler.split(text)
        except ValueError:
            fm = None  # an opening '---' with no closing one is a thematic break
        if fm is not None:
            size = len(fm.encode("utf-8"))
            if size > settings.max_front_matter_bytes:
                return Failure(rel, f"front matter too large ({size} bytes > max_front_matter_bytes {settings.max_front_matter_bytes})")
            try:
                data = yaml.load(fm, Loader=yaml.SafeLoader)
            except yaml.YAMLError as exc:
                return Failure(rel, f"malformed YAML front matter in {rel}: {exc}")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                return Failure(rel, f"front matter in {rel} is not a mapping (got {type(data).__name__})")
            # Aliases are shared, not copied, when YAML loads: count the values they
            # stand for before anything copies them (JSON, every chunk row).
            nodes = _expanded_nodes(data, settings.max_yaml_nodes)
            if nodes is None:
                return Failure(rel, "front matter has a YAML alias that refers to itself")
            if nodes > settings.max_yaml_nodes:
                return Failure(rel, f"front matter expands to more than {settings.max_yaml_nodes} values through YAML "
                                    f"aliases (max_yaml_nodes)")
            metadata = _json_safe(data)
            reason = _metadata_too_large(metadata, settings)
            if reason:
                return Failure(rel, reason)
            # Blank lines between the closing '---' and the body carry nothing.
            body = re.sub(r"\A(?:[ \t]*\n)+", "", content)
    fm_title = metadata.get("title")
    title = str(fm_title).strip() if fm_title not in (None, "") else _first_h1(body)
    # The body is the end of the text: its offset is what precedes it.
    return body, len(text) - len(body), title, metadata
