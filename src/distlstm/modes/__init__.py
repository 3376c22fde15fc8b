"""Modes: each algorithm family as a small object the run loop drives (see ``runs/mode.py``).

* ``online``    — one online step over all nodes (SGD, EKF, PF, DSGD, DEKF, DPF);
* ``es``        — one evolution-strategies generation;
* ``ddp``       — one data-parallel minibatch step (char LM, word LM, long-lag, CSV);
* ``fullbatch`` — one full-batch L-BFGS or CG step.

:func:`load_run` takes the model out of any run folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from distlstm.runs.checkpoint import check_checkpoint, load_run_checkpoint
from distlstm.runs.files import load_checkpoint

MODES = ("online", "es", "ddp", "fullbatch")


@dataclass
class LoadedRun:
    """A trained model taken out of a run folder, ready to call.

    ``model`` is in eval mode; ``artifacts`` holds what using it needs (vocabulary,
    scaler, feature names); ``config`` is the run's config document.
    """

    folder: Path
    mode: str
    command: str
    step: int
    config: dict[str, Any]
    model: nn.Module
    artifacts: dict[str, Any] = field(default_factory=dict)
    # Regression runs: a CSV path (of the columns the run was trained on) → one row per forecast,
    # {"row", "target", "prediction", "lower", "upper"} in the data's own units (bounds None without intervals).
    forecaster: Callable[[Path], list[dict[str, Any]]] | None = None


def load_run(folder: str | Path) -> LoadedRun:
    """The model of the run in ``folder`` (from its newest readable checkpoint), in eval mode.

    ``folder`` may also name one checkpoint file of a run (``runs/x/checkpoint.prev.pt``).
    """
    folder = Path(folder)
    if folder.is_file():
        ckpt = load_checkpoint(folder)
        check_checkpoint(ckpt, folder)
        folder = folder.parent
    else:
        ckpt, _ = load_run_checkpoint(folder)
    mode = ckpt.get("mode")
    if mode not in MODES:
        raise ValueError(f"{folder}: unknown mode {mode!r} in the checkpoint; expected one of {MODES}")
    module = importlib.import_module(f"distlstm.modes.{mode}")
    loaded: LoadedRun = module.load(ckpt, folder)
    loaded.model.eval()
    return loaded
