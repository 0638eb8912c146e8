"""The Python API block of the docs (docs/python-api.md), run exactly as written (in a
temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def readme_block(heading: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_block_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_block("# Python API")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python-api.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("completed 1 chunks_")
    hit = out[1].split()
    assert hit[0] == "1" and hit[2].endswith("/notes/bees.md")
    scores = dict(eval(out[-1]))  # noqa: S307 - the block prints a list of (method, score)
    assert set(scores) == {"dense", "bm25"} and scores["dense"] > 0.5
