"""Data-parallel BPTT: W workers equal one process, runs resume exactly, bad runs stop cleanly."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.bptt.ddp import DDPConfig, train_ddp
from distlstm.bptt.tasks import CharStreamTask, LongLagTask
from distlstm.data.text import load_text
from distlstm.runs import load_checkpoint

CFG = DDPConfig(optimizer="adam", lr=0.01, clip=0.5, steps=8, eval_every=4, checkpoint_every=3, seed=1)


def text_file(folder: Path) -> str:
    path = Path(folder, "text.txt")
    path.write_text(load_text()[:6000], encoding="utf-8")
    return str(path)


def char_task(text: str, rank: int = 0, world: int = 1, streams: int = 4) -> CharStreamTask:
    return CharStreamTask(rank=rank, world_size=world, text=text, streams=streams, window=8, hidden=12,
                          dtype="float64", eval_chars=200)


def theta(out: Path) -> torch.Tensor:
    model = load_checkpoint(out / "checkpoint.pt")["model"]
    return torch.cat([t.reshape(-1) for t in model.values()])


def ddp_worker(rank: int, world: int, port: int, text: str, out: str, make_task: Callable[..., Any] = char_task,
               cfg: DDPConfig = CFG) -> None:
    """One of ``world`` gloo workers training ``make_task(text, rank, world, streams=2)``; writes its losses."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    losses: list[float] = []
    train_ddp(make_task(text, rank, world, streams=2), cfg, Path(out), rank=rank, world_size=world,
              show_progress=False, on_step=lambda _s, v: losses.append(v))
    Path(out, f"losses{rank}.json").write_text(json.dumps(losses))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_workers_take_the_steps_of_one_process_with_the_global_batch(tmp_path):
    text = text_file(tmp_path)
    single_losses: list[float] = []
    train_ddp(char_task(text, streams=4), CFG, tmp_path / "single", show_progress=False,
              on_step=lambda _s, v: single_losses.append(v))
    mp.spawn(ddp_worker, args=(2, free_port(), text, str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.testing.assert_close(theta(tmp_path / "ddp"), theta(tmp_path / "single"), atol=1e-6, rtol=0)
    for rank in range(2):  # every worker saw the global mean loss
        losses = json.loads(Path(tmp_path, "ddp", f"losses{rank}.json").read_text())
        assert losses == pytest.approx(single_losses, rel=1e-9)
    # the checkpoint carries both workers' streams; one process cannot resume it
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["carry"][0].shape[1] == 4
    with pytest.raises(ValueError, match=r"written by a run with 2 worker\(s\), this one has 1"):
        train_ddp(char_task(text, streams=4), CFG, tmp_path / "ddp", resume=True, show_progress=False)


class Killed(Exception):
    pass


def kill_at(step: int):
    def on_step(s: int, _loss: float) -> None:
        if s == step:
            raise Killed

    return on_step


@pytest.mark.parametrize("task", ["char", "longlag"])
def test_a_killed_run_resumes_with_the_numbers_of_an_uninterrupted_one(tmp_path, task):
    text = text_file(tmp_path)

    def make():
        if task == "char":
            return char_task(text)
        return LongLagTask(min_len=24, train_size=64, test_size=16, batch_size=8, data_seed=2)

    whole = train_ddp(make(), CFG, tmp_path / "whole", show_progress=False)
    with pytest.raises(Killed):  # dies after step 7; the last checkpoint is from step 6
        train_ddp(make(), CFG, tmp_path / "resumed", show_progress=False, on_step=kill_at(7))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 6
    resumed = train_ddp(make(), CFG, tmp_path / "resumed", resume=True, show_progress=False)
    assert torch.equal(theta(tmp_path / "resumed"), theta(tmp_path / "whole"))
    metric = whole["metric"]
    assert resumed[metric] == whole[metric]
    with pytest.raises(ValueError, match="other settings"):
        train_ddp(make(), DDPConfig(lr=0.02, steps=8), tmp_path / "resumed", resume=True, show_progress=False)


def test_the_carried_state_is_the_state_of_the_contiguous_stream(tmp_path):
    """With θ frozen (lr 1e-30), step j's loss is the loss of window j after reading windows 0..j−1 in one run
    (stateful) or from a zero state (not stateful): both computed here with the model and cross-entropy alone."""
    import torch.nn.functional as F

    text = text_file(tmp_path)
    frozen = DDPConfig(optimizer="sgd", lr=1e-30, steps=4, eval_every=4, checkpoint_every=4, seed=1)
    for stateful in (True, False):
        task = char_task(text)
        task.stateful = stateful
        losses: list[float] = []
        train_ddp(task, frozen, tmp_path / str(stateful), show_progress=False,
                  on_step=lambda _s, v, seen=losses: seen.append(v))
        model = task.build_model(frozen.seed)
        windows = [task.shard.window_at(j) for j in range(4)]
        with torch.no_grad():
            for j, (x, y) in enumerate(windows):
                xs = torch.cat([w[0] for w in windows[: j + 1]], 1) if stateful else x
                logits = model(xs)[0][:, -x.shape[1]:]
                expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
                assert losses[j] == pytest.approx(expected, rel=1e-9), (stateful, j)


@dataclass
class NaNAt(LongLagTask):
    nan_step: int = 5

    def loss(self, model, batch, state):
        loss, state = super().loss(model, batch, state)
        self._calls = getattr(self, "_calls", 0) + 1
        return (loss * float("nan") if self._calls == self.nan_step else loss), state


def test_non_finite_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    task = NaNAt(min_len=24, train_size=64, test_size=16, batch_size=8)
    cfg = DDPConfig(steps=10, eval_every=2, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match=r"at step 5; the last good checkpoint .* step 4\) is kept"):
        train_ddp(task, cfg, tmp_path, show_progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_target_stops_early_and_amp_needs_a_gpu(tmp_path):
    task = LongLagTask(min_len=24, train_size=64, test_size=16, batch_size=8)
    summary = train_ddp(task, DDPConfig(steps=50, eval_every=2, target=10.0), tmp_path, show_progress=False)
    assert summary["steps"] == 2 and summary["reached_target"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            train_ddp(task, DDPConfig(amp=True), tmp_path / "amp", show_progress=False)


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown optimizer"):
        DDPConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="clip must be positive"):
        DDPConfig(clip=0.0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        LongLagTask(min_len=24, train_size=10, test_size=4, batch_size=8, world_size=2).steps_per_epoch()


@pytest.mark.multiprocess
def test_train_command_under_torchrun_matches_one_process(tmp_path):
    import subprocess
    import sys

    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "96", "--test-size", "32",
            "--optimizer", "momentum", "--lr", "0.05", "--steps", "10", "--eval-every", "5", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "distlstm.cli", *args, "--batch", "16", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "distlstm.cli", *args, "--batch", "8", "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    torch.testing.assert_close(theta(tmp_path / "two"), theta(tmp_path / "one"), atol=1e-6, rtol=0)
    summary = json.loads(Path(tmp_path, "two", "summary.json").read_text())
    assert summary["workers"] == 2 and summary["samples"] == 160
    again = subprocess.run([sys.executable, "-m", "distlstm.cli", *args, "--batch", "8", "--resume", "--steps", "12",
                            "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "resume with 2 worker(s)" in again.stderr


def _dying_worker(rank: int, world: int, port: int, text: str, out: str) -> None:
    """A worker started as torchrun would: the project's own init_distributed joins the group."""
    from distlstm.runtime.dist import init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    init_distributed(timeout_s=20)
    torch.set_num_threads(1)

    def die(step: int, _loss: float) -> None:
        if rank == 1 and step == 4:
            os._exit(17)  # a worker killed mid-run, without any goodbye

    try:
        train_ddp(char_task(text, rank, world, streams=2), CFG, Path(out), rank=rank, world_size=world,
                  show_progress=False, on_step=die)
    except Exception as err:  # what the survivor reports
        Path(out, "survivor.txt").write_text(f"{type(err).__name__}: {err}")
        os._exit(1)
    os._exit(0)


@pytest.mark.multiprocess
def test_a_dying_worker_ends_the_run_instead_of_hanging(tmp_path):
    """Plain processes (not mp.spawn, which would kill the survivor for us): rank 0 must stop by itself."""
    import time

    ctx = mp.get_context("spawn")
    port, text = free_port(), text_file(tmp_path)
    (tmp_path / "run").mkdir()
    procs = [ctx.Process(target=_dying_worker, args=(r, 2, port, text, str(tmp_path / "run"))) for r in range(2)]
    for p in procs:
        p.start()
    started = time.perf_counter()
    procs[0].join(timeout=120)
    alive = procs[0].is_alive()
    if alive:
        procs[0].kill()
    for p in procs:
        p.join(timeout=10)
    assert not alive, "rank 0 hung after its peer died"
    assert procs[1].exitcode == 17 and procs[0].exitcode == 1
    assert time.perf_counter() - started < 90
    assert (tmp_path / "run" / "survivor.txt").read_text().strip()  # an error, not a silent exit
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3  # what was written is kept
