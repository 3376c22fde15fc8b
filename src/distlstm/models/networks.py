"""Whole models built from a recurrent stack and a head.

* :class:`SequenceRegressor` — Ergen & Kozat's map ``θ, X ↦ d̂ = wᵀ pool(LSTM(X; θ))``,
  one scalar per variable-length sequence; the model the online filters train.
* :class:`CharLM` — a character language model (one-hot or embedded input, recurrent
  stack, softmax head); the model of the ES and data-parallel language-model work.
* :class:`WordLM` — Kuchaiev & Ginsburg's word language model: embedding of size p,
  two projected recurrent layers (LSTMP, F-LSTM, G-LSTM), sampled softmax in training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distlstm._checks import check_ndim, check_positive_int, is_transformed
from distlstm.models.cells import State
from distlstm.models.heads import POOLINGS, RegressionHead, SoftmaxHead, pool, sequence_cross_entropy
from distlstm.models.per_sequence import regressor_rows
from distlstm.models.population import regressor_population
from distlstm.models.sequence import LSTM, dropout_mask
from distlstm.models.softmax import LogUniformSampler, sampled_softmax_loss


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
        if self.pooling == "last" and not self.rnn.bidirectional:
            # each sequence's output at its last valid step is the top layer's final h
            state = self.rnn.final_state(x, state, lengths)
            pooled = state[0][-1]
        else:
            y, state = self.rnn(x, state, lengths)
            assert isinstance(y, Tensor)
            pooled = pool(y, lengths, self.pooling)
        d_hat = self.head(pooled)
        return (d_hat, state) if return_state else d_hat

    def per_sequence_grads(self, params: Mapping[str, Tensor], x: Tensor, lengths: Tensor | None = None,
                           state: State | None = None,
                           return_state: bool = False) -> tuple[Tensor, dict[str, Tensor]] | None:
        """d̂ (B,) at ``params`` and ∂d̂_b/∂param (B, *shape) by name, in one backward; None where the
        fused kernel does not run this model (see :mod:`distlstm.models.per_sequence`).

        :class:`~distlstm.models.functional.FunctionalModel` asks for these rows before it
        differentiates generically (the EKF's H, the DEKF's neighbour rows).
        """
        if state is not None or return_state:
            return None
        return regressor_rows(self, params, x, lengths)

    def population_forward(self, params: Mapping[str, Tensor], x: Tensor, lengths: Tensor | None = None,
                           state: State | None = None, return_state: bool = False) -> Tensor | None:
        """d̂ (P, B) at P parameter sets (name → (P, *shape)) on shared sequences, without ``vmap``; None where
        the fused kernel does not run this model (see :mod:`distlstm.models.population`).

        :class:`~distlstm.models.functional.FunctionalModel` asks for it before it ``vmap``s
        the module (the particle filters' h(θ^i; X)).
        """
        if state is not None or return_state:
            return None
        return regressor_population(self, params, x, lengths)


@torch.no_grad()
def sequence_nats(forward: Callable[[Tensor, State | None], tuple[Tensor, State]], ids: Tensor,
                  window: int = 256) -> float:
    """Mean next-id cross-entropy (nats) over a contiguous id sequence (L,), state carried across windows.

    ``forward(x, state) -> (logits, state)`` is a language model's call, e.g. a
    :class:`CharLM` or its ``functional_call`` at some θ.
    """
    return stream_nats(forward, ids, streams=1, window=window)


def check_ids(ids: Tensor, vocab_size: int) -> None:
    """Integer ids inside [0, vocab_size)."""
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
    if not is_transformed(ids) and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size}) (the vocabulary), "
                         f"got min {int(ids.min())}, max {int(ids.max())}")


class _Generates(nn.Module):
    """``generate``: continue a prompt with a model whose ``forward(ids, state)`` returns ``(logits, state)``."""

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """``length`` ids after ``prompt`` (P,) ids; returns (length,) ids.

        Each id is drawn from softmax(logits / temperature) with ``generator``;
        ``temperature=0`` decodes greedily (argmax, deterministic).
        """
        check_ndim(prompt, (1,), "prompt", "(length,)")
        if len(prompt) == 0:
            raise ValueError("prompt must hold at least one id")
        if not temperature >= 0:
            raise ValueError(f"temperature must be positive, or 0 for greedy decoding; got {temperature}")
        logits, state = self(prompt.unsqueeze(0))
        out = []
        for _ in range(length):
            last = logits[0, -1]
            if temperature == 0:
                nxt = last.argmax().view(1)
            else:
                probs = torch.softmax(last / temperature, -1)  # drawn where the generator is: a CPU one serves a GPU
                where = probs.device if generator is None else generator.device
                nxt = torch.multinomial(probs.to(where), 1, generator=generator).to(last.device)
            out.append(nxt)
            logits, state = self(nxt.view(1, 1), state)
        return torch.cat(out) if out else prompt.new_empty(0)


@torch.no_grad()
def stream_nats(forward: Callable[[Tensor, State | None], tuple[Tensor, State]], ids: Tensor, streams: int = 16,
                window: int = 64) -> float:
    """Mean next-id cross-entropy (nats) over an id sequence (L,) read as ``streams`` parallel streams.

    The L − 1 predictions are cut into ``streams`` contiguous pieces (the last
    (L − 1) mod streams are dropped), each read in windows with the state carried, so
    the sum runs over every kept prediction once; perplexity = e^result. Many short
    streams make a large-vocabulary evaluation one batched call per window instead of
    one per token (each stream starts from the zero state).
    """
    if len(ids) < 2:
        raise ValueError(f"need at least 2 ids to score next-id predictions, got {len(ids)}")
    streams = min(check_positive_int(streams, "streams"), len(ids) - 1)
    n = (len(ids) - 1) // streams
    x_all = ids[: streams * n].view(streams, n)
    y_all = ids[1 : streams * n + 1].view(streams, n)
    state: State | None = None
    total = 0.0
    for start in range(0, n, check_positive_int(window, "window")):
        logits, state = forward(x_all[:, start : start + window], state)
        y = y_all[:, start : start + window]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
    return total / (streams * n)


class CharLM(_Generates):
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
        check_ids(ids, self.vocab_size)
        if self.embedding is not None:
            return self.embedding(ids)
        dtype = self.head.linear.weight.dtype
        return F.one_hot(ids.long(), self.vocab_size).to(dtype)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        check_ndim(ids, (2,), "ids", "(batch, time)")
        y, state = self.rnn(self.embed(ids), state)
        assert isinstance(y, Tensor)
        return self.head(y), state



def inverted_dropout(x: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Zero each element with probability ``rate`` (mask drawn with ``generator``), scale the rest by 1/(1 − rate)."""
    return x if rate == 0.0 else x * dropout_mask(x, rate, generator)


class WordLM(_Generates):
    """Word language model of Kuchaiev & Ginsburg (2017), Fig. 1: embedding → 2 LSTMP-like layers → softmax.

    Args:
        vocab_size: V (ids ranked by decreasing frequency, as the sampler assumes).
        embedding_size: p, the embedding width and every layer's projection size.
        hidden_size: n, cell units per layer (the paper: n = 8p).
        num_layers: recurrent layers (the paper: 2).
        cell: ``lstmp`` (BIGLSTM), ``flstm`` (with ``rank``) or ``glstm`` (with ``groups``,
            a tuple for per-layer groups such as ``(4, 8)``).
        dropout: rate on the embedding output, between layers and on the top output
            (Zaremba et al. 2014); masks drawn with ``dropout_generator``.
        num_sampled: S candidates of the sampled softmax in training; 0 trains with the full softmax.
        forget_bias: initial forget-gate bias (Jozefowicz et al.: 1).
        **cell_options: passed to :class:`distlstm.LSTM` (``rank``, ``groups``, ``single_bias`` …).

    ``forward(ids, state)`` returns ``(logits (B, T, V), state)``; with ``targets`` it
    returns ``(loss, state)``: the sampled-softmax loss (candidates drawn with
    ``generator``) in training mode with S > 0, the full cross-entropy otherwise.
    """

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int = 2,
                 cell: str = "lstmp", dropout: float = 0.0, num_sampled: int = 0, forget_bias: float = 1.0,
                 **cell_options: Any) -> None:
        super().__init__()
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_sampled < 0:
            raise ValueError(f"num_sampled must be 0 (full softmax) or positive, got {num_sampled}")
        if num_sampled > vocab_size:
            raise ValueError(f"num_sampled={num_sampled} sampled classes are more than the vocabulary of "
                             f"{vocab_size} words; use at most {vocab_size} (or 0 for the full softmax)")
        self.dropout, self.num_sampled = float(dropout), num_sampled
        self.embedding = nn.Embedding(vocab_size, check_positive_int(embedding_size, "embedding_size"))
        self.rnn = LSTM(embedding_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
                        proj_size=embedding_size, cell=cell, **cell_options)
        self.rnn.fill_forget_bias_(forget_bias)
        self.head = SoftmaxHead(self.rnn.output_size, vocab_size)
        self.sampler = LogUniformSampler(vocab_size)
        self.dropout_generator: torch.Generator | None = None

    def hidden(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Top-layer outputs (B, T, p) after dropout, and the carried state."""
        check_ndim(ids, (2,), "ids", "(batch, time)")
        check_ids(ids, self.vocab_size)
        rate = self.dropout if self.training else 0.0
        x = inverted_dropout(self.embedding(ids), rate, self.dropout_generator)
        self.rnn.dropout_generator = self.dropout_generator
        y, state = self.rnn(x, state)
        assert isinstance(y, Tensor)
        return inverted_dropout(y, rate, self.dropout_generator), state

    def forward(self, ids: Tensor, state: State | None = None, targets: Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, State]:
        y, state = self.hidden(ids, state)
        if targets is None:
            return self.head(y), state
        if targets.shape != ids.shape:
            raise ValueError(f"targets: expected shape {tuple(ids.shape)}, got {tuple(targets.shape)}")
        if not (self.training and self.num_sampled):
            return sequence_cross_entropy(self.head(y), targets), state
        if generator is None:
            raise ValueError("the sampled softmax needs a torch.Generator to draw its candidates (generator=)")
        candidates = self.sampler.sample(self.num_sampled, generator)
        lin = self.head.linear
        return sampled_softmax_loss(lin.weight, lin.bias, y.flatten(0, 1), targets.flatten(), candidates,
                                    self.sampler), state
