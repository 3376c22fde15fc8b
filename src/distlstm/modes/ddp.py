"""The ``ddp`` mode: data-parallel BPTT with minibatch optimizers, one global minibatch per loop step.

:class:`DDPMode` wraps ``bptt/ddp.py``'s step for the run loop (``runs/loop.py``)::

    init      task ← make_task(rank, W); θ ← task.build_model(seed); optimizer; DDP wrapper
    step s    batch ← task.batch(s, seed); L ← mean over workers; θ ← opt(θ, clip(∇L)); carry the state
    evaluate  the task's metric (rank 0 evaluates, every worker gets the value)

Its checkpoint state holds everything an uninterrupted run would still have in memory:
the model, the optimizer (and AMP scaler), every worker's carried stream state and
every worker's dropout generator (gathered to all, so rank 0 writes them), and as
artifacts the task's ``model_spec()`` — the model's kind, constructor arguments and
dtype, plus the vocabulary of a language model or the columns, window, horizon and
fitted scaler of a CSV forecaster — so :func:`load` rebuilds the model without the
training data. The carried state and the data shards depend on the number of workers:
resuming with another number is an error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm._argtypes import positive_int
from distlstm._flags import option
from distlstm.bptt.ddp import (
    OPTIMIZERS,
    Task,
    batch_to,
    ddp_step,
    evaluate_on_rank0,
    gather_carry,
    make_optimizer,
    scatter_carry,
)
from distlstm.bptt.fullbatch import CG_UPDATES, METHODS
from distlstm.models.cells import State
from distlstm.modes import LoadedRun
from distlstm.modes.train_tasks import loaded_task_model
from distlstm.runs.config import flag
from distlstm.runtime.comm import Communicator


@dataclass(frozen=True)
class OptimConfig:
    """The "optim" section of ``distlstm train``: the optimizer and its options."""

    optimizer: str = flag("adam", "sgd, momentum (SGD + momentum), adam, adagrad (initial accumulator "
                                  "--adagrad-accumulator, the paper's word LM: --lr 0.2) take minibatch steps (DDP); "
                                  "lbfgs and cg (long-lag and csv tasks) are full-batch", choices=OPTIMIZERS + METHODS)
    lr: float = flag(3e-3, "learning rate of the minibatch optimizers")
    momentum: float = flag(0.9, "momentum (--optimizer momentum)")
    adagrad_accumulator: float = flag(1.0, "Adagrad's initial accumulator value (Kuchaiev & Ginsburg's f-lm: 1.0)")
    clip: float = flag(1.0, "max gradient norm; 0 turns clipping off")
    amp: bool = flag(False, "float16 mixed precision with gradient scaling (CUDA GPUs only)")
    max_iter: int = flag(5, "lbfgs, cg: iterations per step (the metric is evaluated after each step)",
                         type=positive_int)
    history: int = flag(100, "lbfgs: history size ((s, y) pairs kept)", type=positive_int)
    lbfgs_tolerance: float = flag(1e-14, "lbfgs: the smallest change of the loss or of a weight its line search "
                                         "acts on (torch's default 1e-9 ends runs early where the loss is small)")
    cg_update: str = flag("pr", "cg: β's formula, pr (Polak–Ribière+, SciPy's) or hs (Hestenes–Stiefel+, minFunc's "
                                "default)", choices=CG_UPDATES)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS + METHODS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS + METHODS}")
        if not self.lr > 0:
            raise ValueError(f"{option('lr', '--lr')} must be positive, got {self.lr}")
        if not self.clip >= 0:
            raise ValueError(f"{option('clip', '--clip')} must be positive (or 0 for no clipping), got {self.clip}")
        if not self.lbfgs_tolerance >= 0:
            raise ValueError(f"{option('lbfgs_tolerance', '--lbfgs-tolerance')} must be non-negative, got "
                             f"{self.lbfgs_tolerance}")
        if not self.momentum >= 0 or not self.adagrad_accumulator >= 0:
            raise ValueError(f"momentum and the Adagrad accumulator must be non-negative, got {self.momentum} and "
                             f"{self.adagrad_accumulator}")


class DDPMode:
    """One global minibatch step of data-parallel BPTT per loop step; see the module docstring.

    ``make_task(rank, world_size)`` builds this worker's task (``bptt/tasks.py``,
    ``bptt/table_task.py``, or any object of the ``bptt.ddp.Task`` protocol). The
    metric is the task's (known once :meth:`init` has built the task).
    """

    name = "ddp"
    devices = ("cpu", "cuda")  # the model, batches and carried state live on comm.device
    max_steps: int | None = None

    def __init__(self, make_task: Callable[[int, int], Task], cfg: OptimConfig) -> None:
        if cfg.optimizer not in OPTIMIZERS:
            raise ValueError(f"DDPMode takes minibatch optimizers {OPTIMIZERS}; {cfg.optimizer} is full-batch "
                             "(distlstm.modes.fullbatch)")
        self.make_task, self.cfg = make_task, cfg
        self.metric = "metric"
        self.plot_columns: Sequence[str] = ("train_loss",)
        self.steps_done = 0

    def init(self, comm: Communicator, seed: int) -> None:
        self.comm, self.seed = comm, seed
        self.device = comm.device
        if self.cfg.amp and self.device.type != "cuda":
            raise ValueError(f"mixed precision ({option('amp', '--amp')}) needs a CUDA GPU; this process has none")
        self.task = self.make_task(comm.rank, comm.world_size)
        self.metric = self.task.metric
        self.plot_columns = ("train_loss", self.metric)
        self.model = self.task.build_model(seed).to(self.device)
        cfg = self.cfg
        self.opt = make_optimizer(self.model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum,
                                  cfg.adagrad_accumulator)
        self.net = comm.data_parallel(self.model)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp else None
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            functools.partial(torch.autocast, "cuda", dtype=torch.float16) if cfg.amp else contextlib.nullcontext)
        self.carry: State | None = None
        self.steps_done = 0

    def step(self, step: int) -> Mapping[str, float]:
        task = self.task
        batch = batch_to(task.batch(step, self.seed), self.device)
        loss, self.carry = ddp_step(task, self.net, self.opt, batch, self.carry, self.comm,
                                    clip=self.cfg.clip or None, step=step, scaler=self.scaler,
                                    autocast=self.autocast)
        self.steps_done = step + 1
        return {"train_loss": loss, "epoch": round(self.steps_done / task.steps_per_epoch(), 4),
                "samples": self.steps_done * task.samples_per_step}

    def evaluate(self) -> Mapping[str, float]:
        return {self.metric: evaluate_on_rank0(self.task, self.model, self.comm)}

    def _artifacts(self) -> dict[str, Any]:
        spec = getattr(self.task, "model_spec", None)
        return spec() if spec is not None else {}

    def _dropout_generator(self) -> torch.Generator | None:
        return getattr(self.model, "dropout_generator", None)

    def state_dict(self) -> dict[str, Any]:
        """Called on every worker: the carried states and dropout generators are gathered from all of them."""
        gen = self._dropout_generator()
        return {"model": self.model.state_dict(),
                "algorithm": {"optimizer": self.opt.state_dict(),
                              "scaler": None if self.scaler is None else self.scaler.state_dict(),
                              "carry": gather_carry(self.carry, self.comm), "world_size": self.comm.world_size,
                              "steps_done": self.steps_done},
                "generators": {} if gen is None else {"dropout": self.comm.all_gather_cat(gen.get_state()[None])},
                "artifacts": self._artifacts()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        algorithm = state["algorithm"]
        written = int(algorithm["world_size"])
        if written != self.comm.world_size:
            raise ValueError(f"the checkpoint was written by a run with {written} worker(s), this one has "
                             f"{self.comm.world_size}: each worker's data shard and carried state depend on the world "
                             f"size, so resume with {written} worker(s) (torchrun --nproc-per-node {written})")
        if state["artifacts"] != self._artifacts():
            raise ValueError("the run's data changed since the checkpoint (another vocabulary, column set or fitted "
                             "scaler): the model no longer fits it; start a new run")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(algorithm["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(algorithm["scaler"])
        self.carry = scatter_carry(algorithm["carry"], self.comm, self.device)
        gen = self._dropout_generator()
        if gen is not None:
            gen.set_state(state["generators"]["dropout"][self.comm.rank].clone())
        self.steps_done = int(algorithm["steps_done"])

    def summary(self) -> dict[str, Any]:
        task = self.task
        describe = getattr(task, "describe", None)  # optional: task-specific figures
        return {"optimizer": self.cfg.optimizer, "samples": self.steps_done * task.samples_per_step,
                "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                **(describe() if describe is not None else {})}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        """Nothing beyond the loop's files: metrics.png draws the training loss and the metric."""


def load(ckpt: Mapping[str, Any], folder: Path) -> LoadedRun:
    """The trained model of a ``ddp`` run (see :func:`~distlstm.modes.train_tasks.loaded_task_model`)."""
    return loaded_task_model(ckpt, folder, "ddp")
