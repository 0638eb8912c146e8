"""The benchmark command runs end to end (figures are reported, never asserted as
speed targets)."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_scale_bench_times_each_step_at_both_sizes(tmp_path, embedder):
    """`grainline bench --scale 20,40` as a user runs it: every step at both sizes with
    its seconds, growth ratio and peak RSS, and the two tables it built hold what the
    steps made of them (read from LanceDB). Small sizes: what is proven (the steps, the
    counts, the tables) does not depend on them, and each step is a command of its own
    whose start-up dominates at these sizes."""
    import os
    import re
    import subprocess
    import sys

    from tests.journey import table_rows

    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "-m", "grainline.cli", "bench", "--scale", "20,40", "--batch-docs", "5",
                           "--add-docs", "10", "--device", "cpu", "--keep", "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(out.read_text())
    work = Path(rep["work_dir"])
    try:
        assert rep["sizes"] == [20, 40] and set(rep["results"]) == {"20", "40"}
        steps = ("add", "unchanged", "edit1", "edit_new_delete", "search", "search_hybrid")
        for n in ("20", "40"):
            res = rep["results"][n]
            assert set(res["steps"]) == set(steps)
            for name, s in res["steps"].items():
                assert s["seconds"] > 0 and s["cpu_seconds"] > 0 and s["peak_rss_mib"] > 50, (n, name)
                assert s["command"][:2] == ["grainline", "search" if name.startswith("search") else "ingest"]
            for name in steps[:4]:  # the ingest runs: their own seconds and phases from the ledger
                s = res["steps"][name]
                assert s["run_seconds"] > 0 and "read" in s["phase_seconds"] and s["counts"]["docs_failed"] == 0
            assert res["steps"]["search"]["hits"] == res["steps"]["search_hybrid"]["hits"] == 10
            c = {name: res["steps"][name]["counts"] for name in steps[:4]}
            assert c["add"]["docs_added"] == 10 and c["unchanged"]["docs_unchanged"] == int(n) + 10
            assert c["unchanged"]["chunks_written"] == c["unchanged"]["chunks_embedded"] == 0
            assert c["edit1"]["docs_updated"] == 1 and c["edit1"]["chunks_embedded"] == 1
            assert (c["edit_new_delete"]["docs_updated"], c["edit_new_delete"]["docs_added"],
                    c["edit_new_delete"]["docs_deleted"]) == (1, 1, 1)
            assert "--sync" in res["steps"]["edit_new_delete"]["command"]
            b = res["build"]
            assert b["peak_rss_mib"] > 50 and b["run_seconds"] > 0
            assert b["table_after_build"]["documents"] == int(n) and b["table_after_build"]["batches"]["count"] == 4
            assert b["table_after_build"]["batches"]["docs_per_batch"] == [5, 5, 5, 5]
        # The larger table starts as a copy of the smaller one: its build adds only the 20 it lacks.
        assert rep["results"]["20"]["build"]["from_documents"] == 0
        assert rep["results"]["40"]["build"]["from_documents"] == 20
        assert rep["results"]["40"]["build"]["counts"]["docs_added"] == 20
        assert rep["results"]["40"]["build"]["counts"]["docs_unchanged"] == 20
        for step in steps:
            r = rep["ratios"]["40/20"][step]
            assert r["seconds"] == pytest.approx(rep["results"]["40"]["steps"][step]["seconds"]
                                                 / rep["results"]["20"]["steps"][step]["seconds"])
            assert r["peak_rss"] > 0
        # The tables as LanceDB holds them: the paragraph chunks of the documents each
        # size ended with (its base documents, less the deleted one, with the two edits;
        # the add batch; the new file), and no others.
        from grainline.chunkers import CHUNKERS, ChunkContext, settings_for
        from grainline.documents import Document

        ctx, chunker, cs = ChunkContext.default(embedder.window), CHUNKERS.get("paragraph"), settings_for("paragraph")
        corpus = work / "corpus"
        table = rep["results"]["40"]["build"]["table"]
        for n in (20, 40):
            files = {str(p.resolve()): p.read_text(encoding="utf-8") for p in corpus.rglob("*.txt")
                     if p.parent.name in ("add", "new") or int(re.search(r"gen-(\d+)", p.name).group(1)) < n}
            assert len(files) == n + 10
            rows = table_rows(work / f"db-{n}", table)
            assert {r["doc_id"] for r in rows.values()} == set(files)
            assert all(r["text"] in files[r["doc_id"]] for r in rows.values())
            assert len(rows) == sum(len(list(chunker(Document(doc_id=d, text=t), cs, ctx))) for d, t in files.items())
            assert len(rows) == rep["results"][str(n)]["table_after_steps"]["rows"]
            assert rep["results"][str(n)]["table_after_steps"]["documents"] == n + 10
        assert rep["ratios"]["40/20"]["table_growth"] == pytest.approx(
            rep["results"]["40"]["table_after_steps"]["rows"] / rep["results"]["20"]["table_after_steps"]["rows"])
        assert rep["machine"]["cpu"] and len(rep["load_average_at_start"]) == 3
        # What auto ran at, from the ledger of the runs that loaded the model.
        assert len(rep["precision_chosen"]) == 1 and rep["precision_chosen"][0] in ("fp32", "bf16")
        assert len(rep["backend_chosen"]) == 1 and rep["backend_chosen"][0] in ("torch", "openvino")
        assert f"precision auto -> {rep['precision_chosen'][0]}" in proc.stdout
        after = rep["results"]["40"]["table_after_steps"]
        assert after["fragments"] >= 1 and after["unindexed_rows"] >= 0 and "vector_index" in after
        # The readable table: a row per step with a ratio column.
        assert re.search(r"^edit_new_delete\s+[\d.]+\s+[\d.]+\s+[\d.]+", proc.stdout, re.M), proc.stdout
        assert "x40/20" in proc.stdout and "per-batch cost of each build" in proc.stdout
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def test_batch_costs_leave_out_the_warm_up_and_compare_tenths():
    from datetime import datetime, timedelta

    from grainline.bench_scale import batch_costs

    t0 = datetime(2026, 1, 1)
    # Batch 0 holds pool document 3; then 20 batches whose gaps grow from 1 s to 2.9 s.
    gaps = [1.0 + 0.1 * i for i in range(20)]
    times = [t0]
    for g in gaps:
        times.append(times[-1] + timedelta(seconds=g))
    stamps = [(t, {f"/c/0000/gen-{(3 if j == 0 else 1000 + j):07d}.txt"}) for j, t in enumerate(times)]
    got = batch_costs(stamps, pool_docs=10)
    # Left out: batch 0 (no gap before it) and batch 1 (written after the last pool batch).
    assert got["count"] == 21 and got["first_compared"] == 2 and got["compared"] == 19
    assert got["tenth"] == 2
    assert got["first_tenth_mean_s"] == pytest.approx((1.1 + 1.2) / 2)
    assert got["last_tenth_mean_s"] == pytest.approx((2.8 + 2.9) / 2)
    assert got["last_vs_first"] == pytest.approx(2.85 / 1.15)
    assert batch_costs(stamps[:3], pool_docs=10)["last_vs_first"] is None  # one batch left: nothing to compare
