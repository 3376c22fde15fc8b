"""Character corpus: vocabulary, encoding, splits, windows."""

from __future__ import annotations

import pytest
import torch

from distlstm.data import SHAKESPEARE_TRAGEDIES, CharVocab, load_text, random_windows, split_ids


def test_shipped_corpus_is_the_tragedies():
    text = load_text(SHAKESPEARE_TRAGEDIES)
    assert len(text) == 1_182_407
    assert len(CharVocab.from_text(text)) == 73


def test_encode_decode_round_trip_and_unknowns():
    vocab = CharVocab.from_text("hello world")
    ids = vocab.encode("hello")
    assert vocab.decode(ids) == "hello"
    with pytest.raises(ValueError, match="outside the vocabulary: 'zé'"):
        vocab.encode("zé")
    assert vocab.decode(vocab.encode("hez", errors="replace")) == "he "


def test_split_is_contiguous():
    ids = torch.arange(100)
    train, val = split_ids(ids, 0.2)
    assert torch.equal(torch.cat([train, val]), ids) and len(val) == 20
    with pytest.raises(ValueError, match="too short"):
        split_ids(torch.arange(3), 0.5)


def test_random_windows_are_shifted_by_one_and_reproducible():
    ids = torch.arange(50)
    x, y = random_windows(ids, 4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(y, x + 1)
    x2, _ = random_windows(ids, 4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="fewer than a window of 60"):
        random_windows(ids, 1, 60, torch.Generator())


def test_empty_or_missing_text(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        load_text(tmp_path / "missing.txt")


def test_decode_takes_lists_and_tensors_and_unknown_symbols_are_listed() -> None:
    vocab = CharVocab.from_text("abc ")
    assert vocab.decode([1, 2]) == vocab.decode(torch.tensor([1, 2])) == "ab"
    assert vocab.unknown_symbols("abxyx") == ["x", "y"]


def test_cell_options_take_one_value_per_layer() -> None:
    import argparse

    from distlstm._argtypes import cell_option

    assert cell_option("groups=4,8") == ("groups", (4, 8))
    assert cell_option("rank=32") == ("rank", 32)
    with pytest.raises(argparse.ArgumentTypeError, match="groups=4,8"):
        cell_option("groups=4,x")
