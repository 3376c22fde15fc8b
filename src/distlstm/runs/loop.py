"""The run loop: the one loop every mode runs in.

::

    state ← checkpoint (resume) or mode.init(comm, seed)
    while step < steps and time < seconds and metric > stop_at and not interrupted:
        metrics ← mode.step(step)                     timed: the budget counts steps only
        step ← step + 1
        every eval_every steps and at the end:        metrics += mode.evaluate()
        every checkpoint_every steps and at the end:  checkpoint (rank 0 writes, atomically)
    metrics.csv, metrics.png, summary.json, the mode's own files

Every worker runs the loop and takes the same decisions: the clock that ends a
``seconds`` budget and the interrupt flag are reduced over workers (the maximum) after
every step, and evaluations are the same everywhere. Only rank 0 writes files and shows
progress. SIGINT/SIGTERM set a flag; the loop finishes the step, writes a checkpoint
and raises :class:`RunInterrupted` with the command that resumes it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from distlstm.runs.checkpoint import load_run_checkpoint, save_run_checkpoint
from distlstm.runs.config import LoopConfig
from distlstm.runs.files import write_json
from distlstm.runs.folder import check_resume, prepare_new, record_resume
from distlstm.runs.metrics import TensorBoardLog, plot_metrics, write_metrics_csv
from distlstm.runs.mode import Mode
from distlstm.runtime.comm import Communicator, LocalComm


class RunInterrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing a checkpoint; ``str()`` says how to resume."""


@dataclass
class RunResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _stop_signals(flag: list[bool]) -> Iterator[None]:
    """SIGINT/SIGTERM set ``flag[0]`` (a second SIGINT interrupts at once); handlers restored afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _resume_command(command: str | None, folder: Path | None) -> str:
    return f"distlstm {command or '<command>'} --resume {folder}" if folder is not None else "resume from a folder"


def run(mode: Mode, loop: LoopConfig, *, comm: Communicator | None = None, folder: Path | str | None = None,
        config: Mapping[str, Any] | None = None, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Run ``mode`` under ``loop`` and return the summary and the metrics rows.

    ``folder`` (None: nothing written, for tests and in-process studies) is created
    for a new run (an error if it holds files, unless ``overwrite``) or continued with
    ``resume``; ``config`` is the config document stored as ``config.json`` and in
    the checkpoints (:func:`~distlstm.runs.config.config_document`).
    """
    comm = comm or LocalComm()
    out = Path(folder) if folder is not None else None
    config = dict(config or {})
    command = config.get("command")
    ckpt: dict[str, Any] | None = None
    if out is not None and resume:
        if comm.is_main:
            check_resume(out, config)
        ckpt, _ = load_run_checkpoint(out, mode.name)
    elif out is not None and comm.is_main:
        prepare_new(out, config, overwrite=overwrite)
    comm.barrier()
    mode.init(comm, loop.seed)
    step, seconds, rows = 0, 0.0, []
    if ckpt is not None:
        mode.load_state_dict(ckpt["state"])
        step, seconds, rows = int(ckpt["step"]), float(ckpt["seconds"]), [dict(r) for r in ckpt["rows"]]
        if out is not None and comm.is_main:
            record_resume(out, config)
    main = comm.is_main
    write = main and out is not None
    tensorboard = TensorBoardLog(out, purge_step=step + 1) if loop.tensorboard and write and out else None
    last = _last_evaluation(rows, mode.metric)
    cap = loop.steps if mode.max_steps is None else min(loop.steps, mode.max_steps)
    reached = loop.stop_at is not None and last is not None and last <= loop.stop_at
    stopped = "steps"

    def checkpoint() -> None:
        state = mode.state_dict()  # on every worker: a mode may gather its state to rank 0
        if write and out is not None:
            save_run_checkpoint(out, {"mode": mode.name, "config": config, "step": step, "seconds": seconds,
                                      "rows": rows, "world_size": comm.world_size, "state": state})
            write_metrics_csv(out / "metrics.csv", rows)

    interrupted = [False]
    bar = tqdm(total=cap, initial=min(step, cap), desc=f"{command or mode.name} ({mode.name})", unit="step",
               disable=not (loop.progress and main), dynamic_ncols=True)
    with _stop_signals(interrupted):
        while step < cap and not reached:
            if loop.seconds is not None and seconds >= loop.seconds:
                stopped = "seconds"
                break
            started = time.perf_counter()
            metrics = dict(mode.step(step))
            step += 1
            seconds += time.perf_counter() - started
            if comm.world_size > 1:  # one clock and one interrupt flag for all: rank 0 alone could not stop them
                agreed = comm.all_reduce_(torch.tensor([seconds, float(interrupted[0])], dtype=torch.float64), "max")
                seconds, interrupted[0] = float(agreed[0]), bool(agreed[1])
            row: dict[str, Any] = {"step": step, "seconds": round(seconds, 4), **metrics}
            out_of_time = loop.seconds is not None and seconds >= loop.seconds
            if step % loop.eval_every == 0 or step == cap or out_of_time or interrupted[0]:
                row.update(mode.evaluate())
                last = float(row[mode.metric])
                reached = loop.stop_at is not None and last <= loop.stop_at
                bar.set_postfix({mode.metric: f"{last:.4g}"})
            rows.append(row)
            if tensorboard is not None:
                tensorboard.add(row)
            bar.update()
            if interrupted[0]:
                checkpoint()
                bar.close()
                if tensorboard is not None:
                    tensorboard.close()
                where = f"checkpoint written to {out}" if out is not None else "nothing written (no run folder)"
                raise RunInterrupted(f"interrupted at step {step}: {where}; continue with "
                                     f"{_resume_command(command, out)}")
            if step % loop.checkpoint_every == 0 and step < cap and not reached:
                checkpoint()
        else:
            stopped = "stop_at" if reached else ("max_steps" if cap < loop.steps else "steps")
    bar.close()
    if rows and mode.metric not in rows[-1]:  # stopped between evaluations (time budget): evaluate the end
        rows[-1].update(mode.evaluate())
        last = float(rows[-1][mode.metric])
    elif not rows:
        rows.append({"step": step, "seconds": round(seconds, 4), **mode.evaluate()})
        last = float(rows[-1][mode.metric])
    checkpoint()
    summary = {"command": command, "mode": mode.name, "metric": mode.metric, mode.metric: last,
               "stopped_by": stopped, "reached_stop_at": loop.stop_at is not None and last is not None
               and last <= loop.stop_at, "steps": step, "seconds": round(seconds, 3), "workers": comm.world_size,
               **mode.summary()}
    if write and out is not None:
        write_json(out / "summary.json", summary)
        plot_metrics(out / "metrics.png", rows, mode.plot_columns, f"{command or mode.name}: {mode.name}, "
                     f"{comm.world_size} worker(s)")
        mode.write_outputs(out, rows)
    if tensorboard is not None:
        tensorboard.close()
    return RunResult(summary, rows)


def _last_evaluation(rows: list[dict[str, Any]], metric: str) -> float | None:
    for row in reversed(rows):
        value = row.get(metric)
        if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


def print_interrupted(err: RunInterrupted) -> int:
    """The CLI's report of an interrupted run; returns the exit status (130, as for Ctrl-C)."""
    print(f"\n{err}", file=sys.stderr)
    return 130
