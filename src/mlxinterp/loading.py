"""Loading models: hub names, local folders, and the shipped ``tinyworld``.

`load` goes through ``mlx_lm.load`` (quantized models included), so anything mlx-lm loads,
this loads. Before that it checks a local folder for the files mlx-lm needs and names the
one that is missing, and turns a failed hub download into an error that says how to point
at a local copy instead.

Example:
    >>> model, tokenizer = load("tinyworld")
    >>> tokenizer.decode(tokenizer.encode("The capital of France is", add_special_tokens=False))
    'The capital of France is'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.nn as nn

__all__ = ["load", "TINYWORLD", "ModelLoadError"]

TINYWORLD = Path(__file__).resolve().parent / "models" / "tinyworld"
"""The folder of the shipped tinyworld model (an mlx-lm model folder)."""

_SHIPPED = {"tinyworld": TINYWORLD}


class ModelLoadError(OSError):
    """A model could not be loaded; the message says what is missing and what to do."""


def check_model_folder(folder: Path) -> None:
    """Raise `ModelLoadError` naming the first file mlx-lm needs that ``folder`` lacks."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: missing config.json (the model's configuration)")
    if not list(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder}: missing model weights (no *.safetensors file)")
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
    if not has_tokenizer:
        raise ModelLoadError(
            f"{folder}: missing tokenizer.json (or tokenizer.model): the tokenizer files"
        )
    if not (folder / "tokenizer_config.json").is_file():
        raise ModelLoadError(f"{folder}: missing tokenizer_config.json")


def load(name_or_path: str | Path, **kwargs: Any) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a hub name, a local folder, or ``"tinyworld"`` (offline).

    Extra keyword arguments go to ``mlx_lm.load`` (``tokenizer_config=``, ``lazy=``, ...).

    Example:
        >>> import tempfile
        >>> from mlxinterp.testing import save_tiny_model
        >>> model, tokenizer = load(save_tiny_model("llama", tempfile.mkdtemp()))
        >>> type(model).__module__, tokenizer.decode(tokenizer.encode("w1 w2"))
        ('mlx_lm.models.llama', 'w1 w2')
    """
    import mlx_lm

    key = str(name_or_path)
    path = _SHIPPED.get(key, Path(key).expanduser())
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; give the model's folder")
        check_model_folder(path)
        model, tokenizer = mlx_lm.load(str(path), **kwargs)
        model.eval()
        return model, tokenizer
    if key.startswith((".", "/", "~")) or key.count("/") != 1:
        raise ModelLoadError(
            f"{key!r} is neither a local folder nor a hub name of the form 'owner/name' "
            f"(shipped models: {', '.join(_SHIPPED)})"
        )
    try:
        model, tokenizer = mlx_lm.load(key, **kwargs)
    except Exception as e:  # hub errors come in many types
        raise ModelLoadError(
            f"could not fetch {key!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"On a machine with network access run `huggingface-cli download {key} "
            "--local-dir DIR`, copy DIR here and call load(DIR)."
        ) from e
    model.eval()
    return model, tokenizer
