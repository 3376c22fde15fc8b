"""Tokenizer, vocabulary cut-off and the split of the complete works by play."""

from pathlib import Path

import pytest
import torch

from distlstm.data.words import (
    EOL,
    SHAKESPEARE_COMPLETE,
    UNKNOWN,
    WordVocab,
    load_word_corpus,
    split_by_work,
    split_works,
    tokenize,
)


def test_tokenizer_lowercases_keeps_inner_apostrophes_and_marks_line_ends() -> None:
    text = "KING.\nO'er the Hill--liv'd, 'tis 2 days!\r\n\n  \nEnd"
    assert tokenize(text) == ["king", ".", EOL, "o'er", "the", "hill", "--", "liv'd", ",", "'", "tis", "2", "days",
                              "!", EOL, "end"]  # the last line has no line break
    assert tokenize("to be\n")[-1] == EOL


def test_vocabulary_ranks_by_frequency_and_cuts_off_with_unk() -> None:
    tokens = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "d"]
    vocab = WordVocab.from_tokens(tokens, max_size=3)
    # kept: a (4), b (3); <unk> stands for c and d (3 tokens) and ties with b, broken by spelling.
    assert vocab.words == ("a", UNKNOWN, "b")  # "<" sorts before "b"
    assert vocab.encode_tokens(["a", "c", "b"]).tolist() == [vocab.words.index("a"), vocab.unknown_id,
                                                             vocab.words.index("b")]
    assert vocab.decode(vocab.encode_tokens(["a", "b"])) == "a b"
    assert vocab.decode([vocab.words.index("a")]) == "a"  # lists decode as tensors do


def test_vocabulary_min_count_cut_off_and_empty_vocabulary_error() -> None:
    vocab = WordVocab.from_tokens(["x", "x", "y"], max_size=10, min_count=2)
    assert set(vocab.words) == {"x", UNKNOWN}
    with pytest.raises(ValueError, match="min_count=5"):
        WordVocab.from_tokens(["x", "x", "y"], min_count=5)
    with pytest.raises(ValueError, match="no tokens"):
        WordVocab.from_tokens([])
    with pytest.raises(ValueError, match="max_size must be at least 2"):
        WordVocab.from_tokens(["x"], max_size=1)


def test_strict_encoding_names_the_unknown_words() -> None:
    vocab = WordVocab.from_tokens(["the", "cat", "sat"])
    with pytest.raises(ValueError, match="'dog'"):
        vocab.encode("the dog", errors="strict")
    assert vocab.encode("the dog", errors="replace").tolist()[:2] == [vocab.words.index("the"), vocab.unknown_id]
    assert vocab.unknown_symbols("The dog, the cat") == ["dog", ","]


def test_complete_works_split_by_play() -> None:
    text = SHAKESPEARE_COMPLETE.read_text(encoding="utf-8")
    works = split_works(text)
    assert len(works) == 42
    assert works[0].title == "ALL'S WELL THAT ENDS WELL" and works[-1].title == "THE WINTER'S TALE"
    assert works[16].title == "THE TRAGEDY OF KING LEAR"  # glued to the previous play's "THE END"
    assert "".join(w.text for w in works) == text[text.index("ALL'S WELL"):]
    for w in works:
        assert w.text.startswith(w.title) and "by William Shakespeare" in w.text[:200]
    train, val, test = split_by_work(text)
    assert (len(train), len(val), len(test)) == (34, 4, 4)
    assert "MACBETH" in test and not set(train) & set(val) | set(train) & set(test) | set(val) & set(test)


def test_word_corpus_of_a_plain_text_splits_by_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i} of the text\n" for i in range(20)), encoding="utf-8")
    corpus = load_word_corpus(path, max_vocab=50)
    assert len(corpus.train) == 16 * 6 and len(corpus.val) == 2 * 6 and len(corpus.test) == 2 * 6
    assert corpus.vocab.words[0] in ("of", "line", "text", "the", EOL)
    assert bool((corpus.val != corpus.vocab.unknown_id).any())
    assert corpus.train.dtype == torch.long


@pytest.mark.parametrize("content, match", [("", "is empty"), ("one line only\n", "at least 10"),
                                            ("\n" * 20, "at least 10")])
def test_tiny_or_empty_corpus_is_a_clear_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_word_corpus(path)
