"""Lenses: what each layer "believes" the next token is.

The **logit lens** decodes the residual stream after each layer with the model's own final
norm and unembedding. It is one capture and one vectorised unembedding of the stacked
residuals — no per-layer or per-position loop.

The **tuned lens** (Belrose et al., 2023) first maps each layer's residual through a learned
affine *translator* ``h + A h + b`` (initialised to the identity: ``A = 0, b = 0``), trained
to minimise ``KL(final distribution ‖ lens distribution)``. See `TunedLens.train`.

Both return a `LensResult`: log-probabilities ``(layer, batch, pos, vocab)``, top-k tokens,
``prob_of``, ``kl_to_final``, ``top1_agreement``, ``plot()`` and ``to_numpy()``. Rows are
``embed`` (the input of block 0) and ``resid_post.L`` for each block; the last row is the
model's own output distribution.

Example:
    >>> from mlxinterp.loading import load
    >>> model, tok = load("tinyworld")
    >>> lens = logit_lens(model, "The Eiffel Tower is located in the city of", tokenizer=tok)
    >>> lens.layers[-1], lens.top_tokens(k=1)[-1][-1]  # last layer, last position
    ('resid_post.3', ['Paris'])
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .anatomy import Anatomy, anatomy
from .text import Batch, as_batch, masked, to_str_tokens
from .transforms import capture

__all__ = ["LensResult", "TunedLens", "logit_lens", "tuned_lens", "compare_lenses"]


def lens_sites(an: Anatomy) -> list[str]:
    """The residual-stream points a lens reads: ``resid_pre.0`` then each ``resid_post.L``."""
    return ["resid_pre.0"] + [f"resid_post.{i}" for i in range(an.n_layers)]


def _labels(an: Anatomy) -> list[str]:
    return ["embed"] + [f"resid_post.{i}" for i in range(an.n_layers)]


def _forward_residuals(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """(stacked residuals ``(layer, batch, pos, d)``, the model's logits)."""
    an = anatomy(model)
    sites = lens_sites(an)
    fn = masked(model) if not batch.mask.all().item() else None
    if fn is None:
        out, acts = capture(model, sites)(batch.tokens)
    else:
        out, acts = capture(fn, sites)(batch.tokens, batch.mask)
    return mx.stack([acts[s] for s in sites]), out


@dataclass(frozen=True)
class LensResult:
    """Lens read-out with named axes ``(layer, batch, pos, vocab)``."""

    logprobs: mx.array
    layers: list[str]
    str_tokens: list[list[str]]
    tokenizer: Any = field(default=None, repr=False)
    name: str = "logit lens"

    axes = ("layer", "batch", "pos", "vocab")

    def to_numpy(self) -> np.ndarray:
        return np.array(self.logprobs)

    @property
    def final(self) -> mx.array:
        """The model's own log-probabilities (the last row)."""
        return self.logprobs[-1]

    def top_k(self, k: int = 5) -> tuple[mx.array, mx.array]:
        """(ids, probabilities) of the ``k`` most likely tokens: ``(layer, batch, pos, k)``."""
        ids = mx.argsort(-self.logprobs, axis=-1)[..., :k]
        return ids, mx.exp(mx.take_along_axis(self.logprobs, ids, axis=-1))

    def top_tokens(self, k: int = 1, batch: int = 0) -> list[list[list[str]]]:
        """Strings of the top-``k`` tokens, nested ``[layer][pos][k]`` for one batch row."""
        ids, _ = self.top_k(k)
        ids = np.array(ids[:, batch])
        return [[self._decode(row) for row in layer] for layer in ids]

    def _decode(self, ids: Iterable[int]) -> list[str]:
        if self.tokenizer is None:
            return [str(int(i)) for i in ids]
        return to_str_tokens(self.tokenizer, [int(i) for i in ids])

    def _token_id(self, token: int | str) -> int:
        if isinstance(token, int):
            return token
        if self.tokenizer is None:
            raise ValueError("a token string needs the tokenizer: pass tokenizer= to the lens")
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens ({ids}); give one token or an id")
        return ids[0]

    def prob_of(self, token: int | str) -> mx.array:
        """Probability of ``token`` at every layer and position: ``(layer, batch, pos)``."""
        return mx.exp(self.logprobs[..., self._token_id(token)])

    def kl_to_final(self) -> mx.array:
        """``KL(final ‖ layer)`` per layer, position-averaged: ``(layer, batch, pos)``."""
        p = self.final
        return (mx.exp(p) * (p - self.logprobs)).sum(axis=-1)

    def top1_agreement(self) -> mx.array:
        """Fraction of positions where each layer's top-1 token is the final one: ``(layer,)``."""
        agree = self.logprobs.argmax(-1) == self.final.argmax(-1)
        return agree.astype(mx.float32).mean(axis=(1, 2))

    def plot(self, batch: int = 0, ax: Any = None, max_positions: int = 24):
        """Heatmap of the top-1 token's probability over layers × positions, each cell
        labelled with that token (needs matplotlib)."""
        import matplotlib.pyplot as plt

        ids, probs = self.top_k(1)
        probs = np.array(probs[:, batch, -max_positions:, 0])
        words = [[w[0] for w in layer] for layer in self.top_tokens(1, batch)]
        words = [row[-max_positions:] for row in words]
        n_layers, n_pos = probs.shape
        if ax is None:
            _, ax = plt.subplots(figsize=(1.1 * n_pos + 2, 0.45 * n_layers + 1.5))
        im = ax.imshow(probs, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower")
        for i in range(n_layers):
            for j in range(n_pos):
                ax.text(
                    j,
                    i,
                    words[i][j][:8],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if probs[i, j] > 0.6 else "black",
                )
        ax.set_yticks(range(n_layers), self.layers, fontsize=7)
        inputs = self.str_tokens[batch][-max_positions:] if self.str_tokens else []
        ax.set_xticks(range(len(inputs)), inputs, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{self.name}: top-1 prediction and its probability")
        ax.figure.colorbar(im, ax=ax, fraction=0.03)
        ax.figure.tight_layout()
        return ax


def _select(res: mx.array, layers: Sequence[int] | None, positions: Any) -> mx.array:
    if layers is not None:
        res = res[mx.array(list(layers))]
    if positions is not None:
        idx = [positions] if isinstance(positions, int) else list(positions)
        res = res[:, :, mx.array(idx)]
    return res


def logit_lens(
    model: nn.Module,
    text_or_tokens: Any,
    *,
    tokenizer: Any = None,
    layers: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
) -> LensResult:
    """Decode every layer's residual stream with the final norm and unembedding.

    ``layers`` indexes the rows (0 = embed, L + 1 = after block L); ``positions`` selects
    positions. Text needs ``tokenizer``; a list of texts is left-padded and masked.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> import mlx.core as mx
        >>> lens = logit_lens(tiny_model("llama"), mx.array([[3, 4, 5]]), positions=-1)
        >>> lens.layers, lens.logprobs.shape
        (['embed', 'resid_post.0', 'resid_post.1', 'resid_post.2'], (4, 1, 1, 64))
    """
    an = anatomy(model)
    batch = as_batch(tokenizer, text_or_tokens)
    res, _ = _forward_residuals(model, batch)
    labels = _labels(an)
    res = _select(res, layers, positions)
    labels = [labels[i] for i in layers] if layers is not None else labels
    logits = an.unembed(an.final_norm(res))
    strs = batch.str_tokens
    if positions is not None:
        idx = [positions] if isinstance(positions, int) else list(positions)
        strs = [[row[i] for i in idx] for row in strs]
    return LensResult(nn.log_softmax(logits.astype(mx.float32), axis=-1), labels, strs, tokenizer)


# --------------------------------------------------------------------------------- tuned lens


class TunedLens(nn.Module):
    """One affine translator per layer (``h + W h + b``, identity at init), then the model's
    final norm and unembedding. The last row (the model's output) has no translator."""

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.n_layers = n_layers
        self.d_model = d_model
        self.weight = mx.zeros((n_layers, d_model, d_model))
        self.bias = mx.zeros((n_layers, d_model))

    @classmethod
    def for_model(cls, model: nn.Module) -> TunedLens:
        """An identity-initialised lens sized for ``model`` (rows: embed + all but the last
        block output)."""
        an = anatomy(model)
        return cls(an.n_layers, an.d_model)

    def translate(self, res: mx.array) -> mx.array:
        """Translate stacked residuals ``(n_layers + 1, ..., d)``; the last row passes."""
        head = res[:-1]
        flat = head.reshape(self.n_layers, -1, self.d_model)  # one GEMM per layer
        moved = flat + flat @ self.weight.swapaxes(-1, -2) + self.bias[:, None, :]
        return mx.concatenate([moved.reshape(head.shape), res[-1:]], axis=0)

    def logprobs(self, model: nn.Module, res: mx.array) -> mx.array:
        an = anatomy(model)
        logits = an.unembed(an.final_norm(self.translate(res.astype(self.weight.dtype))))
        return nn.log_softmax(logits.astype(mx.float32), axis=-1)

    # ------------------------------------------------------------------ persistence

    def identity(self, model: nn.Module) -> dict[str, Any]:
        an = anatomy(model)
        emb = an.model.parameters()
        first = tree_flatten(emb)[0][1]
        fingerprint = float(np.array(first.reshape(-1)[:256].astype(mx.float32)).sum())
        return {
            "arch": an.arch,
            "n_layers": an.n_layers,
            "d_model": an.d_model,
            "d_vocab": an.d_vocab,
            "fingerprint": round(fingerprint, 4),
        }

    def save(self, path: str | Path, model: nn.Module) -> Path:
        """Write ``lens.safetensors`` and ``lens.json`` (the model's identity and shapes)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path / "lens.safetensors"), dict(tree_flatten(self.parameters())))
        (path / "lens.json").write_text(json.dumps({"model": self.identity(model)}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> TunedLens:
        """Load a saved lens for ``model``; another model shape raises ``ValueError``."""
        path = Path(path)
        meta = json.loads((path / "lens.json").read_text())["model"]
        lens = cls.for_model(model)
        mine = lens.identity(model)
        shape_keys = ("n_layers", "d_model", "d_vocab")
        if any(meta[k] != mine[k] for k in shape_keys):
            raise ValueError(
                f"lens in {path} was trained for {meta['arch']} with "
                + ", ".join(f"{k}={meta[k]}" for k in shape_keys)
                + f"; this model is {mine['arch']} with "
                + ", ".join(f"{k}={mine[k]}" for k in shape_keys)
            )
        if meta["fingerprint"] != mine["fingerprint"]:
            warnings.warn(
                f"lens in {path} was trained on a model with other weights (same shapes)",
                stacklevel=2,
            )
        lens.load_weights(str(path / "lens.safetensors"))
        return lens

    # ------------------------------------------------------------------ training

    @staticmethod
    def train(
        model: nn.Module,
        data: mx.array,
        *,
        steps: int = 500,
        batch_size: int = 8,
        seq_len: int = 32,
        optimizer: optim.Optimizer | None = None,
        clip: float = 1.0,
        seed: int = 0,
        compile: bool = True,
        lens: TunedLens | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 100,
        resume: bool = False,
        progress: bool = True,
    ) -> TunedLens:
        """Train a tuned lens on a token stream ``data`` (1-D token ids) for ``steps`` steps.

        Each step samples ``batch_size`` windows of ``seq_len`` tokens (deterministic in
        ``seed`` and the step number, so a resumed run continues the same run), captures the
        residuals with the model frozen, and minimises the mean over layers, positions and
        windows of ``KL(final ‖ lens)``. Gradients are clipped to norm ``clip``; a NaN or
        infinite loss stops training with an error instead of applying the update. With
        ``checkpoint_dir``, the lens and optimizer state are saved every ``checkpoint_every``
        steps and ``resume=True`` continues from the last checkpoint there.

        Example:
            >>> from mlxinterp.testing import tiny_model
            >>> import mlx.core as mx
            >>> model = tiny_model("llama")
            >>> stream = mx.random.randint(3, 60, (400,), key=mx.random.key(0))
            >>> lens = TunedLens.train(model, stream, steps=3, progress=False)
            >>> lens.weight.shape
            (3, 32, 32)
        """
        from tqdm.auto import tqdm

        data = mx.array(data).reshape(-1)
        if data.size <= seq_len + 1:
            raise ValueError(f"data has {data.size} tokens; need more than seq_len={seq_len}")
        lens = lens or TunedLens.for_model(model)
        opt = optimizer or optim.Adam(learning_rate=1e-3)
        start = 0
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if resume:
            if ckpt is None or not (ckpt / "state.json").exists():
                raise FileNotFoundError(f"no checkpoint to resume in {ckpt}")
            start = _load_checkpoint(ckpt, lens, opt, model)
        step_fn = make_train_step(model, lens, opt, clip=clip, compile=compile)
        bar = tqdm(
            range(start, steps), desc="tuned lens", disable=not progress, initial=start, total=steps
        )
        for step in bar:
            x = _windows(data, step, seed, batch_size, seq_len)
            loss = step_fn(x)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"tuned-lens loss became {loss} at step {step}; the update was not applied."
                    " Lower the learning rate or the clip norm, or resume from a checkpoint."
                )
            if progress and step % 10 == 0:
                bar.set_postfix(kl=f"{loss:.4f}")
            if ckpt is not None and (step + 1) % checkpoint_every == 0:
                _save_checkpoint(ckpt, lens, opt, model, step + 1)
        return lens


def _windows(data: mx.array, step: int, seed: int, batch: int, seq_len: int) -> mx.array:
    key = mx.random.key(seed * 1_000_003 + step)
    starts = mx.random.randint(0, data.size - seq_len, (batch,), key=key)
    return data[starts[:, None] + mx.arange(seq_len)[None, :]]


def kl_final_vs_lens(lens: TunedLens, model: nn.Module, res: mx.array, final: mx.array):
    """Mean over layers (all but the last), windows and positions of KL(final ‖ lens)."""
    lp = lens.logprobs(model, res)[:-1]
    return (mx.exp(final) * (final - lp)).sum(axis=-1).mean()


def make_train_step(model, lens, opt, *, clip: float = 1.0, compile: bool = True):
    """``step(tokens) -> loss``: one tuned-lens update (compiled unless ``compile=False``).

    The expensive part — model forward with capture, lens forward and backward — is one
    compiled call with the lens and optimizer state as inputs/outputs; a non-finite loss
    leaves lens and optimizer state untouched (the update is computed, then discarded by
    ``mx.where``), and `TunedLens.train` stops with an error.
    """
    sites = lens_sites(anatomy(model))
    g = capture(model, sites, detach=True)

    def loss_fn(lens_params, res, final):
        lens.update(lens_params)
        return kl_final_vs_lens(lens, model, res, final)

    def step(x):
        out, acts = g(x)
        res = mx.stack([acts[s] for s in sites])
        final = mx.stop_gradient(nn.log_softmax(out.astype(mx.float32), axis=-1))
        params = lens.trainable_parameters()
        loss, grads = mx.value_and_grad(loss_fn)(params, res, final)
        grads, _ = optim.clip_grad_norm(grads, clip)
        ok = mx.isfinite(loss)
        old_state = tree_map(lambda a: a, opt.state)  # same arrays, a structure of our own
        new = opt.apply_gradients(grads, params)  # updates opt.state in place
        lens.update(tree_map_where(ok, new, params))
        _assign_where(ok, opt.state, old_state)
        return loss

    opt.init(lens.trainable_parameters())  # fills in missing state only
    state = [lens.state, opt.state]
    compiled = mx.compile(step, inputs=state, outputs=state) if compile else step

    def run(x):
        loss = compiled(x)
        mx.eval(state, loss)
        return loss.item()

    return run


def tree_map_where(ok: mx.array, new: Any, old: Any) -> Any:
    return tree_map(lambda a, b: mx.where(ok, a, b), new, old)


def _assign_where(ok: mx.array, target: Any, old: Any) -> None:
    """In place: ``target[k] = where(ok, target[k], old[k])`` through nested dicts/lists
    (compile tracks the optimizer's own state containers, so they must not be replaced)."""
    keys = target.keys() if isinstance(target, dict) else range(len(target))
    for k in keys:
        if isinstance(target[k], (dict, list)):
            _assign_where(ok, target[k], old[k])
        elif isinstance(target[k], mx.array):
            target[k] = mx.where(ok, target[k], old[k])


def _save_checkpoint(folder: Path, lens: TunedLens, opt, model, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lens.save(folder, model)
    opt_state = dict(tree_flatten(opt.state))
    mx.save_safetensors(str(folder / "optimizer.safetensors"), opt_state)
    (folder / "state.json").write_text(json.dumps({"step": step, "time": time.time()}))


def _load_checkpoint(folder: Path, lens: TunedLens, opt, model) -> int:
    loaded = TunedLens.load(folder, model)
    lens.update(loaded.parameters())
    opt.state = tree_unflatten(list(mx.load(str(folder / "optimizer.safetensors")).items()))
    return int(json.loads((folder / "state.json").read_text())["step"])


def tuned_lens(
    model: nn.Module,
    lens: TunedLens,
    text_or_tokens: Any,
    *,
    tokenizer: Any = None,
) -> LensResult:
    """Read the residual stream through a trained `TunedLens`; same result as `logit_lens`.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> import mlx.core as mx
        >>> model = tiny_model("gpt2")
        >>> lens = TunedLens.for_model(model)  # identity translators: equals the logit lens
        >>> t = tuned_lens(model, lens, mx.array([[3, 4, 5]]))
        >>> bool(mx.allclose(t.logprobs, logit_lens(model, mx.array([[3, 4, 5]])).logprobs))
        True
    """
    an = anatomy(model)
    batch = as_batch(tokenizer, text_or_tokens)
    res, _ = _forward_residuals(model, batch)
    return LensResult(
        lens.logprobs(model, res), _labels(an), batch.str_tokens, tokenizer, name="tuned lens"
    )


def compare_lenses(results: Sequence[LensResult], ax: Any = None):
    """Plot per-layer mean KL to the final distribution for several lens results.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from mlxinterp.testing import tiny_model
        >>> import mlx.core as mx
        >>> ll = logit_lens(tiny_model("llama"), mx.array([[3, 4, 5]]))
        >>> len(compare_lenses([ll]).lines)
        1
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for r in results:
        kl = np.array(r.kl_to_final().mean(axis=(1, 2)))
        ax.plot(range(len(kl)), kl, marker="o", label=r.name)
    ax.set_xticks(
        range(len(results[0].layers)), results[0].layers, rotation=45, ha="right", fontsize=7
    )
    ax.set_ylabel("KL(final ‖ lens) [nats]")
    ax.legend()
    ax.figure.tight_layout()
    return ax
