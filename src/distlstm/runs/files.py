"""Files of a run, written atomically: text, JSON, CSV, PNG plots and raw checkpoints."""

from __future__ import annotations

import csv
import json
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(dict(payload), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    _check_zip_crc(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load reports bad files as many types; any of them means "not readable"
        raise ValueError(f"{path} is not a readable distlstm checkpoint: it is corrupt, truncated, or holds "
                         "objects other than tensors and plain data, which are never unpickled") from err


def _check_zip_crc(path: Path) -> None:
    """Refuse a checkpoint whose zip members fail their CRC-32: ``torch.load`` does not check it.

    The state's own checksum covers the tensors and artifacts, not the plain fields beside
    them (``step``, ``config``, ``metrics_bytes``): a flipped bit there would load and resume
    at the wrong step without a word. ``torch.save`` writes a zip with a CRC per member.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip at all: torch.load below says so with the usual message
    with archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as err:
            raise ValueError(f"{path} is damaged: its zip structure does not read back ({err})") from err
    if bad is not None:
        raise ValueError(f"{path} is damaged: its member {bad!r} fails the zip CRC check (a flipped bit or a "
                         "partial write)")


def write_json(path: Path, data: Any) -> None:
    if is_dataclass(data) and not isinstance(data, type):
        data = asdict(data)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv_numbers(path: Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV written by :func:`write_csv` (empty cells read as NaN)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: float(v) if v not in ("", "nan") else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]


def plot_curves(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
                ylabel: str, title: str, hlines: Mapping[str, float] | None = None, logy: bool = False) -> None:
    """Line plot of named (x, y) curves, with optional labelled reference levels, to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=name)
    for k, (name, level) in enumerate((hlines or {}).items()):
        ax.axhline(level, linestyle="--", linewidth=1, color=f"C{k + len(curves)}", label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
