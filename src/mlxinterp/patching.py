"""Activation patching, attribution patching and path patching — as batched (vmapped) calls.

**Activation patching** runs the model on one input (the *target*) with one activation
replaced by its value on the other input (the *source*) and measures a metric. Denoising
patches clean values into the corrupted run (how much of the clean behaviour does this one
activation restore?); noising patches corrupted values into the clean run. A sweep does this
for every layer, position and/or head. Here a sweep is not a Python loop of forward passes:
for each site the grid of cells (positions, heads) is one ``mx.vmap`` of the intervened
model over the cell indices (compiled on GPU; on Linux CPU mx.compile made it ~13 % slower),
run in chunks sized to a memory budget. The
layers below the patched site do not depend on the mapped indices, so vmap computes them
once for the whole chunk. The clean and corrupted runs are cached once.

**Attribution patching** is the first-order estimate ``(source − target) · ∂metric/∂act`` for
every site, position and head from one forward and one backward pass: the gradient with
respect to zero additive perturbations planted at every site (`mlxinterp.plant`).

**Path patching** isolates the direct path from senders to receivers: senders take their
source value, every other attention head and MLP is frozen to its target-run value, the
receivers' inputs are recorded, and a second target run with only those inputs planted gives
the metric.

Example:
    >>> from mlxinterp import load
    >>> from mlxinterp.metrics import logit_diff
    >>> model, tok = load("tinyworld")
    >>> clean, corrupt = "The capital of France is", "The capital of Japan is"
    >>> paris, tokyo = tok.encode("Paris Tokyo", add_special_tokens=False)
    >>> r = activation_patching(model, clean, corrupt, component="resid_pre",
    ...                         metric=logit_diff(paris, tokyo), tokenizer=tok, progress=False)
    >>> r.axes, r.values.shape
    (('layer', 'pos'), (4, 6))
    >>> round(float(r.values[0, 4]), 3)  # the country token, before block 0
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tqdm.auto import tqdm

from .anatomy import anatomy
from .interventions import replace
from .metrics import Metric, normalized
from .sites import SiteError
from .text import Batch, as_batch, masked
from .transforms import capture, intervene, plant

__all__ = [
    "PatchResult",
    "activation_patching",
    "attribution_patching",
    "path_patching",
    "rank_correlation",
]

By = Literal["layer", "layer_pos", "layer_head", "layer_head_pos"]
HEAD_COMPONENTS = ("z", "result", "pattern", "q", "k", "v")


@dataclass(frozen=True)
class PatchResult:
    """Patching effects with named axes (``layer``, ``head``, ``pos``), e.g. ``(layer, pos)``.

    ``labels[axis]`` holds the tick labels (site names, head numbers, token strings).
    """

    values: mx.array
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    metric: str
    method: str = "activation patching"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_numpy(self) -> np.ndarray:
        return np.array(self.values)

    def top(self, k: int = 5) -> list[tuple[dict[str, str], float]]:
        """The ``k`` cells with the largest absolute effect, as (labels, value)."""
        v = self.to_numpy()
        order = np.argsort(-np.abs(v).reshape(-1))[:k]
        out = []
        for flat in order:
            idx = np.unravel_index(flat, v.shape)
            out.append(({a: self.labels[a][i] for a, i in zip(self.axes, idx)}, float(v[idx])))
        return out

    def plot(self, ax: Any = None, **kw: Any):
        """Heatmap (token labels on the position axis) or, for one axis, a bar chart."""
        import matplotlib.pyplot as plt

        v = self.to_numpy()
        if v.ndim == 3:  # layer x head x pos: show layer x head, summed over positions
            v, axes = v.sum(-1), self.axes[:2]
        else:
            axes = self.axes
        if v.ndim == 1:
            ax = ax or plt.subplots(figsize=(max(4, 0.4 * len(v)), 3))[1]
            ax.bar(range(len(v)), v, color=["tab:red" if x < 0 else "tab:blue" for x in v])
            ax.set_xticks(range(len(v)), self.labels[axes[0]], rotation=60, ha="right", fontsize=7)
            ax.set_ylabel(self.metric)
        else:
            ax = ax or plt.subplots(figsize=(0.7 * v.shape[1] + 2.5, 0.35 * v.shape[0] + 1.8))[1]
            lim = float(np.abs(v).max()) or 1.0
            im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", **kw)
            ax.set_yticks(range(v.shape[0]), self.labels[axes[0]], fontsize=7)
            ax.set_xticks(
                range(v.shape[1]), self.labels[axes[1]], rotation=60, ha="right", fontsize=7
            )
            ax.figure.colorbar(im, ax=ax, fraction=0.03, label=self.metric)
        ax.set_title(self.method)
        ax.figure.tight_layout()
        return ax


# --------------------------------------------------------------------------- helpers


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (cells that patching leaves exactly unchanged tie at 0)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def rank_correlation(a: Any, b: Any) -> float:
    """Spearman's rank correlation of two effect maps (ties get their average rank).

    Example:
        >>> rank_correlation([0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 2.0, 2.5])
        1.0
    """
    a = np.asarray(a, dtype=float).reshape(-1)
    b = np.asarray(b, dtype=float).reshape(-1)
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _inputs(tokenizer, clean, corrupted) -> tuple[Batch, Batch]:
    cb, xb = as_batch(tokenizer, clean), as_batch(tokenizer, corrupted)
    if cb.tokens.shape != xb.tokens.shape:
        raise ValueError(
            f"clean and corrupted inputs differ in shape: {tuple(cb.tokens.shape)} vs "
            f"{tuple(xb.tokens.shape)} tokens. Position-aligned patching needs prompts of equal "
            "token length: rephrase one, or pass both as one left-padded batch"
        )
    if not (cb.mask == xb.mask).all().item():
        raise ValueError("clean and corrupted inputs are padded differently")
    return cb, xb


def _runner(model: nn.Module, batch: Batch) -> tuple[Callable, tuple]:
    """(function, leading args) that run the model on a batch, honouring padding."""
    if batch.mask.all().item():
        return model, ()
    return masked(model), (batch.mask,)


def _site_keys(model, component: str | None, sites: Sequence[str] | None) -> list[str]:
    if sites is not None:
        from .sites import resolve_many

        return [str(s) for s, _ in resolve_many(model, list(sites))]
    if component is None:
        raise ValueError("give component= (e.g. 'resid_pre') or sites=[...]")
    an = anatomy(model)
    return [f"{component}.{i}" for i in range(an.n_layers)]


def _axes_of(model, key: str) -> tuple[str, ...]:
    from .sites import resolve

    (site, _), *_ = resolve(model, key)
    if site.axes is None:
        return ("batch", "pos", "d")
    return site.axes


def _check_by(by: str, axes: tuple[str, ...], key: str) -> None:
    if by not in ("layer", "layer_pos", "layer_head", "layer_head_pos"):
        raise ValueError(f"by must be layer, layer_pos, layer_head or layer_head_pos, not {by!r}")
    if "head" in by and "head" not in axes:
        raise SiteError(f"by={by!r} needs a per-head site; {key} has axes {axes}")


def _metric_values(metric, clean_logits, corrupt_logits, normalize: bool):
    m_clean = float(metric(clean_logits))
    m_corr = float(metric(corrupt_logits))
    fn = normalized(metric, m_clean, m_corr) if normalize else metric
    return fn, m_clean, m_corr


def _chunk(n_cells: int, batch: Batch, an, memory_mb: float, one_position: bool) -> int:
    """Cells per vmapped call: as many as ``memory_mb`` allows (float32 activations of one
    patched run: residual + MLP + attention per token, logits at one or all positions), then
    evened out so that no chunk is a small remainder (each chunk recomputes the layers below
    the patch and a new chunk shape recompiles)."""
    b, t = batch.tokens.shape
    logits = 2 * an.d_vocab * (1 if one_position else t)
    per_cell = 4 * b * (t * (24 * an.d_model + 4 * an.n_heads * t) + logits)
    fit = int(max(1, min(n_cells, memory_mb * 2**20 // per_cell)))
    n_chunks = -(-n_cells // fit)
    return -(-n_cells // n_chunks)


# --------------------------------------------------------------------------- the engine


def activation_patching(
    model: nn.Module,
    clean: Any,
    corrupted: Any,
    *,
    metric: Callable[[mx.array], mx.array],
    component: str | None = "resid_pre",
    sites: Sequence[str] | None = None,
    by: By = "layer_pos",
    direction: Literal["denoise", "noise"] = "denoise",
    normalize: bool = True,
    tokenizer: Any = None,
    memory_mb: float = 1024,
    compile: bool | None = None,
    progress: bool = True,
) -> PatchResult:
    """Patch each site (× position × head) from the source run into the target run.

    ``direction="denoise"`` patches clean activations into the corrupted run; ``"noise"`` the
    reverse. ``component`` names a standard site family (``resid_pre``, ``resid_mid``,
    ``resid_post``, ``attn_out``, ``mlp_out``, ``z``, ``result``, ``pattern``, ...) patched
    at every layer; ``sites`` instead gives any list of sites. ``by`` picks the grid. With
    ``normalize`` the metric is mapped to 0 = corrupted run, 1 = clean run. Each site's grid
    runs as one vmapped call per chunk of ``memory_mb``, compiled when ``compile`` is True
    (default: compile except on the CPU, where mx.compile made sweeps ~13 % slower here).

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> from mlxinterp.metrics import logit_diff
        >>> clean, corrupt = mx.array([[5, 9, 12, 7]]), mx.array([[5, 9, 40, 7]])
        >>> r = activation_patching(tiny_model("llama"), clean, corrupt, metric=logit_diff(3, 4),
        ...                         by="layer", progress=False)
        >>> [round(v, 4) for v in r.values.tolist()]  # whole resid_pre: the clean run, 1.0
        [1.0, 1.0, 1.0]
    """
    an = anatomy(model)
    cb, xb = _inputs(tokenizer, clean, corrupted)
    keys = _site_keys(model, component if sites is None else None, sites)
    _check_direction(direction)
    tgt_b = xb if direction == "denoise" else cb
    fn, lead = _runner(model, cb)
    clean_logits, src_acts_c = capture(fn, keys)(cb.tokens, *lead)
    corrupt_logits, src_acts_x = capture(fn, keys)(xb.tokens, *lead)
    src_acts = src_acts_c if direction == "denoise" else src_acts_x
    if compile is None:
        compile = mx.default_device().type != mx.DeviceType.cpu
    t = cb.tokens.shape[1]
    tgt_args = (tgt_b.tokens, *lead)
    # the raw metric of one (patched) run; baselines go through the very same path so that
    # a patch that changes nothing scores exactly 0 (denoising) or 1 (noising)
    run_model = _metric_forward(model, an, fn, lead, metric, tgt_b)
    m_clean = float(run_model({}, (cb.tokens, *lead)))
    m_corr = float(run_model({}, (xb.tokens, *lead)))
    if normalize and m_clean == m_corr:
        raise ValueError("the metric is equal on the clean and corrupted runs: cannot normalise")
    span = (m_clean - m_corr) if normalize else 1.0
    base = m_corr if normalize else 0.0
    del clean_logits, corrupt_logits
    rows = []
    head_counts = []
    bar = tqdm(keys, desc="patching", disable=not progress)
    for key in bar:
        axes = _axes_of(model, key)
        _check_by(by, axes, key)
        n_heads = src_acts[key].shape[axes.index("head")] if "head" in axes else 1
        head_counts.append(n_heads)
        # cells as boolean masks over positions and heads; cell 0 patches nothing, so the
        # baseline goes through exactly the same vmapped computation as every cell
        n_pos = t if "pos" in by else 1
        n_hd = n_heads if "head" in by else 1
        pos_masks = mx.eye(t, dtype=mx.bool_) if "pos" in by else mx.ones((1, t), mx.bool_)
        hd_masks = (
            mx.eye(n_heads, dtype=mx.bool_) if "head" in by else mx.ones((1, n_heads), mx.bool_)
        )
        pm = mx.concatenate([mx.zeros((1, t), mx.bool_), mx.tile(pos_masks, (n_hd, 1))])
        hm = mx.concatenate([mx.zeros((1, n_heads), mx.bool_), mx.repeat(hd_masks, n_pos, axis=0)])
        has_heads = "head" in axes

        def cell(p, h, value, *args, key=key, has_heads=has_heads):
            edit = replace(value).at(positions=p, heads=h if has_heads else None)
            return run_model({key: edit}, args)

        mapped = mx.vmap(cell, in_axes=(0, 0) + (None,) * (1 + len(tgt_args)))
        run = mx.compile(mapped) if compile else mapped
        size = _chunk(pm.shape[0], tgt_b, an, memory_mb, run_model.one_position)
        out = []
        for i in range(0, pm.shape[0], size):
            res = run(pm[i : i + size], hm[i : i + size], src_acts[key], *tgt_args)
            mx.eval(res)
            out.append(res)
        out = mx.concatenate(out)
        baseline, out = out[0], out[1:]
        vals = out.reshape(n_hd, n_pos)  # head, pos
        # the unpatched baseline of this very computation is the target run's metric
        target_value = m_corr if direction == "denoise" else m_clean
        rows.append(vals - baseline + target_value)
    values = (mx.stack(rows) - base) / span  # layer, head, pos
    name = _name(metric)
    return _shape_result(
        values,
        by,
        keys,
        head_counts,
        cb,
        f"normalised {name}" if normalize else name,
        "activation patching",
        {"clean": m_clean, "corrupted": m_corr, "direction": direction},
    )


def _metric_forward(model, an, fn, lead, metric_fn: Callable, batch: Batch):
    """``run(edits, args) -> metric`` for one patched run.

    When the metric reads one position (a `Metric`) and the model is ``unembed(inner(x))``
    with the final norm inside ``inner`` (checked numerically once), only that position is
    unembedded — the vocabulary projection is most of a small model's cost."""
    inner_path = an.inner_path
    if isinstance(metric_fn, Metric) and not lead and inner_path is not None:
        from .sites import module_paths

        inner = module_paths(model)[inner_path]
        x = batch.tokens
        ref = fn(x)[..., metric_fn.position, :]
        got = an.unembed(inner(x)[..., metric_fn.position, :])
        if mx.allclose(got, ref, rtol=1e-4, atol=1e-4).item():

            def run(edits, args):
                h = intervene(inner, edits, root=model)(*args)[..., metric_fn.position, :]
                return metric_fn.fn(an.unembed(h))

            run.one_position = True  # type: ignore[attr-defined]
            return run

    def run_full(edits, args):
        return metric_fn(intervene(fn, edits, root=model)(*args))

    run_full.one_position = False  # type: ignore[attr-defined]
    return run_full


def _shape_result(values, by, keys, head_counts, batch, metric_fn, method, extra) -> PatchResult:
    labels = {
        "layer": keys,
        "pos": _pos_labels(batch),
        "head": [str(h) for h in range(max(head_counts) if head_counts else 1)],
    }
    if by == "layer":
        return PatchResult(values[:, 0, 0], ("layer",), labels, _name(metric_fn), method, extra)
    if by == "layer_pos":
        return PatchResult(values[:, 0], ("layer", "pos"), labels, _name(metric_fn), method, extra)
    if by == "layer_head":
        return PatchResult(
            values[:, :, 0], ("layer", "head"), labels, _name(metric_fn), method, extra
        )
    return PatchResult(values, ("layer", "head", "pos"), labels, _name(metric_fn), method, extra)


def _pos_labels(batch: Batch) -> list[str]:
    if batch.str_tokens and batch.str_tokens[0]:
        return [f"{i}:{s}" for i, s in enumerate(batch.str_tokens[0])]
    return [str(i) for i in range(batch.tokens.shape[1])]


def _check_direction(direction: str) -> None:
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")


def _name(metric_fn) -> str:
    if isinstance(metric_fn, str):
        return metric_fn
    return getattr(metric_fn, "name", getattr(metric_fn, "__name__", "metric"))


# --------------------------------------------------------------------------- attribution


def attribution_patching(
    model: nn.Module,
    clean: Any,
    corrupted: Any,
    *,
    metric: Callable[[mx.array], mx.array],
    component: str | None = "resid_pre",
    sites: Sequence[str] | None = None,
    by: By = "layer_pos",
    direction: Literal["denoise", "noise"] = "denoise",
    normalize: bool = True,
    tokenizer: Any = None,
) -> PatchResult:
    """First-order estimate of `activation_patching`: ``(source − target) · ∂metric/∂act``.

    One forward pass per input to cache activations, then one forward and one backward pass
    on the target input with zero perturbations planted at every site.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> from mlxinterp.metrics import logit_diff
        >>> clean, corrupt = mx.array([[5, 9, 12, 7]]), mx.array([[5, 9, 40, 7]])
        >>> est = attribution_patching(tiny_model("llama"), clean, corrupt, metric=logit_diff(3, 4),
        ...                            component="z", by="layer_head")
        >>> est.axes, est.values.shape
        (('layer', 'head'), (3, 4))
    """
    _check_direction(direction)
    cb, xb = _inputs(tokenizer, clean, corrupted)
    keys = _site_keys(model, component if sites is None else None, sites)
    fn, lead = _runner(model, cb)
    clean_logits, acts_c = capture(fn, keys)(cb.tokens, *lead)
    corrupt_logits, acts_x = capture(fn, keys)(xb.tokens, *lead)
    metric_fn, m_clean, m_corr = _metric_values(metric, clean_logits, corrupt_logits, normalize)
    src, tgt, tgt_b = (acts_c, acts_x, xb) if direction == "denoise" else (acts_x, acts_c, cb)
    g = plant(fn, keys, mode="add", root=model)
    zeros = {k: mx.zeros_like(tgt[k]) for k in keys}
    grads = mx.grad(lambda z: metric_fn(g(z, tgt_b.tokens, *lead)))(zeros)
    rows, head_counts = [], []
    for key in keys:
        axes = _axes_of(model, key)
        _check_by(by, axes, key)
        contrib = (src[key] - tgt[key]) * grads[key]
        keep = [a for a in ("head", "pos") if a in axes and a in by]
        summed = [i for i, a in enumerate(axes) if a not in keep]
        est = contrib.sum(axis=summed)  # remaining axes in site order
        kept = [a for a in axes if a in keep]
        if kept == ["pos", "head"]:
            est = est.T
        n_heads = tgt[key].shape[axes.index("head")] if "head" in axes else 1
        head_counts.append(n_heads)
        if "head" not in keep:
            est = est[None]
        if "pos" not in keep:
            est = est[..., None]
        rows.append(est)
    values = mx.stack(rows)
    return _shape_result(
        values,
        by,
        keys,
        head_counts,
        cb,
        metric_fn,
        "attribution patching",
        {"clean": m_clean, "corrupted": m_corr, "direction": direction},
    )


# --------------------------------------------------------------------------- path patching


def path_patching(
    model: nn.Module,
    clean: Any,
    corrupted: Any,
    senders: dict[str, Sequence[int] | None],
    receivers: Sequence[str],
    *,
    metric: Callable[[mx.array], mx.array],
    normalize: bool = True,
    tokenizer: Any = None,
) -> float:
    """Effect of the path senders → receivers, everything else frozen to the corrupted run.

    ``senders`` maps per-head sites (``"z.1"``) to the heads that send (None: all heads) or
    whole sites (``"mlp_out.0"``) to None. ``receivers`` are sites whose values are recorded
    in the first pass and planted in the second (``"resid_final"``, ``"q.3"``,
    ``"resid_pre.2"``, ...). Pass 1 runs the corrupted input with the senders' clean values
    and every other head output (``z``) and MLP output frozen to the corrupted run, and
    records the receivers; pass 2 runs the corrupted input with only the receivers planted.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> from mlxinterp.metrics import logit_diff
        >>> clean, corrupt = mx.array([[5, 9, 12, 7]]), mx.array([[5, 9, 40, 7]])
        >>> v = path_patching(tiny_model("llama"), clean, corrupt, {"z.1": [0, 2]},
        ...                   ["resid_final"], metric=logit_diff(3, 4))
        >>> isinstance(v, float)
        True
    """
    an = anatomy(model)
    cb, xb = _inputs(tokenizer, clean, corrupted)
    fn, lead = _runner(model, cb)
    frozen = [f"z.{i}" for i in range(an.n_layers)] + [f"mlp_out.{i}" for i in range(an.n_layers)]
    keys = sorted(set(frozen) | set(senders) | set(receivers))
    clean_logits, acts_c = capture(fn, keys)(cb.tokens, *lead)
    corrupt_logits, acts_x = capture(fn, keys)(xb.tokens, *lead)
    metric_fn, _, _ = _metric_values(metric, clean_logits, corrupt_logits, normalize)
    values = {}
    for key in set(frozen) | set(senders):
        if key in receivers:
            continue
        value = acts_x[key]
        if key in senders:
            heads = senders[key]
            if heads is None:
                value = acts_c[key]
            else:
                axes = _axes_of(model, key)
                if "head" not in axes:
                    raise SiteError(f"sender {key} has no head axis; give None for the site")
                n = acts_c[key].shape[axes.index("head")]
                sel = mx.array([h in set(heads) for h in range(n)])
                shape = [1] * value.ndim
                shape[axes.index("head")] = n
                value = mx.where(sel.reshape(shape), acts_c[key], acts_x[key])
        values[key] = value
    pass1 = capture(plant(fn, list(values), root=model), list(receivers))
    _, recorded = pass1(values, xb.tokens, *lead)
    out = plant(fn, list(receivers), root=model)(recorded, xb.tokens, *lead)
    return float(metric_fn(out))
