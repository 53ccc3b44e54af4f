"""Run the quickstart tour (the main job until the full demo lands): python scripts/quickstart.py"""

import sys

import mlxinterp  # noqa: F401  (loads the fast BLAS before mlx.core)
from mlxinterp.quickstart import run

print(run(sys.argv[1] if len(sys.argv) > 1 else "llama"))
