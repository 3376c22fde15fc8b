"""Demo: a character-level LSTM language model on Shakespeare — ``distlstm train --task char-lm`` with demo settings.

Small but real: the shipped tragedies, a contiguous train/validation split, Adam on
32 stateful streams read in windows of 64 characters (the data-parallel trainer's
``ddp`` mode in the run loop, one worker), validation nats/char against the corpus's
own unigram and bigram entropies (a model at the unigram level has learnt only
letter frequencies; below the bigram level it uses more than the previous
character). The run folder is a ``train`` run (config.json, metrics.csv, metrics.png,
summary.json, checkpoint.pt: ``distlstm train --resume FOLDER`` continues it) plus the
demo's own files: loss.png with the entropy levels, sample.txt and report.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm.bptt.tasks import CharStreamTask
from distlstm.data.text import load_text, split_ids
from distlstm.models.networks import CharLM
from distlstm.modes.ddp import DDPMode, OptimConfig
from distlstm.modes.train_tasks import TaskConfig, build_task
from distlstm.runs import atomic_write_text, plot_curves
from distlstm.runs.config import LoopConfig, config_document
from distlstm.runs.loop import run
from distlstm.runs.metrics import evaluated_rows


@dataclass(frozen=True)
class DemoConfig:
    """The demo's knobs; everything else is ``distlstm train --task char-lm``'s default.

    With ``embedding=0`` (one-hot characters) and a time budget it is also the backprop
    baseline of the ES reproduction.
    """

    text: str | None = None  # None: the shipped tragedies
    cell: str = "lstm"
    cell_opt: tuple[str, ...] = ()  # KEY=VALUE, as --cell-opt takes them
    hidden: int = 128
    embedding: int = 32
    batch: int = 32  # streams
    window: int = 64
    lr: float = 3e-3
    steps: int = 3000
    seconds: float | None = None  # a training-time budget besides the steps
    eval_every: int = 250
    eval_chars: int = 16384
    clip: float = 1.0
    seed: int = 0

    def sections(self, progress: bool = True) -> dict[str, Any]:
        """The ``train`` configuration this demo is: task, optim and loop sections."""
        task = TaskConfig(task="char-lm", text=self.text, cell=self.cell, cell_opt=self.cell_opt, hidden=self.hidden,
                          embedding=self.embedding, batch=self.batch, window=self.window, eval_chars=self.eval_chars)
        optim = OptimConfig(optimizer="adam", lr=self.lr, clip=self.clip)
        loop = LoopConfig(steps=self.steps, seconds=self.seconds, eval_every=self.eval_every,
                          checkpoint_every=self.eval_every, seed=self.seed, progress=progress)
        return {"task": task, "optim": optim, "loop": loop}


def entropies(ids: torch.Tensor, vocab_size: int) -> tuple[float, float]:
    """Unigram entropy and bigram conditional entropy H(x_t | x_{t-1}) in nats."""
    uni = torch.bincount(ids, minlength=vocab_size).double()
    p = uni / uni.sum()
    h1 = float(-(p[p > 0] * p[p > 0].log()).sum())
    pairs = torch.bincount(ids[:-1] * vocab_size + ids[1:], minlength=vocab_size**2).double().view(vocab_size, -1)
    joint = pairs / pairs.sum()
    cond = pairs / pairs.sum(1, keepdim=True).clamp_min(1)
    mask = joint > 0
    h2 = float(-(joint[mask] * cond[mask].log()).sum())
    return h1, h2


class DemoMode(DDPMode):
    """The ddp mode plus the demo's outputs: the entropy levels, a sample and a report."""

    def __init__(self, cfg: DemoConfig, sections: Mapping[str, Any]) -> None:
        super().__init__(functools.partial(build_task, sections["task"]), sections["optim"])
        self.demo = cfg

    def _char(self) -> tuple[CharStreamTask, CharLM]:
        assert isinstance(self.task, CharStreamTask) and isinstance(self.model, CharLM)
        return self.task, self.model

    def _entropies(self) -> tuple[float, float]:
        task, _ = self._char()
        train, _ = split_ids(task.vocab.encode(load_text(task.text)))
        return entropies(train, len(task.vocab))

    def summary(self) -> dict[str, Any]:
        h1, h2 = self._entropies()
        return {**super().summary(), "unigram_entropy": round(h1, 4), "bigram_entropy": round(h2, 4),
                "vocab_size": len(self._char()[0].vocab)}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)  # the demo's few thousand rows, read twice
        (task, model), cfg = self._char(), self.demo
        vocab = task.vocab
        h1, h2 = self._entropies()
        evaluated = evaluated_rows(rows, "val_nats_per_char")  # every other row leaves it empty (NaN)
        plot_curves(folder / "loss.png",
                    {"training (per step)": ([r["step"] for r in rows], [r["train_loss"] for r in rows]),
                     "validation": ([r["step"] for r in evaluated], [r["val_nats_per_char"] for r in evaluated])},
                    xlabel="step", ylabel="nats / char", title=f"char {cfg.cell.upper()} on Shakespeare",
                    hlines={"unigram entropy": h1, "bigram entropy": h2})
        prompt = "ROMEO.\n"
        model.eval()
        sample = vocab.decode(model.generate(vocab.encode(prompt, errors="replace"), 400, temperature=0.8,
                                             generator=torch.Generator().manual_seed(cfg.seed)))
        atomic_write_text(folder / "sample.txt", prompt + sample + "\n")
        last = evaluated[-1]
        report = (f"# Demo: character {cfg.cell.upper()} on Shakespeare's tragedies\n\n"
                  f"| validation nats/char | unigram entropy | bigram entropy | steps | seconds | parameters |\n"
                  f"|---:|---:|---:|---:|---:|---:|\n"
                  f"| {last['val_nats_per_char']:.3f} | {h1:.3f} | {h2:.3f} | {last['step']} | "
                  f"{last['seconds']:.0f} | {sum(p.numel() for p in model.parameters()):,} |\n\n"
                  f"![loss](loss.png)\n\nSample (temperature 0.8):\n\n```\n{prompt}{sample}\n```\n")
        atomic_write_text(folder / "report.md", report)


def run_demo(cfg: DemoConfig, out: Path, show_progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate and write the run folder (a ``train`` run); returns the summary."""
    sections = cfg.sections(show_progress)
    result = run(DemoMode(cfg, sections), sections["loop"], folder=out, overwrite=overwrite,
                 config=config_document("train", "ddp", sections))
    return result.summary
