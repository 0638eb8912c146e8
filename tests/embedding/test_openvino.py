"""The openvino backend: the bundled model converted to OpenVINO IR (fp32, and int8 by
NNCF), checked against the torch model's own vectors, cached, and ingested with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from grainline.documents import Document
from grainline.embedding import Embedder, EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.embedding import get_embedder
from grainline.readers import iter_documents
from grainline.storage.chunks import ChunkStore

from tests.conftest import DEMO_CORPUS, write_files
from tests.ingest.test_ingest import assert_close_with_same_top_documents


def demo_paragraphs() -> list[str]:
    docs = [d for d in iter_documents(str(DEMO_CORPUS)) if isinstance(d, Document)]
    return [p for d in docs for p in d.text.split("\n\n") if len(p) > 80]


@pytest.fixture(scope="module")
def ov_int8():
    return get_embedder(EmbedderSettings(backend="openvino", precision="int8"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_vectors_match_torch_per_chunk(embedder, precision):
    """fp32 IR: the torch model's vectors to float rounding; bf16: within cosine 0.999.
    Both share the fp32 table (the vectors are interchangeable)."""
    ov = Embedder(EmbedderSettings(backend="openvino", precision=precision))
    assert ov.identity.table_name == embedder.identity.table_name
    # The reference is torch at fp32 itself (the default backend may be OpenVINO here).
    embedder = get_embedder(EmbedderSettings(device="cpu", backend="torch", precision="fp32"))
    texts = demo_paragraphs()[:48] + ["x", "word " * 400]  # a one-token text and one past the window
    a, b = embedder.encode(texts), ov.encode(texts)
    assert b.shape == a.shape and b.dtype == np.float32
    cos = (a * b).sum(axis=1)
    assert cos.min() > (0.99999 if precision == "fp32" else 0.999), cos.min()


def test_one_openvino_model_embeds_from_several_threads_at_once():
    """An ingestion embeds from several task threads: one converted model serves them
    in turns (one infer request, under a lock), each getting its own texts' vectors."""
    from concurrent.futures import ThreadPoolExecutor

    ov = Embedder(EmbedderSettings(backend="openvino", precision="fp32"))
    texts = demo_paragraphs()[:40]
    groups = [texts[i::4] for i in range(4)]
    alone = [ov.encode(g) for g in groups]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda g: [ov.encode(g) for _ in range(3)], groups))
    for a, runs in zip(alone, together):
        for b in runs:
            assert np.allclose(a, b, atol=1e-6)


def test_openvino_auto_follows_the_torch_rule(monkeypatch, caplog):
    """auto on the openvino backend: fp32 IR on this CPU unless it has bf16 units; on
    a CPU with them (the flags faked) bf16 after a probe, and fp32 with a warning when
    the probe fails (the comparison made to fail: OpenVINO runs a bf16 hint in f32 on a
    CPU without bf16 units, so its vectors match exactly there)."""
    from grainline.embedding import precision as prec

    from tests.embedding.test_precision import this_cpu_has_bf16_units

    real = Embedder(EmbedderSettings(backend="openvino"))
    assert real.precision == ("bf16" if this_cpu_has_bf16_units() else "fp32")
    # Flags of a CPU no real one has, so this verdict's cache key is the test's own.
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"amx_bf16", "grainline-test-ov"}))
    faked = Embedder(EmbedderSettings(backend="openvino"))
    assert faked.precision == "bf16" and faked.precision_choice.min_cosine >= 0.999
    cosines = prec.probe_cosines
    monkeypatch.setattr(prec, "probe_cosines", lambda a, b: cosines(a, b) - 0.01)
    with caplog.at_level("WARNING", logger="grainline.embedding"):
        strict = Embedder(EmbedderSettings(backend="openvino", auto_min_cosine=0.9995))
        assert strict.precision == "fp32"
    assert "bf16 vectors drift from fp32" in caplog.text


def test_openvino_int8_gets_its_own_table_and_keeps_retrieval(embedder, ov_int8):
    assert ov_int8.identity.table_name == embedder.identity.table_name + "_ov_int8"
    assert ov_int8.identity.model_id.endswith("+ov_int8")
    assert_close_with_same_top_documents(embedder, ov_int8, min_cos=0.98, mean_cos=0.99)


def test_converted_models_are_cached_and_reused(ov_int8):
    """A second process finds the int8 model in the cache: same vectors, no torch import."""
    ov_int8.model  # noqa: B018 - built (and cached) by now
    texts = ["Bees dance to show where flowers are.", "Sourdough needs a living starter."]
    code = (
        "import json, sys\n"
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "e = Embedder(EmbedderSettings(backend='openvino', precision='int8'))\n"
        f"v = e.encode({texts!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'v': v.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    assert np.allclose(np.asarray(got["v"], dtype=np.float32), ov_int8.encode(texts), atol=1e-5)


def test_ingest_with_openvino_int8_writes_its_table_and_reruns_embed_nothing(tmp_path, ov_int8):
    src = write_files(tmp_path / "src", {
        "a.md": "# Bees\n\nBees dance to show the hive where flowers are.\n\nThe waggle run gives the distance.",
        "b.txt": "Tides follow the Moon.\n\nSpring tides come at new and full moon.",
    })
    settings = IngestSettings(source=str(src), db=str(tmp_path / "db"), strategies="paragraph",
                              embedder=EmbedderSettings(backend="openvino", precision="int8"))
    first = run_ingest(settings)
    assert first.status == "completed" and first.counts.chunks_embedded == first.counts.chunks_written >= 2
    assert first.table_name == ov_int8.identity.table_name
    store = ChunkStore(str(tmp_path / "db"), first.table_name, 384)
    rows = store.table.to_arrow().to_pylist()
    assert {r["model_id"] for r in rows} == {ov_int8.identity.model_id}
    for r in rows:
        assert np.allclose(np.asarray(r["vector"], dtype=np.float32), ov_int8.encode([r["text"]])[0], atol=1e-3)
    again = run_ingest(settings)
    assert again.counts.chunks_embedded == 0 and again.counts.chunks_written == 0


def test_bad_openvino_settings_name_the_value():
    with pytest.raises(ValueError, match="backend 'openvino' runs on the CPU, got device 'cuda'"):
        EmbedderSettings(backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="precision auto, fp32, bf16 or int8, got 'fp16'"):
        EmbedderSettings(backend="openvino", precision="fp16")
    with pytest.raises(ValueError, match="backend"):
        EmbedderSettings(backend="onnx")
    with pytest.raises(ValueError, match="calibration texts are for backend 'openvino'"):
        EmbedderSettings(calibration=str(DEMO_CORPUS))
    with pytest.raises(FileNotFoundError, match="int8 calibration texts not found at /nope"):
        Embedder(EmbedderSettings(backend="openvino", precision="int8", calibration="/nope")).model  # noqa: B018


def test_missing_openvino_says_how_to_install(tmp_path):
    """Without the extra, the backend fails with the exact install command."""
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # what an absent package looks like to import
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "Embedder(EmbedderSettings(backend='openvino')).model\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert 'backend \'openvino\' needs OpenVINO and NNCF: pip install "grainline[openvino]"' in out.stderr


def test_conversion_sends_no_telemetry(tmp_path):
    """OpenVINO's converter reports usage (from a forked process) unless declined: a
    conversion by grainline forks nothing and leaves no consent or id files in $HOME."""
    code = (
        "import os\n"
        "forks = []\n"
        "real_fork = os.fork\n"
        "os.fork = lambda: forks.append(1) or real_fork()\n"
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "Embedder(EmbedderSettings(backend='openvino', precision='fp32')).encode(['a b c'])\n"
        "print('forks', len(forks))\n"
    )
    env = dict(os.environ, HOME=str(tmp_path / "home"), GRAINLINE_CACHE_DIR=str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "forks 0"
    assert list((tmp_path / "home").iterdir()) == []
    assert (tmp_path / "cache" / "openvino").is_dir()


def test_two_processes_converting_at_once_both_succeed(tmp_path):
    """Each builds in a temporary folder and renames it; the loser keeps the winner's."""
    code = (
        "from grainline.embedding import Embedder, EmbedderSettings\n"
        "print(Embedder(EmbedderSettings(backend='openvino', precision='fp32')).encode(['tide and moon'])[0][:4].tolist())\n"
    )
    env = dict(os.environ, GRAINLINE_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    a, b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert np.allclose(a, b, atol=1e-6)
    assert len(list((tmp_path / "cache" / "openvino").iterdir())) == 1  # one model, no half-written folders
