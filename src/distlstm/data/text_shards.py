"""Federated character data: the training text cut into shards that each stay with one client.

A text is split once into a held-out part and training *segments* (contiguous id
sequences; a window never crosses from one segment into the next):

* **holdout** — ``tail``: the last 10% of the text (:func:`~distlstm.data.text.split_ids`);
  ``play``: the last work of a text whose works are marked by a title line above
  ``by William Shakespeare`` (:func:`~distlstm.data.words.split_works`), so the
  validation play is one no client has seen.
* **segments** — the works clipped to the training part (the whole training part
  when the text has no marked works).

The C client shards are then

* ``by-play`` (non-IID): work k goes to client k mod C, whole — each client holds
  its own plays, with their own characters, vocabulary and style;
* ``iid``: the segments cut into chunks of ``chunk`` characters, shuffled by a
  generator seeded from the run seed and dealt round-robin — every client holds a
  random sample of every play, of nearly equal size.

Shards are disjoint and together hold every training character that is in a chunk
(``iid`` drops chunks shorter than a window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distlstm.data.text import split_ids
from distlstm.data.words import split_works

HOLDOUTS = ("tail", "play")
SPLITS = ("iid", "by-play")


@dataclass(frozen=True)
class Segment:
    """A contiguous piece of the training ids and where it came from."""

    name: str  # a play's title, or "training text"
    start: int  # offset of ids[0] in the encoded text
    ids: Tensor


@dataclass(frozen=True)
class TextShard:
    """One client's data: contiguous segments it reads windows from."""

    segments: tuple[Segment, ...]

    def __len__(self) -> int:
        return sum(len(s.ids) for s in self.segments)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(s.name for s in self.segments))

    def windows(self, batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``batch`` windows (inputs, next-character targets) (batch, length), each inside one segment.

        Start positions are uniform over every valid start of every segment, so a
        segment is drawn in proportion to its length.
        """
        starts = torch.tensor([max(len(s.ids) - length, 0) for s in self.segments])
        if int(starts.sum()) == 0:
            raise ValueError(f"this shard has no segment longer than a window of {length} + 1 characters: use a "
                             "shorter --window or fewer clients")
        ends = starts.cumsum(0)
        picks = torch.randint(0, int(ends[-1]), (batch,), generator=generator)
        which = torch.searchsorted(ends, picks, right=True)
        offsets = torch.arange(length + 1)
        rows = []
        for k, p in zip(which.tolist(), picks.tolist(), strict=True):
            local = p - (int(ends[k - 1]) if k else 0)
            rows.append(self.segments[k].ids[local + offsets])
        w = torch.stack(rows)
        return w[:, :-1], w[:, 1:]


def holdout_split(text: str, ids: Tensor, holdout: str) -> tuple[list[Segment], Tensor]:
    """Training segments and held-out ids of an encoded text (``ids = vocab.encode(text)``)."""
    if holdout not in HOLDOUTS:
        raise ValueError(f"unknown holdout {holdout!r}; expected one of {HOLDOUTS}")
    works = split_works(text)
    bounds = []  # (title, start, end) of each work, in characters = ids
    end = len(text)
    for w in reversed(works):
        bounds.append((w.title, end - len(w.text), end))
        end -= len(w.text)
    bounds.reverse()
    if holdout == "play":
        if len(works) < 2:
            raise ValueError("--holdout play needs a text of at least two works, each under a title line followed "
                             "by 'by William Shakespeare' (like the shipped tragedies); use --holdout tail")
        cut = bounds[-1][1]
    else:
        train, _ = split_ids(ids)
        cut = len(train)
    if not bounds:
        return [Segment("training text", 0, ids[:cut])], ids[cut:]
    if bounds[0][1] > 0:  # text before the first title: its own segment
        bounds.insert(0, ("front matter", 0, bounds[0][1]))
    segments = [Segment(title, start, ids[start:min(stop, cut)]) for title, start, stop in bounds if start < cut]
    return segments, ids[cut:]


def client_shards(segments: list[Segment], clients: int, how: str, *, seed: int, chunk: int = 4096,
                  min_length: int = 2) -> list[TextShard]:
    """The ``clients`` disjoint shards of the training segments (see the module's text)."""
    if how not in SPLITS:
        raise ValueError(f"unknown data split {how!r}; expected one of {SPLITS}")
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients must be a positive int, got {clients!r}")
    if how == "by-play":
        plays = [s for s in segments if len(s.ids) >= min_length]
        if clients > len(plays):
            raise ValueError(f"--data-split by-play gives every client at least one play, but the training text "
                             f"has {len(plays)} play(s) for {clients} clients: use at most {len(plays)} clients or "
                             "--data-split iid")
        return [TextShard(tuple(plays[k::clients])) for k in range(clients)]
    pieces = [Segment(s.name, s.start + a, s.ids[a : a + chunk]) for s in segments for a in range(0, len(s.ids), chunk)
              if len(s.ids[a : a + chunk]) >= min_length]
    if clients > len(pieces):
        raise ValueError(f"the training text has {len(pieces)} chunks of up to {chunk} characters for {clients} "
                         "clients: use fewer clients")
    order = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(seed)).tolist()
    return [TextShard(tuple(pieces[j] for j in sorted(order[k::clients]))) for k in range(clients)]
