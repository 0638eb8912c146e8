# Sourced by the other scripts: create .venv/ at the repo root and install grainline
# into it (editable, with the test and openvino extras) when pyproject.toml or the constraints changed.
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
# Without an NVIDIA GPU, pin PyTorch's CPU build (small, installs quickly); with one,
# let pip choose the CUDA build.
CONSTRAINTS=()
if ! command -v nvidia-smi >/dev/null 2>&1 || [ "${GRAINLINE_CPU:-}" = "1" ]; then
  CONSTRAINTS=(-c constraints/cpu.txt)
fi
stamp=.venv/.grainline-install-stamp
want="$(cat pyproject.toml constraints/cpu.txt | sha256sum | cut -d' ' -f1) ${CONSTRAINTS[*]:-gpu}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo ">> installing grainline and its dependencies into .venv/ (first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${CONSTRAINTS[@]}" -e ".[test,openvino]"
  echo "$want" > "$stamp"
fi
# Everything grainline needs is installed locally: nothing downloads at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
