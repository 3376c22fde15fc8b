"""What ``distlstm train`` trains: the "task" config section and :func:`build_task`, callable as a library.

A :class:`TaskConfig` names a task and its data and model; fields left None take the
task's own default (a 128-cell char LM, a 512-cell word LM, a 4-cell long-lag network,
a 16-cell CSV forecaster). :func:`build_task` turns it into the task object of one
worker (rank, world size) that the data-parallel and full-batch modes train::

    from distlstm.modes.train_tasks import TaskConfig, build_task
    task = build_task(TaskConfig(task="adding", min_len=24, train_size=64, test_size=16), rank=0, world_size=1)
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distlstm._argtypes import cell_option, nonnegative_int, positive_int
from distlstm._flags import option
from distlstm.bptt.table_task import TableTask, forecast_table
from distlstm.bptt.tasks import LONG_LAG_PROBLEMS, CharStreamTask, LongLagTask, WordStreamTask, model_from_spec
from distlstm.data.text import SHAKESPEARE_TRAGEDIES
from distlstm.data.words import SHAKESPEARE_COMPLETE
from distlstm.models.init import INITS
from distlstm.modes import LoadedRun
from distlstm.runs.config import flag

TASKS = ("char-lm", "word-lm", *LONG_LAG_PROBLEMS, "csv")
Task = CharStreamTask | WordStreamTask | LongLagTask | TableTask
_WORD = WordStreamTask.__dataclass_fields__


def _cell_opt(text: str) -> str:
    """``KEY=VALUE`` checked now (a typo fails at parse time), kept as text (config.json holds it as given)."""
    cell_option(text)
    return text


@dataclass(frozen=True)
class TaskConfig:
    """The "task" section of ``distlstm train``: what is learnt, from which data, with which model."""

    task: str = flag("char-lm", "what to learn", choices=TASKS)
    batch: int | None = flag(None, "per worker: streams (char-lm 16, word-lm 32), sequences (long-lag 100) or "
                                   "windows (csv 32)", type=positive_int)
    hidden: int | None = flag(None, "hidden units n (default 128 char-lm, 512 word-lm, 4 long-lag, 16 csv)",
                              type=positive_int)
    dtype: str | None = flag(None, "parameter precision (default float32 char-lm and word-lm, float64 csv; long-lag "
                                   "always float64)", choices=("float32", "float64"))
    window: int | None = flag(None, "truncated-BPTT window k (default 64 characters, 20 words); csv: past rows per "
                                    "sequence (default 16)", type=positive_int)
    layers: int | None = flag(None, "stacked recurrent layers (default 1 char-lm and csv, 2 word-lm)",
                              type=positive_int)
    cell: str | None = flag(None, "cell: lstm, peephole, sharpened, flstm, glstm, lstmp, rnn (default lstmp for "
                                  "word-lm, lstm otherwise)")
    cell_opt: tuple[str, ...] = flag((), "cell option KEY=VALUE, repeatable (e.g. rank=64 for flstm, groups=4 for "
                                         "glstm, groups=4,8 per layer)", type=_cell_opt, repeat=True,
                                     metavar="KEY=VALUE")
    # char-lm and word-lm
    text: str | None = flag(None, "UTF-8 text (default: the shipped tragedies for char-lm, the complete works for "
                                  "word-lm)", path=True)
    embedding: int = flag(0, "char-lm embedding width; 0 feeds one-hot characters (--cell glstm needs a multiple of "
                             "groups)", type=nonnegative_int)
    eval_chars: int = flag(20_000, "char-lm: validation characters per evaluation", type=positive_int)
    # word-lm
    proj: int = flag(_WORD["embedding"].default, "word-lm: p, embedding width and projection size of every layer",
                     type=positive_int)
    samples: int = flag(_WORD["num_sampled"].default, "word-lm: S, sampled-softmax candidates per step "
                                                      "(log-uniform); 0 trains with the full softmax")
    vocab_size: int = flag(_WORD["max_vocab"].default, "word-lm: vocabulary cut-off, the most frequent training "
                                                       "types, <unk> included", type=positive_int)
    min_count: int = flag(_WORD["min_count"].default, "word-lm: drop types seen fewer times in the training split",
                          type=positive_int)
    dropout: float = flag(_WORD["dropout"].default, "word-lm: dropout on the embedding, between layers and on the "
                                                    "output")
    eval_tokens: int = flag(_WORD["eval_tokens"].default, "word-lm: validation tokens per evaluation (full softmax)",
                            type=positive_int)
    # long-lag
    min_len: int = flag(100, "long-lag: minimal sequence length T", type=positive_int)
    train_size: int = flag(10_000, "long-lag: training sequences", type=positive_int)
    test_size: int = flag(3_000, "long-lag: test sequences (test MAE is evaluated)", type=positive_int)
    alpha: float = flag(3.75, "long-lag: gate sharpness α in σ(α·a)")
    data_seed: int = flag(0, "long-lag: seed of the generated data set")
    init: str = flag("sparse", "long-lag: initial weights: sparse (the matrix-batch paper's: U(±0.1), ~40%% zeros, "
                               "input-gate bias −1) or uniform (PyTorch's ±1/√n)", choices=INITS)
    # csv
    data: str | None = flag(None, "csv: the CSV file (one row per time step, optional header); empty target cells "
                                  "are missing labels", path=True)
    target: str | None = flag(None, "csv: the column to forecast (name or 0-based index)")
    inputs: str | None = flag(None, "csv: comma-separated input columns (default: none, the target's past only)")
    horizon: int = flag(1, "csv: forecast the target this many rows after the window's last row", type=positive_int)
    past_target: bool = flag(True, "csv: do not add the target's past values as a feature",
                             negate="--no-past-target")
    test_fraction: float = flag(0.2, "csv: the last rows held out as the test part (split in time)")
    scaling: str = flag("standardize", "csv: per-column scaling, fitted on the training rows only",
                        choices=("standardize", "minmax", "none"))

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.target is not None and self.task != "csv":
            raise ValueError(f"{option('target', '--target')} {self.target!r} names the column a csv task forecasts; "
                             f"to stop once the metric reaches a value use {option('stop_at', '--stop-at')} NUMBER")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{option('dropout', '--dropout')} must be in [0, 1), got {self.dropout}")
        for text in self.cell_opt:
            try:
                cell_option(text)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{option('cell_opt', '--cell-opt')}: {err}") from None

    def cell_options(self) -> dict[str, Any]:
        return dict(cell_option(text) for text in self.cell_opt)


def build_task(cfg: TaskConfig, rank: int = 0, world_size: int = 1) -> Task:
    """The task of worker ``rank`` of ``world_size``, every unset size at the task's default."""
    options = cfg.cell_options()
    if cfg.task == "word-lm":
        if cfg.samples < 0:
            raise ValueError(f"{option('samples', '--samples')} must be 0 (full softmax) or positive, "
                             f"got {cfg.samples}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"{option('dropout', '--dropout')} must be in [0, 1), got {cfg.dropout}")
        try:
            return WordStreamTask(rank=rank, world_size=world_size, text=cfg.text or str(SHAKESPEARE_COMPLETE),
                                  streams=cfg.batch or 32, window=cfg.window or 20, embedding=cfg.proj,
                                  hidden=cfg.hidden or 512, layers=cfg.layers or 2, cell=cfg.cell or "lstmp",
                                  cell_options=options, dropout=cfg.dropout, num_sampled=cfg.samples,
                                  max_vocab=cfg.vocab_size, min_count=cfg.min_count, dtype=cfg.dtype or "float32",
                                  eval_tokens=cfg.eval_tokens)
        except ValueError as err:
            raise ValueError(f"{err} (flags: --samples, --vocab-size, --min-count, --text, --batch, "
                             "--window)") from err
    if cfg.task == "char-lm":
        cell = cfg.cell or "lstm"
        task = CharStreamTask(rank=rank, world_size=world_size, text=cfg.text or str(SHAKESPEARE_TRAGEDIES),
                              streams=cfg.batch or 16, window=cfg.window or 64, hidden=cfg.hidden or 128,
                              layers=cfg.layers or 1, cell=cell, embedding=cfg.embedding, cell_options=options,
                              dtype=cfg.dtype or "float32", eval_chars=cfg.eval_chars)
        check_grouped_input(cell, options, cfg.embedding, len(task.vocab))
        return task
    if cfg.task == "csv":
        if cfg.data is None or cfg.target is None:
            raise ValueError("--task csv needs --data FILE and --target COLUMN (and usually --inputs COLUMNS)")
        inputs = tuple(c.strip() for c in cfg.inputs.split(",") if c.strip()) if cfg.inputs else ()
        return TableTask(data=cfg.data, target=cfg.target, inputs=inputs, rank=rank, world_size=world_size,
                         window=cfg.window or 16, horizon=cfg.horizon, past_target=cfg.past_target,
                         test_fraction=cfg.test_fraction, scaling=cfg.scaling, batch_size=cfg.batch or 32,
                         hidden=cfg.hidden or 16, layers=cfg.layers or 1, cell=cfg.cell or "lstm",
                         cell_options=options, dtype=cfg.dtype or "float64")
    if cfg.dtype == "float32":
        raise ValueError("the long-lag tasks train in float64 (the matrix-batch paper found float32 unstable)")
    return LongLagTask(rank=rank, world_size=world_size, problem=cfg.task, min_len=cfg.min_len,
                       train_size=cfg.train_size, test_size=cfg.test_size, batch_size=cfg.batch or 100,
                       hidden=cfg.hidden or 4, alpha=cfg.alpha, data_seed=cfg.data_seed, init=cfg.init)


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


def loaded_task_model(ckpt: Mapping[str, Any], folder: Path, mode: str) -> LoadedRun:
    """The trained model of a ``train`` run (ddp or fullbatch), rebuilt from the task's stored ``model_spec``.

    Language models: ``artifacts`` = {"kind": "char-lm" | "word-lm", "vocab", "config",
    "dtype"}. CSV runs also get ``forecaster(csv_path)``: one row per window in the
    target's own units (``bptt.table_task.forecast_table``). No training data is needed.
    """
    state = ckpt["state"]
    artifacts = dict(state["artifacts"])
    if not artifacts:
        raise ValueError(f"{folder}: the checkpoint stores no model spec (a task without model_spec()), so its "
                         "model cannot be rebuilt here")
    model = model_from_spec(artifacts)
    model.load_state_dict(state["model"])
    config = dict(ckpt["config"])
    forecaster = functools.partial(forecast_table, model, artifacts) if artifacts["kind"] == "csv" else None
    return LoadedRun(folder=Path(folder), mode=mode, command=str(config.get("command", "train")),
                     step=int(ckpt["step"]), config=config, model=model, artifacts=artifacts, forecaster=forecaster)
