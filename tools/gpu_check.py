"""The GPU check: the CUDA tests, then every cell against cuDNN's ``nn.LSTM`` on the GPU.

Run on a machine with a CUDA GPU (``make gpu-check``); it exits 2 without one, so a
skipped suite is never mistaken for a pass. Prints the cell table as Markdown for
``BENCHMARKS.md`` (batch 64, 100 steps, input 32, float32, forward + backward).
"""

from __future__ import annotations

import subprocess
import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/gpu"], check=False)
    from distlstm.bench.cells import bench_cells

    print(f"\n## Cells on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()})\n")
    print("| hidden | model | ms / step | vs nn.LSTM (cuDNN) |\n|---|---|---|---|")
    for row in bench_cells((128, 512), repeats=10, device="cuda"):
        print(f"| {row.hidden} | {row.name} | {row.ms:.2f} | {row.ratio:.2f} |")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
