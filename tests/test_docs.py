"""The API reference builds without warnings and every public function shows an example
(the examples themselves run as doctests: pytest --doctest-modules)."""

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import mlxinterp

ROOT = Path(__file__).resolve().parents[1]


def public_functions():
    for m in pkgutil.iter_modules(mlxinterp.__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"mlxinterp.{m.name}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                yield f"{m.name}.{name}", obj


def test_every_public_function_has_an_example():
    missing = [n for n, f in public_functions() if ">>>" not in (inspect.getdoc(f) or "")]
    assert not missing, missing


def test_api_reference_builds_without_warnings(tmp_path):
    pdoc = __import__("pytest").importorskip("pdoc")
    del pdoc
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_docs.py"), str(tmp_path / "api")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pages = list((tmp_path / "api").rglob("*.html"))
    assert len(pages) >= 20
    assert "capture" in (tmp_path / "api" / "mlxinterp" / "transforms.html").read_text()
