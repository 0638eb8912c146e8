"""Compare main-content extraction on tests/readers/fixtures/html: for each extractor, how many
of a page's content phrases it keeps and how many chrome phrases (navigation, cookie
banners, footers, rustdoc's help dialog) leak through; also whether the headings sit in
paragraphs of their own. Usage: .venv/bin/python scripts/compare_html_extractors.py"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "readers" / "fixtures" / "html"


def selectolax_walk(html: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    from grainline.readers.html import _html_text

    tree = LexborHTMLParser(html)
    return _html_text(tree.root)


def trafilatura_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, output_format="markdown", include_comments=False, include_tables=True,
                               favor_precision=True) or ""


def resiliparse_text(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False, list_bullets=False)


def grainline_reader(html: str) -> str:
    from grainline.readers import html_main_text

    return html_main_text(html)[1]


EXTRACTORS = {"selectolax walk (before)": selectolax_walk, "trafilatura 2.3.1": trafilatura_text,
              "resiliparse 2.0.0": resiliparse_text, "grainline (chosen)": grainline_reader}


def score(text: str, expect: dict) -> tuple[int, int, list[str], bool]:
    kept = sum(p in text for p in expect["keep"])
    leaked = [p for p in expect["drop"] if p in text]
    paras = [p.strip() for p in text.split("\n\n")]
    own_heading = all(any(p.lstrip("# ").strip() in (h, h.lstrip("§")) for p in paras) for h in expect["headings"])
    return kept, len(expect["keep"]), leaked, own_heading


def main(names: list[str]) -> None:
    expects = json.loads((FIXTURES / "expect.json").read_text())
    print("| extractor | page | content kept | chrome leaked | headings as own paragraphs | ms |")
    print("|---|---|---|---|---|---|")
    for name, fn in EXTRACTORS.items():
        if names and not any(n in name for n in names):
            continue
        for page, expect in expects.items():
            html = (FIXTURES / page).read_text(encoding="utf-8")
            t0 = time.perf_counter()
            try:
                text = fn(html)
            except ImportError as exc:
                print(f"| {name} | {page} | not installed ({exc.name}) | | | |")
                continue
            ms = (time.perf_counter() - t0) * 1000
            kept, total, leaked, own = score(text, expect)
            print(f"| {name} | {page} | {kept}/{total} | {len(leaked)}/{len(expect['drop'])} {', '.join(leaked)} | "
                  f"{'yes' if own else 'no'} | {ms:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
