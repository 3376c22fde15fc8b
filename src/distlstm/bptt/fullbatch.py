"""Full-batch, full-BPTT training with L-BFGS, the batch split across workers (map-reduce).

The matrix-batch paper trains on the whole training set at once with full BPTT
and a batch method, the batch spread over machines whose losses and gradients are
summed. With worker r holding shard S_r of the N samples::

    L(θ)  = Σ_r L_r(θ),      L_r(θ) = (1/N) Σ_{i ∈ S_r} (d̂_i(θ) − d_i)²
    ∇L(θ) = Σ_r ∇L_r(θ)                                  (one all_reduce of [L_r; ∇L_r])

Every evaluation — each optimizer step and every trial of the strong-Wolfe line
search — goes through the same closure, so all ranks see identical (L, ∇L) and take
identical steps (checked: a θ checksum is compared across ranks after every step).
float64 by default: the paper found single precision unstable with batch optimizers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from distlstm.data.longlag import LongLagData
from distlstm.runtime.dist import check_same_across_ranks


@dataclass(frozen=True)
class FullBatchConfig:
    steps: int = 50  # optimizer steps (each may evaluate the closure several times)
    max_iter: int = 20  # L-BFGS iterations per step
    history_size: int = 50
    lr: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps", "max_iter", "history_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def _reduce(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    """Sum the loss and every gradient over all workers, in one all_reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([loss.detach().reshape(1)] + [g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 1
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
    return flat[0]


def fullbatch_closure(model: nn.Module, shard: LongLagData, total: int, world_size: int = 1,
                      zero_grad: Callable[[], None] | None = None) -> Callable[[], Tensor]:
    """The closure an optimizer calls: this worker's share of the loss, summed over all workers."""
    params = [p for p in model.parameters() if p.requires_grad]

    def closure() -> Tensor:
        if zero_grad is not None:
            zero_grad()
        pred = model(shard.x, shard.lengths)
        loss = ((pred - shard.y) ** 2).sum() / total
        loss.backward()
        if world_size > 1:
            loss = _reduce(loss, params)
        if not torch.isfinite(loss):
            raise FloatingPointError("the full-batch loss is not finite; lower the gate sharpness α or lr")
        return loss

    return closure


def train_fullbatch(model: nn.Module, data: LongLagData, cfg: FullBatchConfig, *, rank: int = 0,
                    world_size: int = 1, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """L-BFGS (strong Wolfe) on the whole data set, this worker holding its shard; returns the losses."""
    shard = data.shard(rank, world_size)
    opt = torch.optim.LBFGS(model.parameters(), lr=cfg.lr, max_iter=cfg.max_iter, history_size=cfg.history_size,
                            line_search_fn="strong_wolfe")
    closure = fullbatch_closure(model, shard, len(data), world_size, zero_grad=opt.zero_grad)
    losses = []
    for step in range(cfg.steps):
        loss = float(opt.step(closure).detach())
        check_same_across_ranks(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), f"step {step}")
        losses.append(loss)
        if on_step is not None:
            on_step(step, loss)
    return losses
