"""Long runs and checkpoints: memory over 10⁴–10⁵ online steps, checkpoint cost per mode and every k steps.

* **Memory.** An EKF on one node with a tiny model (hidden 2) runs in a run folder,
  as ``distlstm online`` does (per-step records streamed to ``metrics.csv``, summaries
  as running sums), and the process's resident set size is read after 10³, 10⁴ and
  10⁵ steps; the same run with the per-step lists kept in memory (``keep_steps=True``,
  the in-memory studies' setting) shows what streaming saves. The stream is generated
  on demand (:class:`SyntheticStream`), so the data itself takes no memory.
* **Checkpoint size and write time** per mode, at the reproductions' sizes: online
  (Ergen & Kozat: DEKF and DPF with 500 particles, 4 nodes, hidden 4), es (ES on
  Shakespeare: LSTM, hidden 64, population 256), ddp (Kuchaiev & Ginsburg's word LM,
  G-4 at p = 128, n = 1024, Adam), fullbatch (matrix-batch: L-BFGS, 5 iterations per
  step, on the multiplication problem, hidden 4).
* **Checkpoint overhead**: seconds per step of one online run with
  ``checkpoint_every`` = k against checkpoints at the end only.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm.bptt.fullbatch import FullBatchConfig
from distlstm.data.observation import Observation
from distlstm.modes.ddp import DDPMode, OptimConfig
from distlstm.modes.es import ESMode, ESRunConfig
from distlstm.modes.fullbatch import FullBatchMode
from distlstm.modes.online import OnlineMode, OnlineProblem
from distlstm.modes.train_tasks import TaskConfig, build_task
from distlstm.network import make_topology
from distlstm.online import algorithm_settings
from distlstm.runs.checkpoint import CHECKPOINT, save_run_checkpoint
from distlstm.runs.config import LoopConfig
from distlstm.runs.loop import run
from distlstm.runs.mode import Mode
from distlstm.runtime.comm import LocalComm


class SyntheticStream(Sequence[Observation]):
    """``length`` observations of a noisy sine, made when indexed (no memory for the data).

    x_t = (sin(ωt), sin(ω(t+1))) as a (2, 1) sequence, d_t = sin(ω(t+2)) + 0.05·ε_t with
    ε_t a deterministic pseudo-random number of t: the same values on every call.
    """

    def __init__(self, length: int, omega: float = 0.07) -> None:
        self.length, self.omega = length, omega

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, t: int) -> Observation:  # type: ignore[override]
        if not 0 <= t < self.length:
            raise IndexError(t)
        w = self.omega
        x = torch.tensor([[math.sin(w * t)], [math.sin(w * (t + 1))]], dtype=torch.float64)
        noise = math.sin(12.9898 * t) * 43758.5453 % 1.0 - 0.5
        return Observation(x, math.sin(w * (t + 2)) + 0.1 * noise)

    def __iter__(self) -> Iterator[Observation]:
        return (self[t] for t in range(self.length))


def rss_mib() -> float:
    """The process's resident set size now (Linux /proc), else its peak (getrusage), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024


class _Probe:
    """A mode that delegates to another and calls ``at(step)`` after the steps listed in ``marks``."""

    def __init__(self, inner: Mode, marks: Iterable[int], at: Callable[[int], None]) -> None:
        self._inner, self._marks, self._at = inner, set(marks), at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def step(self, step: int) -> Mapping[str, float]:
        out = self._inner.step(step)
        if step + 1 in self._marks:
            self._at(step + 1)
        return out


def long_ekf_mode(steps: int, *, keep_steps: bool = False, check_every: int = 100) -> OnlineMode:
    """An EKF on one node, hidden 2, over a :class:`SyntheticStream` of ``steps`` observations."""
    problem = OnlineProblem([SyntheticStream(steps)], dataset="synthetic sine")  # type: ignore[list-item]
    return OnlineMode(problem, "ekf", algorithm_settings("ekf", {"q": 1e-6}), make_topology("ring", 1), hidden=2,
                      keep_steps=keep_steps, check_every=check_every)


@dataclass(frozen=True)
class MemoryRow:
    keep_steps: bool
    step: int
    rss_mib: float
    growth_mib: float  # since the first mark
    seconds: float


def bench_memory(marks: Sequence[int] = (1_000, 10_000, 100_000), *,
                 progress: Callable[[str], None] | None = None) -> list[MemoryRow]:
    """RSS after each mark of one long EKF run in a run folder, streaming and with per-step lists kept."""
    rows: list[MemoryRow] = []
    for keep in (False, True):
        if progress:
            progress(f"memory: {max(marks):,} EKF steps, keep_steps={keep}")
        started = time.perf_counter()
        first: list[float] = []

        def at(step: int, keep: bool = keep, started: float = started, first: list[float] = first) -> None:
            now = rss_mib()
            if not first:
                first.append(now)
            rows.append(MemoryRow(keep, step, now, now - first[0], time.perf_counter() - started))

        mode = long_ekf_mode(max(marks), keep_steps=keep)
        with tempfile.TemporaryDirectory() as tmp:
            run(_Probe(mode, marks, at), LoopConfig(steps=max(marks), progress=False, eval_every=1000,
                                                    checkpoint_every=10_000), folder=Path(tmp) / "run")
    return rows


@dataclass(frozen=True)
class CheckpointRow:
    mode: str
    what: str
    megabytes: float
    write_ms: float


def _reproduction_modes() -> list[tuple[str, Callable[[], Mode]]]:
    """The modes at the reproductions' sizes (see the module docstring)."""
    from distlstm.modes.online import OnlineConfig, OnlineDataConfig, make_online_mode

    def online(algorithm: str, **settings: Any) -> Callable[[], Mode]:
        return lambda: make_online_mode({"data": OnlineDataConfig(scaling="standardize"),
                                         "online": OnlineConfig(algorithm=algorithm, nodes=4, hidden=4, **settings),
                                         "loop": LoopConfig()})

    word = TaskConfig(task="word-lm", cell="glstm", cell_opt=("groups=4",), proj=128, hidden=1024, samples=1024)
    # matrix-batch's model and optimizer state; its quick preset's data (the checkpoint holds no data)
    longlag = TaskConfig(task="multiplication", hidden=4, min_len=30, train_size=1_000, test_size=300)
    return [("online", online("dekf")), ("online", online("dpf", particles=500)),
            ("es", lambda: ESMode(ESRunConfig(cell="lstm", hidden=64, population=256))),
            ("ddp", lambda: DDPMode(functools.partial(build_task, word), OptimConfig(optimizer="adam"))),
            ("fullbatch", lambda: FullBatchMode(functools.partial(build_task, longlag),
                                                FullBatchConfig(method="lbfgs", max_iter=5)))]


def _describe(mode: Mode) -> str:
    if isinstance(mode, OnlineMode):
        return f"{mode.algorithm_name}, {mode.topology.num_nodes} nodes, n_θ = {mode.fm.numel}"
    params = sum(p.numel() for p in mode.state_dict()["model"].values() if isinstance(p, torch.Tensor))
    return f"{mode.name}, {params:,} model values"


def bench_checkpoints(*, steps: int = 2, repeats: int = 3, which: Sequence[str] | None = None,
                      progress: Callable[[str], None] | None = None) -> list[CheckpointRow]:
    """Size and median write time (state_dict + atomic save) of each mode's checkpoint after ``steps`` steps."""
    rows = []
    for name, make in _reproduction_modes():
        if which is not None and name not in which:
            continue
        if progress:
            progress(f"checkpoint: {name}")
        mode = make()
        mode.init(LocalComm(), 0)
        for t in range(steps):
            mode.step(t)
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                started = time.perf_counter()
                save_run_checkpoint(Path(tmp), {"mode": mode.name, "config": {}, "step": steps, "seconds": 0.0,
                                                "last_metric": None, "metrics_bytes": 0, "world_size": 1,
                                                "state": mode.state_dict()})
                times.append(time.perf_counter() - started)
            size = (Path(tmp) / CHECKPOINT).stat().st_size
        rows.append(CheckpointRow(name, _describe(mode), size / 1e6, sorted(times)[len(times) // 2] * 1e3))
    return rows


@dataclass(frozen=True)
class OverheadRow:
    every: int | None  # None: at the end only
    ms_per_step: float
    ratio: float  # ÷ the end-only run


def bench_checkpoint_every(steps: int = 2_000, every: Sequence[int] = (1_000, 100, 10, 1), *,
                           progress: Callable[[str], None] | None = None) -> list[OverheadRow]:
    """Wall time per step of the long EKF run in a run folder for each ``checkpoint_every``, interleaved."""
    settings: list[int | None] = [None, *every]
    best: dict[int | None, float] = {}
    for _round in range(2):  # two interleaved rounds, the faster of each kept
        for k in settings:
            if progress:
                progress(f"checkpoint every {k or 'end'}: {steps} steps")
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                run(long_ekf_mode(steps), LoopConfig(steps=steps, progress=False, eval_every=steps,
                                                     checkpoint_every=k or steps), folder=Path(tmp) / "run")
                took = time.perf_counter() - started
            best[k] = min(best.get(k, math.inf), took)
    base = best[None]
    return [OverheadRow(k, best[k] / steps * 1e3, best[k] / base) for k in settings]


def render_robust(memory: list[MemoryRow], checkpoints: list[CheckpointRow], overhead: list[OverheadRow],
                  overhead_steps: int, repeats: int = 3) -> str:
    lines = ["## Long online runs and checkpoints", "",
             "Resident memory (RSS) of one `distlstm online`-style run in a run folder (EKF, 1 node, hidden 2, "
             "a generated sine stream): per-step records streamed to metrics.csv and summaries as running sums, "
             "against the same run keeping its per-step lists in memory (`keep_steps=True`).", "",
             "| per-step lists in memory | after step | RSS MiB | growth since the first mark MiB | seconds |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {'yes' if r.keep_steps else 'no (streamed)'} | {r.step:,} | {r.rss_mib:.1f} | {r.growth_mib:+.1f} | "
              f"{r.seconds:.0f} |" for r in memory]
    lines += ["", f"Checkpoint size and write time (state gathered + written atomically, median of {repeats}) at the "
              "reproductions' sizes:", "", "| mode | model | MB | write ms |", "|---|---|---:|---:|"]
    lines += [f"| {r.mode} | {r.what} | {r.megabytes:.3f} | {r.write_ms:.1f} |" for r in checkpoints]
    lines += ["", f"Checkpoint overhead: the EKF run above, {overhead_steps:,} steps, wall time per step "
              "with `--checkpoint-every k` against checkpoints at the end only:", "",
              "| checkpoint every | ms / step | × end only |", "|---|---:|---:|"]
    lines += [f"| {r.every if r.every else 'end only'} | {r.ms_per_step:.2f} | {r.ratio:.2f} |" for r in overhead]
    return "\n".join(lines) + "\n"
