"""Word corpora: tokenizer, frequency-ranked vocabulary with a cut-off, splits by work.

* **Tokens.** Text is lower-cased, then cut into words (letters and digits, with inner
  apostrophes: ``o'er``, ``liv'd``), dashes ``--`` and single punctuation marks; every
  non-empty line ended by a line break is followed by the token ``<eol>``, so verse keeps its line breaks. Lower-
  casing is deliberate: in the plays every verse line starts with a capital and
  speaker names are in capitals, so keeping case would nearly double the number of
  types for no gain in a 10k-word model.
* **Vocabulary.** The ``max_size − 1`` most frequent training types (at least
  ``min_count`` occurrences) plus ``<unk>``, which stands for every other type. Ids are
  ranks by decreasing training frequency (ties by spelling), the order the log-uniform
  (Zipfian) candidate sampler of ``models/softmax.py`` assumes.
* **Splits by work.** The shipped complete works are cut where a title line is followed
  by ``by William Shakespeare``; works k ≡ 8 (mod 10) are validation, k ≡ 9 (mod 10)
  test, the rest training (42 works: 34 / 4 / 4), so no play is in two splits. A text
  without that marker is split by lines: the first 80% for training, then 10% and 10%.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from distlstm.data.text import load_text

SHAKESPEARE_COMPLETE = Path(__file__).with_name("complete_works.txt")
UNKNOWN = "<unk>"
EOL = "<eol>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|--|[^\sa-z0-9]")
_AUTHOR = re.compile(r"^by William Shakespeare[ \t]*$", re.MULTILINE)
_TITLE = re.compile(r"[A-Z][A-Z ,;'\-]*$")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens, ``<eol>`` after every non-empty line that a line break ends."""
    tokens: list[str] = []
    lines = text.lower().split("\n")
    for k, line in enumerate(lines):
        words = _TOKEN.findall(line)
        if words:
            tokens += words
            if k < len(lines) - 1:
                tokens.append(EOL)
    return tokens


def detokenize(tokens: Iterable[str]) -> str:
    """Tokens joined by spaces, ``<eol>`` as a line break (an approximate inverse of :func:`tokenize`)."""
    return " ".join(tokens).replace(f" {EOL} ", "\n").replace(EOL, "\n")


@dataclass(frozen=True)
class Work:
    title: str
    text: str


def split_works(text: str) -> list[Work]:
    """The works of a complete-works file, cut at each title line above ``by William Shakespeare``.

    The file glues each title to the last line of the previous work (``[Exeunt.]MACBETH``),
    so the title is the trailing run of capitals on the line two above the marker.
    Returns an empty list for a text without the marker.
    """
    marks = list(_AUTHOR.finditer(text))
    if not marks:
        return []
    starts: list[int] = []
    titles: list[str] = []
    for m in marks:
        before = text[: m.start()].rstrip("\n")
        line_start = before.rfind("\n") + 1
        title = _TITLE.search(before, line_start)
        if title is None:
            raise ValueError(f"no title before 'by William Shakespeare' at character {m.start()}")
        name = title.group().strip()
        offset = title.start()
        if name.startswith("THE END") and len(name) > len("THE END"):  # "THE ENDTHE TRAGEDY OF KING LEAR"
            name, offset = name[len("THE END") :], offset + len("THE END")
        starts.append(offset)
        titles.append(name)
    ends = [*starts[1:], len(text)]
    return [Work(t, text[s:e]) for t, s, e in zip(titles, starts, ends, strict=True)]


def split_by_work(text: str) -> tuple[list[str], list[str], list[str]]:
    """Titles of the training, validation and test works (k ≡ 8 and 9 mod 10 held out)."""
    works = split_works(text)
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for k, w in enumerate(works):
        parts[{8: 1, 9: 2}.get(k % 10, 0)].append(w.title)
    return parts


def _split_texts(text: str) -> tuple[str, str, str]:
    works = split_works(text)
    if len(works) >= 10:
        groups: tuple[list[str], list[str], list[str]] = ([], [], [])
        for k, w in enumerate(works):
            groups[{8: 1, 9: 2}.get(k % 10, 0)].append(w.text)
        return "\n".join(groups[0]), "\n".join(groups[1]), "\n".join(groups[2])
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 10:
        raise ValueError(f"the text has {len(lines)} non-empty lines; a word corpus needs at least 10 to split "
                         "into training, validation and test (80/10/10 by lines)")
    a, b = int(0.8 * len(lines)), int(0.9 * len(lines))
    return "".join(f"{line}\n" for line in lines[:a]), "".join(f"{line}\n" for line in lines[a:b]), \
        "".join(f"{line}\n" for line in lines[b:])


@dataclass(frozen=True)
class WordVocab:
    """Words ranked by decreasing training frequency; ``<unk>`` replaces all others when encoding."""

    words: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if UNKNOWN not in self.words:
            raise ValueError(f"a word vocabulary must contain {UNKNOWN!r}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary words must be distinct")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], max_size: int = 10_000, min_count: int = 1) -> WordVocab:
        """The ``max_size − 1`` most frequent types with at least ``min_count`` occurrences, plus ``<unk>``."""
        if max_size < 2:
            raise ValueError(f"max_size must be at least 2 (one word and {UNKNOWN}), got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if not tokens:
            raise ValueError("no tokens to build a vocabulary from (the training text is empty)")
        counts = Counter(tokens)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [(w, c) for w, c in ranked[: max_size - 1] if c >= min_count and w != UNKNOWN]
        if not kept:
            raise ValueError(f"no type occurs at least min_count={min_count} times in the {len(tokens):,} training "
                             f"tokens (the most frequent, {ranked[0][0]!r}, occurs {ranked[0][1]} times); "
                             "lower the cut-off")
        unk = len(tokens) - sum(c for _, c in kept)
        ranked_kept = sorted([*kept, (UNKNOWN, unk)], key=lambda item: (-item[1], item[0]))
        return cls(tuple(w for w, _ in ranked_kept))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def unknown_id(self) -> int:
        return self._index[UNKNOWN]

    def unknown_symbols(self, text: str) -> list[str]:
        """Distinct tokens of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in tokenize(text) if t not in self._index))

    def encode_tokens(self, tokens: Sequence[str]) -> Tensor:
        """Ids (len(tokens),) int64; tokens outside the vocabulary become ``<unk>``."""
        unk = self.unknown_id
        return torch.tensor([self._index.get(t, unk) for t in tokens], dtype=torch.long)

    def encode(self, text: str, errors: str = "strict") -> Tensor:
        """Tokenize and encode; ``errors="strict"`` refuses unknown words, ``"replace"`` maps them to ``<unk>``."""
        if errors not in ("strict", "replace"):
            raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
        tokens = tokenize(text)
        missing = [t for t in dict.fromkeys(tokens) if t not in self._index]
        if missing and errors == "strict":
            raise ValueError(f"words outside the vocabulary: {missing[:10]}; use errors='replace' to map them to "
                             f"{UNKNOWN}")
        return self.encode_tokens(tokens)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Text of ids (a tensor or a list), ``<eol>`` as a line break."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return detokenize(self.words[i] for i in values)


@dataclass(frozen=True)
class WordCorpus:
    """A vocabulary and the id streams of the training, validation and test texts."""

    vocab: WordVocab
    train: Tensor
    val: Tensor
    test: Tensor


def load_word_corpus(path: str | Path = SHAKESPEARE_COMPLETE, max_vocab: int = 10_000,
                     min_count: int = 1) -> WordCorpus:
    """Read, split (by work, or 80/10/10 by lines), build the vocabulary on the training part, encode."""
    train, val, test = (tokenize(part) for part in _split_texts(load_text(path)))
    for name, part in (("training", train), ("validation", val), ("test", test)):
        if len(part) < 2:
            raise ValueError(f"{path}: the {name} split holds {len(part)} token(s); a word corpus needs at least 2 "
                             "per split (use a longer text)")
    vocab = WordVocab.from_tokens(train, max_vocab, min_count)
    return WordCorpus(vocab, vocab.encode_tokens(train), vocab.encode_tokens(val), vocab.encode_tokens(test))
