"""Side-by-side timing: candidates run round-robin so machine drift hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def compare(fns: Mapping[str, Callable[[], object]], repeats: int = 10, warmup: int = 3) -> dict[str, float]:
    """Median wall time in seconds of each function, measured interleaved.

    Every round calls each function once in turn, so a slow spell of the machine
    affects every candidate in the same round rather than one of them.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


WORKER_SETTINGS = {"1 worker × 1 thread": (1, 1), "2 workers × 1 thread": (2, 1), "1 worker × 2 threads": (1, 2)}
