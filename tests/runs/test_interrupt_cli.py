"""Ctrl-C on a real command: the run checkpoints where it stopped, says how to resume, and resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.metrics import read_metrics

ES = ["es", "--hidden", "8", "--population", "8", "--windows", "2", "--window", "8", "--eval-chars", "200",
      "--eval-every", "1000", "--checkpoint-every", "1000", "--no-progress"]


def test_sigint_writes_a_checkpoint_and_the_run_resumes(tmp_path: Path):
    out = tmp_path / "es"
    proc = subprocess.Popen([sys.executable, "-m", "distlstm.cli", *ES, "--steps", "1000000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until it trains: the header and a few step rows are on disk
            metrics = out / "metrics.csv"
            if metrics.exists() and len(metrics.read_text().splitlines()) > 4:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and f"distlstm es --resume {out}" in err and "Traceback" not in err
    ckpt, _ = load_run_checkpoint(out)
    stopped = ckpt["step"]
    assert stopped >= 3 and [r["step"] for r in read_metrics(out / "metrics.csv")] == list(range(stopped + 1))
    done = subprocess.run([sys.executable, "-m", "distlstm.cli", "es", "--resume", str(out), "--steps",
                           str(stopped + 2)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_run_checkpoint(out)[0]["step"] == stopped + 2
