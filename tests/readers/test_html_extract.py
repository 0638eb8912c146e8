"""Main-content HTML extraction on pages with real-looking chrome (navigation, cookie
banners, footers, sidebars, comments, rustdoc's keyboard-shortcuts dialog): the
content, title and headings stay, each heading and paragraph a paragraph of its own;
the chrome goes. scripts/compare_html_extractors.py prints the same figures for
trafilatura, resiliparse and the selectolax walk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grainline.documents import Document
from grainline.readers import ReaderSettings, iter_documents

FIXTURES = Path(__file__).parent / "fixtures" / "html"
EXPECT = json.loads((FIXTURES / "expect.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    for name in EXPECT:
        shutil.copy(FIXTURES / name, root / name)
    return root


def read(root, **settings) -> dict[str, Document]:
    return {Path(d.doc_id).name: d for d in iter_documents(root, ReaderSettings(**settings)) if isinstance(d, Document)}


def test_main_content_without_chrome(pages):
    docs = read(pages)
    assert set(docs) == set(EXPECT)
    for name, expect in EXPECT.items():
        doc = docs[name]
        assert expect["title"] in doc.title, (name, doc.title)
        for phrase in expect["keep"]:
            assert phrase in doc.text, (name, phrase)
        for phrase in expect["drop"]:
            assert phrase not in doc.text, (name, phrase)
        paragraphs = [p.strip() for p in doc.text.split("\n\n")]
        for heading in expect["headings"]:
            assert heading in paragraphs, (name, heading, paragraphs)


def test_all_visible_text_on_request_and_the_walk_as_fallback(pages, tmp_path):
    everything = read(pages, html_extractor="all")
    assert "Keyboard shortcuts" in everything["rustdoc.html"].text
    # A page too small for main-content detection still gives its text (the walk).
    (tmp_path / "tiny.html").write_text("<html><body><p>deep text</p></body></html>")
    assert read(tmp_path)["tiny.html"].text.strip() == "deep text"
