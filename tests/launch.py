"""Start ``distlstm`` as a user would: one process, or several under torchrun (gloo, one thread each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def launch(args: list[str], out: Path | None, processes: int, timeout: float = 600) -> None:
    """Run ``distlstm ARGS --out OUT`` (without --out when ``out`` is None, e.g. for --resume) in ``processes``
    processes; fail with its stderr if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    where = ["--out", str(out)] if out is not None else []
    cmd = [*(launcher if processes > 1 else [sys.executable]), "-m", "distlstm.cli", *args, *where]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
