"""ES on text: the one-hot character model and the windows every member of a generation shares.

Both are pure functions of seeds, so every worker builds the same model and draws
the same windows without talking: the initial θ from the run seed, the windows of
generation g from (seed, g) through :func:`~distlstm.es.noise.noise_seed` (index −1,
which no member's noise uses); in federated ES, client c draws its own windows from its
own shard with index −2 − c.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distlstm.data.text import random_windows
from distlstm.data.text_shards import TextShard
from distlstm.es.noise import noise_seed
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import CharLM


def build_model(vocab_size: int, cell: str, hidden: int, seed: int, compile: bool = False) -> FunctionalModel:
    """The one-hot character model (the ES source's), initialised from ``seed``; ``compile``: its population
    forward through ``torch.compile`` (same numbers up to rounding, faster on fixed window shapes)."""
    torch.manual_seed(seed)
    return FunctionalModel(CharLM(vocab_size, hidden, cell=cell), compile=compile)


def generation_windows(ids: Tensor, seed: int, generation: int, windows: int, window: int) -> tuple[Tensor, Tensor]:
    """The ``windows`` windows of ``window`` characters (inputs, next-character targets) of ``generation``."""
    gen = torch.Generator().manual_seed(noise_seed(seed, generation, -1))
    return random_windows(ids, windows, window, gen)


def client_windows(shard: TextShard, seed: int, generation: int, client: int, windows: int,
                   window: int) -> tuple[Tensor, Tensor]:
    """Client ``client``'s ``windows`` windows of ``generation``, from its own shard only."""
    gen = torch.Generator().manual_seed(noise_seed(seed, generation, -2 - client))
    return shard.windows(windows, window, gen)
