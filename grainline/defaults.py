"""Defaults the command line shows in its help, kept free of imports so that
``grainline --help`` and argument errors stay fast."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Where tables go when no --db is given.
DEFAULT_DB = "./grainline-data"
