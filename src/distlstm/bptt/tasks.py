"""What the data-parallel trainer trains: a model, this worker's batches, a loss and an evaluation.

* :class:`CharStreamTask` — a character language model on one long text, read as
  stateful streams with truncated BPTT (the TensorFlow data-parallel source's setting).
* :class:`WordStreamTask` — Kuchaiev & Ginsburg's word language model (LSTMP, F-LSTM,
  G-LSTM) on the same kind of streams, trained with a sampled softmax.
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

from distlstm._flags import option
from distlstm.data.longlag import LongLagData, adding_problem, multiplication_problem
from distlstm.data.partition import StreamShard, epoch_batches, partition_stream
from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, held_out_slice, load_text, split_ids
from distlstm.data.words import SHAKESPEARE_COMPLETE, load_word_corpus
from distlstm.models.cells import State
from distlstm.models.heads import sequence_cross_entropy
from distlstm.models.init import check_init, sparse_init_
from distlstm.models.networks import CharLM, SequenceRegressor, WordLM, sequence_nats, stream_nats

LONG_LAG_PROBLEMS = {"adding": adding_problem, "multiplication": multiplication_problem}


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    lengths: Tensor | None  # per-sequence lengths, or None for full windows
    starts_stream: bool  # the carried state restarts from zero here


def longlag_spec(hidden: int = 4, alpha: float = 3.75) -> dict[str, Any]:
    """The matrix-batch paper's long-lag network: peephole cells, no forget gate, gates σ(α·a), float64."""
    return {"kind": "long-lag", "dtype": "float64",
            "config": {"input_size": 2, "hidden_size": hidden, "cell": "peephole", "forget_gate": False,
                       "alpha": alpha, "pooling": "last", "head_bias": True}}


def longlag_model(hidden: int = 4, alpha: float = 3.75, seed: int = 0) -> nn.Module:
    """:func:`longlag_spec`'s network, initialised from ``seed``."""
    torch.manual_seed(seed)
    return model_from_spec(longlag_spec(hidden, alpha))


MODEL_KINDS = {"char-lm": CharLM, "word-lm": WordLM, "long-lag": SequenceRegressor, "csv": SequenceRegressor}


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """A task's model from its ``model_spec()`` (kind, constructor arguments, dtype), initialised from the global seed.

    The spec is what a run's checkpoint stores as artifacts, so a model can be rebuilt
    (and its state dict loaded) without the training data.
    """
    kind = spec.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](**spec["config"]).to(getattr(torch, spec["dtype"]))


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


class _StreamWindows:
    """Stateful-stream reading shared by the language-model tasks: global step s reads window s mod J."""

    world_size: int
    streams: int  # B, per worker
    window: int  # k
    shard: StreamShard

    @property
    def samples_per_step(self) -> int:
        """Tokens predicted per global step (all workers)."""
        return self.world_size * self.streams * self.window

    def steps_per_epoch(self) -> int:
        return len(self.shard)

    def batch(self, step: int, seed: int) -> Batch:
        j = step % self.steps_per_epoch()
        x, y = self.shard.window_at(j)
        return Batch(x, y, None, j == 0)


@dataclass
class CharStreamTask(_StreamWindows):
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

    def model_spec(self) -> dict[str, Any]:
        """What sampling needs to rebuild the model: kind, vocabulary and :class:`CharLM` arguments."""
        return {"kind": "char-lm", "vocab": self.vocab.chars, "dtype": self.dtype,
                "config": {"vocab_size": len(self.vocab), "hidden_size": self.hidden, "num_layers": self.layers,
                           "cell": self.cell, "embedding_dim": self.embedding, **self.cell_options}}

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return model_from_spec(self.model_spec())

    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]:
        logits, state = model(batch.x, state)
        return sequence_cross_entropy(logits, batch.y), state

    def evaluate(self, model: nn.Module) -> float:
        device = next(model.parameters()).device
        return sequence_nats(model, held_out_slice(self.val, self.eval_chars).to(device))


@dataclass
class WordStreamTask(_StreamWindows):
    """Next-word prediction (Kuchaiev & Ginsburg's LM): B stateful streams per worker, windows of k words.

    The corpus is split by work (``data/words.py``); the vocabulary is cut at
    ``max_vocab`` types of the training split. Training uses a sampled softmax of
    ``num_sampled`` log-uniform candidates, drawn with a generator seeded from
    (seed, step) so every worker — and a resumed run — uses the candidates of the
    single-process run. The metric is the full-softmax validation cross-entropy in nats
    per word (perplexity = e^metric) on the first ``eval_tokens`` validation tokens.
    """

    rank: int = 0
    world_size: int = 1
    text: str = str(SHAKESPEARE_COMPLETE)
    streams: int = 32  # B, per worker
    window: int = 20  # k (BIGLSTM's 20 unrolled steps)
    embedding: int = 64  # p: embedding and projection size
    hidden: int = 512  # n
    layers: int = 2
    cell: str = "lstmp"
    cell_options: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.1
    num_sampled: int = 1024  # S; 0 trains with the full softmax
    max_vocab: int = 10_000
    min_count: int = 1
    dtype: str = "float32"
    eval_tokens: int = 20_000
    metric: str = "val_nats_per_word"
    stateful: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        self.corpus = load_word_corpus(self.text, self.max_vocab, self.min_count)
        if self.num_sampled > len(self.corpus.vocab):
            raise ValueError(f"num_sampled={self.num_sampled} sampled classes are more than the vocabulary of "
                             f"{len(self.corpus.vocab)} words; use at most {len(self.corpus.vocab)}")
        train = self.corpus.train
        self.shard = partition_stream(train[:-1], train[1:], rank=self.rank, world_size=self.world_size,
                                      streams=self.streams, window=self.window)
        self._step_seed = 0

    def model_spec(self) -> dict[str, Any]:
        """What sampling needs to rebuild the model: kind, vocabulary and :class:`WordLM` arguments."""
        options = {"single_bias": True, **self.cell_options}
        return {"kind": "word-lm", "vocab": list(self.corpus.vocab.words), "dtype": self.dtype,
                "config": {"vocab_size": len(self.corpus.vocab), "embedding_size": self.embedding,
                           "hidden_size": self.hidden, "num_layers": self.layers, "cell": self.cell,
                           "dropout": self.dropout, "num_sampled": self.num_sampled, **options}}

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = model_from_spec(self.model_spec())
        assert isinstance(model, WordLM)
        model.dropout_generator = torch.Generator().manual_seed(seed * 1_000_003 + 7 + self.rank)
        return model

    def batch(self, step: int, seed: int) -> Batch:
        self._step_seed = seed * 1_000_003 + step  # the candidates of this step (loss) depend on it only
        return super().batch(step, seed)

    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]:
        generator = torch.Generator().manual_seed(self._step_seed)  # the sampler draws on the CPU
        loss, state = model(batch.x, state, batch.y, generator)
        return loss, state

    def evaluate(self, model: nn.Module) -> float:
        device = next(model.parameters()).device
        return stream_nats(model, self.corpus.val[: self.eval_tokens + 1].to(device))


class ShuffledMinibatches:
    """Minibatches of independent sequences from ``self.train``, shared by the regression tasks.

    Every epoch a permutation seeded by (seed, epoch) is cut into global batches of
    ``world_size · batch_size`` rows (:func:`~distlstm.data.partition.epoch_batches`) and
    worker ``rank`` takes its ``batch_size`` rows, so W workers take one process's steps.
    A subclass sets ``train``, ``rank``, ``world_size``, ``batch_size`` and names its rows
    in ``unit``.
    """

    train: LongLagData
    rank: int
    world_size: int
    batch_size: int
    unit: str = "sequences"
    _rows_epoch: tuple[int, list[Tensor]] | None = None  # (epoch, this worker's rows of each step)

    @property
    def samples_per_step(self) -> int:
        return self.world_size * self.batch_size

    def steps_per_epoch(self) -> int:
        """Minibatch steps per epoch (full-batch optimizers do not use minibatches)."""
        if len(self.train) < self.samples_per_step:
            raise ValueError(f"{len(self.train)} training {self.unit} are fewer than one global batch of "
                             f"{self.world_size} worker(s) × {self.batch_size}; lower "
                             f"{option('batch_size', '--batch')}")
        return len(self.train) // self.samples_per_step

    def batch_rows(self, step: int, seed: int) -> Tensor:
        """This worker's rows of ``self.train`` at global ``step``."""
        epoch, j = divmod(step, self.steps_per_epoch())
        if self._rows_epoch is None or self._rows_epoch[0] != epoch:
            self._rows_epoch = (epoch, epoch_batches(len(self.train), self.batch_size, rank=self.rank,
                                                     world_size=self.world_size, seed=seed, epoch=epoch))
        return self._rows_epoch[1][j]


@dataclass
class LongLagTask(ShuffledMinibatches):
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
    init: str = "sparse"  # models/init.py: INITS
    metric: str = "test_mae"
    stateful: bool = False

    def __post_init__(self) -> None:
        check_init(self.init)
        self.train, self.test = longlag_splits(self.problem, self.min_len, self.train_size, self.test_size,
                                               self.data_seed)

    def model_spec(self) -> dict[str, Any]:
        return longlag_spec(self.hidden, self.alpha)

    def build_model(self, seed: int) -> nn.Module:
        """The network with ``init``'s weights: the paper's sparse start (from a generator seeded with ``seed``)
        or each module's own uniform one.

        Where ``data_seed == seed`` (the reproduction's runs) the sparse start and the data sets are drawn from
        the same stream of numbers, in other shapes and order; left so, since the checked-in runs were made so.
        """
        torch.manual_seed(seed)
        model = model_from_spec(self.model_spec())
        if self.init == "sparse":
            sparse_init_(model, torch.Generator().manual_seed(seed))
        return model

    def batch(self, step: int, seed: int) -> Batch:
        rows = self.batch_rows(step, seed)
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
