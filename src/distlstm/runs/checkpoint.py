"""One checkpoint format for every mode.

A checkpoint is a dict of tensors and plain data, loaded with ``weights_only=True``::

    format      "distlstm-run"
    version     CHECKPOINT_VERSION (older ones are refused with a message that says so)
    mode        "online", "es", "ddp" or "fullbatch"
    config      the run's config document (what config.json holds)
    step        steps done;  seconds: training time so far;  world_size: workers that wrote it
    rows        the metrics rows so far (the CSV is rewritten from them)
    state       the mode's state_dict(): "model" (a state dict the task's model loads),
                "algorithm" (optimizer, covariances, particles, ES moments, ...),
                "generators" (torch.Generator states), "artifacts" (vocabulary, scaler, ...)

It is written to ``checkpoint.pt.tmp``, flushed to disk, then the previous checkpoint
becomes ``checkpoint.prev.pt`` and the new one takes its name (both renames atomic), so
a crash at any moment leaves at least one complete checkpoint. Loading falls back to
the previous one, with a warning naming the bad file, when the newest is unreadable.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from distlstm.runs.files import load_checkpoint, save_checkpoint

CHECKPOINT_FORMAT = "distlstm-run"
CHECKPOINT_VERSION = 2  # 1: the per-mode checkpoints of distlstm 0.1 (train, es), not readable here
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save_run_checkpoint(folder: Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (without format/version, added here) as the folder's newest checkpoint."""
    path = Path(folder) / CHECKPOINT
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_checkpoint(tmp, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload,
                          "checksum": state_digest(payload.get("state"))})
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def state_digest(obj: Any) -> str:
    """A BLAKE2b digest of a nested state (dicts, lists, tensors, numbers, strings) in its stored order.

    Stored in every checkpoint and checked on load: flipped bits in a tensor that the
    container format does not catch are an error, not a model with θ ≈ 1e37.
    """
    h = hashlib.blake2b(digest_size=16)

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k, v in x.items():
                h.update(repr(k).encode())
                visit(v)
            h.update(b"}")
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for v in x:
                visit(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    visit(obj)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_checkpoint(ckpt: Mapping[str, Any], path: Path, mode: str | None = None) -> None:
    """Raise a clear error unless ``ckpt`` is a checkpoint of this format (and of ``mode``, if given)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        old = ckpt.get("version") == 1
        raise ValueError(f"{path} is not a distlstm run checkpoint" + (
            " of this version: it was written by distlstm 0.1 (checkpoint version 1), whose per-command checkpoints "
            "this version does not read; start a new run (or finish the old one with distlstm 0.1)" if old else ""))
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {version!r}, newer than this distlstm reads "
                         f"({CHECKPOINT_VERSION}); upgrade distlstm")
    if version < CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {version}, older than this distlstm reads "
                         f"({CHECKPOINT_VERSION}); start a new run")
    if "checksum" in ckpt and ckpt["checksum"] != state_digest(ckpt.get("state")):
        raise ValueError(f"{path} is damaged: its tensors do not match the checksum written with them")
    check_state_values(ckpt.get("state"), path)
    if mode is not None and ckpt.get("mode") != mode:
        raise ValueError(f"{path} is a checkpoint of a {ckpt.get('mode')!r} run, not of a {mode!r} run; "
                         f"use the command that wrote it")


ABSURD = 1e12  # no trained weight of a working model is this large: a bigger one is damage, not training


def check_state_values(state: Any, path: Path) -> None:
    """The state's ``model`` and ``algorithm`` tensors must be finite, and the model's weights below :data:`ABSURD`.

    A checksum proves the file holds what was written, not that what was written is a
    model: a state saved after a divergence (or edited by hand) would resume or predict
    with NaN. ``records`` (summaries that are NaN until a label is seen) are not checked.
    """
    if not isinstance(state, Mapping):
        return

    def visit(x: Any, where: str, limit: float | None) -> None:
        if isinstance(x, torch.Tensor):
            if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
                return
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{path}: {where} holds {int((~torch.isfinite(x)).sum())} NaN/inf value(s); the "
                                 "state is unusable (a diverged run or a damaged file): resume from an earlier "
                                 "checkpoint or start a new run")
            if limit is not None and float(x.abs().max()) > limit:
                raise ValueError(f"{path}: {where} holds a value of {float(x.abs().max()):.3g}, beyond any trained "
                                 f"weight (|w| > {limit:g}); the file is damaged or the run diverged")
        elif isinstance(x, Mapping):
            for k, v in x.items():
                visit(v, f"{where}[{k!r}]", limit)
        elif isinstance(x, list | tuple):
            for i, v in enumerate(x):
                visit(v, f"{where}[{i}]", limit)

    visit(state.get("model"), "the model", ABSURD)
    algorithm = state.get("algorithm")
    if isinstance(algorithm, Mapping):
        visit({k: v for k, v in algorithm.items() if k != "records"}, "the algorithm state", None)


def load_run_checkpoint(folder: Path, mode: str | None = None) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run folder and its path.

    When ``checkpoint.pt`` is missing or unreadable (truncated, corrupt) and
    ``checkpoint.prev.pt`` is good, the previous one is used and a warning names the
    bad file. A checkpoint of another format version or mode is an error, not skipped.
    """
    folder = Path(folder)
    newest, previous = folder / CHECKPOINT, folder / PREVIOUS
    if not newest.exists() and not previous.exists():
        raise FileNotFoundError(f"{folder} holds no {CHECKPOINT}: not a distlstm run folder (or the run wrote no "
                                "checkpoint yet)")
    try:
        ckpt = load_checkpoint(newest)
        path = newest
        check_checkpoint(ckpt, path, mode)
    except (ValueError, FileNotFoundError) as err:
        if newest.exists() and _readable_but_foreign(newest):
            raise
        if not previous.exists():
            raise ValueError(f"{newest} cannot be read ({err}) and there is no {PREVIOUS} to fall back to") from err
        ckpt = load_checkpoint(previous)
        path = previous
        check_checkpoint(ckpt, path, mode)
        warnings.warn(f"{err}; going on from the previous checkpoint {previous} (step {ckpt.get('step')})",
                      stacklevel=2)
    return ckpt, path


def _readable_but_foreign(path: Path) -> bool:
    """A checkpoint that loads but is of another format, version or mode: an error, not a reason to fall back."""
    try:
        ckpt = load_checkpoint(path)
    except (ValueError, FileNotFoundError):
        return False
    return ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("version") != CHECKPOINT_VERSION or \
        ckpt.get("checksum", "") == state_digest(ckpt.get("state"))
