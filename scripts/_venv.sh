# Sourced by the other scripts: create .venv/ at the repo root and install grainline
# into it (editable in strict mode, with the test, openvino, s3 and docs extras) at the versions of
# constraints/lock.txt, whenever pyproject.toml or the constraints changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "grainline needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv/ with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
# The lock pins every package (transitive ones too). Without an NVIDIA GPU, also pin
# PyTorch's CPU build (small, installs quickly); with one, pip takes the CUDA build of
# the same release. GRAINLINE_LOCK=none resolves anew (scripts/lock.sh uses it).
CONSTRAINTS=()
if [ "${GRAINLINE_LOCK:-}" != "none" ]; then
  CONSTRAINTS=(-c constraints/lock.txt)
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || [ "${GRAINLINE_CPU:-}" = "1" ]; then
  CONSTRAINTS+=(-c constraints/cpu.txt)
fi
stamp=.venv/.grainline-install-stamp
want="$(cat pyproject.toml constraints/cpu.txt constraints/lock.txt | sha256sum | cut -d' ' -f1) ${CONSTRAINTS[*]:-gpu}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo ">> installing grainline and its dependencies into .venv/ (first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${CONSTRAINTS[@]}" -e ".[test,openvino,s3,docs]"
  echo "$want" > "$stamp"
  rm -f .venv/.grainline-files-stamp
fi
# grainline itself is installed editable in strict mode: a tree of links to the
# checkout's files under build/, so editors and type checkers follow every module,
# including the root folders installed as grainline.chunkers/.storage/.flows/.deployments.
# A link tree does not see files added or removed later: reinstall when the list changes.
files_stamp=.venv/.grainline-files-stamp
files="$(find grainline chunkers storage flows deployments -type f ! -name '*.pyc' | sort | sha256sum | cut -d' ' -f1)"
if [ ! -f "$files_stamp" ] || [ "$(cat "$files_stamp")" != "$files" ]; then
  rm -rf build/__editable__.*
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=strict -e .
  echo "$files" > "$files_stamp"
fi
# Everything grainline needs is installed locally: nothing downloads at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# No usage telemetry from Prefect's client or the servers grainline and the tests start.
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
