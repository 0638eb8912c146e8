"""HTML (.html, .htm), parsed and never rendered: the page's main content by
trafilatura, or every visible block by a selectolax walk; the title from ``<title>``
or the first ``<h1>``; nesting deeper than the limit refused before parsing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grainline.documents import Document, Failure
from grainline.readers.ids import _rel, _uri
from grainline.readers.registry import register_reader
from grainline.readers.settings import ReaderSettings
from grainline.readers.text import _document, _read_text

# Navigation menus are visible but are site chrome, not the document: they would put
# the same words ("Home About Contact") into every page's chunks.
_HTML_DROP = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "nav", "-comment"})
_HTML_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
        "table", "tr", "blockquote", "pre", "header", "footer", "nav", "main", "aside", "figure",
        "figcaption", "dd", "dt", "dl", "hr", "address", "details", "summary", "caption",
        "fieldset", "legend", "form", "body", "html",
    }
)  # fmt: skip
# Table cells are inline-level for paragraphs but must not glue words together.
_HTML_CELL = frozenset({"td", "th"})
_HTML_WS = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace only: &nbsp; is content


class _TextBuilder:
    """Accumulates visible text into lines and paragraphs."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.lines: list[str] = []
        self.pieces: list[str] = []

    def text(self, s: str) -> None:
        self.pieces.append(s)

    def line_break(self) -> None:
        self.lines.append(_HTML_WS.sub(" ", "".join(self.pieces)).strip())
        self.pieces = []

    def paragraph_break(self) -> None:
        self.line_break()
        # <br> at the start/end of a block should not produce blank lines.
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        start = 0
        while start < len(self.lines) and not self.lines[start]:
            start += 1
        if start < len(self.lines):
            self.paragraphs.append("\n".join(self.lines[start:]))
        self.lines = []

    def result(self) -> str:
        self.paragraph_break()
        return "\n\n".join(self.paragraphs)


def _html_text(node: Any) -> str:
    """Visible text under ``node`` without recursion (5,000-deep nesting happens in
    generated HTML), with an explicit stack of (node, leaving) pairs."""
    out = _TextBuilder()
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:
        cur, leaving = stack.pop()
        tag = cur.tag
        if leaving:
            if tag in _HTML_BLOCK:
                out.paragraph_break()
            elif tag in _HTML_CELL:
                out.text(" ")
            continue
        if tag == "-text":
            out.text(cur.text_content or "")
            continue
        if tag in _HTML_DROP:
            continue
        if tag == "br":
            out.line_break()
            continue
        if tag in _HTML_BLOCK:
            out.paragraph_break()
        elif tag in _HTML_CELL:
            out.text(" ")
        stack.append((cur, True))
        children = []
        child = cur.child
        while child is not None:
            children.append(child)
            child = child.next
        for c in reversed(children):
            stack.append((c, False))
    return out.result()


_HTML_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)[^>]*>")
# Elements that never nest: void ones, and those whose end tag may be left out (a new
# <p> or <li> closes the open one), so sloppy pages are not taken for deep ones.
_HTML_FLAT = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
        "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody", "tfoot", "colgroup",
        "rb", "rt", "rp", "caption",
    }
)  # fmt: skip


def _html_depth_over(html: str, limit: int) -> bool:
    """Whether tags in ``html`` nest deeper than ``limit``: a linear scan of the tags,
    checked before the parser (which is quadratic in depth) sees the text."""
    depth = 0
    for m in _HTML_TAG.finditer(html):
        if m.group(2).lower() in _HTML_FLAT or m.group(0).endswith("/>"):
            continue
        if m.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def html_main_text(html: str, extractor: str = "main") -> tuple[str, str]:
    """``(title, text)`` of an HTML page. Title from ``<title>``, else the first
    ``<h1>``. Text: with ``main``, the main content found by trafilatura, each heading,
    paragraph, list item or table row a paragraph of its own; when it finds nothing
    (a tiny page, markup it cannot parse) or with ``all``, every visible block (the
    selectolax walk)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title = ""
    for selector in ("title", "h1"):
        node = tree.css_first(selector)
        if node is not None:
            # Walking the node itself: <title> sits in <head>, which the body walk drops.
            title = _HTML_WS.sub(" ", _html_text(node)).strip()
            if title:
                break
    text = _trafilatura_text(html) if extractor == "main" else ""
    if not text.strip():
        start = tree.root if tree.root is not None else tree.body
        text = _html_text(start) if start is not None else ""
    return title, text


_HTML_HEADING = re.compile(r"<h[1-6][\s>]", re.IGNORECASE)


def _trafilatura_text(html: str) -> str:
    """Main content as paragraphs, from trafilatura's XML (plain text output joins
    blocks with single newlines and markdown adds '#' marks)."""
    try:
        import trafilatura
    except ImportError:  # the selectolax walk still reads the page
        return ""
    import xml.etree.ElementTree as ET

    def extract(favor: str) -> str | None:
        return trafilatura.extract(html, output_format="xml", include_comments=False, include_tables=True,
                                   with_metadata=False, deduplicate=False, **{favor: True})

    try:
        xml = extract("favor_precision")
        # Precision mode can drop every heading of a short page; headings are the
        # structure sections and heading query sets are built on, so ask again for recall.
        if xml and "<head" not in xml and _HTML_HEADING.search(html):
            recall = extract("favor_recall")
            if recall and "<head" in recall:
                xml = recall
    except Exception:  # noqa: BLE001 - a parser failure on one page falls back to the walk
        return ""
    if not xml:
        return ""
    try:
        doc = ET.fromstring(xml)
    except ET.ParseError:
        return ""
    main = doc.find("main")
    blocks: list[str] = []

    def flat(el: ET.Element) -> str:
        return _HTML_WS.sub(" ", "".join(el.itertext())).strip()

    for el in (main if main is not None else doc):
        if el.tag == "list":
            items = [flat(i) for i in el.iter("item")]
            blocks.append("\n".join(i for i in items if i))
        elif el.tag == "table":
            rows = [" | ".join(flat(c) for c in row if flat(c)) for row in el.iter("row")]
            blocks.append("\n".join(r for r in rows if r))
        elif el.tag == "code":
            blocks.append("".join(el.itertext()).strip("\n"))
        else:
            blocks.append(flat(el))
    return "\n\n".join(b for b in blocks if b.strip())


@register_reader(".html", ".htm")
def read_html(path: Path, root: Path, settings: ReaderSettings) -> Iterator[Document | Failure]:
    """An HTML file is one Document of its main content (:func:`html_main_text`):
    blocks become paragraphs separated by a blank line, inline tags keep sentences
    whole; page chrome, scripts, styles, head and the like are dropped. The HTML is parsed, never rendered: no script runs and
    nothing it points to (iframes, objects, images, styles) is fetched. Nesting deeper
    than ``max_html_depth`` fails before parsing."""
    rel = _rel(path, root)
    html = _read_text(path, settings)
    if _html_depth_over(html, settings.max_html_depth):
        yield Failure(rel, f"HTML nested deeper than {settings.max_html_depth} levels (max_html_depth), not parsed")
        return
    title, text = html_main_text(html, settings.html_extractor)
    yield _document(rel, text, _uri(path), title)
