"""Synchronous data-parallel BPTT: one step of ``DistributedDataParallel`` with state carried across windows.

Every worker holds a replica of the model and its own part of each global batch (a
contiguous shard of streams, or rows of a shuffled minibatch: ``data/partition.py``).
One step (:func:`ddp_step`)::

    L_r   = this worker's mean loss on its B sequences or streams × k steps
    g     = (1/W) Σ_r ∇L_r            (DDP all-reduces the gradients during backward)
    θ    ← optimizer(θ, clip(g))      (identical on every worker)
    carry ← detach(final LSTM state)  (stateful streams: the next window starts from it)

so W workers with B streams each take the steps of one process with W·B streams.
The mean loss is all-reduced *before* backward, so every worker sees the same value
and a non-finite loss stops all of them together (no worker is left waiting in an
all-reduce). Workers talk only through the communicator (``runtime/comm.py``); the
run loop around the steps (checkpoints, evaluation cadence, resuming) is
``modes/ddp.py`` in ``runs/loop.py``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from distlstm.bptt.tasks import Batch
from distlstm.models.cells import State
from distlstm.runtime.comm import Communicator

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad")


class Task(Protocol):
    """What data-parallel training needs from a task (built-in ones: ``bptt/tasks.py``, ``bptt/table_task.py``).

    A task is built for one (rank, world size). ``batch(step, seed)`` must be a pure
    function of the global step and the seed and return *this worker's* part of the
    global batch, so W workers and a resumed run see the batches of one uninterrupted
    process. ``loss(model, batch, state)`` returns this worker's mean loss and, for
    ``stateful`` tasks, the state to carry into the next batch (reset where
    ``batch.starts_stream``). ``evaluate(model)`` runs on rank 0 only (its value is broadcast); lower is better.
    ``samples_per_step`` counts samples of all workers per step; ``steps_per_epoch()``
    global steps per pass over the data. Optional: ``describe() -> dict`` adds
    task-specific figures to summary.json; ``model_spec() -> dict`` (kind, constructor
    arguments, dtype: :func:`~distlstm.bptt.tasks.model_from_spec`) lets a run's model be
    rebuilt without the data. Full-batch L-BFGS / CG also needs ``full_batch()``.
    """

    metric: str  # name of the evaluation metric, lower is better
    stateful: bool  # carry the LSTM state from one batch to the next
    world_size: int

    @property
    def samples_per_step(self) -> int: ...
    def steps_per_epoch(self) -> int: ...
    def build_model(self, seed: int) -> nn.Module: ...
    def batch(self, step: int, seed: int) -> Batch: ...
    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]: ...
    def evaluate(self, model: nn.Module) -> float: ...


def make_optimizer(params: Any, optimizer: str, lr: float, momentum: float = 0.9,
                   adagrad_accumulator: float = 1.0) -> torch.optim.Optimizer:
    """sgd, momentum (SGD with ``momentum``), adam, or adagrad (initial accumulator ``adagrad_accumulator``)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=adagrad_accumulator)
    return torch.optim.SGD(params, lr=lr, momentum=momentum if optimizer == "momentum" else 0.0)


def mean_over_workers(value: Tensor, comm: Communicator) -> float:
    """The mean of a scalar over all workers (every worker gets the same number)."""
    if comm.world_size > 1:
        value = comm.all_reduce_(value.double().clone()) / comm.world_size
    return float(value)


def ddp_step(task: Task, net: nn.Module, opt: torch.optim.Optimizer, batch: Batch, carry: State | None,
             comm: Communicator, *, clip: float | None, step: int, scaler: torch.amp.GradScaler | None = None,
             autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
             ) -> tuple[float, State | None]:
    """One global minibatch step; returns the loss averaged over workers and the state to carry.

    ``net`` is the model wrapped by ``comm.data_parallel`` (its backward averages the
    gradients); ``carry`` is reset where the batch starts a stream or the task is not
    stateful. ``scaler`` (float16 AMP) scales the loss and skips steps with overflowing
    gradients. A non-finite loss or gradient norm — the same on every worker — raises
    :class:`FloatingPointError` before θ changes.
    """
    if batch.starts_stream or not task.stateful:
        carry = None
    with autocast():
        loss, carry = task.loss(net, batch, carry)
    value = mean_over_workers(loss.detach(), comm)
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite training loss ({value}) at step {step + 1}; the run folder keeps its "
                                 "last checkpoint. Lower the learning rate or clip gradients")
    params = [p for group in opt.param_groups for p in group["params"]]
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        norm = nn.utils.clip_grad_norm_(params, math.inf if clip is None else clip)
        if not torch.isfinite(norm):  # the same on every rank: gradients are averaged already
            raise FloatingPointError(f"non-finite gradient norm at step {step + 1}; lower the learning rate")
        opt.step()
    return value, None if carry is None else tuple(part.detach() for part in carry)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    lengths = None if batch.lengths is None else batch.lengths.to(device)
    return Batch(batch.x.to(device), batch.y.to(device), lengths, batch.starts_stream)


def evaluate_on_rank0(task: Task, model: nn.Module, comm: Communicator) -> float:
    """Rank 0 evaluates; the value is broadcast so every worker takes the same stopping decision."""
    value = torch.zeros(1, dtype=torch.float64)
    if comm.is_main:
        model.eval()
        value[0] = task.evaluate(model)
        model.train()
    return float(comm.broadcast_(value, 0))


def gather_carry(carry: State | None, comm: Communicator) -> list[Tensor] | None:
    """Every worker's carried state, streams concatenated in rank order (called on every rank)."""
    if carry is None:
        return None
    return [comm.all_gather_cat(part.detach().cpu(), dim=1) for part in carry]


def scatter_carry(gathered: list[Tensor] | None, comm: Communicator, device: torch.device) -> State | None:
    """This worker's streams of a :func:`gather_carry` result."""
    if gathered is None:
        return None
    per_worker = gathered[0].shape[1] // comm.world_size
    part = slice(comm.rank * per_worker, (comm.rank + 1) * per_worker)
    return tuple(t[:, part].to(device) for t in gathered)
