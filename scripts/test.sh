#!/usr/bin/env bash
# Set up .venv/ and run the whole test suite (what CI runs).
# The tests run in GRAINLINE_TEST_WORKERS parallel pytest-xdist workers (3 by default:
# most of the long tests wait on servers and schedules, not on the CPU); a test module
# is one unit of work (tests/conftest.py). Pass -n yourself, or GRAINLINE_TEST_WORKERS=0,
# to choose otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
PARALLEL=(-n "${GRAINLINE_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder)
for arg in "$@"; do
  case "$arg" in -n|-n*|--numprocesses*|no:xdist|-pno:xdist) PARALLEL=() ;; esac
done
if [ "${GRAINLINE_TEST_WORKERS:-3}" = "0" ]; then PARALLEL=(); fi
# With parallel workers, each process (workers and the commands they start) computes on
# one thread: the workers already fill the cores, and more threads than cores only
# spin (measured: a model test module took 36 s of CPU at 2 threads, 31 s at 1).
if [ ${#PARALLEL[@]} -gt 0 ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
exec .venv/bin/python -m pytest "${PARALLEL[@]}" "$@"
