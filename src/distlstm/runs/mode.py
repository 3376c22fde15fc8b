"""What the run loop asks of a mode: online, es, ddp and fullbatch plug in through this interface.

A mode is a small object around one algorithm. The loop builds it with its config,
then calls, on every worker::

    mode.init(comm, seed)                 build data, model and algorithm state from the seed
    mode.step(step) -> metrics            one unit of work: an online step over all nodes, one ES
                                          generation, one minibatch, one full-batch optimizer step
    mode.evaluate() -> metrics            the evaluation (``mode.metric`` among them, lower is better);
                                          every worker returns the same values
    mode.state_dict() / load_state_dict   everything needed to continue bit for bit: "model",
                                          "algorithm", "generators", "artifacts" (vocabulary, scaler)
    mode.summary() -> dict                figures for summary.json beyond the loop's own
    mode.write_outputs(folder, rows)      rank 0 only: files of its own (plots, samples); ``rows`` is an
                                          iterator over metrics.csv (read lazily: make a list to reuse it)

Metrics of ``step`` must be the same on every worker (reduce them first); the loop
records rank 0's. An optional ``devices`` tuple names the device types the mode
runs on (``("cpu", "cuda")``); without it the loop runs the mode on the CPU.
``max_steps`` caps the run (an online stream's length) or is None; a step may lower
it to end the run after that step (a full-batch optimizer whose line search finds no
decrease sets it to the step just taken): the loop then evaluates, checkpoints and
reports ``stopped_by: "max_steps"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from distlstm.runtime.comm import Communicator


class Mode(Protocol):
    name: str  # "online", "es", "ddp" or "fullbatch": the checkpoint's mode
    metric: str  # the evaluation metric --stop-at compares with (lower is better)
    plot_columns: Sequence[str]  # metrics.csv columns drawn in metrics.png against the step
    max_steps: int | None

    def init(self, comm: Communicator, seed: int) -> None: ...
    def step(self, step: int) -> Mapping[str, float]: ...
    def evaluate(self) -> Mapping[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
    def summary(self) -> dict[str, Any]: ...
    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None: ...
