"""``python -m grainline.cli``: the ``grainline`` command."""

import sys

from grainline.cli import main

sys.exit(main())
