"""The run loop: the one loop every mode runs in.

::

    state ← checkpoint (resume) or mode.init(comm, seed)
    evaluate the untrained model (step 0), unless resuming
    while step < steps and time < seconds and metric > stop_at and not interrupted:
        metrics ← mode.step(step)                     timed: the budget counts steps only
        step ← step + 1
        every eval_every steps and at the end:        metrics += mode.evaluate()
        every checkpoint_every steps and at the end:  checkpoint (rank 0 writes, atomically)
    metrics.csv, metrics.png, summary.json, the mode's own files

Every worker runs the loop and takes the same decisions: the clock that ends a
``seconds`` budget and the interrupt flag are reduced over workers (the maximum) after
every step, and evaluations are the same everywhere. Only rank 0 writes files (holding
the folder's lock) and shows progress; metrics.csv grows row by row, so memory stays
flat. SIGINT/SIGTERM set a flag; the loop finishes the step, writes a checkpoint and
raises :class:`RunInterrupted` with the command that resumes it. A peer that dies ends
the run on every survivor with one :class:`PeerLost` message, unless the mode goes on
without it: a mode with ``recover()`` (online, ``--on-node-loss continue``) agrees with
the survivors on a new process group and returns the step to repeat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from distlstm._flags import option
from distlstm._output import print_line
from distlstm.runs.checkpoint import load_run_checkpoint, save_run_checkpoint
from distlstm.runs.config import LoopConfig
from distlstm.runs.files import write_json
from distlstm.runs.folder import CONFIG, check_new, check_resume, prepare_new, record_resume, run_lock
from distlstm.runs.metrics import METRICS, MetricsStream, TensorBoardLog, plot_metrics, read_metrics
from distlstm.runs.mode import Mode
from distlstm.runtime.comm import Communicator, LocalComm


class RunInterrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing a checkpoint; ``str()`` says how to resume."""


class PeerLost(RuntimeError):
    """Another worker died or stopped answering; ``str()`` names this rank, the step and how to resume."""


@dataclass
class RunResult:
    """What a run returns: its summary, and its metrics rows (read back from metrics.csv on demand)."""

    summary: dict[str, Any]
    metrics: MetricsStream = field(repr=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.metrics.rows()


@contextlib.contextmanager
def _stop_signals(flag: list[bool]) -> Iterator[None]:
    """SIGINT/SIGTERM set ``flag[0]`` (a second SIGINT interrupts at once); handlers restored afterwards.

    Except SIGTERM after a lost peer under torchrun: its agent terminates the survivors as
    soon as one worker died, and a survivor must still say why it stops (the caller prints
    :class:`PeerLost`), so SIGTERM stays ignored on that way out; the process exits next.
    """
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
    except PeerLost:
        if "TORCHELASTIC_RUN_ID" in os.environ:
            old[signal.SIGTERM] = signal.SIG_IGN
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _peers_watched(comm: Communicator, step: Callable[[], int], command: str | None,
                   out: Path | None) -> Iterator[None]:
    """Turn torch.distributed's report of a dead or silent peer into one :class:`PeerLost` message."""
    try:
        yield
    except Exception as err:
        if not comm.is_peer_failure(err):
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise PeerLost(f"rank {comm.rank}: another worker stopped answering during step {step() + 1} ({first}). "
                       f"The last checkpoint is kept; once every worker can run again, continue with "
                       f"{_resume_command(command, out, comm.world_size)}") from None


def _recover(mode: Mode, comm: Communicator, err: Exception) -> int | None:
    """The step to go on from after a peer failure, if the mode goes on without the dead (``mode.recover``)."""
    recover = getattr(mode, "recover", None)
    if recover is None or not comm.is_peer_failure(err):
        return None
    again: int | None = recover()
    return again


def resolve_device(requested: str, mode: Mode) -> torch.device:
    """The device a run computes on: ``requested`` (auto, cpu, cuda) within what the mode can use.

    A mode lists the device types it runs on in ``devices`` (the CPU only when absent):
    the filters, ES and the full-batch optimizers keep θ on the CPU, the data-parallel
    mode runs anywhere. ``auto`` takes the GPU when there is one and the mode can use it.
    """
    supported = tuple(getattr(mode, "devices", ("cpu",)))
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{option('device', '--device')} must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda":
        if "cuda" not in supported:
            raise ValueError(f"the {mode.name} mode runs on the CPU only; use {option('device', '--device')} cpu "
                             "(or auto)")
        if not torch.cuda.is_available():
            raise ValueError(f"{option('device', '--device')} cuda: this machine has no CUDA GPU that torch "
                             f"{torch.__version__} can use; use cpu or auto")
        return torch.device("cuda")
    if requested == "auto" and "cuda" in supported and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _resume_command(command: str | None, folder: Path | None, world_size: int = 1) -> str:
    """The command that continues the run (under torchrun with as many workers when it had several)."""
    if folder is None:
        return "resume from a folder"
    launcher = f"torchrun --nproc-per-node {world_size} -m distlstm.cli" if world_size > 1 else "distlstm"
    return f"{launcher} {command or '<command>'} --resume {folder}"


def _check_budget_left(loop: LoopConfig, mode: Mode, step: int, seconds: float) -> None:
    """A resumed run must have steps and seconds left: else it would only rewrite its files."""
    if mode.max_steps is not None and step >= mode.max_steps:
        raise ValueError(f"the run has done all {mode.max_steps} steps its data allows; there is nothing to resume")
    if step >= loop.steps:
        raise ValueError(f"the run has done {step} steps: {option('steps', '--steps')} {loop.steps} is a total, "
                         f"give more than {step} to continue")
    if loop.seconds is not None and seconds >= loop.seconds:
        raise ValueError(f"the run has trained {seconds:.1f} s: {option('seconds', '--seconds')} {loop.seconds:g} "
                         f"is a total, give more than {seconds:.1f} to continue")


def run(mode: Mode, loop: LoopConfig, *, comm: Communicator | None = None, folder: Path | str | None = None,
        config: Mapping[str, Any] | None = None, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Run ``mode`` under ``loop`` and return the summary and the metrics rows.

    ``folder`` (None: nothing written, for tests and in-process studies) is created
    for a new run (an error if it holds files, unless ``overwrite``) or continued with
    ``resume``; ``config`` is the config document stored as ``config.json`` and in
    the checkpoints (:func:`~distlstm.runs.config.config_document`). Rank 0 holds the
    folder's lock for the whole run.
    """
    comm = comm or LocalComm()
    out = Path(folder) if folder is not None else None
    if out is not None and comm.is_main:
        if not resume:
            check_new(out, overwrite=overwrite)  # before the lock creates the folder: a file there is an error
        created = not out.exists()
        try:
            with run_lock(out):
                return _run(mode, loop, comm, out, dict(config or {}), resume, overwrite)
        finally:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # a new run that failed before writing anything leaves no empty folder behind
    return _run(mode, loop, comm, out, dict(config or {}), resume, overwrite)


def _run(mode: Mode, loop: LoopConfig, comm: Communicator, out: Path | None, config: dict[str, Any], resume: bool,
         overwrite: bool) -> RunResult:
    command = config.get("command")
    main = comm.is_main
    write = main and out is not None
    ckpt: dict[str, Any] | None = None
    if out is not None and resume:
        if main:
            check_resume(out, config)
        ckpt, _ = load_run_checkpoint(out, mode.name)
    elif write:
        assert out is not None
        prepare_new(out, config, overwrite=overwrite)
    comm.barrier()
    comm.use_device(resolve_device(loop.device, mode))
    try:
        mode.init(comm, loop.seed)
    except Exception:
        if write and ckpt is None and out is not None:  # a new run that never started leaves its folder reusable
            (out / CONFIG).unlink(missing_ok=True)
        raise
    step, seconds, last = 0, 0.0, None
    if ckpt is not None:
        mode.load_state_dict(ckpt["state"])
        step, seconds, last = int(ckpt["step"]), float(ckpt["seconds"]), ckpt["last_metric"]
        _check_budget_left(loop, mode, step, seconds)
        if write:
            assert out is not None
            record_resume(out, config)
    metrics = MetricsStream(out / METRICS if write and out is not None else None,
                            resume_bytes=ckpt["metrics_bytes"] if ckpt is not None and write else None)
    tensorboard = TensorBoardLog(out, purge_step=step + 1) if loop.tensorboard and write and out else None
    evaluated: set[str] = set()

    def record(row: dict[str, Any]) -> None:
        metrics.append(row)
        if tensorboard is not None:
            tensorboard.add(row)

    def evaluate() -> dict[str, Any]:
        nonlocal last
        values = dict(mode.evaluate())
        evaluated.update(values)
        last = float(values[mode.metric])
        return values

    def checkpoint() -> None:
        state = mode.state_dict()  # on every worker: a mode may gather its state to rank 0
        if write and out is not None:
            save_run_checkpoint(out, {"mode": mode.name, "config": config, "step": step, "seconds": seconds,
                                      "last_metric": last, "metrics_bytes": metrics.flush(),
                                      "world_size": comm.world_size, "state": state})

    def reached_stop_at() -> bool:
        return loop.stop_at is not None and last is not None and last <= loop.stop_at

    if ckpt is None:  # the untrained model's evaluation: the curves start where training starts
        record({"step": 0, "seconds": 0.0, **evaluate()})
    cap = loop.steps if mode.max_steps is None else min(loop.steps, mode.max_steps)
    reached = reached_stop_at()
    stopped = "stop_at" if reached else "steps"
    interrupted = [False]
    label = mode.name if command in (None, mode.name) else f"{command} ({mode.name})"
    bar = _Progress(loop, cap, step, seconds, label, enabled=loop.progress and main)
    try:
        with _stop_signals(interrupted), _peers_watched(comm, lambda: step, command, out):
            while step < cap and not reached:
                if loop.seconds is not None and seconds >= loop.seconds:
                    stopped = "seconds"
                    break
                started = time.perf_counter()
                try:
                    values = dict(mode.step(step))
                    step += 1
                    seconds += time.perf_counter() - started
                    if comm.world_size > 1:  # one clock and one interrupt flag for all: rank 0 alone cannot stop them
                        agreed = comm.all_reduce_(torch.tensor([seconds, float(interrupted[0])],
                                                               dtype=torch.float64), "max")
                        seconds, interrupted[0] = float(agreed[0]), bool(agreed[1])
                except Exception as err:
                    again = _recover(mode, comm, err)
                    if again is None:
                        raise
                    step = again
                    continue
                row: dict[str, Any] = {"step": step, "seconds": round(seconds, 4), **values}
                out_of_time = loop.seconds is not None and seconds >= loop.seconds
                at_end = step == cap or (mode.max_steps is not None and step >= mode.max_steps)
                if step % loop.eval_every == 0 or at_end or out_of_time or interrupted[0]:
                    row.update(evaluate())
                    reached = reached_stop_at()
                    bar.show(mode.metric, row[mode.metric])
                record(row)
                bar.advance(step, seconds)
                if interrupted[0]:
                    stopped = "interrupted"
                    break
                if mode.max_steps is not None:
                    cap = min(cap, mode.max_steps)  # a mode may end early (e.g. a line search found no decrease)
                if step % loop.checkpoint_every == 0 and step < cap and not reached:
                    checkpoint()
            else:
                stopped = "stop_at" if reached else ("max_steps" if cap < loop.steps else "steps")
        checkpoint()
    finally:
        bar.close(stopped)
        metrics.close()
        if tensorboard is not None:
            tensorboard.close()
    summary = {"command": command, "mode": mode.name, "metric": mode.metric, mode.metric: last,
               "stopped_by": stopped, "reached_stop_at": reached_stop_at(), "steps": step,
               "seconds": round(seconds, 3), "workers": comm.world_size,
               **mode.summary()}
    if write and out is not None:
        write_json(out / "summary.json", summary)
        plot_metrics(out / "metrics.png", read_metrics(out / METRICS), mode.plot_columns,
                     f"{command or mode.name}: {mode.name}, {comm.world_size} worker(s)", total=step + 1,
                     every_point=sorted(evaluated))
        mode.write_outputs(out, metrics.iter_rows())
    if stopped == "interrupted":  # after the outputs: an interrupted run's folder is as readable as a finished one's
        where = f"checkpoint written to {out}" if out is not None else "nothing written (no run folder)"
        raise RunInterrupted(f"interrupted at step {step}: {where}; continue with "
                             f"{_resume_command(command, out, comm.world_size)}")
    return RunResult(summary, metrics)


class _Progress:
    """The run's progress bar: in steps, or in training seconds when the run has a time budget
    (``--seconds``), whose number of steps is not known in advance."""

    def __init__(self, loop: LoopConfig, cap: int, step: int, seconds: float, label: str, enabled: bool) -> None:
        self.by_time = loop.seconds is not None
        if loop.seconds is not None:
            self.bar = tqdm(total=loop.seconds, initial=min(seconds, loop.seconds), desc=label, unit="s",
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
                            disable=not enabled, dynamic_ncols=True)
        else:
            self.bar = tqdm(total=cap, initial=min(step, cap), desc=label, unit="step", disable=not enabled,
                            dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def advance(self, step: int, seconds: float) -> None:
        if not self.by_time:
            self.bar.update()
            return
        self.postfix["step"] = str(step)
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(min(seconds, self.bar.total) - self.bar.n)

    def show(self, metric: str, value: float) -> None:
        self.postfix[metric] = f"{value:.4g}"
        self.bar.set_postfix(self.postfix)

    def close(self, stopped: str) -> None:
        if self.by_time and stopped != "seconds":  # ended before its budget: say why, the bar stops short
            self.postfix["stopped_by"] = stopped
            self.bar.set_postfix(self.postfix)
        self.bar.close()


def print_interrupted(err: RunInterrupted) -> int:
    """The CLI's report of an interrupted run; returns the exit status (130, as for Ctrl-C)."""
    print_line(f"\n{err}")
    return 130
