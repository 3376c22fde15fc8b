"""The ``fullbatch`` mode: full-batch L-BFGS or nonlinear CG on any regression task, one optimizer step per loop step.

A step is one ``torch.optim.LBFGS.step`` of ``max_iter`` iterations, or one CG
iteration (``bptt/fullbatch.py``). Every worker holds its shard of the task's whole
training set; loss and gradient are summed over workers through the communicator in
every evaluation, line searches included, and θ is compared across workers after
every step. Metrics per step: ``train_loss`` (L at the new θ), ``evaluations`` (loss +
gradient evaluations so far) and ``samples`` (evaluations × N). The evaluation is the
task's metric on its test set.

A step that finds no decrease (a failed line search, or a converged run) ends the run:
the mode lowers ``max_steps`` to that step and its summary's ``status`` says why.
The state (model, L-BFGS history or CG state, evaluation counter) is resumable bit
for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from distlstm.bptt.fullbatch import (
    METHODS,
    CGState,
    FullBatchConfig,
    FullBatchObjective,
    cg_iteration,
    cg_start,
    lbfgs_step,
    make_lbfgs,
)
from distlstm.bptt.tasks import Batch
from distlstm.data.longlag import LongLagData
from distlstm.models.cells import State
from distlstm.modes import LoadedRun
from distlstm.modes.train_tasks import loaded_task_model
from distlstm.runtime.comm import Communicator

__all__ = ["METHODS", "FullBatchConfig", "FullBatchMode", "FullBatchTask", "load"]


class FullBatchTask(Protocol):
    """What full-batch training needs from a task (``LongLagTask`` and ``TableTask`` qualify).

    ``full_batch()`` is the whole training set (x (N, T, p), lengths (N,), y (N,));
    ``loss(model, batch, None)`` the mean loss over a batch (the same the minibatch
    trainer uses), so L(θ) is the mean over all N samples. ``evaluate(model)`` is the
    metric named ``metric`` (lower is better); every worker computes it on the same θ.
    ``model_spec()`` (optional) is stored so that :func:`load` can rebuild the model.
    """

    metric: str

    def build_model(self, seed: int) -> nn.Module: ...
    def full_batch(self) -> LongLagData: ...
    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]: ...
    def evaluate(self, model: nn.Module) -> float: ...


REQUIRED = ("build_model", "full_batch", "loss", "evaluate", "metric")


def check_task(task: object) -> None:
    """A clear error for a task full-batch training cannot use (a language model streams, it has no full batch)."""
    missing = [name for name in REQUIRED if not hasattr(task, name)]
    if missing:
        raise TypeError(f"{type(task).__name__} cannot be trained full-batch: it lacks {', '.join(missing)} "
                        "(full-batch L-BFGS / CG trains regression tasks such as adding, multiplication or csv; "
                        "train language models with a minibatch optimizer)")


class FullBatchMode:
    """L-BFGS or CG on ``make_task(rank, world_size)``'s whole training set (see the module docstring).

    ``metric`` and ``plot_columns`` are the task's, known once :meth:`init` built it.
    """

    name = "fullbatch"

    def __init__(self, make_task: Callable[[int, int], Any], cfg: FullBatchConfig) -> None:
        self.make_task = make_task
        self.cfg = cfg
        self.metric = ""
        self.plot_columns: Sequence[str] = ("train_loss",)
        self.max_steps: int | None = None
        self.status = "running"

    def init(self, comm: Communicator, seed: int) -> None:
        task = self.make_task(comm.rank, comm.world_size)
        check_task(task)
        self.task, self.comm = task, comm
        self.metric = task.metric
        self.plot_columns = ("train_loss", task.metric)
        self.model = task.build_model(seed)
        data = task.full_batch()
        shard = data.shard(comm.rank, comm.world_size)
        self.n = len(data)
        batch = Batch(shard.x, shard.y, shard.lengths, True)
        share = len(shard) / self.n  # L_r = (|S_r| / N) ℓ(S_r): the shares sum to the mean over all N

        def local_loss() -> Tensor:
            return task.loss(self.model, batch, None)[0] * share

        self.objective = FullBatchObjective(self.model, local_loss, comm)
        self.lbfgs = make_lbfgs(self.objective.params, self.cfg) if self.cfg.method == "lbfgs" else None
        self.cg: CGState | None = None  # started by the first step (its evaluation counts there)
        self.max_steps = None
        self.status = "running"

    def step(self, step: int) -> Mapping[str, float]:
        try:
            loss, progressed = self._lbfgs_step() if self.lbfgs is not None else self._cg_step()
        except FloatingPointError as err:
            raise FloatingPointError(f"{err} (during step {step + 1})") from err
        self.comm.check_same(self.objective.theta(), f"step {step + 1}")
        if not progressed:
            self.max_steps = step + 1
        evaluations = self.objective.evaluations
        return {"train_loss": loss, "evaluations": evaluations, "samples": evaluations * self.n}

    def _lbfgs_step(self) -> tuple[float, bool]:
        assert self.lbfgs is not None
        start, loss = lbfgs_step(self.lbfgs, self.objective.closure)
        if not loss < start:
            self.status = "converged or line search found no decrease"
        return loss, loss < start

    def _cg_step(self) -> tuple[float, bool]:
        if self.cg is None:
            self.cg = cg_start(self.objective.theta().double().numpy(), self.objective.value_and_grad)
        new = cg_iteration(self.cg, self.objective.value_and_grad, self.cfg.cg_c2, self.cfg.cg_update)
        if new is None:
            self.status = "line search failed: no step of sufficient decrease along the CG direction"
        else:
            self.cg = new
            if not np.any(new.g):
                self.status = "converged: the gradient is zero"
        self.objective.set_theta(torch.from_numpy(self.cg.x).to(self.objective.params[0]))  # θ_k, not a trial point
        return self.cg.f, new is not None and bool(np.any(new.g))

    def evaluate(self) -> Mapping[str, float]:
        return {self.metric: float(self.task.evaluate(self.model))}  # the same on every worker: same θ, same test set

    def state_dict(self) -> dict[str, Any]:
        algorithm: dict[str, Any] = {"method": self.cfg.method, "objective": self.objective.state_dict(),
                                     "status": self.status, "stopped_at": self.max_steps}
        if self.lbfgs is not None:
            algorithm["lbfgs"] = self.lbfgs.state_dict()
        else:
            algorithm["cg"] = None if self.cg is None else self.cg.state_dict()
        return {"model": self.model.state_dict(), "algorithm": algorithm, "generators": {},
                "artifacts": self._artifacts()}

    def _artifacts(self) -> dict[str, Any]:
        """The task's model spec: what rebuilding the model (and, for csv, forecasting) needs."""
        spec = getattr(self.task, "model_spec", None)
        return spec() if spec is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        algorithm = state["algorithm"]
        if algorithm["method"] != self.cfg.method:
            raise ValueError(f"the checkpoint holds a {algorithm['method']!r} run, not {self.cfg.method!r}")
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(algorithm["objective"])
        if self.lbfgs is not None:
            self.lbfgs.load_state_dict(algorithm["lbfgs"])
        else:
            self.cg = None if algorithm["cg"] is None else CGState.from_state_dict(algorithm["cg"])
        self.status, self.max_steps = algorithm["status"], algorithm["stopped_at"]

    def summary(self) -> dict[str, Any]:
        evaluations = self.objective.evaluations
        describe = self.task.describe() if hasattr(self.task, "describe") else {}
        ended = {} if self.status == "running" else {"status": self.status}  # the mode ended the run: why
        return {"optimizer": self.cfg.method, **ended, "evaluations": evaluations, "samples": evaluations * self.n,
                "training_samples": self.n, "parameters": sum(p.numel() for p in self.model.parameters()),
                **describe}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        """Nothing beyond the loop's files (metrics.png draws the training loss and the metric)."""


def load(ckpt: Mapping[str, Any], folder: Path) -> LoadedRun:
    """The model of a full-batch run (see :func:`~distlstm.modes.train_tasks.loaded_task_model`)."""
    return loaded_task_model(ckpt, folder, "fullbatch")
