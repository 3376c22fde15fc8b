"""Start ``distlstm`` as a user would: one process, or several under torchrun (gloo, one thread each)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from distlstm.runtime.launch import failure_report


def launch(args: list[str], out: Path | None, processes: int, timeout: float = 600) -> None:
    """Run ``distlstm ARGS --out OUT`` (no --out if None) in ``processes`` processes; fail with its stderr."""
    launch_module("distlstm.cli", [*args, *(["--out", str(out)] if out is not None else [])], processes, timeout)


def launch_module(module: str, args: list[str], processes: int, timeout: float = 600) -> None:
    """Run ``python -m MODULE ARGS`` in ``processes`` processes (under torchrun when several), from the
    repository root so that ``tests.*`` modules are importable; fail with its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    cmd = [*(launcher if processes > 1 else [sys.executable]), "-m", module, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, failure_report(done.stderr)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a test's own rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
