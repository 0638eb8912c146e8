"""grainline: batch document embedding with Prefect."""

from pathlib import Path

# The demo corpus beside the package in a source checkout (the demo command and int8
# calibration read it).
DEMO_CORPUS = Path(__file__).resolve().parents[1] / "demo" / "corpus"
