"""What an online run records, and the figures computed from the records.

At every step every node predicts its label before seeing it; the run records, per
step and node, the squared error (d − d̂)² (NaN: no label) and the predictive
variance (NaN where the algorithm has none), and per step the bytes and messages
sent (mean over nodes) and the step's seconds.

Memory stays flat however long the run: the summaries are running sums (the running
MSE Σe²/n, the area under the learning curve, the 95% interval's hits, bytes and
messages), and the final-window MSE comes from :class:`WindowSums`, at most
:data:`MAX_BLOCKS` blocks of steps. The per-step curve is streamed to disk by the run
loop (``metrics.csv``: ``mse``, ``running_mse``); the per-node lists are kept in memory
only with ``keep_steps=True`` (in-memory studies and tests, which read them). A run
that may lose nodes (``per_node``) also keeps per-node window sums, for the final MSE of
whichever nodes survive, and the last step can be undone exactly (a survivor that was a
step ahead of the others rolls it back). A checkpoint stores the sums, so a resumed run
reports exactly what an uninterrupted one does.

Randomness: node k's generator is seeded from ``(seed, k)`` (:func:`node_generator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field

import torch

from distlstm.online.base import Observation
from distlstm.ops.noise import Z95  # the 95% interval's half-width in standard deviations

MAX_BLOCKS = 4096  # final-window resolution: exact up to this many steps


def node_generator(seed: int, node: int) -> torch.Generator:
    """Node k's generator, derived from the run seed and the node id."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * int(node) + 1)


@dataclass
class WindowSums:
    """Per-block sums of ``width`` columns, for the final-window MSE.

    The run's window sums (squared error, count, squared error in data units) per block;
    a run that may lose nodes keeps a second one with every node's squared error and count.
    Steps are grouped in blocks of ``block`` = 2^j steps; when more than
    :data:`MAX_BLOCKS` blocks would be needed, neighbouring blocks merge and the block
    doubles. The window of the last fraction f of S steps starts at the block boundary
    at or before step ⌊(1 − f)·S⌋: exact while S ≤ MAX_BLOCKS, and otherwise holding at
    most block − 1 < S / (MAX_BLOCKS / 2) extra steps (under 0.25% of a 20% window).
    """

    block: int = 1
    sums: list[list[float]] = field(default_factory=list)  # per block: [error sum, count, data-units error sum]
    steps: int = 0
    width: int = 3
    # the last block before the last step (None: that step opened it); undone: nothing to undo
    _before: list[float] | None = field(default=None, init=False, repr=False, compare=False)
    _undoable: bool = field(default=False, init=False, repr=False, compare=False)

    def add(self, *values: float) -> None:
        """One step's values (``width`` of them) added to the current block."""
        if self.steps % self.block == 0 and len(self.sums) == MAX_BLOCKS:
            self.sums = [[a + b for a, b in zip(self.sums[i], self.sums[i + 1], strict=True)]
                         for i in range(0, MAX_BLOCKS, 2)]
            self.block *= 2
        opens = self.steps % self.block == 0
        self._before, self._undoable = (None if opens else list(self.sums[-1])), True
        if opens:
            self.sums.append([0.0] * self.width)
        last = self.sums[-1]
        for i, v in enumerate(values):
            last[i] += v
        self.steps += 1

    def undo(self) -> None:
        """Take the last step out again, exactly (its block as it was, or gone if the step opened it).

        A step that merged blocks also opened one: the merged blocks stay, which is the
        state the next step would have merged them into anyway.
        """
        if not self._undoable:
            raise RuntimeError("only the last step added can be undone, and only once")
        self.steps -= 1
        if self._before is None:
            self.sums.pop()
        else:
            self.sums[-1] = self._before
        self._undoable = False

    def totals(self, fraction: float) -> list[float]:
        """Each column summed over the last ``fraction`` of the steps (see the class docstring for the start)."""
        first = int(self.steps * (1 - fraction)) // self.block
        out = [0.0] * self.width
        for row in self.sums[first:]:
            for i, v in enumerate(row):
                out[i] += v
        return out

    def final_mse(self, fraction: float, data_units: bool = False) -> float:
        """MSE over the last ``fraction`` of the steps (the run's window: error, count, data-units error)."""
        total, count, total_data = self.totals(fraction)
        return (total_data if data_units else total) / count if count else math.nan

    def to_tensor(self) -> torch.Tensor:
        head = [float(self.block), float(self.steps)] + [0.0] * (self.width - 2)
        return torch.tensor([head, *self.sums], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, saved: torch.Tensor) -> WindowSums:
        head, *rows = saved.tolist()
        return cls(block=int(head[0]), sums=[list(r) for r in rows], steps=int(head[1]), width=len(head))


_SUMS = ("total", "count", "total_data", "running_sum", "hits", "covered", "bytes", "messages", "skipped_labels",
         "steps")  # the numbers; the time taken is stored apart (``seconds``), as a measurement


@dataclass
class OnlineRecords:
    """Running sums of one online run, and with ``keep_steps`` its per-step lists ([step][node]).

    ``per_node`` (a run that may lose nodes) adds ``node_window``: per block, every node's
    Σe² and count (columns k and K + k), for :meth:`final_mse_of` the survivors.
    """

    algorithm: str
    num_nodes: int
    keep_steps: bool = True
    sq_errors: list[list[float]] = field(default_factory=list)  # NaN where the label was missing
    variances: list[list[float]] = field(default_factory=list)  # NaN where not modelled
    bytes_per_step: list[float] = field(default_factory=list)  # mean over nodes
    messages_per_step: list[float] = field(default_factory=list)
    seconds: float = 0.0
    skipped_labels: int = 0
    steps: int = 0
    total: float = 0.0  # Σ e² and its count: the running MSE
    count: int = 0
    total_data: float = 0.0  # Σ e² in the target's own units (when the caller gives factors)
    running_sum: float = 0.0  # Σ_t running MSE_t: the area under the learning curve
    hits: int = 0  # labels inside the 95% interval, of ``covered`` with a variance
    covered: int = 0
    bytes: float = 0.0
    messages: float = 0.0
    last_mse: float = math.nan  # the node-averaged squared error of the last step
    window: WindowSums = field(default_factory=WindowSums)
    node_window: WindowSums | None = None
    per_node: InitVar[bool] = False
    _before: tuple[tuple[float, ...], float, float] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, per_node: bool) -> None:
        if per_node and self.node_window is None:
            self.node_window = WindowSums(width=2 * self.num_nodes)

    def append(self, errors: list[float], variances: list[float], sent_bytes: float, messages: float,
               seconds: float, factors: Sequence[float] | None = None) -> None:
        """One step: every node's squared error and variance, the mean bytes and messages per node.

        ``factors`` (one per node) turn the errors into the target's own units (the scale²
        of each node's observation); without them the data-units sums equal the scaled ones.
        """
        self._before = tuple(getattr(self, f) for f in _SUMS), self.seconds, self.last_mse  # for undo_last()
        if self.keep_steps:
            self.sq_errors.append(errors)
            self.variances.append(variances)
            self.bytes_per_step.append(sent_bytes)
            self.messages_per_step.append(messages)
        self.seconds += seconds
        self.bytes += sent_bytes
        self.messages += messages
        step_total, step_data, step_count = 0.0, 0.0, 0
        for k, (e, v) in enumerate(zip(errors, variances, strict=True)):
            if math.isnan(e):
                self.skipped_labels += 1
                continue
            step_total += e
            step_data += e * (factors[k] if factors is not None else 1.0)
            step_count += 1
            if not math.isnan(v):
                self.covered += 1
                self.hits += e <= Z95 * Z95 * v
        self.total += step_total
        self.total_data += step_data
        self.count += step_count
        self.last_mse = step_total / step_count if step_count else math.nan
        self.running_sum += self.running_mse_now
        self.window.add(step_total, step_count, step_data)
        if self.node_window is not None:
            self.node_window.add(*_node_row(errors))
        self.steps += 1

    def undo_last(self) -> None:
        """Forget the last step appended, exactly: the sums as they were before it.

        What a survivor that completed one step more than the others does before the
        step is repeated on the reduced graph (``OnlineMode.recover``).
        """
        if self._before is None:
            raise RuntimeError("only the last step appended can be undone, and only once")
        sums, self.seconds, self.last_mse = self._before
        for name, value in zip(_SUMS, sums, strict=True):
            setattr(self, name, value)
        self.window.undo()
        if self.node_window is not None:
            self.node_window.undo()
        if self.keep_steps:
            for kept in (self.sq_errors, self.variances, self.bytes_per_step, self.messages_per_step):
                kept.pop()
        self._before = None

    @property
    def running_mse_now(self) -> float:
        """The running MSE after the last step (the last point of the learning curve)."""
        return self.total / self.count if self.count else math.nan

    @property
    def running_mse_data_units(self) -> float:
        return self.total_data / self.count if self.count else math.nan

    @property
    def mean_running_mse(self) -> float:
        """The area under the learning curve over the steps (NaN while a step had no label yet)."""
        return self.running_sum / self.steps if self.steps else math.nan

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The sums as float64 tensors (what a checkpoint stores: a few numbers and the window's blocks)."""
        saved = {"sums": torch.tensor([float(getattr(self, f)) for f in _SUMS], dtype=torch.float64),
                 "seconds": torch.tensor(self.seconds, dtype=torch.float64),
                 "last_mse": torch.tensor(self.last_mse, dtype=torch.float64),
                 "window": self.window.to_tensor()}
        if self.node_window is not None:
            saved["node_window"] = self.node_window.to_tensor()
        if self.keep_steps and self.steps:  # records that keep their steps (in-memory studies) keep them
            saved |= {"step_sq_errors": torch.tensor(self.sq_errors, dtype=torch.float64),
                      "step_variances": torch.tensor(self.variances, dtype=torch.float64),
                      "step_bytes": torch.tensor(self.bytes_per_step, dtype=torch.float64),
                      "step_messages": torch.tensor(self.messages_per_step, dtype=torch.float64)}
        return saved

    @classmethod
    def from_tensors(cls, algorithm: str, num_nodes: int, saved: dict[str, torch.Tensor],
                     keep_steps: bool = False, per_node: bool = False) -> OnlineRecords:
        """The records :meth:`to_tensors` stored.

        The per-step lists come back only with ``keep_steps`` and if they were stored
        (otherwise they stay empty, and ``keep_steps`` is off). ``per_node``: the per-node
        window sums, as stored, or rebuilt from stored per-step lists (a checkpoint of
        before them); a checkpoint with neither leaves them None (no survivors' MSE).
        """
        if "sq_errors" in saved:  # a checkpoint of before the sums: replay its per-step lists
            out = cls(algorithm, num_nodes, keep_steps=keep_steps, per_node=per_node)
            for errors, variances, b, m in zip(saved["sq_errors"].tolist(), saved["variances"].tolist(),
                                               saved["bytes"].tolist(), saved["messages"].tolist(), strict=True):
                out.append(errors, variances, b, m, 0.0)
            out.seconds = float(saved["seconds"])
            return out
        out = cls(algorithm, num_nodes, keep_steps=False, window=WindowSums.from_tensor(saved["window"]),
                  node_window=WindowSums.from_tensor(saved["node_window"]) if "node_window" in saved else None)
        for name, value in zip(_SUMS, saved["sums"].tolist(), strict=True):
            setattr(out, name, int(value) if isinstance(getattr(out, name), int) else value)
        out.last_mse = float(saved["last_mse"])
        out.seconds = float(saved["seconds"])
        rows = saved["step_sq_errors"].tolist() if "step_sq_errors" in saved else None
        if per_node and out.node_window is None and rows is not None:  # a node-loss run's checkpoint of before
            out.node_window = WindowSums(width=2 * num_nodes)
            for errors in rows:
                out.node_window.add(*_node_row(errors))
        if keep_steps and rows is not None:
            out.keep_steps, out.sq_errors, out.variances = True, rows, saved["step_variances"].tolist()
            out.bytes_per_step, out.messages_per_step = saved["step_bytes"].tolist(), saved["step_messages"].tolist()
        else:
            out.keep_steps = keep_steps and out.steps == 0  # lists that would miss the steps stored are not kept
        return out

    def _kept(self) -> None:
        if not self.keep_steps:
            raise ValueError("this run keeps no per-step records in memory (keep_steps=False, as distlstm online "
                             "runs); its per-step curve is in the run folder's metrics.csv and mse.csv")

    def mse_curve(self) -> list[float]:
        """Node-averaged squared error at each step (labelled nodes only); needs ``keep_steps``."""
        self._kept()
        return [_nanmean(row) for row in self.sq_errors]

    def running_mse(self) -> list[float]:
        """Time-averaged MSE up to each step: the paper's learning curve; needs ``keep_steps``."""
        self._kept()
        out, total, count = [], 0.0, 0
        for row in self.sq_errors:
            vals = [v for v in row if not math.isnan(v)]
            total += sum(vals)
            count += len(vals)
            out.append(total / count if count else math.nan)
        return out

    def final_mse(self, fraction: float = 0.2, data_units: bool = False) -> float:
        """Mean squared error over the last ``fraction`` of the steps (:class:`WindowSums` says where it starts)."""
        return self.window.final_mse(fraction, data_units)

    def final_mse_of(self, nodes: Sequence[int], fraction: float = 0.2) -> float:
        """MSE of ``nodes`` over the last ``fraction`` of the steps (the window's start as in :meth:`final_mse`).

        From the per-node window sums (``per_node``); NaN without them or without a label.
        """
        if self.node_window is None:
            return math.nan
        sums = self.node_window.totals(fraction)
        count = sum(sums[self.num_nodes + k] for k in nodes)
        return sum(sums[k] for k in nodes) / count if count else math.nan

    def coverage95(self) -> float:
        """Fraction of labels inside the 95% predictive interval (NaN without variances)."""
        return self.hits / self.covered if self.covered else math.nan

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)

    @property
    def bytes_per_node_per_step(self) -> float:
        return self.bytes / max(self.steps, 1)

    @property
    def messages_per_node_per_step(self) -> float:
        return self.messages / max(self.steps, 1)


def _node_row(errors: Sequence[float]) -> list[float]:
    """One step's per-node window row: every node's squared error, then its count (0 where NaN: no label)."""
    return [0.0 if math.isnan(e) else e for e in errors] + [0.0 if math.isnan(e) else 1.0 for e in errors]


def squared_error(d: float, d_hat: float) -> float:
    """(d − d̂)², saturating at inf instead of raising OverflowError."""
    e = d - d_hat
    return e * e if abs(e) < 1e150 else math.inf


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def check_streams(streams: Sequence[Sequence[Observation]], num_nodes: int) -> int:
    """Validate per-node streams; returns the number of steps (the shortest stream)."""
    if len(streams) != num_nodes:
        raise ValueError(f"expected one stream per node ({num_nodes}), got {len(streams)}")
    lengths = [len(s) for s in streams]
    if min(lengths) == 0:
        raise ValueError(f"every node needs at least one observation; stream lengths {lengths}")
    p = streams[0][0].x.shape[-1]
    for k, stream in enumerate(streams):
        for t, ob in enumerate(stream):
            if ob.x.dim() != 2 or ob.x.shape[0] < 1 or ob.x.shape[1] != p:
                raise ValueError(f"node {k}, step {t}: expected a sequence of shape (T ≥ 1, {p}), "
                                 f"got {tuple(ob.x.shape)}")
            if not bool(torch.isfinite(ob.x).all()):
                raise ValueError(f"node {k}, step {t}: the input sequence contains NaN/inf")
    return min(lengths)
