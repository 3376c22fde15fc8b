"""``distlstm train``: data-parallel BPTT of a character or word LM or a long-lag regressor, alone or under torchrun."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distlstm._argtypes import cell_option, positive_int
from distlstm.bptt.ddp import OPTIMIZERS, DDPConfig, train_ddp
from distlstm.bptt.fullbatch import METHODS, FullBatchConfig
from distlstm.bptt.fullbatch_run import run_fullbatch
from distlstm.bptt.tasks import LONG_LAG_PROBLEMS, CharStreamTask, LongLagTask, WordStreamTask
from distlstm.data.text import SHAKESPEARE_TRAGEDIES
from distlstm.data.words import SHAKESPEARE_COMPLETE
from distlstm.runtime.dist import process_group, worker_env

TASKS = ("char-lm", "word-lm", *LONG_LAG_PROBLEMS)
LM_TASKS = ("char-lm", "word-lm")
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
minibatches of --batch independent variable-length sequences per worker, full BPTT).

Optimizers: sgd, momentum and adam take minibatch steps (DDP); lbfgs and cg
(long-lag tasks) are full-batch: every loss and gradient evaluation, line-search
trials included, covers the whole training set, each worker its shard, summed with
one all_reduce — e.g. the matrix-batch paper's setting:

  distlstm train --task multiplication --optimizer lbfgs --target 0.01 --seconds 600

Writes metrics.csv, loss.png, summary.json and checkpoint.pt (atomically, every
--checkpoint-every steps) into --out; --resume continues from the checkpoint with the
numbers of an uninterrupted run (same settings and number of workers required).
"""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and model")
    g.add_argument("--task", choices=TASKS, default="char-lm", help="what to learn")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="per worker: streams (char-lm 16, word-lm 32) or sequences (long-lag, default 100)")
    g.add_argument("--hidden", type=positive_int, default=None,
                   help="hidden units n (default 128 char-lm, 512 word-lm, 4 long-lag)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="parameter precision (default float32 char-lm; long-lag always float64)")
    g = p.add_argument_group("char-lm and word-lm")
    g.add_argument("--text", default=None, help="UTF-8 text (default: the shipped tragedies for char-lm, the "
                   "complete works for word-lm)")
    g.add_argument("--window", type=positive_int, default=None,
                   help="truncated-BPTT window k (default 64 characters, 20 words)")
    g.add_argument("--layers", type=positive_int, default=None, help="stacked recurrent layers (default 1 char-lm, "
                   "2 word-lm)")
    g.add_argument("--cell", default=None, help="cell: lstm, peephole, sharpened, flstm, glstm, lstmp, rnn (default "
                   "lstm for char-lm, lstmp for word-lm)")
    g.add_argument("--cell-opt", type=cell_option, action="append", default=[], metavar="KEY=VALUE",
                   help="cell option, repeatable (e.g. rank=64 for flstm, groups=4 for glstm, groups=4,8 per layer)")
    g.add_argument("--embedding", type=int, default=0, help="embedding width; 0 feeds one-hot characters")
    g.add_argument("--eval-chars", type=positive_int, default=20_000, help="validation characters per evaluation")
    g = p.add_argument_group("word-lm")
    w = WordStreamTask.__dataclass_fields__
    g.add_argument("--proj", type=positive_int, default=w["embedding"].default,
                   help="p: embedding width and projection size of every layer")
    g.add_argument("--samples", type=int, default=w["num_sampled"].default,
                   help="S: sampled-softmax candidates per step (log-uniform); 0 trains with the full softmax")
    g.add_argument("--vocab-size", type=positive_int, default=w["max_vocab"].default,
                   help="vocabulary cut-off: the most frequent training types, <unk> included")
    g.add_argument("--min-count", type=positive_int, default=w["min_count"].default,
                   help="drop types seen fewer times in the training split")
    g.add_argument("--dropout", type=float, default=w["dropout"].default,
                   help="dropout on the embedding, between layers and on the output")
    g.add_argument("--eval-tokens", type=positive_int, default=w["eval_tokens"].default,
                   help="validation tokens per evaluation (full softmax)")
    g = p.add_argument_group("long-lag (adding, multiplication)")
    g.add_argument("--min-len", type=positive_int, default=100, help="minimal sequence length T")
    g.add_argument("--train-size", type=positive_int, default=10_000, help="training sequences")
    g.add_argument("--test-size", type=positive_int, default=3_000, help="test sequences (test MAE is evaluated)")
    g.add_argument("--alpha", type=float, default=3.75, help="gate sharpness α in σ(α·a)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generated data set")
    g = p.add_argument_group("optimisation")
    d = DDPConfig()
    g.add_argument("--optimizer", choices=OPTIMIZERS + METHODS, default=d.optimizer,
                   help="sgd, momentum (SGD + momentum), adam, adagrad (initial accumulator 1.0, the "
                        "paper's word LM: --lr 0.2); full-batch lbfgs or cg (long-lag tasks)")
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    g.add_argument("--momentum", type=float, default=d.momentum, help="momentum (--optimizer momentum)")
    g.add_argument("--clip", type=float, default=d.clip, help="max gradient norm; 0 turns clipping off")
    g.add_argument("--steps", type=positive_int, default=d.steps, help="global steps (one batch on every worker)")
    g.add_argument("--seconds", type=float, default=None, help="stop after this much training time")
    g.add_argument("--target", type=float, default=None,
                   help="stop once the evaluation metric (validation nats/char, or test MAE) is at or below this")
    g.add_argument("--eval-every", type=positive_int, default=d.eval_every, help="evaluate every N steps")
    g.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every, help="checkpoint every N steps")
    g.add_argument("--max-iter", type=positive_int, default=5, help="lbfgs: iterations per step (test error "
                   "is evaluated after each step)")
    g.add_argument("--history", type=positive_int, default=50, help="lbfgs: history size")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA GPUs only)")
    g.add_argument("--seed", type=int, default=d.seed, help="run seed (initial weights, minibatch order)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/train", help="run folder")
    g.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt (sgd, momentum, adam)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_task(args: argparse.Namespace, rank: int,
               world_size: int) -> CharStreamTask | WordStreamTask | LongLagTask:
    if args.task == "word-lm":
        if args.samples < 0:
            raise ValueError(f"--samples must be 0 (full softmax) or positive, got {args.samples}")
        if not 0.0 <= args.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
        try:
            return WordStreamTask(rank=rank, world_size=world_size, text=args.text or str(SHAKESPEARE_COMPLETE),
                                  streams=args.batch or 32, window=args.window or 20, embedding=args.proj,
                                  hidden=args.hidden or 512, layers=args.layers or 2, cell=args.cell or "lstmp",
                                  cell_options=dict(args.cell_opt), dropout=args.dropout, num_sampled=args.samples,
                                  max_vocab=args.vocab_size, min_count=args.min_count,
                                  dtype=args.dtype or "float32", eval_tokens=args.eval_tokens)
        except ValueError as err:
            raise ValueError(f"{err} (flags: --samples, --vocab-size, --min-count, --text, --batch, "
                             "--window)") from err
    if args.task == "char-lm":
        return CharStreamTask(rank=rank, world_size=world_size, text=args.text or str(SHAKESPEARE_TRAGEDIES),
                              streams=args.batch or 16, window=args.window or 64, hidden=args.hidden or 128,
                              layers=args.layers or 1, cell=args.cell or "lstm",
                              embedding=args.embedding, cell_options=dict(args.cell_opt),
                              dtype=args.dtype or "float32", eval_chars=args.eval_chars)
    if args.dtype == "float32":
        raise ValueError("the long-lag tasks train in float64 (the matrix-batch paper found float32 unstable)")
    return LongLagTask(rank=rank, world_size=world_size, problem=args.task, min_len=args.min_len,
                       train_size=args.train_size, test_size=args.test_size, batch_size=args.batch or 100,
                       hidden=args.hidden or 4, alpha=args.alpha, data_seed=args.data_seed)


def task_settings(task: CharStreamTask | WordStreamTask | LongLagTask) -> dict[str, Any]:
    """The task's options that a resumed run must share (its data and model)."""
    return {k: v for k, v in asdict(task).items() if k not in ("rank", "eval_chars", "eval_tokens", "test_size")}


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    env = worker_env()
    full_batch = args.optimizer in METHODS
    if full_batch:
        if args.task in LM_TASKS:
            raise ValueError(f"--optimizer {args.optimizer} is full-batch and trains the long-lag tasks "
                             f"(--task adding or multiplication); use sgd, momentum, adam or adagrad for {args.task}")
        if args.resume or args.amp:
            raise ValueError(f"--resume and --amp apply to sgd, momentum, adam and adagrad, not to {args.optimizer}")
        fb_cfg = FullBatchConfig(method=args.optimizer, steps=args.steps, max_iter=args.max_iter,
                                 history_size=args.history, seconds=args.seconds)
    else:
        cfg = DDPConfig(optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, clip=args.clip or None,
                        steps=args.steps, seconds=args.seconds, target=args.target, eval_every=args.eval_every,
                        checkpoint_every=args.checkpoint_every, amp=args.amp, seed=args.seed)
    task = build_task(args, env.rank, env.world_size)
    with process_group(env):
        if full_batch:
            assert isinstance(task, LongLagTask)
            return run_fullbatch(task, fb_cfg, Path(args.out), seed=args.seed, target=args.target, rank=env.rank,
                                 world_size=env.world_size, show_progress=not args.no_progress)
        return train_ddp(task, cfg, Path(args.out), rank=env.rank, world_size=env.world_size, resume=args.resume,
                         show_progress=not args.no_progress, settings=task_settings(task))
