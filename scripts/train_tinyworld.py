"""Train tinyworld and write it into the package (src/mlxinterp/models/tinyworld).

    python scripts/train_tinyworld.py [--steps 2200] [--out DIR]

A llama-architecture model (4 layers, d_model 128, 8 heads) trained with AdamW and a
compiled step on text from `mlxinterp.world` (facts, indirect objects, induction, reviews).
Seeded; prints the evaluation figures the tests assert on (`mlxinterp.tinyworld_eval`).
"""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import argparse
import json
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


def config(vocab_size: int, heads: int = 8) -> dict:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--mix", type=float, nargs=4, default=None,
                    help="shares of facts, indirect objects, induction, reviews")
    args = ap.parse_args()

    words = world.vocabulary()
    word_tokenizer_files(words, args.out, add_bos=True, punctuation=True)
    ids = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + words)}
    cfg = config(len(ids), args.heads)

    n_docs = args.steps * args.batch * args.length // 12
    mix = {"mix": tuple(args.mix)} if args.mix else {}
    docs = [[ids[w] for w in s.split()] for s in world.corpus(n_docs, seed=args.seed, **mix)]
    data, mask = pack(docs, args.length)
    print(f"corpus: {len(docs)} documents, {data.shape[0]} windows of {args.length} tokens")

    model = tiny_model(config=cfg, seed=args.seed)
    embed = model.model.embed_tokens
    embed.weight = embed.weight * 0.05  # tied unembedding: start from small logits
    sched = optim.cosine_decay(args.lr, args.steps, end=args.lr * 0.05)
    warm = optim.linear_schedule(1e-5, args.lr, 100)
    opt = optim.AdamW(learning_rate=optim.join_schedules([warm, sched], [100]), weight_decay=0.01)

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
        rows = rng.integers(0, data.shape[0], args.batch)
        x = mx.array(data[rows, :-1])
        y = mx.array(data[rows, 1:])
        m = mx.array(mask[rows, 1:])
        loss = step(x, y, m)
        mx.eval(state)
        if i % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s, final loss {loss.item():.3f}")

    from mlx_lm.utils import save_config, save_model

    save_model(args.out, model)
    save_config(cfg, args.out / "config.json")
    (args.out / "TRAINING.json").write_text(
        json.dumps(
            {
                "steps": args.steps,
                "batch": args.batch,
                "length": args.length,
                "lr": args.lr,
                "seed": args.seed,
                "seconds": round(time.time() - t0),
                "final_loss": loss.item(),
            },
            indent=2,
        )
    )
    from mlxinterp.tinyworld_eval import evaluate

    print(json.dumps(evaluate(str(args.out)), indent=2))


if __name__ == "__main__":
    main()
