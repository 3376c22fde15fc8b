"""Text from a language-model checkpoint: ``distlstm sample``.

Two checkpoint layouts are read:

* ``distlstm train`` (char-lm, word-lm): the model's state dict under ``model`` and
  ``language_model = {"kind", "vocab", "config", "dtype"}``, the constructor arguments
  of :class:`CharLM` or :class:`WordLM` and the vocabulary;
* ``distlstm es`` and the reproductions' character models: a flat ``theta`` with
  ``config = {"cell", "hidden"}`` and ``vocab`` (the characters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distlstm.data.text import CharVocab
from distlstm.data.words import UNKNOWN, WordVocab
from distlstm.models.functional import assign
from distlstm.models.networks import CharLM, WordLM
from distlstm.runs import load_checkpoint

UNKNOWN_POLICIES = ("error", "replace")


def load_language_model(path: Path) -> tuple[CharLM | WordLM, CharVocab | WordVocab]:
    """The model (in eval mode) and vocabulary stored in a checkpoint of either layout."""
    ckpt = load_checkpoint(path)
    spec: dict[str, Any] | None = ckpt.get("language_model")
    if spec is not None:
        if spec.get("kind") == "char-lm":
            model: CharLM | WordLM = CharLM(**spec["config"])
            vocab: CharVocab | WordVocab = CharVocab.from_text(spec["vocab"])
        elif spec.get("kind") == "word-lm":
            model, vocab = WordLM(**spec["config"]), WordVocab(tuple(spec["vocab"]))
        else:
            raise ValueError(f"{path}: unknown language-model kind {spec.get('kind')!r}")
        model.to(getattr(torch, spec.get("dtype", "float32"))).load_state_dict(ckpt["model"])
        return model.eval(), vocab
    missing = [k for k in ("theta", "config", "vocab") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a language-model checkpoint (no 'language_model' entry, and missing "
                         f"{missing} of the ES layout); sample from a checkpoint of distlstm train --task char-lm "
                         "or word-lm, distlstm es or a reproduction")
    chars = CharVocab.from_text(ckpt["vocab"])
    char_model = CharLM(len(chars), int(ckpt["config"]["hidden"]), cell=str(ckpt["config"]["cell"]))
    assign(char_model, ckpt["theta"].to(next(char_model.parameters()).dtype))
    return char_model.eval(), chars


def sample_text(path: Path, prompt: str, length: int, temperature: float = 0.8, seed: int = 0,
                unknown: str = "error") -> str:
    """``prompt`` followed by ``length`` generated characters or words.

    ``temperature=0`` decodes greedily. Prompt symbols outside the vocabulary are an
    error with ``unknown="error"``; ``"replace"`` maps them to the unknown symbol.
    """
    model, vocab = load_language_model(path)
    return generate_text(model, vocab, prompt, length, temperature, seed, unknown)


def generate_text(model: CharLM | WordLM, vocab: CharVocab | WordVocab, prompt: str, length: int,
                  temperature: float = 0.8, seed: int = 0, unknown: str = "error") -> str:
    """``prompt`` followed by ``length`` characters or words that ``model`` generates (see :func:`sample_text`)."""
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    if not prompt:
        raise ValueError("the prompt must hold at least one character")
    words = isinstance(vocab, WordVocab)
    what, stand_in = ("words", UNKNOWN) if words else ("characters", getattr(vocab, "unknown", ""))
    missing = vocab.unknown_symbols(prompt)
    if missing and unknown == "error":
        raise ValueError(f"the prompt holds {what} outside the model's vocabulary: {missing[:10]}; "
                         f"--unknown replace (unknown='replace') maps them to {stand_in!r}")
    ids = vocab.encode(prompt, errors="replace")
    if words:
        assert isinstance(vocab, WordVocab)
        if len(ids) == 0:
            raise ValueError(f"the prompt {prompt!r} holds no word or punctuation token")
        if bool((ids == vocab.unknown_id).all()):
            raise ValueError(f"every word of the prompt {prompt!r} is outside the model's vocabulary "
                             f"({missing[:10]}); give at least one known word")
    out = model.generate(ids, length, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    if not words:
        return prompt + vocab.decode(out)
    sep = "" if prompt.endswith(("\n", " ")) else " "
    return prompt + sep + vocab.decode(out)
