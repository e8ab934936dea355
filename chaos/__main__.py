"""``python -m chaos``: the long chaos run (see chaos/long_run.py)."""

from .long_run import entry

entry()
