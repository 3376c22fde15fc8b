"""ES on text: the one-hot character model and the windows every member of a generation shares.

Both are pure functions of seeds, so every worker builds the same model and draws
the same windows without talking: the initial θ from the run seed, the windows of
generation g from (seed, g) through :func:`~distlstm.es.noise.noise_seed` (index −1,
which no member's noise uses).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distlstm.data.text import random_windows
from distlstm.es.noise import noise_seed
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import CharLM


def build_model(vocab_size: int, cell: str, hidden: int, seed: int) -> FunctionalModel:
    """The one-hot character model (the ES source's), initialised from ``seed``."""
    torch.manual_seed(seed)
    return FunctionalModel(CharLM(vocab_size, hidden, cell=cell))


def generation_windows(ids: Tensor, seed: int, generation: int, windows: int, window: int) -> tuple[Tensor, Tensor]:
    """The ``windows`` windows of ``window`` characters (inputs, next-character targets) of ``generation``."""
    gen = torch.Generator().manual_seed(noise_seed(seed, generation, -1))
    return random_windows(ids, windows, window, gen)
