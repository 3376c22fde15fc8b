"""``distlstm train``: data-parallel BPTT of a character or word LM, a long-lag or CSV regressor, alone or torchrun."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distlstm._argtypes import cell_option, positive_int
from distlstm.bptt.ddp import OPTIMIZERS, DDPConfig, train_ddp
from distlstm.bptt.fullbatch import METHODS, FullBatchConfig
from distlstm.bptt.table_task import TableTask
from distlstm.bptt.tasks import LONG_LAG_PROBLEMS, CharStreamTask, LongLagTask, WordStreamTask
from distlstm.data.text import SHAKESPEARE_TRAGEDIES
from distlstm.data.words import SHAKESPEARE_COMPLETE
from distlstm.runtime.dist import process_group, worker_env

TASKS = ("char-lm", "word-lm", *LONG_LAG_PROBLEMS, "csv")
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

Optimizers: sgd, momentum and adam take minibatch steps (DDP); lbfgs and cg
(long-lag and csv tasks) are full-batch: every loss and gradient evaluation, line-search
trials included, covers the whole training set, each worker its shard, summed with
one all_reduce — e.g. the matrix-batch paper's setting:

  distlstm train --task multiplication --optimizer lbfgs --stop-at 0.01 --seconds 600

Writes metrics.csv, loss.png, summary.json and checkpoint.pt (atomically, every
--checkpoint-every steps) into --out; --resume continues from the checkpoint with the
numbers of an uninterrupted run (same settings and number of workers required).
"""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and model")
    g.add_argument("--task", choices=TASKS, default="char-lm", help="what to learn")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="per worker: streams (char-lm 16, word-lm 32), sequences (long-lag, default 100) or windows "
                        "(csv, default 32)")
    g.add_argument("--hidden", type=positive_int, default=None,
                   help="hidden units n (default 128 char-lm, 512 word-lm, 4 long-lag, 16 csv)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="parameter precision (default float32 char-lm and word-lm, float64 csv; long-lag always "
                        "float64)")
    g.add_argument("--window", type=positive_int, default=None,
                   help="truncated-BPTT window k (default 64 characters, 20 words); csv: past rows per sequence "
                        "(default 16)")
    g.add_argument("--layers", type=positive_int, default=None, help="stacked recurrent layers (default 1 char-lm "
                   "and csv, 2 word-lm)")
    g.add_argument("--cell", default=None, help="cell: lstm, peephole, sharpened, flstm, glstm, lstmp, rnn (default "
                   "lstmp for word-lm, lstm otherwise)")
    g.add_argument("--cell-opt", type=cell_option, action="append", default=[], metavar="KEY=VALUE",
                   help="cell option, repeatable (e.g. rank=64 for flstm, groups=4 for glstm, groups=4,8 per layer)")
    g = p.add_argument_group("char-lm and word-lm")
    g.add_argument("--text", default=None, help="UTF-8 text (default: the shipped tragedies for char-lm, the "
                   "complete works for word-lm)")
    g.add_argument("--embedding", type=int, default=0,
                   help="char-lm embedding width; 0 feeds one-hot characters (--cell glstm needs a multiple of groups)")
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
    g = p.add_argument_group("csv (your own table: one row per time step)")
    g.add_argument("--data", default=None, help="CSV file, optional header; empty target cells are missing labels")
    g.add_argument("--target", default=None,
                   help="csv: the column to forecast (name or 0-based index); other tasks: the same as --stop-at")
    g.add_argument("--inputs", default=None, help="comma-separated input columns (default: none, the target's "
                   "past only)")
    g.add_argument("--horizon", type=positive_int, default=1,
                   help="forecast the target this many rows after the window's last row")
    g.add_argument("--no-past-target", action="store_true", help="do not add the target's past values as a feature")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="the last rows held out as the test part (split in time)")
    g.add_argument("--scaling", choices=["standardize", "minmax", "none"], default="standardize",
                   help="per-column scaling, fitted on the training rows only")
    g = p.add_argument_group("optimisation")
    d = DDPConfig()
    g.add_argument("--optimizer", choices=OPTIMIZERS + METHODS, default=d.optimizer,
                   help="sgd, momentum (SGD + momentum), adam, adagrad (initial accumulator 1.0, the "
                        "paper's word LM: --lr 0.2); full-batch lbfgs or cg (long-lag and csv tasks)")
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    g.add_argument("--momentum", type=float, default=d.momentum, help="momentum (--optimizer momentum)")
    g.add_argument("--clip", type=float, default=d.clip, help="max gradient norm; 0 turns clipping off")
    g.add_argument("--steps", type=positive_int, default=d.steps, help="global steps (one batch on every worker)")
    g.add_argument("--seconds", type=float, default=None, help="stop after this much training time")
    g.add_argument("--stop-at", type=float, default=None,
                   help="stop once the evaluation metric (validation nats/char, test MAE, or csv test MSE) is at "
                        "or below this")
    g.add_argument("--eval-every", type=positive_int, default=d.eval_every, help="evaluate every N steps")
    g.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every, help="checkpoint every N steps")
    g.add_argument("--max-iter", type=positive_int, default=5, help="lbfgs: iterations per step (test error "
                   "is evaluated after each step)")
    g.add_argument("--history", type=positive_int, default=50, help="lbfgs: history size")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA GPUs only)")
    g.add_argument("--seed", type=int, default=d.seed, help="run seed (initial weights, minibatch order)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/train", help="run folder")
    g.add_argument("--resume", action="store_true",
                   help="continue from --out/checkpoint.pt (sgd, momentum, adam, adagrad)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_task(args: argparse.Namespace, rank: int,
               world_size: int) -> CharStreamTask | WordStreamTask | LongLagTask | TableTask:
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
        cell = args.cell or "lstm"
        task = CharStreamTask(rank=rank, world_size=world_size, text=args.text or str(SHAKESPEARE_TRAGEDIES),
                              streams=args.batch or 16, window=args.window or 64, hidden=args.hidden or 128,
                              layers=args.layers or 1, cell=cell, embedding=args.embedding,
                              cell_options=dict(args.cell_opt), dtype=args.dtype or "float32",
                              eval_chars=args.eval_chars)
        check_grouped_input(cell, dict(args.cell_opt), args.embedding, len(task.vocab))
        return task
    if args.task == "csv":
        if args.data is None or args.target is None:
            raise ValueError("--task csv needs --data FILE and --target COLUMN (and usually --inputs COLUMNS)")
        inputs = tuple(c.strip() for c in args.inputs.split(",") if c.strip()) if args.inputs else ()
        return TableTask(data=args.data, target=args.target, inputs=inputs, rank=rank, world_size=world_size,
                         window=args.window or 16, horizon=args.horizon, past_target=not args.no_past_target,
                         test_fraction=args.test_fraction, scaling=args.scaling, batch_size=args.batch or 32,
                         hidden=args.hidden or 16, layers=args.layers or 1, cell=args.cell or "lstm",
                         cell_options=dict(args.cell_opt), dtype=args.dtype or "float64")
    if args.dtype == "float32":
        raise ValueError("the long-lag tasks train in float64 (the matrix-batch paper found float32 unstable)")
    return LongLagTask(rank=rank, world_size=world_size, problem=args.task, min_len=args.min_len,
                       train_size=args.train_size, test_size=args.test_size, batch_size=args.batch or 100,
                       hidden=args.hidden or 4, alpha=args.alpha, data_seed=args.data_seed)


def check_grouped_input(cell: str, options: dict[str, Any], embedding: int, vocab: int) -> None:
    """A glstm splits its input into ``groups`` equal parts: one-hot input must have a divisible width."""
    groups = options.get("groups")
    if cell != "glstm" or not isinstance(groups, int) or groups < 1:
        return
    width = embedding or vocab
    if width % groups:
        what = f"--embedding {embedding}" if embedding else f"one-hot characters ({vocab}: the text's vocabulary)"
        fix = -(-max(embedding, 64) // groups) * groups
        raise ValueError(f"--cell glstm --cell-opt groups={groups} splits the input into {groups} equal groups, but "
                         f"{what} is not a multiple of {groups}; learn an embedding whose width is a multiple of "
                         f"{groups}, e.g. --embedding {fix}")


def stop_threshold(args: argparse.Namespace) -> float | None:
    """--stop-at; for tasks other than csv, --target NUMBER is accepted as its older spelling."""
    if args.task == "csv" or args.target is None:
        return args.stop_at
    try:
        return float(args.target)
    except ValueError:
        raise ValueError(f"--target {args.target!r}: a column name is for --task csv; to stop at a metric value "
                         "give --stop-at NUMBER") from None


def task_settings(task: CharStreamTask | WordStreamTask | LongLagTask | TableTask) -> dict[str, Any]:
    """The task's options that a resumed run must share (its data and model)."""
    return {k: v for k, v in asdict(task).items() if k not in ("rank", "eval_chars", "eval_tokens", "test_size")}


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    env = worker_env()
    full_batch = args.optimizer in METHODS
    task = build_task(args, env.rank, env.world_size)
    if full_batch:
        if not hasattr(task, "full_batch"):
            raise ValueError(f"--optimizer {args.optimizer} is full-batch and trains regression tasks "
                             f"(--task adding, multiplication or csv); use sgd, momentum, adam or adagrad for "
                             f"{args.task}")
        if args.resume or args.amp:
            raise ValueError(f"--resume and --amp apply to sgd, momentum, adam and adagrad, not to {args.optimizer}")
        fb_cfg = FullBatchConfig(method=args.optimizer, max_iter=args.max_iter, history_size=args.history)
        return _run_fullbatch(args, task, fb_cfg)
    else:
        cfg = DDPConfig(optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, clip=args.clip or None,
                        steps=args.steps, seconds=args.seconds, target=stop_threshold(args), eval_every=args.eval_every,
                        checkpoint_every=args.checkpoint_every, amp=args.amp, seed=args.seed)
    with process_group(env):
        return train_ddp(task, cfg, Path(args.out), rank=env.rank, world_size=env.world_size, resume=args.resume,
                         show_progress=not args.no_progress, settings=task_settings(task))


def _run_fullbatch(args: argparse.Namespace, task: Any, cfg: FullBatchConfig) -> dict[str, Any]:
    """Bridge until ``train`` runs on the run loop: the full-batch mode in the loop, the old summary keys added."""
    from distlstm.modes.fullbatch import FullBatchMode
    from distlstm.runs.config import LoopConfig
    from distlstm.runs.loop import run
    from distlstm.runtime.comm import open_comm

    loop = LoopConfig(steps=args.steps, seconds=args.seconds, stop_at=stop_threshold(args), eval_every=1,
                      checkpoint_every=args.checkpoint_every, seed=args.seed, progress=not args.no_progress)
    with open_comm() as comm:
        summary = run(FullBatchMode(lambda _rank, _world: task, cfg), loop, comm=comm, folder=Path(args.out),
                      overwrite=True).summary
    return {**summary, "reached_target": summary["reached_stop_at"],
            "samples_per_second": summary["samples"] / max(summary["seconds"], 1e-9)}
