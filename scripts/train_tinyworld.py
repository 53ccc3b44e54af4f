"""Train tinyworld and write it into the package (src/mlxinterp/models/tinyworld).

    python scripts/train_tinyworld.py [--steps 2400] [--out DIR] [--help for the rest]

A llama-architecture model (4 layers, d_model 128, 4 heads) trained with AdamW and a
compiled step on text from `mlxinterp.world` (facts, indirect objects, induction, reviews).

Induction heads form late (a phase change after a long plateau at "copy any earlier word").
To bring it forward, a share min(1, boost × (1 − step / boost_steps)) of each batch comes
from induction documents only: with the defaults (2.0, 600) all of it for 300 steps, then
falling to 0 at step 600; afterwards the corpus mix alone. With AdamW β2 = 0.95 and repeat
distances of 3–22 words the shipped run's induction head formed around step 900.

Seeded; every ``--eval-every`` steps it prints quick figures, and at the end the evaluation
figures the tests assert on (`mlxinterp.tinyworld_eval`).
"""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import argparse
import json
import random
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from tqdm import tqdm

from mlxinterp import world
from mlxinterp.testing import tiny_model, word_tokenizer_files

OUT = Path(__file__).resolve().parents[1] / "src" / "mlxinterp" / "models" / "tinyworld"
BOS, EOS = 1, 2


def config(vocab_size: int, heads: int = 4) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "intermediate_size": 512,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 128,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
    }


def pack(docs: list[list[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy-pack documents into BOS-led windows; the loss mask hides the padding."""
    rows, masks, cur = [], [], [BOS]
    for d in docs:
        if len(cur) + len(d) > length + 1:
            rows.append(cur + [EOS] * (length + 1 - len(cur)))
            masks.append([1] * len(cur) + [0] * (length + 1 - len(cur)))
            cur = [BOS]
        cur = cur + d
    return np.array(rows, dtype=np.int32), np.array(masks, dtype=np.float32)


class _WordIds:
    """The word tokenizer as the evaluation needs it, before its files are loaded."""

    def __init__(self, ids: dict[str, int]):
        self.ids = ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [BOS] * add_special_tokens + [self.ids[w] for w in text.split()]


def quick_figures(model, ids: dict[str, int]) -> str:
    """Induction ratio (15 sequences, 6–20 words) and held-out indirect objects (every 4th)."""
    from mlxinterp.tinyworld_eval import heldout_ioi_prompts, induction_losses, top1

    tok = _WordIds(ids)
    first, second = induction_losses(model, tok, n=15)
    prompts = heldout_ioi_prompts()[::4]
    ioi = sum(top1(model, tok, prompts)) / len(prompts)
    return f"induction {second:.2f}/{first:.2f} = {second / first:.3f}, ioi {ioi:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mix", type=float, nargs=4, default=[0.25, 0.35, 0.25, 0.15],
                    help="shares of facts, indirect objects, induction, reviews")
    ap.add_argument("--beta2", type=float, default=0.95, help="AdamW's second-moment decay")
    ap.add_argument("--boost", type=float, default=2.0,
                    help="share of induction-only rows at step 0 (capped at 1)")
    ap.add_argument("--boost-steps", type=int, default=600,
                    help="steps over which that share falls to 0")
    ap.add_argument("--eval-every", type=int, default=200)
    args = ap.parse_args()

    words = world.vocabulary()
    word_tokenizer_files(words, args.out, add_bos=True, punctuation=True)
    ids = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + words)}
    cfg = config(len(ids), args.heads)

    n_docs = args.steps * args.batch * args.length // 12
    corpus = world.corpus(n_docs, seed=args.seed, mix=tuple(args.mix))
    docs = [[ids[w] for w in s.split()] for s in corpus]
    data, mask = pack(docs, args.length)
    print(f"corpus: {len(docs)} documents, {data.shape[0]} windows of {args.length} tokens")
    irng = random.Random(args.seed + 1)
    n_boost = int(min(1.0, args.boost) * args.boost_steps * args.batch) + 1
    idocs = [world.induction_document(irng).split() for _ in range(n_boost)]
    idata, imask = pack([[ids[w] for w in d] for d in idocs], args.length)

    model = tiny_model(config=cfg, seed=args.seed)
    embed = model.model.embed_tokens
    embed.weight = embed.weight * 0.05  # tied unembedding: start from small logits
    sched = optim.cosine_decay(args.lr, args.steps, end=args.lr * 0.05)
    warm = optim.linear_schedule(1e-5, args.lr, 100)
    lr = optim.join_schedules([warm, sched], [100])
    opt = optim.AdamW(learning_rate=lr, weight_decay=0.01, betas=[0.9, args.beta2])

    def loss_fn(model, x, y, m):
        logits = model(x)
        ce = nn.losses.cross_entropy(logits, y, reduction="none")
        return (ce * m).sum() / m.sum()

    state = [model.state, opt.state]

    def step(x, y, m):
        loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y, m)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="train", mininterval=5)
    for i in bar:
        left = max(0.0, 1 - i / args.boost_steps) if args.boost_steps else 0.0
        share = min(1.0, args.boost * left)
        k = int(round(share * args.batch))
        rows = rng.integers(0, data.shape[0], args.batch - k)
        irows = rng.integers(0, idata.shape[0], k)
        xy = np.concatenate([data[rows], idata[irows]])
        m = mx.array(np.concatenate([mask[rows], imask[irows]])[:, 1:])
        loss = step(mx.array(xy[:, :-1]), mx.array(xy[:, 1:]), m)
        mx.eval(state)
        if i % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if args.eval_every and (i + 1) % args.eval_every == 0:
            bar.write(f"step {i + 1}: " + quick_figures(model, ids))
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s, final loss {loss.item():.3f}")

    from mlx_lm.utils import save_config, save_model

    save_model(args.out, model)
    save_config(cfg, args.out / "config.json")
    from mlxinterp.tinyworld_eval import evaluate

    record = {
        "steps": args.steps,
        "batch": args.batch,
        "length": args.length,
        "lr": args.lr,
        "seed": args.seed,
        "heads": args.heads,
        "mix": args.mix,
        "beta2": args.beta2,
        "boost": args.boost,
        "boost_steps": args.boost_steps,
        "seconds": round(time.time() - t0),
        "final_loss": round(loss.item(), 4),
        "figures": {k: round(v, 4) for k, v in evaluate(str(args.out)).items()},
    }
    (args.out / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["figures"], indent=2))


if __name__ == "__main__":
    main()
