"""Reproduction: factorized (F-LSTM) and grouped (G-LSTM) layers in a word language model.

Kuchaiev & Ginsburg (2017) train a 2-layer LSTMP language model (BIGLSTM: p = 1024,
n = 8192) and the same model with F-LSTM (rank r = 512) and G-LSTM (2, 4, 8 groups)
layers on the One Billion Word benchmark for one week each, Adagrad (lr 0.2), sampled
softmax, 4 GPUs, and report (Table 1, Fig. 2) that

* at the same step count the model with more parameters has the lower loss;
* at the same training time F/G models, which take more steps, catch up or win;
* G-2 gets near the baseline (36.0 against 35.1) with about half the RNN parameters;
* G4-G8 (4 groups, then 8) gets about the perplexity of G-4 with fewer parameters;
* words/s relative to the baseline: F512 1.67×, G-2 1.23×, G-4 1.66×, G-8 1.73×.

Here the same models are scaled to this CPU with the paper's ratios (n = 8p, r = p/2)
and trained on Shakespeare's complete works split by play (``data/words.py``) with the
same wall-clock budget and one thread per worker, with 1 worker (several seeds, two runs
at a time) and with 2 data-parallel workers (``torchrun``, one run at a time). Every run
is ``distlstm train --task word-lm``. Writes ``report.md``, ``summary.json``,
``runs.csv``, training-loss plots against steps and wall time (the paper's Fig. 2),
and each run's folder under ``runs/``.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from distlstm.data.words import WordCorpus, load_word_corpus
from distlstm.experiments.sampling import load_language_model
from distlstm.models.lm_variants import TABLE1, variant_cell
from distlstm.models.networks import stream_nats
from distlstm.models.sequence import LSTM
from distlstm.runs import atomic_write_text, plot_curves, read_csv_numbers, write_csv, write_json
from distlstm.runtime.launch import run_cli

BASELINE = "LSTMP"
PAPER = TABLE1
NOTES = """\
- One Billion Word (0.8 G words, 793 k vocabulary) is replaced by Shakespeare's complete works
  (≈ 1.1 M training tokens, 10 k vocabulary, 4 plays for validation and 4 for test); one week
  on 4 GPUs by minutes on CPU cores. Perplexities are therefore far higher than the paper's
  and the models are far from converged: the comparison is of the *ranking* and the ratios.
- Sizes keep the paper's ratios: n = 8p, F-LSTM rank r = p/2, G-LSTM groups on the gate
  transform with a full projection n → p, one bias per gate, forget-gate bias 1, gradient
  norm clipped, sampled softmax (log-uniform candidates, accidental hits removed).
- Optimizer: Adam (lr 3·10⁻³) instead of the paper's Adagrad (lr 0.2, initial accumulator
  1.0). In the few hundred steps a CPU budget allows, Adagrad's first steps are plain SGD at
  lr 0.2 on a loss averaged over ~600 words and the models barely leave the uniform
  distribution (measured: p = 32, 10 s, validation perplexity ≈ 7,000 of 10,000 words),
  which would make every comparison noise. `FLSTMGLSTMConfig(optimizer="adagrad", lr=0.2)`
  runs the paper's setting. The paper's minibatch of 256 per GPU and 8192
  samples of 793 k words are scaled down; dropout is off as in the paper's Table 1 runs.
- Training time excludes evaluations; perplexities are full-softmax, on the first tokens of
  the validation and test plays (all of them, or `final_tokens`: 30,000 in the full preset)
  read as 16 parallel streams (``stream_nats``). Runs with 1 worker execute two at a
  time, one thread each; 2-worker runs (gloo, one thread each) run alone. On a machine
  shared with other work the words/s and therefore the equal-time results shift."""


@dataclass(frozen=True)
class FLSTMGLSTMConfig:
    quick: bool = False
    seed: int = 0
    proj: int = 128  # p
    hidden: int = 1024  # n = 8p
    streams: int = 32  # per worker
    window: int = 20
    samples: int = 1024  # sampled-softmax candidates
    vocab: int = 10_000
    dropout: float = 0.0
    optimizer: str = "adam"  # the paper's Adagrad (lr 0.2) barely moves in a CPU budget: see NOTES
    lr: float = 3e-3
    clip: float = 1.0
    seconds: float = 60.0  # training budget of every run
    seeds: int = 3  # 1-worker runs per model
    two_worker_seeds: int = 1  # 2-worker runs per model
    two_worker_models: tuple[str, ...] | None = ("LSTMP", "F-LSTM", "G-2", "G-4")  # None: every model
    models: tuple[str, ...] = ("LSTMP", "F-LSTM", "G-2", "G-4", "G-8", "G4-G8")
    eval_every: int = 25
    eval_tokens: int = 5_000
    final_tokens: int | None = 30_000  # validation / test tokens of the final evaluation; None: all
    jobs: int = 2

    @classmethod
    def preset(cls, quick: bool, seed: int = 0) -> FLSTMGLSTMConfig:
        if quick:
            return cls(quick=True, seed=seed, proj=32, hidden=256, samples=512, seconds=10.0, seeds=1,
                       two_worker_models=("LSTMP", "G-2"), eval_every=25, eval_tokens=2_000, final_tokens=10_000)
        return cls(seed=seed)

    def cell(self, model: str) -> tuple[str, dict[str, Any]]:
        """The cell and its options for a model name."""
        return variant_cell(model, self.proj)

    def runs(self) -> list[tuple[str, int, int]]:
        """(model, workers, seed) of every run: all 1-worker runs, then the 2-worker runs."""
        two = self.models if self.two_worker_models is None else self.two_worker_models
        return ([(m, 1, self.seed + s) for s in range(self.seeds) for m in self.models]
                + [(m, 2, self.seed + s) for s in range(self.two_worker_seeds) for m in two])


def train_args(cfg: FLSTMGLSTMConfig, model: str, seed: int) -> list[str]:
    """``distlstm train`` arguments of one run."""
    cell, options = cfg.cell(model)
    opts = [a for k, v in options.items()
            for a in ("--cell-opt", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")]
    return ["train", "--task", "word-lm", "--cell", cell, *opts, "--proj", str(cfg.proj), "--hidden",
            str(cfg.hidden), "--batch", str(cfg.streams), "--window", str(cfg.window), "--samples", str(cfg.samples),
            "--vocab-size", str(cfg.vocab), "--dropout", str(cfg.dropout), "--optimizer", cfg.optimizer, "--lr",
            str(cfg.lr), "--clip", str(cfg.clip), "--steps", str(10**9), "--seconds", str(cfg.seconds),
            "--eval-every", str(cfg.eval_every), "--eval-tokens", str(cfg.eval_tokens), "--checkpoint-every",
            str(10**9), "--seed", str(seed), "--no-progress"]


@functools.lru_cache(maxsize=1)
def _corpus(vocab: int) -> WordCorpus:
    """The shipped corpus, read once per pool process."""
    return load_word_corpus(max_vocab=vocab)


def run_one(cfg: FLSTMGLSTMConfig, model: str, workers: int, seed: int, out: Path) -> dict[str, Any]:
    """Train one model, then evaluate its checkpoint on the validation and test plays (full softmax)."""
    torch.set_num_threads(1)
    summary = run_cli(train_args(cfg, model, seed), out, workers=workers, threads=1)
    lm, _vocab = load_language_model(out / "checkpoint.pt")
    corpus = _corpus(cfg.vocab)
    end = None if cfg.final_tokens is None else cfg.final_tokens + 1
    val, test = stream_nats(lm, corpus.val[:end]), stream_nats(lm, corpus.test[:end])
    rows = read_csv_numbers(out / "metrics.csv")
    return {"model": model, "workers": workers, "seed": seed, "steps": summary["steps"],
            "seconds": summary["seconds"], "words_per_second": summary["samples_per_second"],
            "rnn_parameters": sum(p.numel() for p in lm.rnn.parameters()),
            "parameters": sum(p.numel() for p in lm.parameters()),
            "val_perplexity": math.exp(val), "test_perplexity": math.exp(test),
            "curve": [(r["step"], r["seconds"], r["train_loss"], r["val_nats_per_word"]) for r in rows]}


def paper_rnn_parameters(model: str) -> int:
    """RNN parameters of our cells at the paper's size (p = 1024, n = 8192, r = 512), built on the meta device."""
    cfg = FLSTMGLSTMConfig(proj=1024, hidden=8192)
    cell, options = cfg.cell(model)
    lstm = LSTM(1024, 8192, 2, proj_size=1024, cell=cell, device="meta", single_bias=True, **options)
    return sum(p.numel() for p in lstm.parameters())


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def aggregate(runs: list[dict[str, Any]], cfg: FLSTMGLSTMConfig) -> list[dict[str, Any]]:
    """One row per model × workers: means and 95% CIs over seeds."""
    rows = []
    for workers in (1, 2):
        for model in cfg.models:
            group = sorted((r for r in runs if r["model"] == model and r["workers"] == workers),
                           key=lambda r: r["seed"])
            if not group:
                continue
            row: dict[str, Any] = {"model": model, "workers": workers, "runs": len(group),
                                   "rnn_parameters": group[0]["rnn_parameters"], "parameters": group[0]["parameters"]}
            for key in ("val_perplexity", "test_perplexity", "steps", "words_per_second"):
                mean, ci = mean_ci([float(r[key]) for r in group])
                row[key], row[f"{key}_ci95"] = mean, ci
                row[f"{key}_per_run"] = [r[key] for r in group]
            rows.append(row)
    return rows


def val_at_step(run: dict[str, Any], step: int) -> float:
    """Validation nats/word of a run at the evaluation of ``step`` (an exact evaluation step)."""
    for s, _sec, _loss, val in run["curve"]:
        if int(s) == step:
            return float(val)
    raise ValueError(f"run {run['model']} seed {run['seed']} has no evaluation at step {step}")


def findings(cfg: FLSTMGLSTMConfig, summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """Each of the paper's claims next to what this run measured, with a computed verdict."""
    by = {r["model"]: r for r in summary if r["workers"] == 1}
    base = by.get(BASELINE)
    if base is None:
        return ["- The baseline LSTMP was not run: no comparison."]
    out = []
    one = [r for r in runs if r["workers"] == 1]
    common = min(int(r["steps"]) // cfg.eval_every * cfg.eval_every for r in one)
    if common >= cfg.eval_every:
        at = {m: statistics.fmean(val_at_step(r, common) for r in one if r["model"] == m) for m in by}
        best = min(at, key=lambda m: at[m])
        ranked = sorted(at, key=lambda m: -by[m]["rnn_parameters"])
        values = ", ".join(f"{m} {math.exp(at[m]):.1f}" for m in ranked)
        out.append(f"- *At equal steps the bigger model wins* (Fig. 2a): validation perplexity at step {common} "
                   f"(largest first): {values}; lowest: {best} — "
                   f"{'agrees' if best == BASELINE else 'disagrees'}.")
    for model, row in by.items():
        if model == BASELINE:
            continue
        diffs = [r["val_perplexity"] - b["val_perplexity"] for r in one if r["model"] == model
                 for b in one if b["model"] == BASELINE and b["seed"] == r["seed"]]
        mean, ci = mean_ci(diffs)
        if ci is not None:
            verdict = "wins" if mean + ci < 0 else "behind" if mean - ci > 0 else "catches up (no significant gap)"
            gap = f"{mean:+.1f} ± {ci:.1f} (paired over {len(diffs)} seeds, 95% CI)"
        else:
            rel = mean / base["val_perplexity"]
            verdict = "wins" if rel < -0.02 else "behind" if rel > 0.02 else "catches up (within 2%)"
            gap = f"{mean:+.1f} (one seed)"
        speed = row["words_per_second"] / base["words_per_second"]
        paper = PAPER.get(model)
        paper_speed = f"; the paper: {paper[3] / PAPER[BASELINE][3]:.2f}×" if paper else ""
        out.append(f"- *At equal time {model} catches up or wins*: validation perplexity {row['val_perplexity']:.1f} "
                   f"against {base['val_perplexity']:.1f}, difference {gap} — {verdict}. It ran "
                   f"{row['steps'] / base['steps']:.2f}× the baseline's steps at {speed:.2f}× its words/s"
                   f"{paper_speed}.")
    g2 = by.get("G-2")
    if g2:
        ratio = g2["rnn_parameters"] / base["rnn_parameters"]
        rel = g2["val_perplexity"] / base["val_perplexity"] - 1
        out.append(f"- *G-2 reaches about the baseline with about half the RNN parameters* (paper: 36.0 vs 35.1, "
                   f"0.56× the parameters): {g2['val_perplexity']:.1f} vs {base['val_perplexity']:.1f} "
                   f"({rel:+.1%}) with {ratio:.2f}× the parameters — "
                   f"{'agrees' if rel <= 0.05 and ratio < 0.7 else 'disagrees'} (criterion: at most 5% worse).")
    g4, g48 = by.get("G-4"), by.get("G4-G8")
    if g4 and g48:
        rel = g48["val_perplexity"] / g4["val_perplexity"] - 1
        out.append(f"- *G4-G8 ≈ G-4 with fewer parameters* (paper §3.1): {g48['val_perplexity']:.1f} vs "
                   f"{g4['val_perplexity']:.1f} ({rel:+.1%}), {g48['rnn_parameters']:,} vs "
                   f"{g4['rnn_parameters']:,} RNN parameters — {'agrees' if abs(rel) <= 0.05 else 'disagrees'} "
                   "(criterion: within 5%).")
    two = {r["model"]: r for r in summary if r["workers"] == 2}
    for model, row in two.items():
        if model in by:
            speed = row["words_per_second"] / by[model]["words_per_second"]
            out.append(f"- 2 data-parallel workers, {model}: {speed:.2f}× the words/s of 1 worker (global batch "
                       f"2 × {cfg.streams} streams), validation perplexity "
                       f"{row['val_perplexity']:.1f} against {by[model]['val_perplexity']:.1f}.")
    return out


def _pm(value: float, ci: float | None, spec: str) -> str:
    return format(value, spec) + ("" if ci is None else f" ± {format(ci, spec)}")


def render_report(cfg: FLSTMGLSTMConfig, summary: list[dict[str, Any]], runs: list[dict[str, Any]],
                  paper_counts: dict[str, int]) -> str:
    lines = [f"# F-LSTM and G-LSTM word language models{' (quick preset)' if cfg.quick else ''}", "",
             f"Two recurrent layers with projection p = {cfg.proj}, n = {cfg.hidden} cells (n = 8p), F-LSTM rank "
             f"r = {cfg.proj // 2}, on Shakespeare's complete works split by play ({cfg.vocab:,}-word vocabulary); "
             f"{cfg.optimizer.capitalize()} lr {cfg.lr}, {cfg.streams} streams × {cfg.window} words per worker and "
             f"step, sampled softmax with {cfg.samples} candidates; every run {cfg.seconds:.0f} s of training on one "
             "thread per worker. "
             f"Mean ± 95% CI over seeds where several ran.", "",
             "| model | workers | runs | val perplexity | test perplexity | steps | RNN parameters | words/s | "
             "× LSTMP words/s | paper: perplexity, words/s × |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = {r["workers"]: r for r in summary if r["model"] == BASELINE}
    for r in summary:
        b = base.get(r["workers"])
        ratio = f"{r['words_per_second'] / b['words_per_second']:.2f}" if b else "—"
        paper = PAPER.get(r["model"])
        ref = f"{paper[0]}, {paper[3] / PAPER[BASELINE][3]:.2f}×" if paper else "—"
        lines.append(f"| {r['model']} | {r['workers']} | {r['runs']} | "
                     f"{_pm(r['val_perplexity'], r['val_perplexity_ci95'], '.1f')} | "
                     f"{_pm(r['test_perplexity'], r['test_perplexity_ci95'], '.1f')} | "
                     f"{_pm(r['steps'], r['steps_ci95'], ',.0f')} | {r['rnn_parameters']:,} | "
                     f"{_pm(r['words_per_second'], r['words_per_second_ci95'], ',.0f')} | {ratio} | {ref} |")
    lines += ["", "![training loss vs step](loss_vs_step.png) ![training loss vs time](loss_vs_time.png)", "",
              "![validation perplexity vs time](val_vs_time.png)", "",
              "RNN parameters of these cells at the paper's size (p = 1024, n = 8192, r = 512), against Table 1:", "",
              "| model | ours | Table 1 |", "|---|---:|---:|"]
    for model, count in paper_counts.items():
        ref = f"{PAPER[model][2]:,}" if model in PAPER else "—"
        lines.append(f"| {model} | {count:,} | {ref} |")
    lines += ["", "## Against the paper", "", *findings(cfg, summary, runs), "",
              "## Differences from the paper's setup", "", NOTES]
    return "\n".join(lines) + "\n"


def _plots(out: Path, runs: list[dict[str, Any]], seed: int) -> None:
    first = sorted((r for r in runs if r["workers"] == 1 and r["seed"] == seed), key=lambda r: r["model"])

    def series(r: dict[str, Any], x: int, y: int) -> tuple[list[float], list[float]]:
        return [c[x] for c in r["curve"]], [math.exp(c[y]) if y == 3 else c[y] for c in r["curve"]]

    plot_curves(out / "loss_vs_step.png", {r["model"]: series(r, 0, 2) for r in first}, xlabel="step",
                ylabel="training loss (sampled softmax)", title="(A) training loss against steps", logy=True)
    plot_curves(out / "loss_vs_time.png", {r["model"]: series(r, 1, 2) for r in first},
                xlabel="training seconds (one thread)", ylabel="training loss (sampled softmax)",
                title="(B) training loss against wall time", logy=True)
    plot_curves(out / "val_vs_time.png", {r["model"]: series(r, 1, 3) for r in first},
                xlabel="training seconds (one thread)", ylabel="validation perplexity (full softmax)",
                title="validation perplexity against wall time", logy=True)


def run(cfg: FLSTMGLSTMConfig, out: Path, show_progress: bool = True) -> list[dict[str, Any]]:
    """Every run, the aggregate, the plots and the report; returns the summary rows."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    specs = cfg.runs()
    runs: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    bar = tqdm(total=len(specs), desc="flstm-glstm runs", unit="run", disable=not show_progress)
    for workers, jobs in ((1, cfg.jobs), (2, 1)):  # a 2-worker run takes both cores
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_one, cfg, m, w, s, out / "runs" / f"{m}_w{w}_seed{s}")
                       for m, w, s in specs if w == workers]
            for future in as_completed(futures):
                runs.append(future.result())
                bar.update()
    bar.close()
    summary = aggregate(runs, cfg)
    write_json(out / "summary.json", summary)
    write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "curve"} for r in
                                 sorted(runs, key=lambda r: (r["workers"], r["model"], r["seed"]))])
    _plots(out, runs, cfg.seed)
    counts = {m: paper_rnn_parameters(m) for m in cfg.models}
    atomic_write_text(out / "report.md", render_report(cfg, summary, runs, counts))
    return summary

