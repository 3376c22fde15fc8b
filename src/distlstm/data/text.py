"""Character corpora: vocabulary, encoding, contiguous splits and random windows.

The repository ships Shakespeare's tragedies (see ``data/README.md`` for the origin);
any UTF-8 text file works the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from distlstm._flags import option

SHAKESPEARE_TRAGEDIES = Path(__file__).with_name("tragedies.txt")


def load_text(path: str | Path = SHAKESPEARE_TRAGEDIES) -> str:
    """Read a UTF-8 text file; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); give a UTF-8 text "
                         "file") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


@dataclass(frozen=True)
class CharVocab:
    """Sorted distinct characters of a corpus; ids are positions in ``chars``.

    ``unknown`` (a character in ``chars``) replaces characters outside the vocabulary
    when encoding with ``errors="replace"``; ``errors="strict"`` raises instead.
    """

    chars: str
    unknown: str = " "
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary characters must be distinct")
        if self.unknown not in self.chars:
            raise ValueError(f"the unknown character {self.unknown!r} must be in the vocabulary")
        object.__setattr__(self, "_index", {ch: i for i, ch in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        chars = "".join(sorted(set(text)))
        return cls(chars, unknown=" " if " " in chars else chars[0])

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, errors: str = "strict") -> Tensor:
        """Ids (len(text),) int64."""
        if errors not in ("strict", "replace"):
            raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
        missing = sorted(set(text) - self._index.keys())
        if missing and errors == "strict":
            raise ValueError(f"characters outside the vocabulary: {''.join(missing)!r}; "
                             "pass errors='replace' to map them to the unknown character")
        unk = self._index[self.unknown]
        return torch.tensor([self._index.get(ch, unk) for ch in text], dtype=torch.long)

    def unknown_symbols(self, text: str) -> list[str]:
        """Distinct characters of ``text`` outside the vocabulary, in order of appearance."""
        return [ch for ch in dict.fromkeys(text) if ch not in self._index]

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Text of ids, a tensor or a list of ints."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.chars[i] for i in values)


def split_ids(ids: Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Contiguous split: the first ``1 - val_fraction`` for training, the rest for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    if cut < 2 or len(ids) - cut < 2:
        raise ValueError(f"a corpus of {len(ids)} characters is too short to split at {val_fraction}")
    return ids[:cut], ids[cut:]


def held_out_slice(val: Tensor, eval_chars: int) -> Tensor:
    """The first ``eval_chars`` + 1 ids of the held-out part (inputs and their next-character targets).

    Asking for more characters than the held-out part has is not silent: a warning
    names ``--eval-chars`` and the number actually evaluated.
    """
    if eval_chars + 1 > len(val):
        warnings.warn(f"{option('eval_chars', '--eval-chars')} {eval_chars} asks for more than the held-out text's "
                      f"{max(len(val) - 1, 0)} characters; the evaluation uses all {max(len(val) - 1, 0)}",
                      stacklevel=2)
    return val[: eval_chars + 1]


def random_windows(ids: Tensor, batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random windows: inputs (batch, length) and next-character targets."""
    if len(ids) < length + 1:
        raise ValueError(f"the corpus has {len(ids)} characters, fewer than a window of {length} + 1")
    starts = torch.randint(0, len(ids) - length, (batch,), generator=generator)
    offsets = torch.arange(length + 1)
    windows = ids[starts[:, None] + offsets]
    return windows[:, :-1], windows[:, 1:]
