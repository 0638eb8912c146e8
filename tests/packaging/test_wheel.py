"""grainline as a user installs it: a wheel built from this checkout, installed into a
fresh virtual environment, imports every module it ships and runs the demo ingestion
from its own package data, with no path into the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What a checkout holds that is not source: never copied into the build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "grainline-data", "reports", "bench*.json")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the checkout, install it alone (--no-deps) into a
    new venv whose only other path is the test venv's dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("grainline-*.whl")
    venv = tmp / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies come from the test venv by a plain path line: its .pth files (and
    # with them the editable install of this checkout) are not processed.
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (purelib / "_dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)])
    return {"wheel": wheel, "venv": venv, "python": python, "purelib": purelib, "tmp": tmp}


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PREFECT_API", "VIRTUAL_ENV"))}
    env.update(GRAINLINE_HOME=str(tmp / "home"), PREFECT_HOME=str(tmp / "prefect"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


def test_the_wheel_ships_every_module_and_the_demo_corpus(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    checkout = {p.relative_to(ROOT / "grainline").as_posix() for p in (ROOT / "grainline").rglob("*.py")}
    for folder in ("chunkers", "storage", "flows", "deployments"):
        checkout |= {f"{folder}/{p.relative_to(ROOT / folder).as_posix()}" for p in (ROOT / folder).rglob("*.py")}
    shipped = {n.removeprefix("grainline/") for n in names if n.startswith("grainline/")}
    assert sorted(checkout - shipped) == [], "modules of the checkout missing from the wheel"
    demo = {n for n in names if n.startswith("grainline/data/demo_corpus/")}
    on_disk = {f"grainline/{p.relative_to(ROOT / 'grainline').as_posix()}"
               for p in (ROOT / "grainline" / "data" / "demo_corpus").rglob("*") if p.is_file()}
    assert demo == on_disk and len(demo) >= 20


def test_every_installed_module_imports_from_the_venv(installed):
    code = """
import importlib, json, pathlib, pkgutil
import grainline
pkg = pathlib.Path(grainline.__file__).parent
mods = sorted(m.name for m in pkgutil.walk_packages([str(pkg)], "grainline."))
files = {}
for name in mods:
    if name.endswith("__main__"):
        continue
    files[name] = importlib.import_module(name).__file__
print(json.dumps({"package": str(pkg), "files": files}))
"""
    out = _run([str(installed["python"]), "-c", code], cwd=installed["tmp"], env=_clean_env(installed["tmp"]))
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(installed["purelib"])
    assert len(found["files"]) >= 40
    for name, file in found["files"].items():
        assert Path(file).is_relative_to(installed["purelib"]), (name, file)
        assert not Path(file).is_relative_to(ROOT), (name, file)


@pytest.mark.slow
def test_the_installed_demo_ingests_its_package_data(installed):
    tmp, env = installed["tmp"], _clean_env(installed["tmp"])
    grainline = str(installed["venv"] / "bin" / "grainline")
    db = str(tmp / "db")
    try:
        demo = _run([grainline, "demo", "--db", db], cwd=tmp, env=env, timeout=900)
        assert "documents:" in demo.stdout and "Try: grainline search" in demo.stdout
        sources = _run([grainline, "sources", "--db", db, "--json"], cwd=tmp, env=env, timeout=300)
        (root,) = [json.loads(line) for line in sources.stdout.splitlines() if line.startswith("{")]
        corpus = installed["purelib"] / "grainline" / "data" / "demo_corpus"
        assert root["source_root"] == os.path.realpath(corpus)
        files = sum(1 for p in corpus.rglob("*") if p.is_file())
        # A record file (JSONL, Parquet) holds several documents; every file at least one.
        assert root["documents"] >= files and root["chunks"] > root["documents"]
    finally:
        subprocess.run([grainline, "server", "stop"], cwd=tmp, env=env, capture_output=True, timeout=120)
