"""Regressor options the fast paths (``per_sequence_grads``, ``population_forward``) must cover, and a builder."""

from __future__ import annotations

import torch

from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import SequenceRegressor

#: layers, sharpness, biases, head bias and every pooling
CONFIGS = [
    {},
    {"num_layers": 2},
    {"alpha": 3.75},
    {"single_bias": True},
    {"bias": False},
    {"head_bias": True},
    {"pooling": "max"},
    {"pooling": "last", "num_layers": 3, "alpha": 2.0},
]
IDS = [str(c) or "default" for c in CONFIGS]


def functional_regressor(seed: int = 0, **options: object) -> FunctionalModel:
    """A float64 ``SequenceRegressor(3, 5, **options)`` as a :class:`FunctionalModel`, weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FunctionalModel(SequenceRegressor(3, 5, **options).double())  # type: ignore[arg-type]
