#!/usr/bin/env bash
# Refresh constraints/lock.txt: resolve grainline[test,openvino,s3,docs] anew in a fresh
# .venv/ (only pyproject.toml's ranges and the CPU torch pin apply), write every
# installed version to the lock, then run the whole test suite on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .venv
GRAINLINE_LOCK=none bash -c 'source scripts/_venv.sh'
{
  echo "# Every package a CPU install of grainline[test,openvino,s3,docs] gets, at the versions CI tested."
  echo "# Refresh with: bash scripts/lock.sh  (resolves anew, writes this file, runs the tests)."
  # A local build label (torch's +cpu) is dropped: ==X.Y.Z matches it and the CUDA build.
  .venv/bin/python -m pip freeze --exclude-editable | grep -v '^grainline' | sed 's/+[a-z0-9.]*$//'
} > constraints/lock.txt
rm -f .venv/.grainline-install-stamp  # the next set-up re-checks the venv against the new lock
exec bash scripts/test.sh "$@"
