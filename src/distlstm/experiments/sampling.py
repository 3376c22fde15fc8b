"""Text from a language-model run: ``distlstm sample --run FOLDER``.

Every mode that trains a language model (``distlstm train --task char-lm|word-lm``,
``distlstm es``, the reproductions' runs) stores, in the one checkpoint format, the
model's state dict and the artifacts ``{"kind": "char-lm"|"word-lm", "vocab": ...}``;
:func:`~distlstm.modes.load_run` rebuilds the model, and this module turns a prompt
into ids, generates, and decodes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distlstm._flags import option
from distlstm.data.text import CharVocab
from distlstm.data.words import EOL, UNKNOWN, WordVocab
from distlstm.models.networks import CharLM, WordLM
from distlstm.modes import LoadedRun, load_run

UNKNOWN_POLICIES = ("error", "replace")
DEFAULT_PROMPT = "ROMEO.\n"  # the shipped corpora's speaker line


def default_prompt(vocab: CharVocab | WordVocab) -> str:
    """:data:`DEFAULT_PROMPT` when the vocabulary holds all of it, else a symbol of the model's own vocabulary.

    A model trained on another text may lack "R" or "romeo": a line break (a character
    model) or the most frequent known word (a word model, whose vocabulary is ranked)
    starts it instead of an error about a prompt the user never gave.
    """
    if not vocab.unknown_symbols(DEFAULT_PROMPT):
        return DEFAULT_PROMPT
    if isinstance(vocab, WordVocab):
        return next(w for w in vocab.words if w not in (UNKNOWN, EOL))
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def language_model(run: LoadedRun) -> tuple[CharLM | WordLM, CharVocab | WordVocab]:
    """The model (in eval mode) and vocabulary of a language-model run."""
    kind = run.artifacts.get("kind")
    vocab = run.artifacts.get("vocab")
    if kind not in ("char-lm", "word-lm") or vocab is None or not isinstance(run.model, CharLM | WordLM):
        raise ValueError(f"{run.folder} is a {run.command!r} run ({run.mode} mode) that trained no language model; "
                         "sample from a run of distlstm train --task char-lm or word-lm, or of distlstm es")
    if kind == "char-lm":
        return run.model.eval(), CharVocab.from_text("".join(vocab))
    return run.model.eval(), WordVocab(tuple(vocab))


def load_language_model(folder: str | Path) -> tuple[CharLM | WordLM, CharVocab | WordVocab]:
    """The model and vocabulary of the language-model run in ``folder`` (or of one of its checkpoint files)."""
    return language_model(load_run(folder))


def sample_text(run: str | Path | LoadedRun, prompt: str | None, length: int, temperature: float = 0.8, seed: int = 0,
                unknown: str = "error") -> str:
    """``prompt`` followed by ``length`` generated characters or words.

    ``run`` is a run folder (or a checkpoint file in one) or a loaded run.
    ``temperature=0`` decodes greedily. Prompt symbols outside the vocabulary are an
    error with ``unknown="error"``; ``"replace"`` maps them to the unknown symbol.
    ``prompt=None`` starts from :func:`default_prompt`.
    """
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    if prompt is not None and not prompt:
        raise ValueError(f"the prompt must hold at least one character (fix {option('prompt', '--prompt')})")
    model, vocab = language_model(run if isinstance(run, LoadedRun) else load_run(run))
    prompt = default_prompt(vocab) if prompt is None else prompt
    words = isinstance(vocab, WordVocab)
    what, stand_in = ("words", UNKNOWN) if words else ("characters", getattr(vocab, "unknown", ""))
    missing = vocab.unknown_symbols(prompt)
    if missing and unknown == "error":
        raise ValueError(f"the prompt holds {what} outside the model's vocabulary: {missing[:10]}; change "
                         f"{option('prompt', '--prompt')}, or --unknown replace (unknown='replace') maps them to "
                         f"{stand_in!r}")
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
