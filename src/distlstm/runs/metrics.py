"""The metrics stream of a run: one row per step, evaluations merged in, to CSV, PNG and TensorBoard.

A run with a folder appends every row to ``metrics.csv`` as it goes, so memory stays
flat however long the run; at each checkpoint the file is flushed to disk and its
size stored in the checkpoint, and a resumed run cuts the file back to that size
(the rows of the lost steps go, the rest stays). A run without a folder keeps its
rows in a list. The columns are fixed by the first two rows (the evaluation before
training and the first step); a later row cannot add columns.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from distlstm.runs.files import plot_curves

METRICS = "metrics.csv"


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.8g}"
    return value


def _number(text: str) -> float | int | str:
    if text == "":
        return math.nan
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


class MetricsStream:
    """Rows of one run: appended to ``path`` (CSV) or kept in memory when ``path`` is None."""

    def __init__(self, path: Path | None, *, resume_bytes: int | None = None) -> None:
        self.path = path
        self.memory: list[dict[str, Any]] = []
        self.columns: list[str] | None = None
        self._pending: list[dict[str, Any]] = []
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None
        self._warned = False
        if path is not None and resume_bytes is not None:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the run's metrics cannot continue without it")
            with path.open("r+b") as f:
                f.truncate(resume_bytes)
            with path.open(newline="", encoding="utf-8") as f:
                self.columns = next(csv.reader(f), None)
            if not self.columns:
                raise ValueError(f"{path} has no header row; it is not this run's metrics file")
            self._open("a")

    def _open(self, how: str) -> None:
        assert self.path is not None and self.columns is not None
        self._file = file = self.path.open(how, newline="", encoding="utf-8")
        self._writer = csv.DictWriter(file, fieldnames=self.columns, restval="", extrasaction="ignore")
        if how == "w":
            self._writer.writeheader()

    def append(self, row: Mapping[str, Any]) -> None:
        if self.path is None:
            self.memory.append(dict(row))
            return
        if self.columns is None:
            self._pending.append(dict(row))
            if len(self._pending) < 2:
                return
            self._start()
            return
        self._write(row)

    def _start(self) -> None:
        seen: dict[str, None] = {}
        for row in self._pending:
            seen.update(dict.fromkeys(row))
        self.columns = list(seen)
        self._open("w")
        pending, self._pending = self._pending, []
        for row in pending:
            self._write(row)

    def _write(self, row: Mapping[str, Any]) -> None:
        assert self._writer is not None and self.columns is not None
        extra = [k for k in row if k not in self.columns]
        if extra and not self._warned:
            warnings.warn(f"metrics {extra} appeared after the columns of {self.path} were fixed; not written",
                          stacklevel=3)
            self._warned = True
        self._writer.writerow({k: _cell(v) for k, v in row.items()})

    def flush(self) -> int:
        """Write everything to disk (fsync); returns the file's size, which a checkpoint stores."""
        if self.path is None:
            return 0
        if self.columns is None and self._pending:
            self._start()
        if self._file is None:
            return 0
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self) -> list[dict[str, Any]]:
        """Every row so far (read back from the CSV for a run with a folder)."""
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every row so far, one at a time (from the CSV for a run with a folder: flat memory however long)."""
        return iter(list(self.memory)) if self.path is None else read_metrics(self.path)


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a ``metrics.csv``, numbers parsed (empty cells: NaN), one at a time."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield {k: _number(v) for k, v in row.items()}


def evaluated_rows(rows: Iterable[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The rows that carry an evaluation of ``metric`` (the others leave its cell empty: NaN when read back)."""
    out = []
    for r in rows:
        value = r.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append(dict(r))
    return out


def plot_metrics(path: Path, rows: Sequence[Mapping[str, Any]] | Iterator[dict[str, Any]], columns: Sequence[str],
                 title: str, *, total: int = 0, every_point: Sequence[str] = (), max_points: int = 2000) -> None:
    """The chosen columns against the step, each curve only where it has values.

    Dense curves are thinned to about ``max_points`` of ``total`` rows; the columns in
    ``every_point`` (evaluations, a few rows only) keep all their points.
    """
    stride = max(1, math.ceil(total / max_points))
    curves: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in columns}
    for i, r in enumerate(rows):
        for name in columns:
            value = r.get(name)
            if (i % stride == 0 or name in every_point) and isinstance(value, int | float) and math.isfinite(value):
                curves[name][0].append(float(r["step"]))
                curves[name][1].append(float(value))
    curves = {k: v for k, v in curves.items() if v[0]}
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
