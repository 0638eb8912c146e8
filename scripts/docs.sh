#!/usr/bin/env bash
# Set up .venv/ and build the documentation site (mkdocs.yml, docs/) strictly: a broken
# link, a missing anchor or a page left out of the nav fails the build. The site goes to
# a temporary folder unless a folder is given: bash scripts/docs.sh [SITE_DIR]
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# The docs extra is not part of the set-up's install; add it at the locked version.
MKDOCS=1.6.1  # as in constraints/lock.txt
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('mkdocs') != '$MKDOCS')" 2>/dev/null; then
  echo ">> installing the docs extra into .venv/"
  .venv/bin/python -m pip install --quiet -c constraints/lock.txt "mkdocs==$MKDOCS"
fi
site="${1:-$(mktemp -d)}"
.venv/bin/python -m mkdocs build --strict --quiet -d "$site"
echo "docs: built into $site"
