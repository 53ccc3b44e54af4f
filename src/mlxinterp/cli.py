"""The ``mlxinterp`` command line (also ``python -m mlxinterp``).

Commands (each takes ``--help``):
    info       versions, device, and which BLAS MLX's CPU build uses (with measured GFLOP/s)
    demo       the main job: lenses, patching and steering on one model -> an HTML report
    lens       logit lens of a prompt: top tokens per layer (and a heatmap with --out)
    patch      activation patching of clean vs corrupted prompts (heatmap with --out)
    attribute  attribution patching, the gradient estimate of `patch`
    steer      generate with a contrastive steering vector added
    generate   plain greedy generation
Errors print one line and exit with status 1.
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
    from .demo import run

    text, _ = run(
        args.model,
        args.out or "mlxinterp-report.html",
        tuned_steps=args.tuned_steps,
        progress=not args.quiet,
    )
    print(text)
    return 0


def _load(args):
    from .loading import load

    return load(args.model)


def _save_plot(ax, out: str | None) -> str:
    if not out:
        return ""
    ax.figure.savefig(out, dpi=120, bbox_inches="tight")
    return f"\nfigure: {out}"


def _cmd_lens(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .lens import logit_lens

    model, tok = _load(args)
    r = logit_lens(model, args.prompt, tokenizer=tok)
    tops = r.top_tokens(args.k)
    probs = r.top_k(args.k)[1]
    print(f"logit lens, last position of {args.prompt!r}:")
    for i, layer in enumerate(r.layers):
        cells = ", ".join(f"{w!r} {float(p):.2f}" for w, p in zip(tops[i][-1], probs[i, 0, -1]))
        print(f"  {layer:<14} {cells}")
    print(_save_plot(r.plot(), args.out).strip())
    return 0


def _patch_common(args, method):
    import matplotlib

    matplotlib.use("Agg")
    from .demo import first_token
    from .metrics import logit_diff

    model, tok = _load(args)
    metric = logit_diff(first_token(tok, args.answer), first_token(tok, args.wrong))
    r = method(
        model,
        args.prompt,
        args.corrupt,
        metric=metric,
        tokenizer=tok,
        component=args.component,
        by=args.by,
    )
    print(f"{r.method} of {args.component} ({r.metric}, 0 = corrupted, 1 = clean); top cells:")
    for cell, v in r.top(args.k):
        print(f"  {cell}  {v:+.3f}")
    print(_save_plot(r.plot(), args.out).strip())
    return 0


def _cmd_patch(args: argparse.Namespace) -> int:
    from .patching import activation_patching

    return _patch_common(args, lambda *a, **k: activation_patching(*a, progress=False, **k))


def _cmd_attribute(args: argparse.Namespace) -> int:
    from .patching import attribution_patching

    return _patch_common(args, attribution_patching)


def _cmd_steer(args: argparse.Namespace) -> int:
    from .generation import generate
    from .steering import steer, steering_vector

    model, tok = _load(args)
    v = steering_vector(model, args.positive, args.negative, args.site, tokenizer=tok)
    for s in args.scale:
        g = generate(
            model,
            tok,
            args.prompt,
            max_tokens=args.max_tokens,
            interventions={args.site: steer(v, s)},
        )
        print(f"scale {s:+.1f}: {args.prompt} {g.texts[0]}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generation import generate

    model, tok = _load(args)
    g = generate(model, tok, args.prompt, max_tokens=args.max_tokens)
    text = f"{args.prompt} {g.texts[0]}"
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxinterp",
        description="Functional mechanistic interpretability for MLX. "
        "Models: 'tinyworld' (shipped), a hub name or a local mlx-lm folder.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_, prompt=None, out_help="write the figure here (PNG)"):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--model", default="tinyworld", help="model name or folder (default: tinyworld)"
        )
        if prompt is not None:
            p.add_argument("--prompt", default=prompt, help=f"input text (default: {prompt!r})")
        p.add_argument("--out", default=None, help=out_help)
        p.set_defaults(func=func)
        return p

    p = sub.add_parser("info", help="versions, device and the active BLAS")
    p.set_defaults(func=_cmd_info)
    p = command(
        "demo",
        _cmd_demo,
        "lenses, patching and steering on one model; writes a self-contained HTML report",
        out_help="report path (default: mlxinterp-report.html)",
    )
    p.add_argument("--tuned-steps", type=int, default=200, help="tuned-lens training steps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = command(
        "lens",
        _cmd_lens,
        "logit lens: what each layer predicts next",
        "The Eiffel Tower is located in the city of",
    )
    p.add_argument("-k", type=int, default=3, help="tokens shown per layer")
    for name, func, what in (
        ("patch", _cmd_patch, "activation patching"),
        ("attribute", _cmd_attribute, "attribution patching"),
    ):
        p = command(
            name,
            func,
            f"{what}: which activations carry the difference between a "
            "clean and a corrupted prompt",
            "The capital of France is",
        )
        p.add_argument(
            "--corrupt",
            default="The capital of Japan is",
            help="corrupted prompt (same token length)",
        )
        p.add_argument("--answer", default="Paris", help="clean answer word")
        p.add_argument("--wrong", default="Tokyo", help="corrupted answer word")
        p.add_argument(
            "--component",
            default="resid_pre",
            help="site family (resid_pre, attn_out, mlp_out, z, ...)",
        )
        p.add_argument(
            "--by",
            default="layer_pos",
            choices=["layer", "layer_pos", "layer_head", "layer_head_pos"],
        )
        p.add_argument("-k", type=int, default=5, help="cells listed")
    p = command(
        "steer",
        _cmd_steer,
        "generate with a contrastive steering vector added",
        "The movie was",
        out_help="unused",
    )
    p.add_argument(
        "--positive", nargs="+", default=["The movie was wonderful", "The food was great"]
    )
    p.add_argument(
        "--negative", nargs="+", default=["The movie was terrible", "The food was awful"]
    )
    p.add_argument("--site", default="resid_post.2", help="where to add the vector")
    p.add_argument("--scale", type=float, nargs="+", default=[-1.0, 0.0, 1.0])
    p.add_argument("--max-tokens", type=int, default=8)
    p = command(
        "generate",
        _cmd_generate,
        "greedy generation",
        "The capital of France is",
        out_help="also write the text here",
    )
    p.add_argument("--max-tokens", type=int, default=12)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, turn errors into one line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, LookupError, RuntimeError, TypeError, OSError) as e:
        msg = " ".join(str(e).split())
        print(f"mlxinterp {args.command}: error: {msg}", file=sys.stderr)
        return 1
