#!/usr/bin/env bash
# The published SciFact anchors over the whole corpus (tests/evaluation/test_anchors.py,
# the `anchors` marker, which the default suite and CI leave out): dense nDCG@10 within
# 0.01 of 0.645 and BM25 within 0.02 of 0.665-0.687. Run it before any change to
# chunking, embedding, retrieval or metrics lands (docs/development.md). It takes about
# 5 minutes on a Zen 4 with both cores, about half an hour on a Zen 1, with nothing kept;
# a database kept by an earlier run for the same code, libraries and CPU
# (GRAINLINE_TEST_CACHE, tests/scifact.py) makes it a minute. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# One process, no parallel workers, every core: the corpus is embedded in fp32 by the
# faster of torch and OpenVINO on this CPU (both give torch fp32's vectors).
unset OMP_NUM_THREADS
echo ">> $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
status=0
.venv/bin/python -m pytest -p no:xdist -m anchors -s -q -rA --durations=5 "$@" tests/evaluation/test_anchors.py || status=$?
echo ">> anchors: $(( $(date +%s) - start )) s wall, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
