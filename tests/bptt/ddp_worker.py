"""One worker of test_ddp's two-worker test, as torchrun starts it.

``torchrun --nproc-per-node 2 -m tests.bptt.ddp_worker KIND DATA OUT STEPS [--resume]``: the
communicator joins the group from torchrun's environment; each worker holds 2 of the 4 streams.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from distlstm.runtime.comm import open_comm
from tests.bptt.test_ddp import LOOP, MULTI, train


def main(kind: str, data: str, out: str, steps: str, *flags: str) -> None:
    torch.set_num_threads(1)
    make = MULTI[kind][1]
    with open_comm() as comm:
        train(lambda r, w: make(data, r, w, streams=2), Path(out), loop=replace(LOOP, steps=int(steps)),
              resume="--resume" in flags, comm=comm)


if __name__ == "__main__":
    main(*sys.argv[1:])
