"""Run the quickstart tour (the main job until the full demo lands): python scripts/quickstart.py"""

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import sys

from mlxinterp.quickstart import run

print(run(sys.argv[1] if len(sys.argv) > 1 else "llama"))
