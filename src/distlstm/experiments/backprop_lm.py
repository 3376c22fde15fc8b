"""Backprop training of a character language model: the baseline every LM experiment shares.

Adam on random windows of the training ids (truncated BPTT of ``window`` steps,
zero initial state), gradient clipping, a step and/or wall-time budget, and
validation nats/char (state carried across windows) every ``eval_every`` steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from distlstm.data.text import random_windows
from distlstm.models.heads import sequence_cross_entropy
from distlstm.models.networks import CharLM, sequence_nats


@dataclass(frozen=True)
class BackpropConfig:
    batch: int = 32
    window: int = 64
    lr: float = 3e-3
    clip: float = 1.0
    steps: int = 3000
    seconds: float | None = None
    eval_every: int = 250
    eval_chars: int = 16_384

    def __post_init__(self) -> None:
        for name in ("batch", "window", "steps", "eval_every", "eval_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def train_backprop(model: CharLM, train: Tensor, val: Tensor, cfg: BackpropConfig, gen: torch.Generator, *,
                   desc: str = "backprop", show_progress: bool = True) -> list[dict[str, Any]]:
    """Train ``model`` in place; returns the evaluation rows (step, seconds, train/val nats per char)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    val_ids = val[: cfg.eval_chars + 1]
    rows: list[dict[str, Any]] = []
    smoothed = math.nan
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, disable=not show_progress, unit="step")
    for step in bar:
        x, y = random_windows(train, cfg.batch, cfg.window, gen)
        loss = sequence_cross_entropy(model(x)[0], y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite training loss at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        out_of_time = cfg.seconds is not None and time.perf_counter() - start >= cfg.seconds
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            model.eval()
            val_loss = sequence_nats(model, val_ids)
            model.train()
            rows.append({"step": step, "seconds": round(time.perf_counter() - start, 3),
                         "train_nats_per_char": round(smoothed, 5), "val_nats_per_char": round(val_loss, 5)})
            bar.set_postfix(val=f"{val_loss:.3f}")
        if out_of_time:
            break
    bar.close()
    return rows
