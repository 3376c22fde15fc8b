"""A full-batch run on any regression task: L-BFGS or CG across workers, test error after every step.

The run loop of ``distlstm train --optimizer lbfgs|cg`` and of the matrix-batch
reproduction. A task qualifies by providing what :class:`FullBatchTask` lists
(the long-lag tasks and the ``csv`` task do). It writes what a data-parallel run writes (metrics.csv, loss.png,
summary.json, checkpoint.pt with the model after the latest step — kept if a later
evaluation fails) and stops at a target test error, a time budget or the step budget.
Time counts optimisation only, not the test evaluations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn
from tqdm import tqdm

from distlstm.bptt.fullbatch import FullBatchConfig, FullBatchResult, train_fullbatch
from distlstm.data.longlag import LongLagData
from distlstm.runs import plot_curves, save_checkpoint, write_csv, write_json


class FullBatchTask(Protocol):
    """What :func:`run_fullbatch` needs from a task.

    ``full_batch()`` is the whole training set as sequences ``x`` (N, T, p), ``lengths``
    (N,) and targets ``y`` (N,); the loss is Σ (model(x, lengths) − y)² / N, summed over
    workers. ``evaluate(model)`` is the metric named ``metric`` (lower is better); every
    rank computes it on identical θ, so every rank takes the same stopping decision.
    """

    metric: str

    def build_model(self, seed: int) -> nn.Module: ...
    def full_batch(self) -> LongLagData: ...
    def evaluate(self, model: nn.Module) -> float: ...


def run_fullbatch(task: FullBatchTask, cfg: FullBatchConfig, out: Path, *, seed: int = 0, target: float | None = None,
                  rank: int = 0, world_size: int = 1, show_progress: bool = True) -> dict[str, Any]:
    """Minimise the task's full-batch MSE; rank 0 writes the run folder. Returns the summary."""
    model = task.build_model(seed)
    train = task.full_batch()
    metric = task.metric
    rows: list[dict[str, float]] = []
    main = rank == 0
    n = len(train)
    bar = tqdm(total=cfg.steps, desc=cfg.method, unit="step", disable=not (show_progress and main))
    if main:
        out.mkdir(parents=True, exist_ok=True)

    def on_step(progress: FullBatchResult) -> bool:
        value = task.evaluate(model)  # the same on every rank: identical θ, same test set
        rows.append({"step": len(progress.losses), "evaluations": progress.evaluations,
                     "samples": progress.evaluations * n, "seconds": round(progress.seconds, 4),
                     "train_loss": progress.losses[-1], metric: round(value, 6)})
        if main:  # small models: keeping the latest good θ costs little, and a crash loses no step
            save_checkpoint(out / "checkpoint.pt", {"version": 1, "model": model.state_dict(), "rows": rows})
        bar.update()
        bar.set_postfix({metric: f"{value:.4g}"})
        return target is not None and value <= target

    try:
        result = train_fullbatch(model, train, cfg, rank=rank, world_size=world_size, on_step=on_step)
    except FloatingPointError as err:
        kept = f"the model after step {len(rows)} is kept in {out / 'checkpoint.pt'}" if rows else "nothing was kept"
        raise FloatingPointError(f"{err} (during step {len(rows) + 1}); {kept}") from err
    finally:
        bar.close()
    last = rows[-1] if rows else {metric: task.evaluate(model), "step": 0}
    summary = {"optimizer": cfg.method, "metric": metric, metric: last[metric],
               "reached_target": target is not None and last[metric] <= target, "steps": len(result.losses),
               "evaluations": result.evaluations, "samples": result.evaluations * n,
               "seconds": round(result.seconds, 3),
               "samples_per_second": round(result.evaluations * n / max(result.seconds, 1e-9), 2),
               "workers": world_size, "parameters": sum(p.numel() for p in model.parameters()),
               "status": result.status, **(task.describe() if hasattr(task, "describe") else {})}
    if main:
        save_checkpoint(out / "checkpoint.pt", {"version": 1, "model": model.state_dict(), "rows": rows})
        write_json(out / "summary.json", summary)
        if rows:
            write_csv(out / "metrics.csv", rows)
            plot_curves(out / "loss.png", {"training loss": ([r["samples"] for r in rows],
                                                             [r["train_loss"] for r in rows]),
                                           metric: ([r["samples"] for r in rows], [r[metric] for r in rows])},
                        xlabel="samples (evaluations × training set)", ylabel="loss",
                        title=f"{cfg.method}, {world_size} worker(s)", logy=True)
    return summary
