"""``python -m mlxinterp``: see `mlxinterp.cli`."""

import sys

from .cli import main

sys.exit(main())
