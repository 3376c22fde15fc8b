"""A worker that dies under torchrun: the survivor says so once, keeps the last checkpoint, and the run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distlstm.runs.checkpoint import load_run_checkpoint

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
