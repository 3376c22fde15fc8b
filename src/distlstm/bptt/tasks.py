"""What the data-parallel trainer trains: a model, this worker's batches, a loss and an evaluation.

* :class:`CharStreamTask` — a character language model on one long text, read as
  stateful streams with truncated BPTT (the TensorFlow data-parallel source's setting).
* :class:`LongLagTask` — the adding or multiplication problem, minibatches of
  independent variable-length sequences with full BPTT (the matrix-batch paper's
  gradient-descent baseline).

A task is built for one (rank, world size); its batch for global step s is a pure
function of s and the seed, so a resumed run and W workers see exactly the batches of
an uninterrupted single-process run with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from distlstm.data.longlag import LongLagData, adding_problem, multiplication_problem
from distlstm.data.partition import StreamShard, epoch_batches, partition_stream
from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, load_text, split_ids
from distlstm.models.cells import State
from distlstm.models.heads import sequence_cross_entropy
from distlstm.models.networks import CharLM, SequenceRegressor, sequence_nats

LONG_LAG_PROBLEMS = {"adding": adding_problem, "multiplication": multiplication_problem}


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    lengths: Tensor | None  # per-sequence lengths, or None for full windows
    starts_stream: bool  # the carried state restarts from zero here


def longlag_model(hidden: int = 4, alpha: float = 3.75, seed: int = 0) -> SequenceRegressor:
    """The matrix-batch paper's long-lag network: peephole cells, no forget gate, gates σ(α·a), float64."""
    torch.manual_seed(seed)
    return SequenceRegressor(2, hidden, cell="peephole", forget_gate=False, alpha=alpha, pooling="last",
                             head_bias=True).double()


def longlag_splits(problem: str, min_len: int, train: int, test: int, seed: int) -> tuple[LongLagData, LongLagData]:
    """Training and test sets of a long-lag problem, drawn from one generator seeded with ``seed``."""
    if problem not in LONG_LAG_PROBLEMS:
        raise ValueError(f"unknown long-lag problem {problem!r}; expected one of {sorted(LONG_LAG_PROBLEMS)}")
    gen = torch.Generator().manual_seed(seed)
    make = LONG_LAG_PROBLEMS[problem]
    return make(train, min_len, gen), make(test, min_len, gen)


@torch.no_grad()
def mean_absolute_error(model: nn.Module, data: LongLagData) -> float:
    """Mean |d̂ − d| over a data set, in chunks (the paper's stopping criterion is test MAE < 0.01)."""
    total = 0.0
    for start in range(0, len(data), 4096):
        part = slice(start, start + 4096)
        total += float((model(data.x[part], data.lengths[part]) - data.y[part]).abs().sum())
    return total / len(data)


@dataclass
class CharStreamTask:
    """Next-character prediction on a text, B stateful streams per worker, windows of k characters."""

    rank: int = 0
    world_size: int = 1
    text: str = str(SHAKESPEARE_TRAGEDIES)
    streams: int = 16  # B, per worker
    window: int = 64  # k
    hidden: int = 128
    layers: int = 1
    cell: str = "lstm"
    embedding: int = 0
    cell_options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # or float64 (the equivalence tests)
    eval_chars: int = 20_000
    metric: str = "val_nats_per_char"
    stateful: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        text = load_text(self.text)
        self.vocab = CharVocab.from_text(text)
        train, self.val = split_ids(self.vocab.encode(text))
        self.shard: StreamShard = partition_stream(train[:-1], train[1:], rank=self.rank,
                                                   world_size=self.world_size, streams=self.streams,
                                                   window=self.window)

    @property
    def samples_per_step(self) -> int:
        """Characters predicted per global step (all workers)."""
        return self.world_size * self.streams * self.window

    def steps_per_epoch(self) -> int:
        return len(self.shard)

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = CharLM(len(self.vocab), self.hidden, self.layers, cell=self.cell, embedding_dim=self.embedding,
                       **self.cell_options)
        return model.to(getattr(torch, self.dtype))

    def batch(self, step: int, seed: int) -> Batch:
        j = step % self.steps_per_epoch()
        x, y = self.shard.window_at(j)
        return Batch(x, y, None, j == 0)

    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]:
        logits, state = model(batch.x, state)
        return sequence_cross_entropy(logits, batch.y), state

    def evaluate(self, model: nn.Module) -> float:
        device = next(model.parameters()).device
        return sequence_nats(model, self.val[: self.eval_chars + 1].to(device))


@dataclass
class LongLagTask:
    """Adding / multiplication problem: minibatches of ``batch`` sequences per worker, MSE, test MAE."""

    rank: int = 0
    world_size: int = 1
    problem: str = "multiplication"
    min_len: int = 100
    train_size: int = 10_000
    test_size: int = 3_000
    batch_size: int = 100  # b, per worker
    hidden: int = 4
    alpha: float = 3.75
    data_seed: int = 0
    metric: str = "test_mae"
    stateful: bool = False

    def __post_init__(self) -> None:
        self.train, self.test = longlag_splits(self.problem, self.min_len, self.train_size, self.test_size,
                                               self.data_seed)
        self._epoch = -1
        self._batches: list[Tensor] = []

    @property
    def samples_per_step(self) -> int:
        return self.world_size * self.batch_size

    def steps_per_epoch(self) -> int:
        """Minibatch steps per epoch (full-batch optimizers do not use minibatches)."""
        if len(self.train) < self.samples_per_step:
            raise ValueError(f"{len(self.train)} training sequences are fewer than one global batch of "
                             f"{self.world_size} worker(s) × {self.batch_size}; lower the batch size")
        return len(self.train) // self.samples_per_step

    def build_model(self, seed: int) -> nn.Module:
        return longlag_model(self.hidden, self.alpha, seed)

    def batch(self, step: int, seed: int) -> Batch:
        epoch, j = divmod(step, self.steps_per_epoch())
        if epoch != self._epoch:
            self._batches = epoch_batches(len(self.train), self.batch_size, rank=self.rank,
                                          world_size=self.world_size, seed=seed, epoch=epoch)
            self._epoch = epoch
        rows = self._batches[j]
        lengths = self.train.lengths[rows]
        steps = int(lengths.max())
        return Batch(self.train.x[rows, :steps], self.train.y[rows], lengths, True)

    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]:
        return ((model(batch.x, batch.lengths) - batch.y) ** 2).mean(), None

    def full_batch(self) -> LongLagData:
        """The whole training set, for full-batch L-BFGS / CG."""
        return self.train

    def evaluate(self, model: nn.Module) -> float:
        device = next(model.parameters()).device
        test = LongLagData(self.test.x.to(device), self.test.lengths.to(device), self.test.y.to(device))
        return mean_absolute_error(model, test)
