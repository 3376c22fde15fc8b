"""Whole models built from a recurrent stack and a head.

* :class:`SequenceRegressor` — Ergen & Kozat's map ``θ, X ↦ d̂ = wᵀ pool(LSTM(X; θ))``,
  one scalar per variable-length sequence; the model the online filters train.
* :class:`CharLM` — a character language model (one-hot or embedded input, recurrent
  stack, softmax head); the model of the ES and data-parallel language-model work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distlstm._checks import check_ndim, check_positive_int, is_transformed
from distlstm.models.cells import State
from distlstm.models.heads import POOLINGS, RegressionHead, SoftmaxHead, pool
from distlstm.models.sequence import LSTM


class SequenceRegressor(nn.Module):
    """``d̂ = wᵀ pool(LSTM(X))`` for a batch of variable-length sequences.

    Args:
        input_size: p, features per step.
        hidden_size: n, units per layer.
        cell: any registered cell; ``cell_options`` go to it.
        pooling: ``mean`` (the paper's default), ``max`` or ``last``.
        head_bias: add a bias to the linear estimate (the paper has none).

    Inputs: ``x`` (B, T, p) batch-first, ``lengths`` (B,) or None, ``state`` or None.
    Output: ``d̂`` (B,); with ``return_state=True`` also the carried state for stateful use.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "lstm",
                 pooling: str = "mean", head_bias: bool = False, **cell_options: Any) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.pooling = pooling
        self.rnn = LSTM(input_size, hidden_size, num_layers, batch_first=True, cell=cell, **cell_options)
        self.head = RegressionHead(self.rnn.output_size, bias=head_bias)

    def init_state(self, batch: int, *, dtype: torch.dtype | None = None) -> State:
        """Zero carried state for ``batch`` sequences, each tensor (num_layers, batch, size)."""
        return self.rnn.init_state(batch, dtype=dtype)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, State]:
        check_ndim(x, (3,), "x", "(batch, time, features)")
        y, state = self.rnn(x, state, lengths)
        assert isinstance(y, Tensor)
        d_hat = self.head(pool(y, lengths, self.pooling))
        return (d_hat, state) if return_state else d_hat


@torch.no_grad()
def sequence_nats(forward: Callable[[Tensor, State | None], tuple[Tensor, State]], ids: Tensor,
                  window: int = 256) -> float:
    """Mean next-id cross-entropy (nats) over a contiguous id sequence (L,), state carried across windows.

    ``forward(x, state) -> (logits, state)`` is a language model's call, e.g. a
    :class:`CharLM` or its ``functional_call`` at some θ.
    """
    if len(ids) < 2:
        raise ValueError(f"need at least 2 ids to score next-id predictions, got {len(ids)}")
    state: State | None = None
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        y = ids[start + 1 : start + 1 + window].unsqueeze(0)
        x = ids[start : start + y.shape[1]].unsqueeze(0)
        logits, state = forward(x, state)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return total / count


class CharLM(nn.Module):
    """Character language model: one-hot (or embedded) ids → recurrent stack → logits.

    Args:
        vocab_size: V.
        hidden_size, num_layers, cell, cell_options: the recurrent stack.
        embedding_dim: 0 feeds one-hot vectors (the ES source's model); > 0 learns an
            embedding table of that width.

    Inputs: ``ids`` (B, T) long, optional ``state``. Output: ``(logits (B, T, V), state)``.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 1, cell: str = "lstm",
                 embedding_dim: int = 0, **cell_options: Any) -> None:
        super().__init__()
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.embedding = nn.Embedding(vocab_size, embedding_dim) if embedding_dim else None
        input_size = embedding_dim or vocab_size
        self.rnn = LSTM(input_size, hidden_size, num_layers, batch_first=True, cell=cell, **cell_options)
        self.head = SoftmaxHead(self.rnn.output_size, vocab_size)

    def embed(self, ids: Tensor) -> Tensor:
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        if not is_transformed(ids) and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}) (the vocabulary), "
                             f"got min {int(ids.min())}, max {int(ids.max())}")
        if self.embedding is not None:
            return self.embedding(ids)
        dtype = self.head.linear.weight.dtype
        return F.one_hot(ids.long(), self.vocab_size).to(dtype)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        check_ndim(ids, (2,), "ids", "(batch, time)")
        y, state = self.rnn(self.embed(ids), state)
        assert isinstance(y, Tensor)
        return self.head(y), state

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample ``length`` ids after ``prompt`` (P,) ids; returns (length,) ids.

        Each id is drawn from softmax(logits / temperature) with ``generator``.
        """
        check_ndim(prompt, (1,), "prompt", "(length,)")
        if len(prompt) == 0:
            raise ValueError("prompt must hold at least one id")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        logits, state = self(prompt.unsqueeze(0))
        out = []
        for _ in range(length):
            probs = torch.softmax(logits[0, -1] / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            out.append(nxt)
            logits, state = self(nxt.view(1, 1), state)
        return torch.cat(out) if out else prompt.new_empty(0)

