"""A synthetic stream with a known answer: labels from a teacher LSTM with parameters θ*.

Each node receives sequences of random length (``min_len`` … ``max_len``) with
standard normal features; the label is the teacher's output plus Gaussian noise of
standard deviation ``noise``: d = h(θ*; X) + ε. A learner of the same architecture
can reach MSE ≈ noise²; predicting 0 costs about Var(h(θ*; X)) + noise².
"""

from __future__ import annotations

import torch
from torch import Tensor

from distlstm.data.observation import Observation
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import SequenceRegressor


def teacher_streams(num_nodes: int, steps: int, *, input_size: int = 2, hidden_size: int = 4,
                    min_len: int = 2, max_len: int = 8, noise: float = 0.05, theta_scale: float = 1.5,
                    stateful: bool = False, seed: int = 0) -> tuple[list[list[Observation]], Tensor]:
    """Per-node streams and θ*; deterministic in ``seed``.

    With ``stateful`` the teacher carries its LSTM state from one sequence to the next
    at each node, so the label depends on the node's earlier sequences too.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 ≤ min_len ≤ max_len, got {min_len}, {max_len}")
    gen = torch.Generator().manual_seed(seed)
    fm = FunctionalModel(SequenceRegressor(input_size, hidden_size).double())
    theta_star = theta_scale * torch.randn(fm.numel, generator=gen, dtype=torch.float64) / hidden_size**0.5
    streams = []
    for _ in range(num_nodes):
        stream, carry = [], None
        for _ in range(steps):
            length = int(torch.randint(min_len, max_len + 1, (), generator=gen))
            x = torch.randn(length, input_size, generator=gen, dtype=torch.float64)
            if stateful:
                out, carry = fm(theta_star, x.unsqueeze(0), state=carry, return_state=True)
            else:
                out = fm(theta_star, x.unsqueeze(0))
            stream.append(Observation(x, float(out[0]) + noise * float(torch.randn((), generator=gen))))
        streams.append(stream)
    return streams, theta_star
