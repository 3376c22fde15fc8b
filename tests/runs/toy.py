"""A toy mode for the run-loop tests: a noisy descent on ½‖θ‖², every random draw from its generator."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm.runs.config import flag
from distlstm.runtime.comm import Communicator


@dataclass(frozen=True)
class ToyConfig:
    size: int = flag(3, "parameters")
    lr: float = flag(0.1, "step size")
    noise: float = flag(0.5, "noise scale")
    interrupt_at: int = flag(0, "send SIGINT to this process after this step (0: never)")
    notes: str | None = flag(None, "a file name (not read): stored absolute", path=True)


class ToyMode:
    name = "online"  # the loop only compares it with the checkpoint's mode
    metric = "loss"
    plot_columns = ("train_loss", "loss")
    max_steps = None

    def __init__(self, cfg: ToyConfig) -> None:
        self.cfg = cfg
        self.evaluations = 0

    def init(self, comm: Communicator, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.theta = torch.randn(self.cfg.size, generator=self.gen, dtype=torch.float64)

    def step(self, step: int) -> Mapping[str, float]:
        noise = torch.randn(self.cfg.size, generator=self.gen, dtype=torch.float64)
        self.theta = self.theta - self.cfg.lr * (self.theta + self.cfg.noise * noise)
        if self.cfg.interrupt_at and step + 1 == self.cfg.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {"train_loss": float(0.5 * self.theta @ self.theta)}

    def evaluate(self) -> Mapping[str, float]:
        self.evaluations += 1
        return {"loss": float(0.5 * self.theta @ self.theta)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": {"theta": self.theta.clone()}, "generators": {"main": self.gen.get_state()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.theta = state["model"]["theta"].clone()
        self.gen.set_state(state["generators"]["main"])

    def summary(self) -> dict[str, Any]:
        return {"theta_norm": float(self.theta.norm())}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        (folder / "toy.txt").write_text(f"{sum(1 for _ in rows)} rows\n")
