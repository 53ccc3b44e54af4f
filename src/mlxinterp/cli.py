"""The ``mlxinterp`` command line (also ``python -m mlxinterp``).

Commands:
    info    versions, device, and which BLAS MLX's CPU build is using (with a measured GFLOP/s)
    demo    the main job; until the full demo lands, a short quickstart on a tiny model
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata

from . import blas


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def matmul_gflops(n: int = 512, repeats: int = 5) -> float:
    """Measured fp32 matmul speed of MLX's default device, in GFLOP/s (median of repeats)."""
    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    mx.eval(a @ a)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(a @ a)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9


def info_lines() -> list[str]:
    """What ``mlxinterp info`` prints, one line each."""
    import mlx.core as mx

    from . import __version__

    st = blas.status()
    backend = "mlx-cpu" if _version("mlx-cpu") != "not installed" else "metal/cuda"
    lines = [
        f"mlxinterp  {__version__}",
        f"python     {platform.python_version()} ({sys.platform}, {platform.machine()})",
        f"mlx        {_version('mlx')} (backend: {backend})",
        f"mlx-lm     {_version('mlx-lm')}",
        f"numpy      {_version('numpy')}",
        f"device     {mx.default_device()}"
        + (f", metal available: {mx.metal.is_available()}" if hasattr(mx, "metal") else ""),
        f"blas       {st.active}" + (f" ({st.path})" if st.path else "") + f": {st.reason}",
    ]
    libs = blas.loaded_blas_libraries()
    if libs:
        lines.append("blas libs  " + ", ".join(libs))
    lines.append(f"matmul     {matmul_gflops():.1f} GFLOP/s (fp32 512x512, default device)")
    return lines


def _cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .quickstart import run

    print(run(arch=args.arch))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxinterp", description="Functional mechanistic interpretability for MLX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, device and the active BLAS")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser(
        "demo", help="capture and intervene on a small model and report what was found"
    )
    p.add_argument("--arch", default="llama", help="fixture architecture (default: llama)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, turn errors into one line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, LookupError, RuntimeError, TypeError, OSError) as e:
        print(f"mlxinterp {args.command}: error: {e}", file=sys.stderr)
        return 1
