"""Sampling from a loaded run: the text generated equals the model's own generate(), bad runs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distlstm.data.text import CharVocab
from distlstm.experiments.sampling import sample_text
from distlstm.models.networks import CharLM, SequenceRegressor
from distlstm.modes import LoadedRun


def char_run(text: str = "to be or not to be") -> LoadedRun:
    vocab = CharVocab.from_text(text)
    torch.manual_seed(0)
    model = CharLM(len(vocab), 8)
    return LoadedRun(Path("runs/x"), "es", "es", 3, {}, model, {"kind": "char-lm", "vocab": list(vocab.chars)})


def test_sample_matches_the_models_generate():
    run = char_run()
    vocab = CharVocab.from_text("to be or not to be")
    expected = run.model.generate(vocab.encode("to "), 15, temperature=0.0, generator=torch.Generator().manual_seed(0))
    assert sample_text(run, "to ", 15, temperature=0.0) == "to " + vocab.decode(expected)
    a = sample_text(run, "to ", 15, temperature=1.0, seed=1)
    assert a == sample_text(run, "to ", 15, temperature=1.0, seed=1) and len(a) == 18


def test_sampling_a_run_without_a_language_model_is_refused():
    reg = LoadedRun(Path("runs/r"), "online", "online", 3, {}, SequenceRegressor(1, 2), {})
    with pytest.raises(ValueError, match="trained no language model"):
        sample_text(reg, "x", 3)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        sample_text(char_run(), "zzz", 3)


def test_the_default_prompt_falls_back_to_the_models_vocabulary():
    from distlstm.data.words import WordVocab
    from distlstm.experiments.sampling import DEFAULT_PROMPT, default_prompt

    run = char_run()  # no capitals, no line break: "ROMEO.\n" cannot be encoded
    out = sample_text(run, None, 5, temperature=0.0)
    assert out.startswith(" ") and len(out) == 6  # no line break in the vocabulary: its first symbol
    assert out == sample_text(run, default_prompt(CharVocab.from_text("to be or not to be")), 5, temperature=0.0)
    assert default_prompt(CharVocab.from_text("ROMEO.\nJuliet")) == DEFAULT_PROMPT
    assert default_prompt(CharVocab.from_text("abc\ndef")) == "\n"
    assert default_prompt(WordVocab(("the", "<unk>", "<eol>", "and"))) == "the"
    assert default_prompt(WordVocab(("<unk>", "romeo", ".", "<eol>"))) == DEFAULT_PROMPT
