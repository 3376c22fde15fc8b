"""``distlstm train``: data-parallel BPTT (``ddp`` mode) or full-batch L-BFGS/CG (``fullbatch`` mode) as a run command.

The command is its two config sections — "task" (:class:`~distlstm.modes.train_tasks.TaskConfig`:
what is learnt) and "optim" (:class:`~distlstm.modes.ddp.OptimConfig`) — plus the run
loop's; ``cli_runs`` turns them into flags, ``--config`` and ``--resume``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distlstm.bptt.fullbatch import METHODS
from distlstm.cli_runs import RunCommand
from distlstm.modes.ddp import DDPMode, OptimConfig
from distlstm.modes.train_tasks import TaskConfig, build_task
from distlstm.runs.loop import RunResult
from distlstm.runs.mode import Mode

DESCRIPTION = """\
Synchronous data-parallel training with back-propagation through time. Every worker
holds a model replica and its own part of each global batch; gradients are averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPUs), so W workers take the steps of one
process with W times the batch. Run alone, or with torchrun for several workers:

  distlstm train --task char-lm --steps 2000 --out runs/lm
  OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m distlstm.cli train --out runs/lm2

Tasks: char-lm (next-character prediction on a text: the text is cut into one
contiguous shard per worker, each shard into --batch streams read in windows of
--window characters, the LSTM state carried from window to window and reset at each
epoch), word-lm (Kuchaiev & Ginsburg's word language model on Shakespeare's
complete works split by play: embedding p = --proj, two projected layers of --hidden
cells — --cell lstmp, flstm --cell-opt rank=R, glstm --cell-opt groups=K or groups=4,8
per layer — sampled softmax of --samples candidates, e.g.

  distlstm train --task word-lm --cell glstm --cell-opt groups=2 --optimizer adagrad --lr 0.2 --seconds 300

) and adding / multiplication (Hochreiter & Schmidhuber's long-lag problems:
minibatches of --batch independent variable-length sequences per worker, full BPTT)
and csv (your own table: forecast --target --horizon rows after a --window of past rows
of --inputs and of the target itself; the last --test-fraction of the rows is the test
part, the scaler is fitted on the rest; metric: test MSE in the target's units):

  distlstm train --task csv --data sales.csv --inputs price,temp --target sales --window 12 --out runs/sales

Optimizers: sgd, momentum, adam and adagrad take minibatch steps (DDP); lbfgs and cg
(long-lag and csv tasks) are full-batch: every loss and gradient evaluation, line-search
trials included, covers the whole training set, each worker its shard, summed with
one all_reduce — e.g. the matrix-batch paper's setting:

  distlstm train --task multiplication --optimizer lbfgs --stop-at 0.01 --seconds 600

One loop step is one global minibatch (or one full-batch optimizer step). Writes
config.json, metrics.csv (a row per step: training loss; the metric every
--eval-every steps), metrics.png, summary.json and checkpoint.pt (atomically, every
--checkpoint-every steps, the previous one kept) into --out. A folder that holds a
run is refused unless --overwrite; --resume FOLDER alone continues it with its
stored settings and the numbers of an uninterrupted run (the same number of workers;
only --steps, --seconds, --stop-at and the reporting flags may change). --config FILE
reads settings from a config.json. The model comes out with distlstm.modes.load_run(FOLDER)
(language models: distlstm sample --run FOLDER; csv: forecaster(new.csv)).
"""



def train_mode_name(sections: Mapping[str, Any]) -> str:
    return "fullbatch" if sections["optim"].optimizer in METHODS else "ddp"


def make_train_mode(sections: Mapping[str, Any]) -> Mode:
    """The mode of a resolved ``train`` configuration: DDPMode, or FullBatchMode for lbfgs / cg."""
    optim: OptimConfig = sections["optim"]
    make_task = functools.partial(build_task, sections["task"])
    if optim.optimizer in METHODS:
        fullbatch = importlib.import_module("distlstm.modes.fullbatch")
        cfg = fullbatch.FullBatchConfig(method=optim.optimizer, max_iter=optim.max_iter, history_size=optim.history,
                                        tolerance_change=optim.lbfgs_tolerance, lr=1.0, cg_c2=0.1,
                                        cg_update=optim.cg_update)
        mode: Mode = fullbatch.FullBatchMode(make_task, cfg)
        return mode
    return DDPMode(make_task, optim)


def train_report(result: RunResult, folder: Path) -> str:
    """The line printed at the end: the metric, steps, samples and throughput."""
    s = result.summary
    metric = s["metric"]
    line = f"{s.get('optimizer', s['mode'])}: {metric} {s[metric]:.4g}"
    line += f"{' (--stop-at reached)' if s['reached_stop_at'] else ''} after {s['steps']} steps"
    if "samples" in s:
        rate = s["samples"] / max(s["seconds"], 1e-9)
        line += f", {s['samples']:,} samples ({rate:,.0f} samples/s)"
    return line + f", {s['seconds']:.1f} s of training, {s['workers']} worker(s)"


TRAIN = RunCommand(
    name="train", help="data-parallel BPTT (DDP) or full-batch L-BFGS/CG: char LM, word LM, long-lag, your CSV",
    description=DESCRIPTION, sections={"task": TaskConfig, "optim": OptimConfig}, make_mode=make_train_mode,
    mode_name=train_mode_name, default_out="runs/train", titles={"task": "task, data and model", "optim": "optimizer"},
    report=train_report)
