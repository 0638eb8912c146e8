"""The benchmark command runs end to end (figures are reported, never asserted as
speed targets)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from grainline.bench import generated_documents
from grainline.cli import app

pytestmark = pytest.mark.slow


def test_generated_corpus_is_deterministic_and_lazy():
    a = [d.text for d in generated_documents(3, seed=1)]
    b = [d.text for d in generated_documents(3, seed=1)]
    assert a == b and len(set(a)) == 3
    assert all(t.count("\n\n") >= 2 for t in a)


def test_bench_command_writes_all_figures(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--dataset", "generated:12", "--strategy", "paragraph", "--device", "cpu", "--output", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert set(rep["stages"]) == {"baseline", "embed", "ingest", "rerun"}
    assert rep["chunks"] > 12 and rep["model_tokens"] > rep["chunks"]
    for key in ("ingest_vs_baseline", "rerun_vs_ingest", "embed_vs_baseline", "prefect_server_start_seconds"):
        assert rep[key] > 0
    assert rep["stages"]["ingest"]["chunks_written"] == rep["chunks"]
    assert rep["stages"]["rerun"]["chunks_embedded"] == 0 and rep["stages"]["rerun"]["chunks_written"] == 0
    assert all(s["peak_rss_mib"] > 50 for s in rep["stages"].values())
    assert "ingest/baseline (3/1)" in res.output
    # Where the ingest stage's time went: each step as the ledger counts it, the corpus's
    # MB/s at that step's pace, and the share spent outside the model.
    steps = rep["stages"]["ingest"]["steps"]
    assert {"read", "chunk", "embed", "write"} <= set(steps["by_step"]) and rep["corpus_mb"] > 0
    chunk = steps["by_step"]["chunk"]
    assert chunk["mb_per_s"] == pytest.approx(rep["corpus_mb"] / chunk["seconds"])
    assert 0 < steps["outside_model_share"] < 1 and rep["ingest_vs_embed"] > 0
    assert "share of the ingest stage outside the model: " in res.output and "ingest/embed    (3/2)" in res.output
    assert rep["machine"]["cpu_family_model"] and f"family/model {rep['machine']['cpu_family_model']}" in res.output
    # What makes figures from different machines comparable.
    from tests.embedding.test_precision import this_cpu_has_bf16_units

    assert rep["precision"] == "auto" and rep["backend"] == "auto"
    # What auto ran on, and why (tests/embedding/test_backends.py checks the choice itself).
    assert rep["backend_chosen"].split()[0] in ("torch", "openvino") and "(auto: " in rep["backend_chosen"]
    assert f"backend {rep['backend_chosen']}" in res.output
    # The ceiling: the model's cost per token (MiniLM-L6: 21.2 MFLOP of linear layers plus
    # attention) and each stage's share of this CPU's fp32 FMA peak.
    assert 21.2 < rep["model_mflop_per_token"] < 30 and rep["fp32_fma_peak"]["gflops"] > 10
    assert 0 < rep["stages"]["embed"]["share_of_fp32_fma_peak"] < 1
    assert "fp32 FMA peak: " in res.output
    assert rep["precision_chosen"] == ("bf16" if this_cpu_has_bf16_units() else "fp32")
    assert rep["stages"]["embed"]["precision"] == rep["stages"]["ingest"]["precision"] == rep["precision_chosen"]
    flags = rep["machine"]["cpu_flags"]
    assert set(flags) >= {"amx_bf16", "avx512_bf16"} and (flags["amx_bf16"] or flags["avx512_bf16"]) == this_cpu_has_bf16_units()
    libs = rep["machine"]["libraries"]
    import lancedb
    import prefect
    import sentence_transformers
    import torch

    assert (libs["torch"], libs["sentence-transformers"], libs["lancedb"], libs["prefect"]) == (
        torch.__version__, sentence_transformers.__version__, lancedb.__version__, prefect.__version__)
    assert "openvino" in libs
    assert len(rep["load_average_at_start"]) == 3 and all(x >= 0 for x in rep["load_average_at_start"])
    assert "load average at start" in res.output and f"precision auto -> {rep['precision_chosen']}" in res.output


def test_reuse_corpus_repeats_paragraphs_and_stages_are_validated():
    from grainline.bench import corpus_documents, parse_stages

    from grainline.bench import REUSE_POOL

    docs = list(corpus_documents("generated-reuse:3000"))
    paras = [p for d in docs for p in d.text.split("\n\n")]
    assert len(docs) == 3000 and len(set(paras)) <= REUSE_POOL < len(paras) / 5
    assert parse_stages("rerun,ingest") == ["ingest", "rerun"]
    with pytest.raises(ValueError, match="choose from"):
        parse_stages("ingest,warmup")
    with pytest.raises(ValueError, match="add ingest"):
        parse_stages("rerun")


def test_bench_ingest_stages_only_with_the_openvino_backend(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--dataset", "generated-reuse:40", "--stages", "ingest,rerun", "--device", "cpu",
                                   "--backend", "openvino", "--output", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["backend"] == "openvino" and rep["model_prepare_seconds"] > 0
    assert "backend openvino" in res.output and "Model conversion" in res.output
    assert set(rep["stages"]) == {"ingest", "rerun"} and "ingest_vs_baseline" not in rep
    assert rep["chunks"] == rep["stages"]["ingest"]["chunks_written"] > 40
    assert rep["stages"]["ingest"]["chunks_embedded"] < rep["chunks"]  # repeated paragraphs reuse vectors
    assert rep["rerun_vs_ingest"] > 0 and "rerun/ingest" in res.output
