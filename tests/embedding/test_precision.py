"""``--precision auto``: bf16 where the CPU has bf16 matrix units, fp32 elsewhere, fp16
on CUDA; a faster candidate is checked once per model and machine on probe texts,
falls back to fp32 (saying why) when it drifts, and the verdict is cached and recorded
in the ledger."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from grainline.embedding import precision as prec
from grainline.embedding import Embedder, EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import connect
from grainline.storage.ledger import Ledger
from grainline.storage.maintenance import vector_index

from tests.conftest import write_files

DOCS = {
    "bees.txt": "Bees\n\nHoneybees dance to tell the hive where flowers are.\n\nThe waggle run points along the sun's angle.",
    "tides.txt": "Tides\n\nThe Moon's gravity pulls the oceans into tides.\n\nSpring tides come at new and full moon.",
}


def _cpu_flags() -> list[str]:
    """Read here, not through grainline: the CPU's own flags say what auto must choose."""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        return next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])


def this_cpu_has_bf16_units() -> bool:
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.mark.slow
def test_ingest_cli_chooses_for_this_cpu_and_records_it(tmp_path, embedder):
    """The path users run: `grainline ingest` with the default precision picks bf16 on a
    CPU with AMX / AVX512-BF16 and fp32 elsewhere, says so, and the ledger records it."""
    expected = "bf16" if this_cpu_has_bf16_units() else "fp32"
    # Enough paragraphs for the run to train the vector index, which unloads the model
    # first: what the model chose must be in the ledger all the same.
    log = "\n\n".join(f"Entry {i}: the weather station on the northern ridge logged {i} storms this season, "
                        "and the wind from the west brought rain on most of those days." for i in range(270))
    src = write_files(tmp_path / "src", {**DOCS, "log.txt": log})
    db = tmp_path / "db"
    out = subprocess.run([sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(db), "--device", "cpu",
                          "--no-progress", "-s", "paragraph"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home")))
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("precision:"))
    assert line.split()[1] == expected and "auto:" in line, line
    # The line names the units this CPU has (AMX, or AVX512-BF16 on a CPU without AMX).
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in _cpu_flags()]
    assert (f"bf16 matrix units ({units[0]}" in line) if expected == "bf16" else ("no bf16 matrix units" in line), line
    rec = Ledger(str(db)).runs("ingest")[-1]
    assert vector_index(connect(str(db)).open_table(embedder.identity.table_name)) is not None
    assert rec["parameters"]["precision"]["setting"] == "auto"
    assert rec["parameters"]["precision"]["chosen"] == expected
    # The backend auto chose is printed and recorded the same way (tests/embedding/test_backends.py).
    backend = next(line for line in out.stdout.splitlines() if line.strip().startswith("backend:"))
    recorded = rec["parameters"]["backend"]
    assert recorded["setting"] == "auto" and recorded["chosen"] in ("torch", "openvino"), recorded
    assert backend.split()[1] == recorded["chosen"] and recorded["reason"] in backend, backend
    # Either way the vectors go into the fp32 table and stay within cosine 0.999 of fp32's.
    rows = connect(str(db)).open_table(embedder.identity.table_name).to_arrow().to_pylist()
    ref = Embedder(EmbedderSettings(device="cpu", precision="fp32")).encode([r["text"] for r in rows])
    assert float((np.array([r["vector"] for r in rows]) * ref).sum(axis=1).min()) > 0.999


@pytest.fixture
def amx_cpu(monkeypatch, tmp_path):
    """This machine as if its CPU had AMX (only the flag reading is replaced: bf16 still
    runs for real, emulated where there are no units), with its own verdict cache."""
    monkeypatch.setenv("GRAINLINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "amx_tile", "amx_bf16"}))
    probes = []
    real = prec.probe_cosines
    monkeypatch.setattr(prec, "probe_cosines", lambda a, b: probes.append(1) or real(a, b))
    return probes


def test_auto_on_a_bf16_cpu_probes_once_then_reads_the_cache(amx_cpu, embedder, tmp_path):
    first = Embedder(EmbedderSettings(device="cpu", backend="torch"))
    assert first.precision == "bf16" and amx_cpu == [1]
    choice = first.precision_choice
    assert not choice.cached and choice.min_cosine >= 0.999 and "amx_bf16" in choice.reason
    import torch

    assert next(first.model.parameters()).dtype == torch.bfloat16
    texts = ["Honeybees dance to tell the hive where flowers are.", "Spring tides come at new and full moon."]
    ref = Embedder(EmbedderSettings(device="cpu", precision="fp32")).encode(texts)
    assert float((first.encode(texts) * ref).sum(axis=1).min()) > 0.999

    second = Embedder(EmbedderSettings(device="cpu", backend="torch"))
    assert second.precision == "bf16" and second.precision_choice.cached
    assert amx_cpu == [1]  # no second probe
    # An ingestion records the choice, into the fp32 table.
    src = write_files(tmp_path / "src", DOCS)
    rec = run_ingest(IngestSettings(source=str(src), strategies=["paragraph"], db=str(tmp_path / "db"), export_parquet=False,
                                    embedder=EmbedderSettings(device="cpu", backend="torch", batch_size=16)))
    assert rec.table_name == embedder.identity.table_name
    assert Ledger(str(tmp_path / "db")).runs("ingest")[-1]["parameters"]["precision"]["chosen"] == "bf16"
    assert amx_cpu == [1]


def test_auto_falls_back_to_fp32_and_says_why_once(amx_cpu, caplog):
    # No bf16 vector reaches cosine 1 against fp32: the probe must fail.
    settings = EmbedderSettings(device="cpu", backend="torch", auto_min_cosine=1.0)
    with caplog.at_level(logging.WARNING, logger="grainline.embedding"):
        e = Embedder(settings)
        assert e.precision == "fp32"
        import torch

        assert next(e.model.parameters()).dtype == torch.float32
        again = Embedder(settings)
        assert again.precision == "fp32" and again.precision_choice.cached
    warnings = [r.getMessage() for r in caplog.records if r.name == "grainline.embedding"]
    assert len(warnings) == 1 and "bf16 vectors drift from fp32" in warnings[0] and "< 1.0" in warnings[0], warnings
    assert "drift" in again.describe_precision() and again.describe_precision().startswith("fp32 (auto:")
    assert amx_cpu == [1]


def test_candidates_per_device_and_cpu():
    assert prec.candidate_for("cuda")[0] == prec.candidate_for("cuda:1")[0] == "fp16"
    assert prec.candidate_for("cpu", frozenset({"avx512_bf16"}))[0] == "bf16"
    assert prec.candidate_for("cpu", frozenset({"avx2", "amx_tile"}))[0] == "fp32"  # AMX without its bf16 unit
    assert prec.candidate_for("mps")[0] == "fp32"
    key = prec.choice_key("w" * 64, "torch", "cpu", "bf16", 0.999, frozenset({"amx_bf16"}))
    assert key != prec.choice_key("w" * 64, "torch", "cpu", "bf16", 0.999, frozenset({"avx512_bf16"}))
    assert key != prec.choice_key("v" * 64, "torch", "cpu", "bf16", 0.999, frozenset({"amx_bf16"}))
    assert key != prec.choice_key("w" * 64, "openvino", "cpu", "bf16", 0.999, frozenset({"amx_bf16"}))
