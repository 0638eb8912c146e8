"""Bad command-line values: one line naming the value and the valid ones, exit code 2,
no traceback, and nothing started (no Prefect server, no model). Run as a user runs
them, in a subprocess; each takes well under a second (not asserted: measured in
docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing

import pytest

from grainline.cli import checks as chk


def grainline(*args: str, cwd=None, home=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.fixture()
def src(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("Bees dance to show where flowers are.\n", encoding="utf-8")
    (d / "report.docx").write_bytes(b"PK\x03\x04 not read")
    return d


CASES = [
    (["ingest", "{src}", "--strategy", "sentance"], ["'sentance'", "article, paragraph, sentence"]),
    (["ingest", "{src}", "--sync", "ful"], ["'ful'", "incremental, full"]),
    (["ingest", "{src}", "--device", "gpu"], ["'gpu'", "auto, cpu, cuda, cuda:N, mps"]),
    (["ingest", "{src}", "--precision", "fp8"], ["'fp8'", "fp32"]),
    (["ingest", "{src}", "--backend", "onnx"], ["'onnx'", "torch, openvino"]),
    (["ingest", "{src}", "--long-article", "cut"], ["'cut'", "pool, truncate"]),
    (["ingest", "{src}", "--runner", "ray"], ["'ray'", "dask://HOST:PORT"]),
    (["ingest", "{src}", "--chunk", "paragraph.max_tokns=3"], ["max_tokns", "max_tokens, min_tokens, overlap"]),
    (["ingest", "{src}", "--chunk", "sentense.max_tokens=3"], ["'sentense'", "article, paragraph, sentence"]),
    (["ingest", "{src}", "--chunk", "paragraph.max_tokens=-3"], ["paragraph.max_tokens", "greater than"]),
    (["ingest", "{src}", "--chunk", "sentence.segmenter=nltk"], ["sentence.segmenter", "'nltk'", "blingfire, pysbd"]),
    (["ingest", "{src}", "--chunk", "article.overlap=5"], ["article", "changes nothing"]),
    (["ingest", "{src}/missing"], ["missing", "does not exist"]),
    (["ingest", "{src}/report.docx"], ["'.docx'", ".txt"]),
    (["search", "bees", "--method", "bm52", "--db", "{src}"], ["'bm52'", "bm25, dense, hybrid"]),
    (["search", "bees", "--strategy", "sentance", "--db", "{src}"], ["'sentance'", "paragraph"]),
    (["search", "bees", "--db", "{src}/nodb"], ["nodb", "no database"]),
    (["search", "bees", "--db", "{src}", "--where", "topic"], ["'topic'", "KEY=VALUE"]),
    (["eval", "--dataset", "trec:{src}"], ["'trec'", "beir, scifact, spans, squad"]),
    (["eval", "--dataset", "squad:{src}", "--method", "bm52"], ["'bm52'", "bm25, dense, hybrid"]),
    (["eval", "--db", "{src}"], ["--dataset", "--queries"]),
    (["serve", "--source", "{src}", "--sync", "ful"], ["'ful'", "incremental, full"]),
    (["serve", "--source", "{src}", "--eval-dataset", "spans:{src}", "--eval-sample", "0"], ["--eval-sample", "0"]),
    (["serve", "--source", "{src}", "--eval-dataset", "trec:x"], ["'trec'", "squad"]),
    (["runs", "--db", "/nonexistent"], ["/nonexistent", "no database"]),
    (["runs", "--db", "{src}", "--kind", "prod"], ["'prod'", "production, evaluation"]),
    (["bench", "--dataset", "generated:3", "--backend", "onnx"], ["'onnx'", "torch, openvino"]),
    (["bench", "--scale", "80,40"], ["--scale", "increasing sizes", "'80,40'"]),
    (["bench", "--scale", "1k,4k"], ["--scale", "separated by commas", "'1k,4k'"]),
    (["bench", "--scale", "40"], ["--scale", "two or more"]),
    (["bench"], ["--dataset", "--scale"]),
    (["bench", "--dataset", "generated:5", "--scale", "40,80"], ["--dataset", "--scale", "not both"]),
    (["bench", "--stages", "ingest", "--scale", "40,80"], ["--scale", "--stages"]),
    (["bench", "--add-docs", "0", "--scale", "40,80"], ["--add-docs"]),
    (["promote", "chunks_x", "--db", "{src}"], ["CANDIDATE", "--queries"]),
    (["promote", "--queries", "q.jsonl", "--db", "{src}"], ["--queries", "CANDIDATE"]),
    (["promote", "chunks_x", "--undo", "--db", "{src}"], ["--undo", "no CANDIDATE"]),
    (["promote", "chunks_x", "--queries", "q.jsonl", "--method", "bm52", "--db", "{src}"], ["'bm52'", "bm25, dense"]),
    (["promote", "chunks_x", "--queries", "q.jsonl", "--precision", "int8", "--db", "{src}"], ["int8", "its own"]),
    (["promote", "chunks_x", "--queries", "q.jsonl", "--db", "{src}/nodb"], ["nodb", "no database"]),
    (["promote", "--undo", "--db", "{src}"], ["nothing to undo", "no promotion yet"]),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_value_is_one_line_and_exit_2(tmp_path, src, args, expected):
    home = tmp_path / "prefect-home"
    out = grainline(*[a.format(src=src) for a in args], home=home)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert "Value error" not in lines[0]  # pydantic's wording, not ours
    assert "Traceback" not in out.stderr + out.stdout
    # Nothing started: no Prefect server ever wrote its home.
    assert not home.exists()


def test_choice_lists_match_the_settings_they_guard():
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings

    def literal(model, name):
        return typing.get_args(model.model_fields[name].annotation)

    assert literal(EmbedderSettings, "precision") == chk.PRECISIONS
    assert literal(EmbedderSettings, "backend") == chk.BACKENDS
    assert literal(IngestSettings, "sync") == chk.SYNC_MODES
    assert literal(IngestSettings, "long_article") == chk.LONG_ARTICLE
    assert literal(IngestSettings, "on_error") == chk.ON_ERROR
    from grainline.evaluation.model import EvalSettings

    assert literal(EvalSettings, "prefer") == chk.EVAL_PREFER
    from grainline.embedding import DEVICES

    assert tuple(d for d in chk.DEVICES if d != "cuda:N") == DEVICES


def test_version_and_help_text(tmp_path):
    out = grainline("--version")
    assert out.returncode == 0 and out.stdout.startswith("grainline ")
    for cmd in ("ingest", "search", "runs", "eval", "tables", "sources"):
        out = grainline(cmd, "--help")
        assert out.returncode == 0, out.stderr
        if cmd in ("ingest", "search", "eval"):
            assert 'pip install "grainline[openvino]"' in out.stdout, out.stdout


def test_every_option_has_help():
    import typer.core
    import typer.main

    from grainline.cli import app

    group = typer.main.get_command(app)
    missing = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
            return
        for p in cmd.params:
            if isinstance(p, typer.core.TyperOption) and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")

    walk(group, [])
    assert not missing, missing


def test_runs_on_an_empty_db_folder_says_so(tmp_path):
    out = grainline("runs", "--db", str(tmp_path))
    assert out.returncode == 0 and "no runs" in out.stdout
    out = grainline("runs", "--db", str(tmp_path), "--json")
    assert out.returncode == 0 and out.stdout == ""
    json.dumps(out.stdout)
