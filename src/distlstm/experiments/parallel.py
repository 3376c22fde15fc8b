"""Independent runs of a reproduction on several local processes, results in the serial order.

A reproduction's runs within a phase (a tuning grid, the evaluation seeds, a sweep) do not
depend on each other: :class:`RunPool` maps a picklable ``work(context, spec)`` over plain
run specs, either in this process (``jobs=1``, the serial path) or on ``jobs`` spawned
worker processes. Each worker builds its ``context`` once (``make_context(arg)``: e.g. the
data streams, which may take seconds to build) and keeps it for every run it is given,
over all phases of the pool. The parent keeps the progress bar (one tick per finished
run) and returns results in the order of the specs, whatever order they finish in; a
run that raises stops the pool and is reported by name (:class:`RunFailed`). Workers
are spawned and import the main module: a script that uses the pool needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from types import TracebackType
from typing import Any, Generic, TypeVar

import torch

Spec = TypeVar("Spec")
Result = TypeVar("Result")

_CONTEXT: Any = None  # a worker process's context, built by _start_worker


class RunFailed(RuntimeError):
    """A run on a worker process raised (or its process died); the message names the run."""


def resolve_jobs(jobs: int) -> int:
    """``jobs`` worker processes; 0 means one per CPU core (``os.cpu_count()``)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be a whole number ≥ 0 (0: one per CPU core), got {jobs!r} (fix --jobs)")
    return jobs or os.cpu_count() or 1


def _start_worker(make_context: Callable[[Any], Any], arg: Any, threads: int) -> None:
    global _CONTEXT
    torch.set_num_threads(threads)  # jobs × threads ≤ cores: workers do not fight over them
    _CONTEXT = make_context(arg)


def _call(work: Callable[[Any, Any], Any], spec: Any) -> Any:
    return work(_CONTEXT, spec)


class RunPool(Generic[Spec, Result]):
    """``with RunPool(work, make_context, arg, jobs=N, bar=bar) as pool: results = pool.map(specs, name)``.

    ``work`` and ``make_context`` must be module-level functions (workers are spawned and
    import them); ``arg``, the specs and the results cross the process boundary, so they
    must pickle. ``name(spec)`` labels the progress bar and a failure.
    """

    def __init__(self, work: Callable[[Any, Spec], Result], make_context: Callable[[Any], Any], arg: Any, *,
                 jobs: int = 1, bar: Any = None) -> None:
        self.work, self.make_context, self.arg = work, make_context, arg
        self.jobs = resolve_jobs(jobs)
        self.bar = bar
        self._context: Any = None
        self._open = False
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> RunPool[Spec, Result]:
        self._open = True
        if self.jobs == 1:
            self._context = self.make_context(self.arg)
        else:
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            self._executor = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"),
                                                 initializer=_start_worker,
                                                 initargs=(self.make_context, self.arg, threads))
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._executor is not None:
            self._stop(wait=kind is None)
        self._context, self._open = None, False

    def _stop(self, wait: bool) -> None:
        assert self._executor is not None
        executor, self._executor = self._executor, None
        if not wait:  # a failure or an interrupt: do not wait minutes for the runs still in flight
            processes = list(getattr(executor, "_processes", {}).values())  # Python < 3.14: no terminate_workers
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
        executor.shutdown(wait=True)

    def _tick(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label)
            self.bar.update()

    def map(self, specs: Sequence[Spec], name: Callable[[Spec], str],
            cost: Callable[[Spec], float] | None = None) -> list[Result]:
        """``work`` on every spec; the results in the order of ``specs``.

        ``cost`` (a rough relative run time) sends the workers the costliest runs first, so
        that a long run does not start last and finish alone (the serial path ignores it).
        """
        if not self._open:
            raise RuntimeError("RunPool.map outside its with-block")
        if self._executor is None:
            results = []
            for spec in specs:
                if self.bar is not None:
                    self.bar.set_postfix_str(name(spec))
                results.append(self.work(self._context, spec))
                if self.bar is not None:
                    self.bar.update()
            return results
        order = sorted(range(len(specs)), key=lambda i: -cost(specs[i])) if cost else range(len(specs))
        futures: dict[Future[Result], int] = {self._executor.submit(_call, self.work, specs[i]): i for i in order}
        done: dict[int, Result] = {}
        for future in as_completed(futures):
            i = futures[future]
            try:
                done[i] = future.result()
            except BrokenProcessPool as err:
                raise RunFailed(f"a worker process died (killed, or out of memory?) while runs were in flight, "
                                f"among them {name(specs[i])}") from err
            except Exception as err:
                raise RunFailed(f"run {name(specs[i])} failed: {type(err).__name__}: {err}") from err
            self._tick(name(specs[i]))
        return [done[i] for i in range(len(specs))]
