"""A numeric CSV table with its file's line numbers, so every error can point at a line and a column.

One row per time step, one column per series, an optional header (taken as a header
when a cell of the first row is not a number). An empty cell is a missing value
(NaN here); what it means is the caller's decision (a missing target is "no label",
a missing input an error). Text such as ``abc``, ``nan`` or ``inf`` is an error naming
the file, line and column. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from distlstm._flags import option


@dataclass(frozen=True)
class Table:
    """``values`` (N, C) float64 with NaN for empty cells; ``lines[i]`` is row i's line in ``path``."""

    path: Path
    names: list[str]  # header names, or "0", "1", … without a header
    values: Tensor
    lines: list[int]
    has_header: bool

    def __len__(self) -> int:
        return self.values.shape[0]

    def index(self, column: str | int, role: tuple[str, str] = ("column", "--column")) -> int:
        """0-based index of ``column`` (a header name, an index, or an index written as text).

        ``role`` is the (Python argument, CLI flag) that chose the column, named in the error.
        """
        if isinstance(column, str) and column in self.names:
            return self.names.index(column)
        if isinstance(column, str) and column.strip().isdigit():
            column = int(column)
        if isinstance(column, int) and 0 <= column < len(self.names):
            return column
        raise ValueError(f"no column {column!r} in {self.path}; its columns are {self.names} "
                         f"(fix {option(*role)})")

    def column_name(self, index: int) -> str:
        return self.names[index] if self.has_header else f"column {index}"

    def where(self, row: int, column: int) -> str:
        """``file, line L, column 'name'`` for error messages."""
        return f"{self.path}, line {self.lines[row]}, column {self.names[column]!r}"


def read_table(path: str | Path) -> Table:
    """Read ``path`` as a numeric table; see the module docstring for the rules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    rows.append([cell.strip() for cell in row])
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file (byte {err.start}: {err.reason}); a CSV must be "
                         "UTF-8 text") from None
    if not rows:
        raise ValueError(f"{path} has no rows")
    has_header = any(cell and not _is_number(cell) for cell in rows[0])
    names = rows[0] if has_header else [str(i) for i in range(len(rows[0]))]
    if has_header:
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise ValueError(f"{path} has a header ({', '.join(names)}) but no data rows")
    width = len(names)
    values = torch.empty(len(rows), width, dtype=torch.float64)
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        if len(row) != width:
            first = "the header" if has_header else f"line {lines[0]}"
            raise ValueError(f"{path}, line {line}: {len(row)} cells, but {first} has {width}; every row needs "
                             "one cell per column (leave a cell empty for a missing value)")
        for j, cell in enumerate(row):
            if not cell:
                values[i, j] = math.nan
            elif _is_number(cell) and math.isfinite(float(cell)):
                values[i, j] = float(cell)
            else:
                raise ValueError(f"{path}, line {line}, column {names[j]!r}: expected a finite number, got {cell!r}")
    return Table(path, names, values, lines, has_header)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
