"""grainline: batch document embedding with Prefect.

The package's own data lives in grainline/data/ (installed with the wheel): the demo
corpus that `grainline demo` ingests and int8 calibration reads.
"""

from pathlib import Path

DEMO_CORPUS = Path(__file__).resolve().parent / "data" / "demo_corpus"
