"""Fitness of a block of population members on shared text windows, in one batched call.

F(θ_j) = − mean next-character cross-entropy (nats) of member j over the windows
that every member of the generation shares. All members of a block go through
:class:`~distlstm.models.functional.FunctionalModel` at once (no loop over members).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import sequence_nats


@torch.no_grad()
def char_fitness(fm: FunctionalModel, thetas: Tensor, x: Tensor, y: Tensor, chunk: int = 64) -> Tensor:
    """F (B,) for Θ (B, n) on windows x, y (W, T); evaluated ``chunk`` members at a time."""
    out = []
    for start in range(0, thetas.shape[0], chunk):
        logits, _ = fm(thetas[start : start + chunk], x)  # (b, W, T, V)
        b = logits.shape[0]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(b, 1, 1).reshape(-1),
                             reduction="none").view(b, -1).mean(1)
        out.append(-ce)
    return torch.cat(out)


def char_loss(fm: FunctionalModel, theta: Tensor, ids: Tensor, window: int = 256) -> float:
    """Mean nats/char of the model at θ over a contiguous id sequence, state carried across windows."""
    params = fm.spec.unflatten(theta)
    return sequence_nats(lambda x, state: functional_call(fm.module, params, (x, state)), ids, window)
