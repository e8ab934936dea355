"""``python -m pachyderm``: the same as the ``pachyderm`` command."""

import sys

from .cli import main

sys.exit(main())
