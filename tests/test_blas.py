"""Fast-BLAS loading: active by default where OpenBLAS exists, opt-out, and import order."""

import os
import subprocess
import sys

import pytest

from mlxinterp import blas

HAVE_OPENBLAS = any(os.path.exists(p) for p in blas.CANDIDATES)


def run_py(code, **env):
    full = {**os.environ, **env}
    full.pop("MLXINTERP_BLAS", None) if "MLXINTERP_BLAS" not in env else None
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
        check=True,
    ).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
@pytest.mark.skipif(
    not HAVE_OPENBLAS, reason="no system OpenBLAS (apt-get install libopenblas0-pthread)"
)
def test_openblas_is_active_after_import_and_much_faster_than_the_bundled_blas():
    code = (
        "import mlxinterp, mlxinterp.cli as c; print(mlxinterp.blas.status().active); "
        "print(c.matmul_gflops(384, 5))"
    )
    fast = run_py(code).split()
    slow = run_py(code, MLXINTERP_BLAS="off").split()
    assert fast[0] == "openblas" and slow[0] == "bundled"
    assert float(fast[1]) > 3 * float(slow[1]), (fast, slow)


def test_importing_after_mlx_core_still_works_and_says_so():
    out = run_py("import mlx.core, mlxinterp; print(mlxinterp.blas.status().reason)")
    if sys.platform.startswith("linux"):
        assert "too late" in out or "before mlxinterp" in out


def test_results_are_identical_with_and_without_the_fast_blas():
    code = (
        "import mlxinterp, mlx.core as mx, numpy as np; "
        "a = mx.random.normal((64, 64), key=mx.random.key(0)); "
        "print(float(np.array(a @ a).astype('float64').sum()))"
    )
    a = float(run_py(code))
    b = float(run_py(code, MLXINTERP_BLAS="off"))
    assert abs(a - b) <= 1e-3 * max(1.0, abs(a))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
@pytest.mark.skipif(not HAVE_OPENBLAS, reason="no system OpenBLAS")
def test_this_test_session_itself_runs_on_the_fast_blas():
    # conftest.py must import mlxinterp before anything imports mlx.core (import sorters
    # move it: it sits in an `isort: off` block)
    if os.environ.get("MLXINTERP_BLAS", "").lower() != "off":
        assert blas.status().active == "openblas", blas.status()
