"""``python -m bench``: the whole benchmark (see bench/run.py)."""

import sys

from .run import main

sys.exit(main())
