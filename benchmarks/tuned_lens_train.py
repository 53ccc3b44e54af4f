"""Tuned-lens training throughput: the compiled step vs the same step eager, side by side.

On tinyworld (or --model), batch 8 x 64 tokens by default; runs the two variants
interleaved after warm-up and prints median tokens/s and the ratio (target: compiled >= 2x).

    python benchmarks/tuned_lens_train.py [--steps 20] [--batch 8] [--seq 64]
"""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import argparse
import statistics
import time

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from mlxinterp import anatomy, load, world
from mlxinterp.cli import matmul_gflops
from mlxinterp.lens import TunedLens, _windows, make_train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyworld")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    args = ap.parse_args()

    model, tok = load(args.model)
    data = mx.array(tok.encode(" ".join(world.corpus(3000, seed=1))))
    steps = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        lens = TunedLens.for_model(model)
        steps[name] = make_train_step(model, lens, optim.Adam(learning_rate=1e-3), compile=compiled)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():  # warm-up (and compile)
        for i in range(2):
            fn(_windows(data, i, 0, args.batch, args.seq))
    for i in range(args.steps):
        x = _windows(data, i, 0, args.batch, args.seq)
        mx.eval(x)
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn(x)
            times[k].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"tuned-lens training step on {args.model}, batch {args.batch} x {args.seq} tokens, "
        f"{args.steps} interleaved steps"
    )
    for k in steps:
        print(f"  {k:<9} median {med[k] * 1e3:8.1f} ms/step  {tokens / med[k]:9.0f} tokens/s")
    print(f"compiled / eager speed-up: {med['eager'] / med['compiled']:.2f}x (target >= 2x)")
    an = anatomy(model)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    rows = an.n_layers + 1
    flops = 2 * n_params * tokens  # frozen model forward
    flops += 3 * 2 * an.n_layers * tokens * an.d_model**2  # translators, forward + backward
    flops += 3 * 2 * rows * tokens * an.d_model * an.d_vocab  # unembedding, forward + backward
    gflops = matmul_gflops(512)
    print(
        f"FLOP floor of one step: {flops / 1e9:.2f} GFLOP = {flops / gflops / 1e6:.1f} ms at "
        f"the measured {gflops:.0f} GFLOP/s matmul; the compiled step runs at "
        f"{flops / med['compiled'] / 1e9:.1f} GFLOP/s effective. The rest is per-op overhead "
        "and MLX's single-threaded element-wise CPU kernels (softmax, KL), which mx.compile "
        "does not speed up on Linux CPU (see DESIGN.md section 8)."
    )


if __name__ == "__main__":
    main()
