"""Fast BLAS for MLX's CPU build on Linux.

The ``mlx-cpu`` wheel links a bundled reference BLAS (about 6 GFLOP/s for a 1024² fp32
matmul here). If an optimised BLAS is loaded into the process with ``RTLD_GLOBAL`` *before*
``mlx.core`` is imported, the dynamic linker resolves MLX's ``cblas_sgemm`` & co. to it
instead — OpenBLAS gives about 30× the speed with identical results. `setup` does that once,
at ``import mlxinterp``:

- only on Linux, and only when ``mlx.core`` is not imported yet (otherwise it is too late:
  everything still works, just slower, and ``python -m mlxinterp info`` says so);
- ``MLXINTERP_BLAS=off`` opts out; ``MLXINTERP_BLAS=/path/to/libblas.so`` picks a library;
- otherwise the first of Debian's ``libopenblas0-pthread`` / ``libopenblas0`` paths (or what
  ``ctypes.util.find_library("openblas")`` finds) that exists is used.

On macOS MLX uses Accelerate and the GPU; nothing is done there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BlasStatus", "setup", "status", "CANDIDATES"]

CANDIDATES: tuple[str, ...] = tuple(
    f"/usr/lib/{arch}-linux-gnu/{sub}libopenblas.so.0"
    for arch in (platform.machine(),)
    for sub in ("openblas-pthread/", "", "openblas-openmp/", "openblas-serial/")
)


@dataclass(frozen=True)
class BlasStatus:
    """What `setup` did: ``active`` is ``"openblas"`` (or the library's name), or
    ``"bundled"`` when MLX runs on the BLAS its wheel ships; ``reason`` says why."""

    active: str
    path: str | None
    reason: str


_STATUS: list[BlasStatus] = []  # written once, by the first setup() call


def _find() -> str | None:
    for path in CANDIDATES:
        if Path(path).exists():
            return path
    return ctypes.util.find_library("openblas")


def setup() -> BlasStatus:
    """Load an optimised BLAS before ``mlx.core`` if possible; idempotent.

    Example:
        >>> st = setup()  # already ran at `import mlxinterp`: returns the same status
        >>> st.active in ("openblas", "bundled", "platform"), setup() is st
        (True, True)
    """
    if _STATUS:
        return _STATUS[0]
    choice = os.environ.get("MLXINTERP_BLAS", "").strip()
    if not sys.platform.startswith("linux"):
        st = BlasStatus("platform", None, f"{sys.platform}: MLX uses the platform's own BLAS")
    elif choice.lower() in ("off", "0", "none", "no"):
        st = BlasStatus("bundled", None, "MLXINTERP_BLAS=off")
    elif "mlx.core" in sys.modules and _preloaded_openblas():
        st = BlasStatus(
            "openblas",
            _preloaded_openblas(),
            "already in the process before mlxinterp was imported (LD_PRELOAD?)",
        )
    elif "mlx.core" in sys.modules:
        st = BlasStatus(
            "bundled",
            None,
            "mlx.core was imported before mlxinterp, too late to load a fast BLAS: "
            "import mlxinterp first (or LD_PRELOAD the library) for ~30x faster matmuls",
        )
    else:
        path = choice or _find()
        if not path:
            st = BlasStatus(
                "bundled",
                None,
                "no optimised BLAS found: install Debian's libopenblas0-pthread "
                "or set MLXINTERP_BLAS=/path/to/libopenblas.so",
            )
        else:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                name = "openblas" if "openblas" in Path(path).name else Path(path).name
                st = BlasStatus(name, path, "loaded with RTLD_GLOBAL before mlx.core")
            except OSError as e:
                st = BlasStatus("bundled", None, f"could not load {path}: {e}")
    _STATUS.append(st)
    return st


def _preloaded_openblas() -> str | None:
    libs = [p for p in loaded_blas_libraries() if "openblas" in p and "scipy_openblas" not in p]
    return libs[0] if libs else None


def status() -> BlasStatus:
    """The `BlasStatus` of this process (runs `setup` if nobody did).

    Example:
        >>> status().active in ("openblas", "bundled", "platform")
        True
        >>> isinstance(status().reason, str)
        True
    """
    return setup()


def loaded_blas_libraries() -> list[str]:
    """BLAS shared objects mapped into this process (Linux only; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    libs = {line.split()[-1] for line in maps.splitlines() if "blas" in line.split()[-1].lower()}
    return sorted(libs)
