"""Activation-patching sweep: the vmapped engine vs a per-patch loop, and the floor.

GPT-2-small shape (12 layers, d 768, vocab 50257), random weights, 64 tokens, resid_pre x
every layer x every position = 768 patched runs, logit-difference metric at the last
position. In one run it measures

- the engine (`activation_patching`: per layer one vmapped, compiled call over positions);
- a Python loop of single `intervene` calls (timed on a sample of cells; rate extrapolated);
- the floor: a plain batched forward over 768 sequences (timed on 64, scaled by 12),

and prints patched runs per second, the ratios, and the FLOP-floor analysis.

    python benchmarks/patching_sweep.py [--seq 64] [--layers 12] [--loop-sample 24]
"""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import argparse
import time

import mlx.core as mx

from mlxinterp import capture, intervene
from mlxinterp.cli import matmul_gflops
from mlxinterp.interventions import replace
from mlxinterp.metrics import logit_diff
from mlxinterp.patching import activation_patching
from mlxinterp.testing import GPT2_SMALL_CONFIG, tiny_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--loop-sample", type=int, default=24)
    ap.add_argument("--memory-mb", type=float, default=1024)
    args = ap.parse_args()

    model = tiny_model(config={**GPT2_SMALL_CONFIG, "n_layer": args.layers})
    t, n_layers, d, vocab = args.seq, args.layers, 768, 50257
    clean = mx.random.randint(0, vocab, (1, t), key=mx.random.key(0))
    corrupt = mx.concatenate(
        [clean[:, : t // 2], mx.random.randint(0, vocab, (1, t - t // 2), key=mx.random.key(1))], 1
    )
    metric = logit_diff(11, 12)
    runs = n_layers * t

    t0 = time.perf_counter()
    result = activation_patching(
        model,
        clean,
        corrupt,
        metric=metric,
        component="resid_pre",
        memory_mb=args.memory_mb,
        progress=False,
    )
    mx.eval(result.values)
    t_engine = time.perf_counter() - t0

    keys = [f"resid_pre.{i}" for i in range(n_layers)]
    _, acts = capture(model, keys)(clean)
    mx.eval(acts)
    cells = [(i % n_layers, (i * 7) % t) for i in range(args.loop_sample)]
    t0 = time.perf_counter()
    for layer, pos in cells:
        edit = replace(acts[keys[layer]]).at(positions=[pos])
        mx.eval(metric(intervene(model, {keys[layer]: edit})(corrupt)))
    t_loop = (time.perf_counter() - t0) / len(cells) * runs

    batch = mx.random.randint(0, vocab, (64, t), key=mx.random.key(2))
    mx.eval(model(batch[:2]))
    t0 = time.perf_counter()
    mx.eval(model(batch))
    t_floor = (time.perf_counter() - t0) * runs / 64

    gflops = matmul_gflops(768)
    per_token_layer = 2 * 12 * d * d + 2 * 2 * t * d  # weights (qkv, o, mlp 4x) + attention
    needed = sum((n_layers - layer) * t * t * per_token_layer for layer in range(n_layers))
    needed += runs * 2 * d * vocab  # one unembedded position per run
    print(
        f"patching sweep — GPT-2-small shape, {n_layers} layers, {t} tokens, resid_pre x "
        f"layer x position = {runs} patched runs"
    )
    print(f"  engine (vmapped)            {t_engine:8.1f} s   {runs / t_engine:7.2f} runs/s")
    print(
        f"  loop of intervene calls     {t_loop:8.1f} s   {runs / t_loop:7.2f} runs/s "
        f"(timed on {len(cells)} cells)"
    )
    print(f"  floor: one batched forward over {runs} sequences  {t_floor:8.1f} s")
    print(
        f"engine vs loop: {t_loop / t_engine:.1f}x faster (target >= 10x); "
        f"engine / floor = {t_engine / t_floor:.2f} (target <= 2)"
    )
    print(
        f"FLOP floor of the sweep itself (layers at and above each patch, one unembedded "
        f"position): {needed / 1e12:.2f} TFLOP; at the measured {gflops:.0f} GFLOP/s matmul "
        f"that is {needed / gflops / 1e9:.1f} s; the engine ran at "
        f"{needed / t_engine / 1e9:.0f} GFLOP/s effective"
    )


if __name__ == "__main__":
    main()
