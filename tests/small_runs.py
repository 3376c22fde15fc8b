"""Small runs of the three distributed commands (train, es, online), shared by the restart and two-host tests.

Each is quick enough to run many times, big enough for two workers (two online nodes,
an even population, a batch per worker), and exact in float64, so a run that was
restarted or spread over two hosts can be compared number for number with one process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from distlstm.runs.checkpoint import load_run_checkpoint
from tests.modes.test_online import series_csv

COMMANDS = ("train", "es", "online")
TIMINGS = {"seconds"}  # state entries that measure time, not numbers to compare


def command_args(command: str, tmp_path: Path, workers: int) -> list[str]:
    """Flags (without --steps and --out) of a small run of ``command`` with ``workers`` workers.

    ``train`` gives each worker its share of the global batch of 8 (data-parallel BPTT
    over ``workers`` workers equals one process with the global batch, to rounding).
    """
    if command == "train":
        return ["train", "--task", "char-lm", "--hidden", "16", "--window", "8", "--dtype", "float64",
                "--batch", str(8 // workers), "--eval-every", "10", "--eval-chars", "300", "--checkpoint-every", "2",
                "--no-progress"]
    if command == "es":
        return ["es", "--hidden", "8", "--population", "16", "--windows", "2", "--window", "8", "--eval-chars", "200",
                "--eval-every", "10", "--checkpoint-every", "2", "--seed", "4", "--no-progress"]
    if command == "online":
        data = tmp_path / "series.csv"
        if not data.exists():
            series_csv(data, 400)
        return ["online", "--data", str(data), "--inputs", "a,b", "--target", "y", "--algorithm", "dekf", "--nodes",
                "2", "--topology", "complete", "--hidden", "2", "--eval-every", "10", "--checkpoint-every", "2",
                "--no-progress"]
    raise ValueError(f"unknown command {command!r}")


def assert_same_state(a: Any, b: Any, *, atol: float = 0.0, where: str = "state") -> None:
    """Every tensor and number of two checkpoint states equal, timings aside (within ``atol`` for floating
    point; NaN, a missing label's error, equals NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=atol, rtol=0, equal_nan=True, msg=where)
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a.keys() - TIMINGS:
            assert_same_state(a[k], b[k], atol=atol, where=f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, atol=atol, where=f"{where}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= atol or (math.isnan(a) and math.isnan(b)), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_run(folder: Path, reference: Path, command: str) -> None:
    """The newest checkpoints of two runs hold the same step and state (train: to 1e-9, as DDP sums in
    another order than one process; es and online: bit for bit)."""
    a, b = load_run_checkpoint(folder)[0], load_run_checkpoint(reference)[0]
    assert a["step"] == b["step"], (a["step"], b["step"])
    assert_same_state(a["state"]["model"], b["state"]["model"], atol=1e-9 if command == "train" else 0.0)
    if command != "train":  # the data-parallel optimizer state is compared through the model it produced
        assert_same_state(a["state"]["algorithm"], b["state"]["algorithm"])
        assert_same_state(a["state"]["generators"], b["state"]["generators"])
