"""The metrics stream of a run: one row per step, evaluations merged in, to CSV, PNG and TensorBoard.

Rows are kept in memory and stored in every checkpoint, so ``metrics.csv`` is
rewritten (atomically) from them and a resumed run continues the same table. Columns
are the union of every row's keys in order of first appearance; a step without an
evaluation leaves the evaluation columns empty.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distlstm.runs.files import plot_curves


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.8g}"
    return value


def write_metrics_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows), restval="")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    os.replace(tmp, path)


def plot_metrics(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str) -> None:
    """The chosen columns against the step (each curve only where the column has values)."""
    curves = {}
    for name in columns:
        points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), int | float)
                  and math.isfinite(r[name])]
        if points:
            curves[name] = ([p[0] for p in points], [p[1] for p in points])
    if curves:
        positive = all(y > 0 for _, ys in curves.values() for y in ys)
        spread = [max(ys) / min(ys) for _, ys in curves.values() if positive and min(ys) > 0]
        plot_curves(path, curves, xlabel="step", ylabel="value", title=title,
                    logy=positive and bool(spread) and max(spread) > 50)


class TensorBoardLog:
    """Scalars to TensorBoard event files in the run folder (``torch.utils.tensorboard``)."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("--tensorboard needs the tensorboard package: pip install 'distlstm[tensorboard]' "
                              "(or pip install tensorboard)") from err
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=purge_step)

    def add(self, row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
