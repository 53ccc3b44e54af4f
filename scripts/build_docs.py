"""Build the API reference (pdoc) into docs/api, failing on any warning.

    python scripts/build_docs.py [OUT]
"""

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc

import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "api"
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT


def main() -> None:
    modules = ["mlxinterp"] + [
        f"mlxinterp.{m.name}" for m in pkgutil.iter_modules(mlxinterp.__path__)
        if not m.name.startswith("_") and m.name != "anatomy"  # anatomy: shadowed, added below
    ]
    pdoc.render.configure(docformat="google")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*modules, output_directory=OUT)
    print(f"API reference: {OUT / 'index.html'} ({len(list(OUT.rglob('*.html')))} pages)")


if __name__ == "__main__":
    main()
