"""Sentence valence data: splitting, scoring, word vectors, user files."""

from __future__ import annotations

import pytest
import torch

from distlstm.data.sentences import (
    load_scored_sentences,
    load_word_vectors,
    sentence_observations,
    shakespeare_valence,
    split_sentences,
    tokenize,
    vader_scores,
)


def test_split_and_tokenize():
    text = "Hi. O, what a noble mind is here o'erthrown! Is it   so?\nYes, my good lord, it is."
    assert split_sentences(text, min_words=3) == ["O, what a noble mind is here o'erthrown!", "Is it so?",
                                                  "Yes, my good lord, it is."]
    assert split_sentences(text, min_words=4, max_words=6) == ["Yes, my good lord, it is."]
    assert tokenize("O'er THE hill!") == ["o'er", "the", "hill"]


def test_vader_scores_are_a_real_lexicon_scorer():
    happy, sad = vader_scores(["I love this good and happy day.", "This is a terrible, horrible death."])
    assert happy > 0.5 and sad < -0.5


def test_user_files(tmp_path):
    (tmp_path / "s.csv").write_text('sentence,score\n"good day, sir",0.5\nbad night,-0.25\n')
    sentences, scores = load_scored_sentences(tmp_path / "s.csv")
    assert sentences == ["good day, sir", "bad night"] and scores == [0.5, -0.25]
    (tmp_path / "v.txt").write_text("3 2\ngood 1 0\nday 0 1\nnight 1 1\n")
    vectors = load_word_vectors(tmp_path / "v.txt")
    obs = sentence_observations(sentences, scores, vectors)
    assert obs[0].x.tolist() == [[1.0, 0.0], [0.0, 1.0]] and obs[1].x.tolist() == [[1.0, 1.0]]
    with_lex = sentence_observations(sentences, scores, vectors, lexicon={"good": 0.5})
    assert with_lex[0].x[:, -1].tolist() == [0.5, 0.0]
    (tmp_path / "bad.txt").write_text("good 1 0\nday 0\n")
    with pytest.raises(ValueError, match="line 2: expected 2 numbers, got 1"):
        load_word_vectors(tmp_path / "bad.txt")
    (tmp_path / "bad.csv").write_text("a,b,c\n")
    with pytest.raises(ValueError, match="expected 'sentence,score'"):
        load_scored_sentences(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no sentence has a word with a vector"):
        sentence_observations(["zzz"], [0.1], vectors)


def test_shakespeare_valence_is_reproducible_and_variable_length():
    a = shakespeare_valence(dim=4, max_sentences=60, lexicon_feature=True)
    b = shakespeare_valence(dim=4, max_sentences=60, lexicon_feature=True)
    assert len(a) == 60 and all(torch.equal(x.x, y.x) and x.d == y.d for x, y in zip(a, b, strict=True))
    assert len({ob.x.shape[0] for ob in a}) > 3 and all(ob.x.shape[1] == 5 for ob in a)
    assert all(-1.0 <= ob.d <= 1.0 and ob.d != 0.0 for ob in a)
