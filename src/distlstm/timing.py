"""Side-by-side timing: candidates run round-robin so machine drift hits all alike; commands timed by worker setting.

Shared by the benchmarks (``distlstm bench``) and the reproductions that time what they
reproduce (a reproduction must not import ``distlstm.bench``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distlstm.runtime.launch import run_cli


def compare(fns: Mapping[str, Callable[[], object]], repeats: int = 10, warmup: int = 3) -> dict[str, float]:
    """Median wall time in seconds of each function, measured interleaved.

    Every round calls each function once in turn, so a slow spell of the machine
    affects every candidate in the same round rather than one of them; the round's
    first candidate rotates, so that none always runs right after the same one (a
    candidate that follows a loop of many small calls was measured up to 28 % slower
    than the identical call placed elsewhere in the round).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for round_ in range(repeats):
        shift = round_ % len(order)
        for name, fn in order[shift:] + order[:shift]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


WORKER_SETTINGS = {"1 worker × 1 thread": (1, 1), "2 workers × 1 thread": (2, 1), "1 worker × 2 threads": (1, 2)}


def by_worker_setting(label: str, args_for: Callable[[int], list[str]],
                      progress: Callable[[str], None] | None) -> list[tuple[str, dict[str, Any]]]:
    """``distlstm ARGS`` in every worker setting; (setting, summary.json) pairs."""
    out = []
    for name, (workers, threads) in WORKER_SETTINGS.items():
        if progress:
            progress(f"{label}: {name}")
        with tempfile.TemporaryDirectory() as folder:
            out.append((name, run_cli(args_for(workers), Path(folder), workers=workers, threads=threads)))
    return out
