"""Heads on top of a recurrent stack: pooling over valid steps, regression, softmax.

Pooling over the m valid outputs y_1 … y_m of a sequence (Ergen & Kozat §1)::

    mean  ȳ = (1/m) Σ_j y_j        max  ȳ = max_j y_j (elementwise)        last  ȳ = y_m

Regression (their estimate): ``d̂ = wᵀ ȳ``. Language models: a per-step softmax over
the vocabulary, ``p(x_{t+1} | x_≤t) = softmax(W y_t + b)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distlstm._checks import check_lengths, check_ndim, check_positive_int

Pooling = Literal["mean", "max", "last"]
POOLINGS: tuple[str, ...] = ("mean", "max", "last")


def pool(y: Tensor, lengths: Tensor | None = None, mode: str = "mean") -> Tensor:
    """Pool ``y`` (B, T, H) over each sequence's valid steps to (B, H).

    Padded steps (``t >= lengths[b]``) never contribute, whatever ``y`` holds there.
    """
    check_ndim(y, (3,), "y", "(batch, time, features)")
    batch, steps = y.shape[0], y.shape[1]
    if mode not in POOLINGS:
        raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLINGS}")
    if lengths is None:
        if mode == "mean":
            return y.mean(1)
        if mode == "max":
            return y.amax(1)
        return y[:, -1]
    lengths = check_lengths(lengths, batch, steps).to(y.device)
    valid = (torch.arange(steps, device=y.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
    if mode == "mean":
        return torch.where(valid, y, 0.0).sum(1) / lengths.unsqueeze(-1).to(y.dtype)
    if mode == "max":
        return torch.where(valid, y, float("-inf")).amax(1)
    index = (lengths - 1).view(batch, 1, 1).expand(batch, 1, y.shape[2])
    return y.gather(1, index).squeeze(1)


class RegressionHead(nn.Module):
    """``d̂ = wᵀ ȳ`` (+ b if ``bias``); Ergen & Kozat use no bias. Output (B,)."""

    def __init__(self, in_features: int, bias: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(check_positive_int(in_features, "in_features"), 1, bias=bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled).squeeze(-1)


class SoftmaxHead(nn.Module):
    """Per-step logits over a vocabulary: (B, T, H) → (B, T, V)."""

    def __init__(self, in_features: int, vocab_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(check_positive_int(in_features, "in_features"),
                                check_positive_int(vocab_size, "vocab_size"))

    def forward(self, y: Tensor) -> Tensor:
        return self.linear(y)


def sequence_cross_entropy(logits: Tensor, targets: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy in nats over valid steps.

    ``logits`` (B, T, V), ``targets`` (B, T) integer ids; padded steps are ignored.
    """
    check_ndim(logits, (3,), "logits", "(batch, time, vocab)")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets: expected shape {tuple(logits.shape[:2])}, got {tuple(targets.shape)}")
    if lengths is None:
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    lengths = check_lengths(lengths, logits.shape[0], logits.shape[1]).to(logits.device)
    valid = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]
    per_step = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    return (per_step * valid).sum() / valid.sum()
