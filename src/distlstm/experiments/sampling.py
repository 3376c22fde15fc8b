"""Text from a character-model checkpoint (ES or backprop): ``distlstm sample``."""

from __future__ import annotations

from pathlib import Path

import torch

from distlstm.data.text import CharVocab
from distlstm.models.functional import assign
from distlstm.models.networks import CharLM
from distlstm.runs import load_checkpoint


def load_char_model(path: Path) -> tuple[CharLM, CharVocab]:
    """The model and vocabulary stored in a checkpoint (``theta``, ``config.cell/hidden``, ``vocab``)."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("theta", "config", "vocab") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a character-model checkpoint (missing {missing})")
    vocab = CharVocab.from_text(ckpt["vocab"])
    model = CharLM(len(vocab), int(ckpt["config"]["hidden"]), cell=str(ckpt["config"]["cell"]))
    assign(model, ckpt["theta"].to(next(model.parameters()).dtype))
    return model.eval(), vocab


def sample_text(path: Path, prompt: str, length: int, temperature: float = 0.8, seed: int = 0) -> str:
    """``prompt`` followed by ``length`` sampled characters."""
    if not prompt:
        raise ValueError("the prompt must hold at least one character")
    model, vocab = load_char_model(path)
    ids = vocab.encode(prompt)  # strict: characters outside the vocabulary are an error
    out = model.generate(ids, length, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return prompt + vocab.decode(out)
