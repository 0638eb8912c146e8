"""Tests for grainline.readers: every reader, every failure path, discovery rules."""

from __future__ import annotations

import re

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from grainline.documents import Document, Failure
from grainline.readers import (
    READERS,
    ReaderSettings,
    discover,
    get_reader,
    iter_documents,
    read_file,
    register_reader,
)


# ----------------------------------------------------------------------------
# helpers


def rel(doc_id: str) -> str:
    """A stored doc id (a real path) relative to the test's own tmp folder."""
    # pytest-N/<test folder>/, or pytest-N/popen-gwK/<test folder>/ under pytest-xdist
    return re.sub(r"^.*?/pytest-\d+/(?:popen-gw\d+/)?[^/]+/", "", doc_id)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def docs(items) -> list[Document]:
    return [i for i in items if isinstance(i, Document)]


def fails(items) -> list[Failure]:
    return [i for i in items if isinstance(i, Failure)]


def only(items):
    items = list(items)
    assert len(items) == 1, items
    return items[0]


def read_one(tmp_path: Path, name: str, content: str | bytes, settings: ReaderSettings | None = None):
    path = write(tmp_path / name, content)
    return only(read_file(path, tmp_path, settings))


def make_pdf(pages: list[str | None], title: str | None = None) -> bytes:
    """A minimal valid PDF, written by hand with a correct xref table. Each page
    shows its string with Helvetica; None makes a page with no content at all."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below, once the page tree number is known
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for text in pages:
        if text is None:
            contents = b""
        else:
            esc = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
            stream = b"BT /F1 12 Tf 72 720 Td (" + esc + b") Tj ET"
            c = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
            contents = b" /Contents %d 0 R" % c
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792]"
                b" /Resources << /Font << /F1 %d 0 R >> >>%s >>" % (pages_obj, font, contents)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info = add(b"<< /Title (%s) >>" % title.encode("latin-1")) if title else None

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n" % (len(objects) + 1))
    out.write(b"0000000000 65535 f \n")
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------
# registry


def test_registry_has_every_suffix():
    for suffix in (".txt", ".md", ".html", ".htm", ".jsonl", ".parquet", ".pdf"):
        assert suffix in READERS
        assert get_reader(suffix) is READERS[suffix]
    assert get_reader(".MD") is READERS[".md"]
    assert get_reader("md") is READERS[".md"]


def test_unknown_suffix_lists_known_ones():
    with pytest.raises(ValueError) as exc:
        get_reader(".docx")
    msg = str(exc.value)
    assert ".docx" in msg
    for suffix in (".txt", ".md", ".html", ".jsonl", ".parquet", ".pdf"):
        assert suffix in msg


def test_register_reader_decorator(tmp_path):
    @register_reader(".shout")
    def read_shout(path, root, settings):
        yield Document(doc_id=path.name, text=path.read_text().upper())

    try:
        write(tmp_path / "a.shout", "hey")
        assert only(iter_documents(tmp_path)).text == "HEY"
    finally:
        del READERS[".shout"]


def test_settings_defaults_and_validation():
    s = ReaderSettings()
    assert (s.id_field, s.text_field, s.title_field) == ("id", "text", "title")
    assert s.metadata_fields is None and s.follow_symlinks is False
    assert s.max_file_bytes == 200 * 1024 * 1024
    with pytest.raises(Exception):
        ReaderSettings(txt_field="body")  # typo: unknown fields are rejected


# ----------------------------------------------------------------------------
# .txt


def test_txt_title_and_text(tmp_path):
    content = "Tides\r\n\r\nThe moon pulls the sea.\rTwice a day.\n"
    doc = read_one(tmp_path, "science/tides.txt", content)
    assert isinstance(doc, Document)
    assert rel(doc.doc_id) == "science/tides.txt"
    assert doc.title == "Tides"
    assert doc.text == "Tides\n\nThe moon pulls the sea.\nTwice a day.\n"
    assert doc.source == (tmp_path / "science/tides.txt").resolve().as_uri()


def test_txt_single_paragraph_has_no_title(tmp_path):
    doc = read_one(tmp_path, "a.txt", "Just one paragraph\nspanning two lines.\n")
    assert doc.title == ""


def test_txt_long_first_line_is_not_a_title(tmp_path):
    doc = read_one(tmp_path, "a.txt", "x" * 121 + "\n\nsecond paragraph")
    assert doc.title == ""
    doc = read_one(tmp_path, "b.txt", "\n\n  " + "y" * 120 + "  \n\nsecond")
    assert doc.title == "y" * 120


def test_txt_leading_bom_stripped(tmp_path):
    doc = read_one(tmp_path, "a.txt", b"\xef\xbb\xbfhello\r\nworld")
    assert doc.text == "hello\nworld"


def test_utf16_with_bom_is_decoded(tmp_path):
    for name, enc in [("le.txt", "utf-16-le"), ("be.txt", "utf-16-be")]:
        data = "\ufeffGrüße\r\naus Köln".encode(enc)
        doc = read_one(tmp_path, name, data)
        assert isinstance(doc, Document), doc
        assert doc.text == "Grüße\naus Köln"


def test_utf32_with_bom_is_decoded(tmp_path):
    doc = read_one(tmp_path, "a.txt", "\ufeffhi there".encode("utf-32-le"))
    assert doc.text == "hi there"


def test_binary_garbage_named_txt(tmp_path):
    f = read_one(tmp_path, "garbage.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(64))
    assert f == Failure("garbage.txt", "binary content (NUL bytes), not text")


def test_invalid_utf8(tmp_path):
    f = read_one(tmp_path, "latin1.txt", "café au lait".encode("latin-1"))
    assert isinstance(f, Failure)
    assert f.reason == "invalid UTF-8 at byte 3"
    assert f.where == "latin1.txt"


def test_empty_file(tmp_path):
    assert read_one(tmp_path, "e.txt", b"") == Failure("e.txt", "empty document")


def test_whitespace_only_file(tmp_path):
    assert read_one(tmp_path, "w.txt", " \n\t\r\n ") == Failure("w.txt", "whitespace-only document")
    assert read_one(tmp_path, "bom.txt", b"\xef\xbb\xbf") == Failure("bom.txt", "empty document")


def _normalised(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_txt_roundtrip_property(tmp_path, text):
    path = write(tmp_path / "prop.txt", text)
    item = only(read_file(path, tmp_path, None))
    expected = _normalised(text)
    if "\x00" in text:
        assert item == Failure("prop.txt", "binary content (NUL bytes), not text")
    elif not expected:
        assert item == Failure("prop.txt", "empty document")
    elif not expected.strip():
        assert item == Failure("prop.txt", "whitespace-only document")
    else:
        assert isinstance(item, Document)
        assert item.text == expected


# ----------------------------------------------------------------------------
# big text files: streamed in parts


@hsettings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(["\n", "\n\n", "\r\n", "\r", " \t\n", "\n \n", "é", "日本", "🙂"]),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=400),
        ),
        max_size=40,
    ),
    utf16=st.booleans(),
    block=st.sampled_from([1, 3, 7, 64, 1 << 20]),
)
def test_text_parts_property(tmp_path_factory, pieces, utf16, block):
    from grainline.readers.text import _PARAGRAPH_BREAK, _read_text, _text_parts

    text = "".join(pieces)
    path = tmp_path_factory.mktemp("parts") / "p.txt"
    path.write_bytes(text.encode("utf-16") if utf16 else text.encode("utf-8"))
    limit = 1024
    parts = list(_text_parts(path, ReaderSettings(part_bytes=limit), block_bytes=block))
    # the parts tile the text that reading the whole file gives, in bounded pieces
    assert "".join(p for _, p, _ in parts) == _read_text(path, ReaderSettings())
    assert [last for *_, last in parts] == [False] * (len(parts) - 1) + [True]
    offset = 0
    for start, part, last in parts:
        assert start == offset
        offset += len(part)
        assert len(part.encode("utf-8")) <= limit
        if not last:
            # cut at a paragraph break when the part holds one, else at a line end,
            # else only when the part is full
            breaks = list(_PARAGRAPH_BREAK.finditer(part))
            if breaks:
                assert breaks[-1].end() == len(part)
            elif "\n" in part:
                assert part.endswith("\n")
            else:
                assert len(part.encode("utf-8")) > limit - 4


def test_big_txt_becomes_parts_with_stable_ids(tmp_path):
    paragraph = "The river carries silt to the delta, where it settles. " * 5
    text = "River Notes\n\n" + "\n\n".join(f"{i} {paragraph}" for i in range(60))
    path = write(tmp_path / "big.txt", text)
    items = list(read_file(path, tmp_path, ReaderSettings(part_bytes=4096)))
    assert not fails(items) and len(items) > 3
    assert [rel(d.doc_id) for d in items] == [f"big.txt#part-{i:04d}" for i in range(len(items))]
    assert {d.title for d in items} == {"River Notes"}
    assert "".join(d.text for d in items) == text
    for d in items:
        part = d.metadata["file_part"]
        assert text[part["char_start"]:part["char_end"]] == d.text
        assert len(d.text.encode()) <= 4096
        assert d.text.endswith("\n\n") or d is items[-1]  # cut at paragraph breaks
        assert d.source.endswith("#" + d.doc_id.split("#")[1])
    # under the threshold it stays one ordinary document
    assert rel(only(read_file(path, tmp_path, ReaderSettings(part_bytes=len(text)))).doc_id) == "big.txt"


def test_big_md_front_matter_from_first_part(tmp_path):
    body = "# Heading\n\n" + "\n\n".join("Markdown paragraph number %d about tides." % i for i in range(200))
    text = "---\ntitle: Tides\ntags: [sea]\n---\n\n" + body
    items = list(read_file(write(tmp_path / "big.md", text), tmp_path, ReaderSettings(part_bytes=2048)))
    assert len(items) > 2 and all(isinstance(d, Document) for d in items)
    assert {d.title for d in items} == {"Tides"}
    assert all(d.metadata["tags"] == ["sea"] for d in items)
    assert "".join(d.text for d in items) == body
    first = items[0].metadata["file_part"]
    assert text[first["char_start"]:first["char_end"]] == items[0].text and items[0].text.startswith("# Heading")
    bad = "---\ntitle: [unclosed\n---\n" + body
    assert "malformed YAML" in only(read_file(write(tmp_path / "bad.md", bad), tmp_path, ReaderSettings(part_bytes=2048))).reason


def test_big_txt_failures_are_whole_file(tmp_path):
    s = ReaderSettings(part_bytes=1024)
    good = "Some text about the moon.\n\n" * 200
    # a bad byte far into the file fails the file, before any part is given out
    f = only(read_file(write(tmp_path / "late.txt", good.encode() + b"\xff" + good.encode()), tmp_path, s))
    assert f == Failure("late.txt", f"invalid UTF-8 at byte {len(good.encode())}")
    assert only(read_file(write(tmp_path / "blank.txt", " \n" * 2000), tmp_path, s)) == Failure("blank.txt", "whitespace-only document")
    assert only(read_file(write(tmp_path / "bin.txt", b"\x00\x01" * 2000), tmp_path, s)).reason == "binary content (NUL bytes), not text"
    # whitespace-only parts in the middle yield nothing; the ids after them do not move
    items = list(read_file(write(tmp_path / "gap.txt", "a" * 1000 + "\n" + " \n" * 1500 + "b" * 1000), tmp_path, s))
    assert len(items) == 2 and rel(items[0].doc_id) == "gap.txt#part-0000" and rel(items[1].doc_id) > "gap.txt#part-0001"
    assert items[0].text.startswith("a" * 1000) and items[1].text.endswith("b" * 1000)
    # UTF-16 on disk over the threshold but under it in UTF-8: one ordinary document
    d = only(read_file(write(tmp_path / "u16.txt", ("Wide text.\n" * 80).encode("utf-16")), tmp_path, s))
    assert rel(d.doc_id) == "u16.txt" and d.text == "Wide text.\n" * 80


# ----------------------------------------------------------------------------
# .md


def test_md_front_matter(tmp_path):
    content = (
        "---\r\n"
        "title: Ocean Tides\r\n"
        "date: 2024-03-01\r\n"
        "tags: [sea, moon]\r\n"
        "---\r\n"
        "\r\n"
        "# Heading that is not the title\r\n"
        "\r\n"
        "Body text.\r\n"
    )
    doc = read_one(tmp_path, "science/tides.md", content)
    assert isinstance(doc, Document), doc
    assert rel(doc.doc_id) == "science/tides.md"
    assert doc.title == "Ocean Tides"
    assert doc.metadata == {"title": "Ocean Tides", "date": "2024-03-01", "tags": ["sea", "moon"]}
    json.dumps(doc.metadata)  # JSON-safe
    assert doc.text == "# Heading that is not the title\n\nBody text.\n"


def test_md_title_from_first_h1_outside_code(tmp_path):
    content = "Intro line\n\n```bash\n# not a heading\n```\n\n## Sub\n\n# Real Title #\n\ntext\n"
    doc = read_one(tmp_path, "a.md", content)
    assert doc.title == "Real Title"
    assert doc.metadata == {}
    assert doc.text == content


def test_md_without_title(tmp_path):
    doc = read_one(tmp_path, "a.md", "## only h2\n\nbody")
    assert doc.title == ""


def test_md_malformed_yaml(tmp_path):
    f = read_one(tmp_path, "notes/bad.md", "---\ntitle: [unclosed\n---\nBody\n")
    assert isinstance(f, Failure)
    assert f.where == "notes/bad.md"
    assert "notes/bad.md" in f.reason and "YAML" in f.reason


def test_md_front_matter_only_is_empty(tmp_path):
    f = read_one(tmp_path, "a.md", "---\ntitle: x\n---\n\n")
    assert f == Failure("a.md", "empty document")


def test_md_leading_thematic_break_without_close(tmp_path):
    doc = read_one(tmp_path, "a.md", "---\n\nJust a rule above.\n")
    assert isinstance(doc, Document)
    assert doc.text == "---\n\nJust a rule above.\n"


# ----------------------------------------------------------------------------
# .html

HTML = """<!DOCTYPE html>
<html><head><title>The  Page &amp; Title</title>
<style>body { color: red }</style>
<script>var secret = "SCRIPT TEXT";</script>
</head>
<body>
<nav>Home</nav>
<h1>Main heading</h1>
<p>This is <b>bold</b>, <i>italic</i> and a <a href="#">link</a> in <span>one</span>
   <em>sentence</em>.</p>
<div>Line one<br>Line two</div>
<noscript>Enable JS</noscript>
<template><p>TEMPLATE TEXT</p></template>
<svg><text>SVG TEXT</text></svg>
<ul><li>first</li><li>second</li></ul>
<table><tr><td>a</td><td>b</td></tr></table>
<script>document.write("MORE SCRIPT")</script>
</body></html>
"""


def test_html_visible_text(tmp_path):
    # The walk of every visible block (html_extractor="all", also the fallback of the
    # main-content extraction tested in test_html_extract.py).
    doc = read_one(tmp_path, "page.html", HTML, ReaderSettings(html_extractor="all"))
    assert isinstance(doc, Document), doc
    assert doc.title == "The Page & Title"
    for hidden in ("SCRIPT", "color: red", "Enable JS", "TEMPLATE", "SVG TEXT", "secret"):
        assert hidden not in doc.text
    paragraphs = doc.text.split("\n\n")
    assert "This is bold, italic and a link in one sentence." in paragraphs
    assert "Line one\nLine two" in paragraphs
    assert paragraphs[0] == "Main heading"  # the <nav> menu is dropped as site chrome
    assert "Home" not in doc.text
    assert "first" in paragraphs and "second" in paragraphs
    assert "a b" in paragraphs
    assert "\n\n\n" not in doc.text and doc.text == doc.text.strip()


def test_html_title_falls_back_to_h1(tmp_path):
    doc = read_one(tmp_path, "a.htm", "<body><h1>The <i>Real</i> One</h1><p>x</p></body>")
    assert doc.title == "The Real One"
    doc = read_one(tmp_path, "b.html", "<p>no title</p>")
    assert doc.title == ""


def test_html_without_visible_text(tmp_path):
    f = read_one(tmp_path, "a.html", "<html><head><title>T</title></head><body><script>x</script></body></html>")
    assert f == Failure("a.html", "empty document")


def test_html_nested_too_deep_fails_before_parsing(tmp_path):
    s = ReaderSettings(max_html_depth=100)
    f = read_one(tmp_path, "deep.html", "<div>" * 101 + "x" + "</div>" * 101, s)
    assert f == Failure("deep.html", "HTML nested deeper than 100 levels (max_html_depth), not parsed")
    # unclosed <p>, <li> and void tags do not nest, so sloppy pages still parse
    flat = "<ul>" + "<li><p>item<br><img src=x>" * 500 + "</ul>"
    assert isinstance(read_one(tmp_path, "flat.html", flat, s), Document)
    assert isinstance(read_one(tmp_path, "ok.html", "<div>" * 100 + "x" + "</div>" * 100, s), Document)


def test_html_deep_nesting(tmp_path):
    depth = 5000
    html = "<div>" * depth + "deep <b>text</b>" + "</div>" * depth
    doc = read_one(tmp_path, "deep.html", html)
    assert isinstance(doc, Document), doc
    assert doc.text == "deep text"
    html = "<span>" * depth + "inline" + "</span>" * depth
    assert read_one(tmp_path, "deep2.html", html).text == "inline"


# ----------------------------------------------------------------------------
# .jsonl


def test_jsonl_good_and_malformed_lines(tmp_path):
    lines = [
        json.dumps({"id": "r1", "text": "first\r\nrecord", "title": "One", "lang": "en", "metadata": {"src": "x"}}),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"id": "r5", "body": "no text field"}),
        json.dumps({"id": "r6", "text": 42}),
        json.dumps({"id": "r7", "text": "   "}),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": 9, "text": "numeric id"}),
    ]
    path = write(tmp_path / "data/recs.jsonl", "\n".join(lines) + "\n")
    items = list(iter_documents(tmp_path))
    good = docs(items)
    bad = fails(items)
    assert [rel(d.doc_id) for d in good] == ["data/recs.jsonl#r1", "data/recs.jsonl#8", "data/recs.jsonl#9"]
    first = good[0]
    assert first.text == "first\nrecord"
    assert first.title == "One"
    assert first.metadata == {"lang": "en", "src": "x"}
    uri = path.resolve().as_uri()
    assert [d.source for d in good] == [f"{uri}#L1", f"{uri}#L8", f"{uri}#L9"]
    assert [f.where for f in bad] == [f"data/recs.jsonl:{n}" for n in (3, 4, 5, 6, 7)]
    reasons = [f.reason for f in bad]
    assert reasons[0].startswith("bad JSON")
    assert reasons[1] == "not a JSON object (got list)"
    assert reasons[2] == "missing text field 'text'"
    assert reasons[3] == "text field 'text' is not a string (got int)"
    assert reasons[4] == "whitespace-only document"


def test_jsonl_invalid_utf8_line_fails_alone(tmp_path):
    data = b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", "text": "ok too"}\n'
    items = list(read_file(write(tmp_path / "x.jsonl", data), tmp_path))
    assert [rel(d.doc_id) for d in docs(items)] == ["x.jsonl#a", "x.jsonl#c"]
    f = only(fails(items))
    assert f.where == "x.jsonl:2" and f.reason.startswith("invalid UTF-8 at byte")


def test_jsonl_metadata_fields_setting(tmp_path):
    rec = {"uid": "u1", "body": "hello", "heading": "H", "a": 1, "b": 2, "metadata": {"c": 3}}
    write(tmp_path / "x.jsonl", json.dumps(rec))
    s = ReaderSettings(id_field="uid", text_field="body", title_field="heading", metadata_fields=["a", "metadata"])
    doc = only(iter_documents(tmp_path, s))
    assert (rel(doc.doc_id), doc.text, doc.title) == ("x.jsonl#u1", "hello", "H")
    assert doc.metadata == {"a": 1, "c": 3}


def test_jsonl_empty_file(tmp_path):
    assert read_one(tmp_path, "x.jsonl", "\n\n") == Failure("x.jsonl", "empty document")


def test_jsonl_utf16_with_bom(tmp_path):
    data = ('{"id": "a", "text": "hé"}\r\n{"id": "b", "text": "ok"}\r\n').encode("utf-16")
    items = list(read_file(write(tmp_path / "x.jsonl", data), tmp_path))
    assert [(rel(d.doc_id), d.text) for d in items] == [("x.jsonl#a", "hé"), ("x.jsonl#b", "ok")]


def test_jsonl_line_too_large(tmp_path):
    data = json.dumps({"id": "big", "text": "x" * 500}) + "\n" + json.dumps({"id": "small", "text": "y"}) + "\n"
    items = list(read_file(write(tmp_path / "x.jsonl", data), tmp_path, ReaderSettings(max_file_bytes=100)))
    assert [rel(d.doc_id) for d in docs(items)] == ["x.jsonl#small"]
    assert only(fails(items)).where == "x.jsonl:1"


# ----------------------------------------------------------------------------
# .parquet


def _write_parquet(path: Path, rows: list[dict], **kw) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, **kw)
    return path


def test_parquet_records(tmp_path):
    import datetime

    rows = [
        {"id": "p1", "text": "alpha", "title": "A", "when": datetime.date(2024, 1, 2), "n": 1},
        {"id": None, "text": "beta", "title": None, "when": None, "n": 2},
        {"id": "p3", "text": "", "title": "C", "when": None, "n": 3},
        {"id": "p4", "text": None, "title": "D", "when": None, "n": 4},
    ]
    path = _write_parquet(tmp_path / "t.parquet", rows, row_group_size=2)
    items = list(iter_documents(tmp_path))
    good = docs(items)
    assert [rel(d.doc_id) for d in good] == ["t.parquet#p1", "t.parquet#1"]
    assert good[0].title == "A"
    assert good[0].metadata == {"when": "2024-01-02", "n": 1}
    assert good[1].title == ""
    uri = path.resolve().as_uri()
    assert [d.source for d in good] == [f"{uri}#row=0", f"{uri}#row=1"]
    bad = fails(items)
    assert [(f.where, f.reason) for f in bad] == [
        ("t.parquet#row=2", "empty document"),
        ("t.parquet#row=3", "text field 'text' is null"),
    ]


def test_parquet_configurable_fields(tmp_path):
    rows = [{"key": 7, "content": "gamma", "name": "G", "keep": "k", "drop": "d"}]
    _write_parquet(tmp_path / "t.parquet", rows)
    s = ReaderSettings(id_field="key", text_field="content", title_field="name", metadata_fields=["keep"])
    doc = only(iter_documents(tmp_path, s))
    assert (rel(doc.doc_id), doc.text, doc.title, doc.metadata) == ("t.parquet#7", "gamma", "G", {"keep": "k"})


def test_parquet_missing_text_column(tmp_path):
    _write_parquet(tmp_path / "t.parquet", [{"id": 1, "body": "x"}, {"id": 2, "body": "y"}])
    f = only(iter_documents(tmp_path))
    assert isinstance(f, Failure) and f.where == "t.parquet"
    assert "missing text column 'text'" in f.reason


def test_parquet_garbage(tmp_path):
    f = read_one(tmp_path, "t.parquet", b"PAR1 this is not parquet at all")
    assert isinstance(f, Failure) and f.reason.startswith("unreadable Parquet")


# ----------------------------------------------------------------------------
# .pdf


def test_pdf_text_and_title(tmp_path):
    data = make_pdf(["Hello PDF world", None, "Second page"], title="My Report")
    doc = read_one(tmp_path, "r/report.pdf", data)
    assert isinstance(doc, Document), doc
    assert rel(doc.doc_id) == "r/report.pdf"
    assert doc.title == "My Report"
    assert doc.text == "Hello PDF world\n\nSecond page"
    assert doc.metadata == {"pages": 3}


def test_pdf_without_text_layer(tmp_path):
    f = read_one(tmp_path, "scan.pdf", make_pdf([None]))
    assert f == Failure("scan.pdf", "no text layer (image-only or empty PDF)")


def test_pdf_encrypted_with_password(tmp_path):
    data = encrypt_pdf(make_pdf(["secret text"]), user_password="s3cret")
    assert read_one(tmp_path, "locked.pdf", data) == Failure("locked.pdf", "encrypted PDF")


def test_pdf_encrypted_with_empty_user_password_is_read(tmp_path):
    data = encrypt_pdf(make_pdf(["open text"]), user_password="")
    doc = read_one(tmp_path, "open.pdf", data)
    assert isinstance(doc, Document), doc
    assert doc.text == "open text"


def test_pdf_unreadable(tmp_path):
    f = read_one(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n")
    assert isinstance(f, Failure) and f.reason.startswith("unreadable PDF: ")
    f = read_one(tmp_path, "notpdf.pdf", b"hello")
    assert isinstance(f, Failure) and f.reason.startswith("unreadable PDF: ")


# ----------------------------------------------------------------------------
# OS errors, size limit


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_chmod(tmp_path):
    path = write(tmp_path / "secret.txt", "hidden")
    path.chmod(0)
    try:
        assert only(iter_documents(tmp_path)) == Failure("secret.txt", "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can list any folder")
def test_unlistable_folder_chmod(tmp_path):
    write(tmp_path / "ok.txt", "fine")
    locked = tmp_path / "locked"
    write(locked / "x.txt", "hidden")
    locked.chmod(0)
    try:
        items = list(iter_documents(tmp_path))
        assert [rel(d.doc_id) for d in docs(items)] == ["ok.txt"]
        assert fails(items) == [Failure("locked", "directory not listed: permission denied")]
    finally:
        locked.chmod(0o755)


def test_permission_error_is_reported(tmp_path, monkeypatch):
    # Works as root too: simulate the OS refusing the open.
    import builtins

    path = write(tmp_path / "secret.txt", "hidden")
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert only(read_file(path, tmp_path)) == Failure("secret.txt", "permission denied")


def test_file_deleted_after_discovery(tmp_path):
    write(tmp_path / "a.txt", "alpha")
    write(tmp_path / "b.txt", "beta")
    it = iter_documents(tmp_path)  # discovery happens here
    (tmp_path / "b.txt").unlink()
    items = list(it)
    assert [rel(d.doc_id) for d in docs(items)] == ["a.txt"]
    assert fails(items) == [Failure("b.txt", "file not found (deleted after discovery?)")]


def test_file_too_large(tmp_path):
    f = read_one(tmp_path, "big.txt", "x" * 101, ReaderSettings(max_file_bytes=100))
    assert f == Failure("big.txt", "file too large (101 bytes > 100)")


def test_reader_crash_becomes_failure(tmp_path):
    @register_reader(".boom")
    def read_boom(path, root, settings):
        raise RecursionError("too deep")
        yield  # pragma: no cover

    try:
        write(tmp_path / "a.boom", "x")
        write(tmp_path / "b.txt", "fine")
        items = list(iter_documents(tmp_path))
        assert fails(items) == [Failure("a.boom", "reader crashed: RecursionError: too deep")]
        assert [rel(d.doc_id) for d in docs(items)] == ["b.txt"]
    finally:
        del READERS[".boom"]


# ----------------------------------------------------------------------------
# symlinks


def test_symlink_outside_root_is_reported(tmp_path):
    outside = write(tmp_path / "outside/secret.txt", "do not ingest")
    write(tmp_path / "outside/more/x.md", "# x")
    root = tmp_path / "root"
    write(root / "ok.txt", "fine")
    (root / "link.txt").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)

    for follow in (False, True):
        s = ReaderSettings(follow_symlinks=follow)
        _, files = discover(root, s)
        assert files == [root / "ok.txt"]
        items = list(iter_documents(root, s))
        assert [rel(d.doc_id) for d in docs(items)] == ["root/ok.txt"]
        assert fails(items) == [
            Failure("link.txt", "symlink points outside the ingested root"),
            Failure("linkdir", "symlink points outside the ingested root"),
        ]
    # read_file enforces the rule too, for callers that bypass discovery.
    assert only(read_file(root / "link.txt", root)) == Failure("link.txt", "symlink points outside the ingested root")


def test_dangling_symlink_is_reported(tmp_path):
    write(tmp_path / "ok.txt", "fine")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "never-there.txt")
    for follow in (False, True):
        items = list(iter_documents(tmp_path, ReaderSettings(follow_symlinks=follow)))
        assert fails(items) == [Failure("gone.txt", "broken symlink (target missing)")]


def test_symlink_inside_root_followed_only_when_asked(tmp_path):
    write(tmp_path / "real/a.txt", "alpha")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "b.txt").symlink_to(tmp_path / "real/a.txt")
    _, files = discover(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["real/a.txt"]
    _, files = discover(tmp_path, ReaderSettings(follow_symlinks=True))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["b.txt", "real/a.txt"]


def test_symlink_loop_does_not_hang(tmp_path):
    import threading

    write(tmp_path / "a/b/doc.txt", "text")
    (tmp_path / "a/b/up").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a/self").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "x.txt").symlink_to(tmp_path / "y.txt")
    (tmp_path / "y.txt").symlink_to(tmp_path / "x.txt")
    results: dict[str, object] = {}

    def run():
        try:
            for follow in (False, True):
                s = ReaderSettings(follow_symlinks=follow)
                results[f"files{follow}"] = discover(tmp_path, s)[1]
                results[f"items{follow}"] = list(iter_documents(tmp_path, s))
            results["glob"] = discover(str(tmp_path) + "/**/*.txt", ReaderSettings(follow_symlinks=True))[1]
        except BaseException as exc:  # surfaced by the assertions below
            results["error"] = exc

    # A thread with a deadline, so a regression fails the test instead of hanging the run.
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "discovery hung on a symlink loop"
    assert "error" not in results, results.get("error")
    for follow in (False, True):
        assert [f.relative_to(tmp_path).as_posix() for f in results[f"files{follow}"]] == ["a/b/doc.txt"]
        assert [rel(d.doc_id) for d in docs(results[f"items{follow}"])] == ["a/b/doc.txt"]
        # Loops are reported rather than silently dropped, whether following or not.
        loop = "symlink loop (points to a folder that contains it), not followed"
        assert fails(results[f"items{follow}"]) == [
            Failure("a/b/up", loop),
            Failure("a/self", loop),
            Failure("x.txt", "symlink loop (the link resolves to itself)"),
            Failure("y.txt", "symlink loop (the link resolves to itself)"),
        ]
    assert [f.relative_to(tmp_path).as_posix() for f in results["glob"]] == ["a/b/doc.txt"]


# ----------------------------------------------------------------------------
# discovery


def _tree(tmp_path: Path) -> Path:
    write(tmp_path / "docs/b.md", "# B")
    write(tmp_path / "docs/a.txt", "A")
    write(tmp_path / "docs/sub/c.md", "# C")
    write(tmp_path / "docs/sub/deeper/d.md", "# D")
    write(tmp_path / "docs/sub/ignored.docx", "?")
    write(tmp_path / "docs/.hidden/h.md", "# H")
    write(tmp_path / "docs/.dot.md", "# dot")
    return tmp_path


def test_discover_folder(tmp_path):
    _tree(tmp_path)
    root, files = discover(tmp_path / "docs")
    assert root == tmp_path / "docs"
    assert [f.relative_to(root).as_posix() for f in files] == ["a.txt", "b.md", "sub/c.md", "sub/deeper/d.md"]
    _, files = discover(tmp_path / "docs", ReaderSettings(include_hidden=True))
    assert len(files) == 6


def test_discover_single_file(tmp_path):
    _tree(tmp_path)
    root, files = discover(tmp_path / "docs/sub/c.md")
    assert root == tmp_path / "docs/sub" and files == [tmp_path / "docs/sub/c.md"]
    assert rel(only(iter_documents(tmp_path / "docs/sub/c.md")).doc_id) == "docs/sub/c.md"
    with pytest.raises(ValueError, match="known suffixes"):
        discover(tmp_path / "docs/sub/ignored.docx")


def test_discover_glob(tmp_path):
    _tree(tmp_path)
    root, files = discover(str(tmp_path / "docs/**/*.md"))
    assert root == tmp_path / "docs"
    assert [f.relative_to(root).as_posix() for f in files] == ["b.md", "sub/c.md", "sub/deeper/d.md"]
    root, files = discover(str(tmp_path / "docs/*.md"))
    assert [f.relative_to(root).as_posix() for f in files] == ["b.md"]
    root, files = discover(str(tmp_path / "docs/s?b/*"))
    assert [f.relative_to(root).as_posix() for f in files] == ["sub/c.md"]
    root, files = discover(str(tmp_path / "docs/.*/*.md"))
    assert [f.relative_to(root).as_posix() for f in files] == [".hidden/h.md"]
    ids = [rel(d.doc_id) for d in docs(iter_documents(str(tmp_path / "docs/**/*.md")))]
    assert ids == ["docs/b.md", "docs/sub/c.md", "docs/sub/deeper/d.md"]


def test_discover_relative_glob(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    root, files = discover("docs/**/*.txt")
    assert root == Path("docs") and files == [Path("docs/a.txt")]
    assert rel(only(iter_documents("docs/**/*.txt")).doc_id) == "docs/a.txt"


def test_nonexistent_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        discover(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        iter_documents(missing)  # raised at call time, not at first next()
    _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"\*\.pdf"):
        discover(str(tmp_path / "docs/**/*.pdf"))
    with pytest.raises(FileNotFoundError, match="nope"):
        discover(str(tmp_path / "nope/*.md"))


def test_empty_folder_yields_nothing(tmp_path):
    assert discover(tmp_path) == (tmp_path, [])
    assert list(iter_documents(tmp_path)) == []


def test_iter_documents_is_lazy_and_sorted(tmp_path):
    for name in ("c.txt", "a.txt", "b/z.txt"):
        write(tmp_path / name, name)
    it = iter_documents(tmp_path)
    assert not isinstance(it, list)
    assert rel(next(it).doc_id) == "a.txt"
    (tmp_path / "c.txt").write_text("changed after the first yield")
    assert [rel(d.doc_id) for d in it] == ["b/z.txt", "c.txt"]


_NAME = st.text(alphabet="ab.-_ A~", min_size=1, max_size=4).filter(lambda n: n not in (".", "..") and not n.startswith("."))


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(st.lists(_NAME, min_size=1, max_size=3), min_size=1, max_size=12))
def test_discovery_orders_files_by_their_path_parts(tmp_path_factory, paths):
    # Discovery sorts paths by a string key (parts joined by NUL), not by lists of
    # parts: the order must be the one of the parts, whatever the names ("a" before
    # "a.b" before "a/x" is where a plain string sort of the paths goes wrong).
    root = tmp_path_factory.mktemp("tree")
    made = set()
    for parts in paths:
        parts = [*parts[:-1], parts[-1] + ".txt"]
        target = root.joinpath(*parts)
        if any(root.joinpath(*parts[:i]) in made for i in range(1, len(parts) + 1)) or \
                any(str(m).startswith(str(target) + os.sep) for m in made):
            continue  # a name used as a file and a folder at once
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
        made.add(target)
    _, found = discover(root)
    assert [p.relative_to(root).parts for p in found] == sorted(p.relative_to(root).parts for p in made)


def test_discovery_order_exact_case(tmp_path):
    for name in ("a.b.txt", "a/x.txt", "a b.txt", "a-c.txt", "a/b/c.txt", "ab.txt", "a/a.txt"):
        write(tmp_path / name, name)
    _, found = discover(tmp_path)
    assert ["/".join(p.relative_to(tmp_path).parts) for p in found] == [
        "a/a.txt", "a/b/c.txt", "a/x.txt", "a b.txt", "a-c.txt", "a.b.txt", "ab.txt"]


def test_duplicate_doc_ids(tmp_path):
    # Record ids are scoped to their file: the same id in two files is two documents,
    # twice in one file is a duplicate.
    write(tmp_path / "a.jsonl", json.dumps({"id": "x", "text": "one"}) + "\n" + json.dumps({"id": "x", "text": "3"}))
    write(tmp_path / "b.jsonl", json.dumps({"id": "x", "text": "two"}) + "\n")
    items = list(iter_documents(tmp_path))
    assert [rel(d.doc_id) for d in docs(items)] == ["a.jsonl#x", "b.jsonl#x"]
    assert fails(items) == [Failure("a.jsonl:2", "duplicate doc_id, first seen in a.jsonl:1")]

def test_two_files_sharing_a_doc_id_through_a_hash_in_a_name(tmp_path):
    # Ids without a '#' are not kept across files (a file's documents are its id, or
    # its id, '#' and more), so the only cross-file clash left is one like this: a
    # record "y.txt" of a.jsonl and a file named "a.jsonl#y.txt" get the same id.
    write(tmp_path / "a.jsonl", json.dumps({"id": "y.txt", "text": "a record"}) + "\n")
    write(tmp_path / "a.jsonl#y.txt", "a file")
    write(tmp_path / "b.txt", "b")
    items = list(iter_documents(tmp_path))
    assert [rel(d.doc_id) for d in docs(items)] == ["a.jsonl#y.txt", "b.txt"]
    assert fails(items) == [Failure("a.jsonl#y.txt", "duplicate doc_id, first seen in a.jsonl:1")]
