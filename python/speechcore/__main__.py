"""``python -m speechcore``: the command line (see speechcore.cli)."""

import sys

from .cli import main

sys.exit(main())
