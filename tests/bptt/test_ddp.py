"""The ddp mode: W workers equal one process, stopped-and-resumed runs equal uninterrupted ones bit for bit."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from distlstm.bptt.table_task import TableTask
from distlstm.bptt.tasks import CharStreamTask, LongLagTask, WordStreamTask
from distlstm.data.text import load_text
from distlstm.data.words import SHAKESPEARE_COMPLETE
from distlstm.modes.ddp import DDPMode, OptimConfig
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.config import LoopConfig, config_document
from distlstm.runs.loop import RunResult, run
from distlstm.runs.metrics import read_metrics
from distlstm.runtime.comm import Communicator
from tests.launch import launch_module

OPTIM = OptimConfig(optimizer="adam", lr=0.01, clip=0.5)
LOOP = LoopConfig(steps=8, eval_every=4, checkpoint_every=3, seed=1, progress=False)


def text_file(folder: Path) -> str:
    path = Path(folder, "text.txt")
    path.write_text(load_text()[:6000], encoding="utf-8")
    return str(path)


def words_file(folder: Path) -> str:
    path = Path(folder, "words.txt")
    lines = SHAKESPEARE_COMPLETE.read_text(encoding="utf-8").splitlines()[200:1400]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def table_file(path: Path, n: int = 240) -> str:
    """y[t] = 0.7 y[t−1] + 0.8 a[t−1] − 0.6 a[t−1] b[t−1] + noise, in units around 100 ± 5."""
    g = torch.Generator().manual_seed(1)
    a, b, noise = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    y = torch.zeros(n, dtype=torch.float64)
    for t in range(1, n):
        y[t] = 0.7 * y[t - 1] + 0.8 * a[t - 1] - 0.6 * a[t - 1] * b[t - 1] + 0.05 * noise[t]
    y = 100 + 5 * y
    path.write_text("a,b,y\n" + "\n".join(f"{a[i]:.6f},{b[i]:.6f},{y[i]:.6f}" for i in range(n)) + "\n")
    return str(path)


def char_task(text: str, rank: int = 0, world: int = 1, streams: int = 4) -> CharStreamTask:
    return CharStreamTask(rank=rank, world_size=world, text=text, streams=streams, window=8, hidden=12,
                          dtype="float64", eval_chars=200)


def word_task(text: str, rank: int = 0, world: int = 1, streams: int = 4, dropout: float = 0.2) -> WordStreamTask:
    """Sampled softmax and dropout: the candidates and the dropout generators must resume too."""
    return WordStreamTask(rank=rank, world_size=world, text=text, streams=streams, window=6, embedding=8, hidden=32,
                          cell="glstm", cell_options={"groups": (2, 4)}, dropout=dropout, num_sampled=40,
                          max_vocab=300, dtype="float64", eval_tokens=100)


def word_task_without_dropout(text: str, rank: int = 0, world: int = 1, streams: int = 4) -> WordStreamTask:
    """Each worker draws its own dropout masks, so W workers equal one process only without dropout."""
    return word_task(text, rank, world, streams, dropout=0.0)


def longlag_task(_data: str, rank: int = 0, world: int = 1, streams: int = 4) -> LongLagTask:
    return LongLagTask(rank=rank, world_size=world, min_len=24, train_size=64, test_size=16, batch_size=2 * streams,
                       data_seed=2)


def csv_task(data: str, rank: int = 0, world: int = 1, streams: int = 4) -> TableTask:
    return TableTask(data=data, target="y", inputs=("a", "b"), rank=rank, world_size=world, window=4,
                     batch_size=4 * streams, hidden=8)


TASKS: dict[str, tuple[Callable[[Path], str], Callable[..., Any]]] = {
    "char": (text_file, char_task), "word": (words_file, word_task), "longlag": (text_file, longlag_task),
    "csv": (lambda folder: table_file(Path(folder, "t.csv")), csv_task)}
MULTI = {**TASKS, "word": (words_file, word_task_without_dropout)}


def train(make_task: Callable[[int, int], Any], folder: Path | None = None, *, optim: OptimConfig = OPTIM,
          loop: LoopConfig = LOOP, resume: bool = False, comm: Communicator | None = None) -> RunResult:
    config = config_document("train", "ddp", {"optim": optim, "loop": loop})
    return run(DDPMode(make_task, optim), loop, comm=comm, folder=folder, config=config, resume=resume)


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Bit-for-bit equality of nested checkpoint state: tensors with torch.equal, the rest with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the clock; an empty cell (NaN: no evaluation at that step) as None, so rows compare equal."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items() if k != "seconds"}
            for r in rows]


def theta(folder: Path) -> torch.Tensor:
    ckpt, _ = load_run_checkpoint(folder)
    return torch.cat([t.reshape(-1) for t in ckpt["state"]["model"].values()])


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path, kind):
    make_data, make = TASKS[kind]
    data = make_data(tmp_path)
    whole = train(lambda r, w: make(data, r, w), tmp_path / "whole")
    part = train(lambda r, w: make(data, r, w), tmp_path / "part", loop=replace(LOOP, steps=5))
    assert part.summary["steps"] == 5
    rest = train(lambda r, w: make(data, r, w), tmp_path / "part", resume=True)
    a, _ = load_run_checkpoint(tmp_path / "whole")
    b, _ = load_run_checkpoint(tmp_path / "part")
    assert_same(a["state"], b["state"])
    # the same rows; the stopped run also evaluated where it stopped (step 5), as every run does at its end
    metric = whole.summary["metric"]
    resumed, uninterrupted = without_time(rest.rows), without_time(whole.rows)
    assert len(uninterrupted) == 9 and resumed[5][metric] is not None and uninterrupted[5][metric] is None
    resumed[5][metric] = None  # step 0 is the untrained model's evaluation; step 5 is where the first part ended
    assert resumed == uninterrupted
    assert rest.summary[metric] == whole.summary[metric] and rest.summary["samples"] == whole.summary["samples"]
    if kind == "char":  # the carried state is in the checkpoint (a stream in the middle of an epoch)
        assert b["state"]["algorithm"]["carry"][0].shape == (1, 4, 12)
    if kind == "word":  # and the dropout generator of every worker
        assert b["state"]["generators"]["dropout"].shape[0] == 1


@pytest.mark.multiprocess
@pytest.mark.parametrize("kind", ["char", "word"])
def test_two_workers_stopped_and_resumed_equal_one_process_with_the_global_batch(tmp_path, kind):
    make_data, make = MULTI[kind]
    data = make_data(tmp_path)
    single = train(lambda r, w: make(data, r, w, streams=4), tmp_path / "single")
    out = str(tmp_path / "ddp")
    # under torchrun, as users launch it (tests/bptt/ddp_worker.py is one worker)
    launch_module("tests.bptt.ddp_worker", [kind, data, out, "5"], processes=2)
    launch_module("tests.bptt.ddp_worker", [kind, data, out, "8", "--resume"], processes=2)
    torch.testing.assert_close(theta(tmp_path / "ddp"), theta(tmp_path / "single"), atol=1e-9, rtol=0)
    two, _ = load_run_checkpoint(tmp_path / "ddp")
    # every worker saw the global mean loss (the same sampled candidates for the word LM)
    rows = list(read_metrics(tmp_path / "ddp" / "metrics.csv"))
    assert [r["train_loss"] for r in rows[1:]] == pytest.approx([r["train_loss"] for r in single.rows[1:]], rel=1e-9)
    assert two["state"]["algorithm"]["carry"][0].shape[1] == 4  # both workers' streams
    if kind == "word":  # and both workers' dropout generators
        assert two["state"]["generators"]["dropout"].shape[0] == 2
    with pytest.raises(ValueError, match=r"written by a run with 2 worker\(s\), this one has 1.*--nproc-per-node 2"):
        train(lambda r, w: make(data, r, w, streams=4), tmp_path / "ddp", resume=True)


def test_the_carried_state_is_the_state_of_the_contiguous_stream(tmp_path):
    """With θ frozen (lr 1e-30), step j's loss is the loss of window j after reading windows 0..j−1 in one run
    (stateful) or from a zero state (not stateful): both computed here with the model and cross-entropy alone."""
    import torch.nn.functional as F

    text = text_file(tmp_path)
    frozen = OptimConfig(optimizer="sgd", lr=1e-30)
    for stateful in (True, False):
        task = char_task(text)
        task.stateful = stateful
        rows = train(lambda _r, _w, t=task: t, optim=frozen, loop=replace(LOOP, steps=4)).rows[1:]  # after step 0
        model = task.build_model(LOOP.seed)
        windows = [task.shard.window_at(j) for j in range(4)]
        with torch.no_grad():
            for j, (x, y) in enumerate(windows):
                xs = torch.cat([w[0] for w in windows[: j + 1]], 1) if stateful else x
                logits = model(xs)[0][:, -x.shape[1]:]
                expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
                assert rows[j]["train_loss"] == pytest.approx(expected, rel=1e-9), (stateful, j)


@dataclass
class NaNAt(LongLagTask):
    nan_step: int = 5

    def loss(self, model, batch, state):
        loss, state = super().loss(model, batch, state)
        self._calls = getattr(self, "_calls", 0) + 1
        return (loss * float("nan") if self._calls == self.nan_step else loss), state


def test_non_finite_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    task = NaNAt(min_len=24, train_size=64, test_size=16, batch_size=8)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss \(nan\) at step 5"):
        train(lambda _r, _w: task, tmp_path / "run", loop=replace(LOOP, steps=10, checkpoint_every=2))
    ckpt, _ = load_run_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(t).all() for t in ckpt["state"]["model"].values())


def test_stop_at_stops_early_and_amp_needs_a_gpu():
    task = LongLagTask(min_len=24, train_size=64, test_size=16, batch_size=8)
    summary = train(lambda _r, _w: task, loop=LoopConfig(steps=50, eval_every=2, stop_at=10.0, progress=False)).summary
    # the untrained model (step 0) is already below 10: no step is taken
    assert summary["steps"] == 0 and summary["reached_stop_at"] and summary["stopped_by"] == "stop_at"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            train(lambda _r, _w: task, optim=OptimConfig(amp=True))


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        OptimConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="clip= must be positive"):
        OptimConfig(clip=-1.0)
    with pytest.raises(ValueError, match="lr= must be positive, got 0"):
        OptimConfig(lr=0.0)
    with pytest.raises(ValueError, match="lbfgs is full-batch"):
        DDPMode(lambda _r, _w: None, OptimConfig(optimizer="lbfgs"))  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        LongLagTask(min_len=24, train_size=10, test_size=4, batch_size=8, world_size=2).steps_per_epoch()


def test_a_changed_data_set_is_refused_on_resume(tmp_path):
    text = text_file(tmp_path)
    train(lambda r, w: char_task(text, r, w), tmp_path / "run", loop=replace(LOOP, steps=2))
    Path(text).write_text(load_text()[:6000] + "\u00e6\u00f8", encoding="utf-8")  # two new characters
    with pytest.raises(ValueError, match="data changed since the checkpoint"):
        train(lambda r, w: char_task(text, r, w), tmp_path / "run", resume=True)
