"""Capture overhead: plain forward vs capturing every module output, eager and compiled.

GPT-2-small shape (12 layers, d 768, 12 heads, vocab 50257), random weights, batch 8 x 128.
Runs the four variants interleaved (so machine noise hits all alike), evaluates outputs and
every captured array, and prints medians and overhead ratios. Targets: <= 10 % eager,
<= 3 % compiled.

    python benchmarks/capture_overhead.py [--repeats 7] [--batch 8] [--seq 128]
"""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import argparse
import statistics
import time

import mlx.core as mx

from mlxinterp import capture
from mlxinterp.blas import status
from mlxinterp.cli import matmul_gflops
from mlxinterp.testing import GPT2_SMALL_CONFIG, tiny_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()

    model = tiny_model(config={**GPT2_SMALL_CONFIG, "n_layer": args.layers})
    tokens = mx.random.randint(0, 50257, (args.batch, args.seq), key=mx.random.key(0))
    cap = capture(model, "**")
    variants = {
        "plain eager": lambda t: model(t),
        "capture eager": cap,
        "plain compiled": mx.compile(lambda t: model(t)),
        "capture compiled": mx.compile(cap),
    }
    n_sites = len(cap.sites)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up (and compile)
        mx.eval(fn(tokens))
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            mx.eval(fn(tokens))
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(
        f"capture overhead — GPT-2-small shape, {args.layers} layers, batch {args.batch} x "
        f"{args.seq}, {n_sites} sites captured, {args.repeats} interleaved repeats"
    )
    print(f"BLAS: {status().active}; matmul {matmul_gflops():.0f} GFLOP/s")
    for k in variants:
        lo, hi = min(times[k]), max(times[k])
        print(f"  {k:<17} median {med[k]:7.3f} s   (min {lo:.3f}, max {hi:.3f})")
    eager = med["capture eager"] / med["plain eager"] - 1
    comp = med["capture compiled"] / med["plain compiled"] - 1
    print(f"overhead eager    {eager * 100:+6.1f} %   (target <= 10 %)")
    print(f"overhead compiled {comp * 100:+6.1f} %   (target <= 3 %)")


if __name__ == "__main__":
    main()
