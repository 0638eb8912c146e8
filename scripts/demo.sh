#!/usr/bin/env bash
# Set up .venv/ and run the demo: ingest demo/corpus with all three strategies, then search.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/grainline demo "$@"
