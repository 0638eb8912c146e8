#!/usr/bin/env bash
# Set up .venv/ and build the documentation site (mkdocs.yml, docs/) strictly: a broken
# link, a missing anchor or a page left out of the nav fails the build. The site goes to
# a temporary folder unless a folder is given: bash scripts/docs.sh [SITE_DIR]
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
site="${1:-$(mktemp -d)}"
.venv/bin/python -m mkdocs build --strict --quiet -d "$site"
echo "docs: built into $site"
