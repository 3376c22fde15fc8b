"""Sentences with an emotion score, words as word2vec vectors: variable-length regression.

Ergen & Kozat's emotion-labelled tweets are not available offline. In their place:

* **sentences** — split from a text (the shipped Shakespeare tragedies by default),
  or a user's ``sentence,score`` CSV;
* **labels** — the VADER compound valence in [-1, 1] (``vadersentiment``, a real
  lexicon- and rule-based scorer that ships its lexicon), unless the CSV gives scores;
* **inputs** — one word2vec vector per word, trained with ``gensim`` on the same
  sentences (one worker and a fixed seed, so the vectors are reproducible), or read
  from a user's word-vector file (word2vec text format: ``word v1 … vp`` per line).

Words without a vector are dropped; a sentence left with no word is dropped. The
sequence length is the number of words, so it varies from sample to sample.

Needs the ``text`` extra: ``pip install 'distlstm[text]'``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from distlstm.data.observation import Observation
from distlstm.data.text import SHAKESPEARE_TRAGEDIES, load_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z']+")


def _require(module: str) -> None:
    raise ImportError(f"the sentence data set needs {module}; install it with: pip install 'distlstm[text]'")


def split_sentences(text: str, min_words: int = 4, max_words: int = 20) -> list[str]:
    """Sentences of ``min_words`` … ``max_words`` words, whitespace collapsed, in text order."""
    flat = re.sub(r"\s+", " ", text)
    out = []
    for s in _SENTENCE_END.split(flat):
        s = s.strip()
        if min_words <= len(tokenize(s)) <= max_words:
            out.append(s)
    return out


def tokenize(sentence: str) -> list[str]:
    return _WORD.findall(sentence.lower())


def vader_scores(sentences: Sequence[str]) -> list[float]:
    """VADER compound valence of each sentence, in [-1, 1]."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        _require("vadersentiment")
    analyzer = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(s)["compound"]) for s in sentences]


def train_word2vec(sentences: Sequence[Sequence[str]], dim: int, seed: int = 0,
                   epochs: int = 10) -> dict[str, torch.Tensor]:
    """Skip-gram word2vec vectors, deterministic (one worker, fixed seed)."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        _require("gensim")
    model = Word2Vec(sentences=[list(s) for s in sentences], vector_size=dim, window=5, min_count=2, sg=1,
                     workers=1, seed=seed, epochs=epochs)
    vectors = torch.from_numpy(model.wv.vectors.copy()).double()
    return {word: vectors[i] for i, word in enumerate(model.wv.index_to_key)}


def load_word_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    """Word vectors from a word2vec text file (an optional ``count dim`` first line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no word-vector file at {path}")
    vectors: dict[str, torch.Tensor] = {}
    dim = None
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue
            if len(parts) < 2:
                continue
            try:
                values = [float(v) for v in parts[1:]]
            except ValueError:
                raise ValueError(f"{path}, line {line_no}: expected 'word v1 v2 …'") from None
            if dim is None:
                dim = len(values)
            elif len(values) != dim:
                raise ValueError(f"{path}, line {line_no}: expected {dim} numbers, got {len(values)}")
            vectors[parts[0].lower()] = torch.tensor(values, dtype=torch.float64)
    if not vectors:
        raise ValueError(f"{path} holds no word vectors")
    return vectors


def load_scored_sentences(path: str | Path) -> tuple[list[str], list[float]]:
    """A user's ``sentence,score`` CSV (optional header)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    sentences, scores = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}, line {line_no}: expected 'sentence,score', got {len(row)} fields")
            try:
                score = float(row[1])
            except ValueError:
                if line_no == 1:
                    continue  # header
                raise ValueError(f"{path}, line {line_no}: the score {row[1]!r} is not a number") from None
            sentences.append(row[0])
            scores.append(score)
    if not sentences:
        raise ValueError(f"{path} holds no scored sentences")
    return sentences, scores


def vader_lexicon() -> dict[str, float]:
    """VADER's word valences, scaled from [-4, 4] to [-1, 1]."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        _require("vadersentiment")
    return {w: v / 4.0 for w, v in SentimentIntensityAnalyzer().lexicon.items()}


def sentence_observations(sentences: Sequence[str], scores: Sequence[float], vectors: dict[str, torch.Tensor],
                          lexicon: dict[str, float] | None = None) -> list[Observation]:
    """One observation per sentence: its words' vectors (T, p) and its score.

    With ``lexicon``, each word's lexicon valence (0 if absent) is appended to its
    vector as one more feature.
    """
    out = []
    for sentence, score in zip(sentences, scores, strict=True):
        words = [w for w in tokenize(sentence) if w in vectors]
        rows = [vectors[w] for w in words]
        if lexicon is not None:
            rows = [torch.cat([r, r.new_tensor([lexicon.get(w, 0.0)])]) for r, w in zip(rows, words, strict=True)]
        if rows:
            out.append(Observation(torch.stack(rows), float(score)))
    if not out:
        raise ValueError("no sentence has a word with a vector")
    return out


def shakespeare_valence(dim: int = 8, max_sentences: int = 2000, seed: int = 0, lexicon_feature: bool = False,
                        text_path: str | Path = SHAKESPEARE_TRAGEDIES) -> list[Observation]:
    """The default sentence data set: tragedies' sentences, VADER labels, word2vec inputs.

    word2vec trains on every sentence of the text; the first ``max_sentences``
    sentences with a non-zero valence are returned, in text order. With
    ``lexicon_feature`` each word also carries its VADER lexicon valence (p = dim + 1):
    the label is then a learnable nonlinear composition (negation, intensifiers,
    normalisation) of the inputs, where 8-dimensional word2vec vectors of a small
    corpus alone carry little valence.
    """
    sentences = split_sentences(load_text(text_path))
    vectors = train_word2vec([tokenize(s) for s in sentences], dim, seed)
    scores = vader_scores(sentences)
    scored = [(s, v) for s, v in zip(sentences, scores, strict=True) if v != 0.0][:max_sentences]
    return sentence_observations([s for s, _ in scored], [v for _, v in scored], vectors,
                                 vader_lexicon() if lexicon_feature else None)
