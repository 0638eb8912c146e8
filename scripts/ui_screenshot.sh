#!/usr/bin/env bash
# Screenshot what a person sees in the Prefect UI: scripts/ui_screenshot.sh URL OUT.png
# e.g. scripts/ui_screenshot.sh http://127.0.0.1:4377/deployments deployments.png
# Needs Debian's chromium (apt-get install chromium). Headless, no network beyond the URL.
set -euo pipefail
url="$1"; out="$2"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1400,900 --virtual-time-budget=15000 \
  --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
