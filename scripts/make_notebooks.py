"""Write the tutorial notebooks in notebooks/ from the cells below (run after editing).

    python scripts/make_notebooks.py

Keeping the source here keeps the notebooks reviewable as code; CI executes the .ipynb files
(tests/test_notebooks.py).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parents[1] / "notebooks"
SETUP = """import mlxinterp as mi  # first: loads the fast BLAS on Linux
import mlx.core as mx
import matplotlib
matplotlib.use("Agg")
model, tok = mi.load("tinyworld")"""

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", "# Quickstart\nCapture, intervene and plant on the shipped `tinyworld` model."),
        ("code", SETUP),
        ("code", """batch = mi.tokenize(tok, "The capital of France is")
out, acts = mi.capture(model, ["resid_post.*", "pattern.2"])(batch.tokens)
print({k: v.shape for k, v in acts.items()})
print("next token:", tok.decode([int(out[0, -1].argmax())]))"""),
        ("code", """from mlxinterp.interventions import zero
ablated = mi.intervene(model, {"mlp_out.1": zero()})(batch.tokens)
print("after zeroing mlp_out.1:", tok.decode([int(ablated[0, -1].argmax())]))"""),
        ("code", """planted = {"resid_pre.2": acts["resid_post.1"]}
same = mi.plant(model, "resid_pre.2")(planted, batch.tokens)
assert (same == out).all().item()
print(mi.select(model, "model.layers.*.mlp"))"""),
    ],
    "02_lenses.ipynb": [
        ("md", "# Logit lens and tuned lens"),
        ("code", SETUP),
        ("code", """from mlxinterp.lens import logit_lens, TunedLens, tuned_lens, compare_lenses
prompt = "The Eiffel Tower is located in the city of"
ll = logit_lens(model, prompt, tokenizer=tok)
ll.plot()
print([layer[-1] for layer in ll.top_tokens(1)])"""),
        ("code", """from mlxinterp import world
stream = mx.array(tok.encode(" ".join(world.corpus(800, seed=3))))
lens = TunedLens.train(model, stream, steps=100, progress=False)
tl = tuned_lens(model, lens, prompt, tokenizer=tok)
compare_lenses([ll, tl])
print(tl.kl_to_final().mean(axis=(1, 2)))"""),
    ],
    "03_patching.ipynb": [
        ("md", "# Activation patching and attribution patching"),
        ("code", SETUP),
        ("code", """from mlxinterp.patching import activation_patching, attribution_patching
from mlxinterp.metrics import logit_diff
paris, tokyo = tok.encode("Paris Tokyo", add_special_tokens=False)
clean, corrupt = "The capital of France is", "The capital of Japan is"
act = activation_patching(model, clean, corrupt, metric=logit_diff(paris, tokyo),
                          tokenizer=tok, progress=False)
act.plot()
act.top(3)"""),
        ("code", """metric = logit_diff(paris, tokyo)
att = attribution_patching(model, clean, corrupt, metric=metric, tokenizer=tok,
                           component="z", by="layer_head")
att.plot()
att.top(3)"""),
    ],
    "04_steering_and_generation.ipynb": [
        ("md", "# Steering and generation"),
        ("code", SETUP),
        ("code", """from mlxinterp.generation import generate, during
from mlxinterp.steering import steering_vector, steer
v = steering_vector(model, ["The movie was wonderful and the food was",
                           "The book was great and the show was"],
                    ["The movie was terrible and the food was",
                     "The book was awful and the show was"], "resid_post.2", tokenizer=tok)
for s in (-1, 0, 1):
    g = generate(model, tok, "The movie was", max_tokens=6,
                 interventions={"resid_post.2": during(steer(v, s))})
    print(s, g.texts[0])"""),
        ("code", """seen = []
def on_step(step, tokens, acts):
    seen.append(float(mx.linalg.norm(acts["resid_post.3"][0, -1])))
g = generate(model, tok, ["The capital of Italy is", "People in Japan speak"], max_tokens=3,
             capture=["resid_post.3"], on_step=on_step)
print(g.texts, seen)"""),
    ],
    "05_composition_tour.ipynb": [
        ("md", "# vmap, grad and compile through the transforms"),
        ("code", SETUP),
        ("code", """from mlxinterp.interventions import zero
toks = mi.tokenize(tok, "The capital of France is").tokens
sweep = mx.compile(mx.vmap(
    lambda p: mi.intervene(model, {"resid_pre.0": zero().at(positions=p)})(toks)[0, -1]))
print(sweep(mx.arange(toks.shape[1])).argmax(-1))"""),
        ("code", """g = mi.plant(model, ["resid_pre.1", "resid_pre.2"], mode="add")
zeros = {k: mx.zeros((1, toks.shape[1], 128)) for k in g.sites}
paris = tok.encode("Paris", add_special_tokens=False)[0]
grads = mx.grad(lambda z: g(z, toks)[0, -1, paris])(zeros)
print({k: float(mx.linalg.norm(v)) for k, v in grads.items()})"""),
    ],
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                    for kind, src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, OUT / name)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
