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
    if done.returncode != 0:  # a worker's own error comes first, torchrun's summary of the failure last
        err = done.stderr if len(done.stderr) <= 4000 else f"{done.stderr[:2000]}\n…\n{done.stderr[-2000:]}"
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {err}")
    summary = Path(out, "summary.json")
    return json.loads(summary.read_text()) if summary.exists() else {}
