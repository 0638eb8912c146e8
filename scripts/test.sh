#!/usr/bin/env bash
# Set up .venv/ and run the whole test suite (what CI runs).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
