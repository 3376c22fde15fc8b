"""A worker that dies under torchrun: the survivor says so once, keeps the last checkpoint, and the run resumes
(by hand, or by itself under torchrun --max-restarts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distlstm.cli import main
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.metrics import read_metrics
from tests.small_runs import assert_same_run, command_args

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ES = ["es", "--hidden", "8", "--population", "16", "--windows", "2", "--window", "8", "--eval-chars", "200",
      "--eval-every", "5", "--checkpoint-every", "2", "--seed", "4", "--no-progress"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def worker_pid(out: Path, rank: int) -> int | None:
    """The process of ``rank`` running the command that writes ``out`` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and b"distlstm.cli" in cmdline and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_killed_worker_ends_the_run_with_one_message_and_it_resumes_exactly(tmp_path: Path):
    out, whole = tmp_path / "killed", tmp_path / "whole"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*TORCHRUN, "-m", "distlstm.cli", *ES, "--steps", "1000000", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (out / "checkpoint.pt").exists():
            time.sleep(0.2)
        time.sleep(0.5)
        pid = worker_pid(out, 1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL)  # kill -9 of one worker
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert err.count("distlstm es: error: rank 0: another worker stopped answering during step") == 1, err[-3000:]
    assert "[rank0]: Traceback" not in err and f"torchrun --nproc-per-node 2 -m distlstm.cli es --resume {out}" in err
    assert not (out / ".lock").exists()
    stopped = load_run_checkpoint(out)[0]["step"]
    steps = stopped + 4
    resumed = subprocess.run([*TORCHRUN, "-m", "distlstm.cli", "es", "--resume", str(out), "--steps", str(steps)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = subprocess.run([*TORCHRUN, "-m", "distlstm.cli", *ES, "--steps", str(steps), "--out", str(whole)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = load_run_checkpoint(out)[0], load_run_checkpoint(whole)[0]
    assert a["step"] == b["step"] == steps
    for k, v in b["state"]["model"].items():
        assert torch.equal(a["state"]["model"][k], v), k


STEPS = {"train": 60, "es": 200, "online": 120}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
@pytest.mark.parametrize(("command", "victim"), [("train", 1), ("es", 1), ("online", 0)])
def test_torchrun_max_restarts_continues_from_the_checkpoint_with_the_numbers_of_an_uninterrupted_run(
        tmp_path: Path, command: str, victim: int):
    """kill -9 of one worker once: torchrun restarts the group, which resumes its folder by itself and ends with
    the final state of one uninterrupted process (rank 0 as the victim leaves a stale lock to take over)."""
    out, whole, steps = tmp_path / "restarted", tmp_path / "whole", STEPS[command]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*TORCHRUN, "--max-restarts", "1", "-m", "distlstm.cli",
                             *command_args(command, tmp_path, 2), "--steps", str(steps), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (out / "checkpoint.pt").exists():
            time.sleep(0.1)
        pid = worker_pid(out, victim)
        assert pid is not None, f"rank {victim} not found"
        os.kill(pid, signal.SIGKILL)
        assert not (out / "summary.json").exists(), "the run ended before the kill: give it more --steps"
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"torchrun restarted the workers (restart 1); continuing {out} from its last checkpoint" in err, err[-3000:]
    if victim == 1:  # the survivor's one message says the workers continue by themselves
        assert err.count("restart(s) left) the workers are restarted and continue from it by themselves") == 1
    assert main([*command_args(command, tmp_path, 1), "--steps", str(steps), "--out", str(whole)]) == 0
    assert_same_run(out, whole, command)
    assert [row["step"] for row in read_metrics(out / "metrics.csv")] == list(range(steps + 1))
    assert not (out / ".lock").exists()
