"""Running a ``distlstm`` command in fresh worker processes: one process, or ``torchrun`` with several.

Used where a study needs a run in its own processes (worker-count comparisons, runs
that must not share threads): the reproductions and the benchmarks both call it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_cli(args: list[str], out: Path, *, workers: int = 1, threads: int = 1) -> dict[str, Any]:
    """Run ``distlstm ARGS --out OUT`` with ``workers`` processes (torchrun) of ``threads`` threads each.

    Returns the run's ``summary.json`` if it wrote one (an empty dict otherwise).
    """
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"] if workers > 1 else []
    cmd = [sys.executable, *launcher, "-m", "distlstm.cli", *args, "--out", str(out)]
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {failure_report(done.stderr)}")
    summary = Path(out, "summary.json")
    return json.loads(summary.read_text()) if summary.exists() else {}


CAUSE_MARKS = ("terminate", "what()", "Error", "error:", "Abort")


def failure_report(stderr: str, tail: int = 2000) -> str:
    """What a failed launch said, short: a worker's own last words (an abort's ``terminate called …``, a
    Python error) come before torchrun's summary of the failure, which alone would fill the tail."""
    if len(stderr) <= 2 * tail:
        return stderr
    cause = [line for line in stderr.splitlines() if any(mark in line for mark in CAUSE_MARKS)]
    return "\n".join(cause[:20]) + "\n…\n" + stderr[-tail:]
