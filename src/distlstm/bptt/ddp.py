"""Synchronous data-parallel BPTT: ``DistributedDataParallel`` with state carried across windows.

Every worker holds a replica of the model and its own part of each global batch (a
contiguous shard of streams, or rows of a shuffled minibatch: ``data/partition.py``).
One step::

    L_r   = this worker's mean loss on its B sequences or streams × k steps
    g     = (1/W) Σ_r ∇L_r            (DDP all-reduces the gradients during backward)
    θ    ← optimizer(θ, clip(g))      (identical on every worker)
    carry ← detach(final LSTM state)  (stateful streams: the next window starts from it)

so W workers with B streams each take the steps of one process with W·B streams.
The mean loss is all-reduced *before* backward, so every worker sees the same value
and a non-finite loss stops all of them together (no worker is left waiting in an
all-reduce); the last good checkpoint is kept. Checkpoints hold the model, the
optimizer, the step, the metrics and every worker's carried state (gathered), so a
killed run resumes with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from distlstm.bptt.tasks import Batch
from distlstm.models.cells import State
from distlstm.runs import load_checkpoint, plot_curves, save_checkpoint, write_csv, write_json
from distlstm.runtime.dist import all_gather_cat, all_reduce_, broadcast_

CHECKPOINT_VERSION = 1
OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad")


class Task(Protocol):
    """What :func:`train_ddp` needs from a task (built-in ones: ``bptt/tasks.py``, ``bptt/table_task.py``).

    A task is built for one (rank, world size). ``batch(step, seed)`` must be a pure
    function of the global step and the seed and return *this worker's* part of the
    global batch, so W workers and a resumed run see the batches of one uninterrupted
    process. ``loss(model, batch, state)`` returns this worker's mean loss and, for
    ``stateful`` tasks, the state to carry into the next batch (reset where
    ``batch.starts_stream``). ``evaluate(model)`` runs on rank 0 only; lower is better.
    ``samples_per_step`` counts samples of all workers per step; ``steps_per_epoch()``
    global steps per pass over the data. Optional: ``describe() -> dict`` adds
    task-specific figures to summary.json. Full-batch L-BFGS / CG also needs
    ``full_batch()`` (see ``bptt/fullbatch_run.py: FullBatchTask``).
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


@dataclass(frozen=True)
class DDPConfig:
    optimizer: str = "adam"  # sgd, momentum (SGD with momentum), adam or adagrad
    lr: float = 3e-3
    momentum: float = 0.9
    adagrad_accumulator: float = 1.0  # Adagrad's initial accumulator value (Kuchaiev & Ginsburg's f-lm: 1.0)
    clip: float | None = 1.0  # max gradient norm; None: no clipping
    steps: int = 1000
    seconds: float | None = None  # stop after this much training time, whichever comes first
    target: float | None = None  # stop once the evaluation metric is at or below this
    eval_every: int = 100
    checkpoint_every: int = 100
    amp: bool = False  # float16 autocast + gradient scaling; needs a CUDA GPU
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        for name in ("steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive (or None for no clipping), got {self.clip}")


def make_optimizer(params: Any, cfg: DDPConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, initial_accumulator_value=cfg.adagrad_accumulator)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum if cfg.optimizer == "momentum" else 0.0)


def _mean_over_workers(value: Tensor, world_size: int) -> float:
    if world_size > 1:
        value = value.double().clone()
        all_reduce_(value)
        value /= world_size
    return float(value)


def _from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's value on every worker (a time budget decides for all, or a worker waits forever)."""
    return float(broadcast_(torch.tensor([value], dtype=torch.float64, device=device), 0))


def _gather_carry(carry: State | None) -> list[Tensor] | None:
    """Every worker's carried state, streams concatenated in rank order (called on every rank)."""
    if carry is None:
        return None
    return [all_gather_cat(part.detach().cpu(), dim=1) for part in carry]


class _Checkpoints:
    """Save and restore a data-parallel run; refuses a checkpoint from another world size or setting.

    ``extra`` is stored as is: for a language model, ``{"language_model": {"kind",
    "vocab", "config"}}`` — what ``distlstm sample`` needs to rebuild the model.
    """

    def __init__(self, path: Path, settings: dict[str, Any], world_size: int,
                 extra: dict[str, Any] | None = None) -> None:
        self.path, self.settings, self.world_size, self.extra = path, settings, world_size, extra or {}

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, step: int, seconds: float,
             rows: list[dict[str, float]], carry: list[Tensor] | None) -> None:
        save_checkpoint(self.path, {"version": CHECKPOINT_VERSION, "settings": self.settings,
                                    "world_size": self.world_size, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(), "step": step, "seconds": seconds, "rows": rows,
                                    "carry": carry, **self.extra})

    def load(self) -> dict[str, Any]:
        ckpt = load_checkpoint(self.path)
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.path}: checkpoint version {ckpt.get('version')!r}, expected {CHECKPOINT_VERSION}")
        if ckpt["world_size"] != self.world_size:
            raise ValueError(f"{self.path} was written by a run with {ckpt['world_size']} worker(s), this one has "
                             f"{self.world_size}: each worker's data shard and carried state depend on the world "
                             f"size, so resume with {ckpt['world_size']} worker(s) (torchrun --nproc-per-node)")
        changed = {k: (ckpt["settings"].get(k), v) for k, v in self.settings.items() if ckpt["settings"].get(k) != v}
        if changed:
            raise ValueError(f"{self.path} was written with other settings (checkpoint, now): {changed}")
        return ckpt


def train_ddp(task: Task, cfg: DDPConfig, out: Path, *, rank: int = 0, world_size: int = 1, resume: bool = False,
              show_progress: bool = True, settings: dict[str, Any] | None = None,
              on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train ``task`` with data-parallel BPTT; rank 0 writes metrics.csv, loss.png, summary.json, checkpoint.pt.

    ``settings`` (the task's resolved options) are stored in the checkpoint and must
    match on resume. ``on_step(step, loss)`` is called after every step (tests use it).
    Returns the summary.
    """
    if world_size > 1 and not dist.is_initialized():
        raise RuntimeError(f"world size {world_size} needs an initialised process group (run under torchrun)")
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.amp and device.type != "cuda":
        raise ValueError("mixed precision (--amp) needs a CUDA GPU; this process has none")
    main = rank == 0
    model = task.build_model(cfg.seed).to(device)
    opt = make_optimizer(model.parameters(), cfg)
    run_settings = {**(settings or {}), **{k: v for k, v in asdict(cfg).items()
                                           if k not in ("steps", "seconds", "target", "eval_every",
                                                        "checkpoint_every")}}
    model_spec = getattr(task, "model_spec", None)  # language-model tasks: vocabulary and model config
    checkpoints = _Checkpoints(out / "checkpoint.pt", run_settings, world_size,
                               {"language_model": model_spec()} if model_spec is not None else None)
    step, seconds, rows = 0, 0.0, []
    carry: State | None = None
    if resume and checkpoints.path.exists():
        ckpt = checkpoints.load()
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, seconds, rows = int(ckpt["step"]), float(ckpt["seconds"]), list(ckpt["rows"])
        if ckpt["carry"] is not None:
            per_worker = ckpt["carry"][0].shape[1] // world_size
            carry = tuple(t[:, rank * per_worker : (rank + 1) * per_worker].to(device) for t in ckpt["carry"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
    net: nn.Module = DistributedDataParallel(model) if world_size > 1 else model
    scaler = torch.amp.GradScaler("cuda") if cfg.amp else None
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if cfg.amp else contextlib.nullcontext
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = task.steps_per_epoch()
    running, count = 0.0, 0

    def record() -> float:
        """Evaluate, append a metrics row (training loss averaged since the last row); returns the metric."""
        nonlocal running, count
        metric = _evaluate(task, model, main, world_size, device)
        rows.append({"step": step, "epoch": round(step / per_epoch, 4), "samples": step * task.samples_per_step,
                     "seconds": round(seconds, 4), "train_loss": round(running / max(count, 1), 6),
                     task.metric: round(metric, 6)})
        running, count = 0.0, 0
        return metric

    reached = bool(rows) and cfg.target is not None and rows[-1][task.metric] <= cfg.target
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.optimizer}", unit="step",
               disable=not (show_progress and main))
    while step < cfg.steps and not reached and (cfg.seconds is None or seconds < cfg.seconds):
        started = time.perf_counter()
        batch = _to_device(task.batch(step, cfg.seed), device)
        if batch.starts_stream or not task.stateful:
            carry = None
        with autocast():
            loss, carry = task.loss(net, batch, carry)
        value = _mean_over_workers(loss.detach(), world_size)
        if not math.isfinite(value):
            kept = f"the last good checkpoint ({checkpoints.path}, step {rows[-1]['step']:.0f}) is kept" \
                if checkpoints.path.exists() and rows else "no checkpoint was written yet"
            raise FloatingPointError(f"non-finite training loss ({value}) at step {step + 1}; {kept}. "
                                     "Lower the learning rate or clip gradients")
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.clip)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, math.inf if cfg.clip is None else cfg.clip)
            if not torch.isfinite(norm):  # the same on every rank: gradients are averaged already
                raise FloatingPointError(f"non-finite gradient norm at step {step + 1}; lower the learning rate")
            opt.step()
        if carry is not None:
            carry = tuple(part.detach() for part in carry)
        step += 1
        seconds += time.perf_counter() - started
        if world_size > 1 and cfg.seconds is not None:  # every worker stops at the same step: rank 0's clock
            seconds = _from_rank0(seconds, device)
        running, count = running + value, count + 1
        bar.update()
        if on_step is not None:
            on_step(step, value)
        if step % cfg.eval_every == 0 or step == cfg.steps or (cfg.seconds is not None and seconds >= cfg.seconds):
            metric = record()
            reached = cfg.target is not None and metric <= cfg.target
            bar.set_postfix({task.metric: f"{metric:.4g}"})
        if step % cfg.checkpoint_every == 0 and step < cfg.steps and not reached:
            gathered = _gather_carry(carry)
            if main:
                checkpoints.save(model, opt, step, seconds, rows, gathered)
                if rows:
                    write_csv(out / "metrics.csv", rows)
    bar.close()
    if not rows or rows[-1]["step"] != step:  # stopped by the time budget between evaluations
        record()
    gathered = _gather_carry(carry)
    summary = {"optimizer": cfg.optimizer, "metric": task.metric, task.metric: rows[-1][task.metric],
               "reached_target": cfg.target is not None and rows[-1][task.metric] <= cfg.target,
               "steps": step, "samples": step * task.samples_per_step, "seconds": round(seconds, 3),
               "samples_per_second": round(step * task.samples_per_step / max(seconds, 1e-9), 2),
               "workers": world_size, "parameters": sum(p.numel() for p in params), "settings": run_settings,
               **(task.describe() if hasattr(task, "describe") else {})}  # optional: task-specific figures
    if main:
        checkpoints.save(model, opt, step, seconds, rows, gathered)
        write_csv(out / "metrics.csv", rows)
        write_json(out / "summary.json", summary)
        plot_curves(out / "loss.png", {"training loss": ([r["samples"] for r in rows], [r["train_loss"] for r in rows]),
                                       task.metric: ([r["samples"] for r in rows], [r[task.metric] for r in rows])},
                    xlabel="samples (all workers)", ylabel="loss", title=f"{cfg.optimizer}, {world_size} worker(s)",
                    logy=True)
    return summary


def _to_device(batch: Batch, device: torch.device) -> Batch:
    lengths = None if batch.lengths is None else batch.lengths.to(device)
    return Batch(batch.x.to(device), batch.y.to(device), lengths, batch.starts_stream)


def _evaluate(task: Task, model: nn.Module, main: bool, world_size: int, device: torch.device) -> float:
    """Rank 0 evaluates; the value is broadcast so every worker takes the same stopping decision."""
    value = torch.zeros(1, dtype=torch.float64, device=device)
    if main:
        model.eval()
        value[0] = task.evaluate(model)
        model.train()
    if world_size > 1:
        broadcast_(value, 0)
    return float(value)
