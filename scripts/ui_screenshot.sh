#!/usr/bin/env bash
# Screenshot what the Prefect UI shows for the newest artifact with a given key, as a
# person sees it (headless Chromium: `apt install chromium`). Checks by eye that the
# evaluation's plots are images in the UI, not links.
#   PREFECT_API_URL=http://127.0.0.1:4200/api bash scripts/ui_screenshot.sh grainline-eval-report out.png
# The server must have been started with PREFECT_UI_API_URL set to that URL (grainline's
# own servers are) so that the UI's page can reach its API.
set -euo pipefail
key="${1:?artifact key}" out="${2:-artifact.png}"
api="${PREFECT_API_URL:?set PREFECT_API_URL}"
id="$(curl -sf -X POST "$api/artifacts/filter" -H 'content-type: application/json' \
  -d "{\"artifacts\": {\"key\": {\"any_\": [\"$key\"]}}, \"sort\": \"CREATED_DESC\", \"limit\": 1}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1800 \
  --virtual-time-budget=30000 --screenshot="$out" "${api%/api}/artifacts/artifact/$id" 2>/dev/null
echo "$out: artifact $key ($id)"
