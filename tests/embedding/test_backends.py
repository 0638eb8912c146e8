"""``--backend auto``: on a CPU, the faster of torch and OpenVINO, timed once per model
and machine and cached; torch wherever the choice is not open (a GPU, fp16, int8,
OpenVINO missing), each with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from grainline.embedding import Embedder, EmbedderSettings
from grainline.embedding import backends

TEXTS = ["Honeybees dance to tell the hive where flowers are.", "Spring tides come at new and full moon.",
         "The tide tables of the harbour are printed every spring, from a year of measured water levels."]


@pytest.mark.slow
def test_auto_times_both_once_keeps_the_faster_and_never_imports_torch_after(tmp_path):
    """The real bundled model on this CPU: both backends load and are timed, the verdict
    names the faster and by how much, its vectors are torch fp32's, and a later process
    reads the verdict (with OpenVINO chosen, without importing torch)."""
    env = dict(os.environ, GRAINLINE_CACHE_DIR=str(tmp_path / "cache"))
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "e = Embedder(EmbedderSettings(device='cpu'))\n"
        f"v = e.encode({TEXTS!r})\n"
        "c = e.backend_choice\n"
        "print(json.dumps({'backend': c.backend, 'reason': c.reason, 'speedup': c.speedup, 'cached': c.cached,\n"
        "                  'torch': 'torch' in sys.modules, 'vectors': v.tolist(), 'precision': e.precision}))\n"
    )
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    print(f"\nbackend auto on this CPU: {first['backend']} ({first['reason']})")
    assert first["backend"] in ("torch", "openvino") and not first["cached"] and first["speedup"] > 0
    faster, slower = ("OpenVINO", "torch") if first["backend"] == "openvino" else ("torch", "OpenVINO")
    assert f"{faster} embeds" in first["reason"] and f"as fast as {slower}" in first["reason"]
    assert (first["speedup"] >= 1) == (first["backend"] == "openvino")
    assert len(list((tmp_path / "cache" / "backends").glob("*.json"))) == 1
    assert second["cached"] and second["backend"] == first["backend"] and second["reason"] == first["reason"]
    assert second["torch"] == (second["backend"] == "torch")
    # Either way the vectors are torch fp32's (they share its table).
    ref = Embedder(EmbedderSettings(device="cpu", backend="torch", precision="fp32")).encode(TEXTS)
    for run in runs:
        assert float((np.array(run["vectors"]) * ref).sum(axis=1).min()) >= 0.9999


def test_fixed_choices_stay_on_torch_and_say_why(monkeypatch):
    monkeypatch.setattr(backends, "gpu_present", lambda: False)
    assert backends.fixed_choice("auto", "auto") is None and backends.fixed_choice("cpu", "bf16") is None
    assert backends.fixed_choice("cuda:1", "auto").reason == "device cuda:1 runs on torch"
    assert backends.fixed_choice("mps", "auto").backend == "torch"
    assert backends.fixed_choice("cpu", "fp16").reason == "fp16 runs on torch"
    int8 = backends.fixed_choice("auto", "int8")
    assert int8.backend == "torch" and "--backend openvino" in int8.reason
    monkeypatch.setattr(backends, "gpu_present", lambda: True)
    assert backends.fixed_choice("auto", "auto").reason == "this machine has a GPU, which torch runs on"
    assert backends.fixed_choice("cpu", "auto") is None  # the user chose the CPU
    monkeypatch.setattr(backends, "gpu_present", lambda: False)
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    missing = backends.fixed_choice("auto", "auto")
    assert missing.backend == "torch" and 'pip install "grainline[openvino]"' in missing.reason
    # Explicit backends are never second-guessed.
    assert Embedder(EmbedderSettings(backend="torch")).backend_choice.describe() == "torch"
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    # A hub model not on disk: torch downloads it (OpenVINO converts only local weights).
    hub = Embedder(EmbedderSettings(model="grainline-tests/no-such-model")).backend_choice
    assert hub.backend == "torch" and "is not on disk yet" in hub.reason


def _encoders(seconds: dict[str, float], refuse: bool = False):
    """Stand-in encoders of known speed (the real ones are timed in the test above)."""
    def encoder_for(backend):
        if refuse and backend == "openvino":
            raise ValueError("the OpenVINO conversion drifts from torch (cosine 0.99000)")
        return lambda texts: time.sleep(seconds[backend])
    return encoder_for


def test_choose_keeps_the_faster_caches_it_and_records_a_refused_conversion(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRAINLINE_CACHE_DIR", str(tmp_path / "cache"))
    ov = backends.choose("k1", _encoders({"torch": 0.04, "openvino": 0.02}), texts=["a"] * 8)
    assert ov.backend == "openvino" and 1.5 < ov.speedup < 2.5 and not ov.cached
    assert backends.choose("k1", _encoders({"torch": 0.0, "openvino": 1.0})).cached  # read, not timed
    pt = backends.choose("k2", _encoders({"torch": 0.02, "openvino": 0.04}), texts=["a"] * 8)
    assert pt.backend == "torch" and pt.reason.startswith("torch embeds") and pt.speedup < 1
    with caplog.at_level("WARNING", logger="grainline.embedding"):
        refused = backends.choose("k3", _encoders({"torch": 0.0, "openvino": 0.0}, refuse=True), texts=["a"])
    assert refused.backend == "torch" and "cosine 0.99000" in refused.reason
    assert backends.choose("k3", _encoders({"torch": 0.0, "openvino": 0.0})).reason == refused.reason
    assert sum("backend auto" in r.getMessage() for r in caplog.records) == 1
    # A damaged cache entry costs a timing, nothing else.
    (tmp_path / "cache" / "backends" / "k1.json").write_text("{not json")
    assert not backends.choose("k1", _encoders({"torch": 0.02, "openvino": 0.01}), texts=["a"]).cached


def test_keys_follow_the_weights_the_precision_and_the_cpu():
    key = backends.choice_key("w" * 64, "auto", frozenset({"avx2"}))
    assert key == backends.choice_key("w" * 64, "auto", frozenset({"avx2"}))
    assert key != backends.choice_key("v" * 64, "auto", frozenset({"avx2"}))
    assert key != backends.choice_key("w" * 64, "bf16", frozenset({"avx2"}))
    assert key != backends.choice_key("w" * 64, "auto", frozenset({"avx2", "amx_bf16"}))


def test_auto_without_openvino_runs_torch_and_names_the_install_command():
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # what an absent package looks like to import
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "e = Embedder(EmbedderSettings(device='cpu'))\n"
        "e.encode(['a b c'])\n"
        "print(e.backend_choice.describe())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == (
        'torch (auto: OpenVINO, often faster on a CPU, is not installed: pip install "grainline[openvino]")')
