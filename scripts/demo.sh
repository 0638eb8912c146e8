#!/usr/bin/env bash
# Set up .venv/ and run the demo: ingest the bundled demo corpus (grainline/data/demo_corpus) with all three strategies, then search.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/grainline demo "$@"
