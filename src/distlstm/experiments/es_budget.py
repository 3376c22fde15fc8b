"""Reproduction part: ES on the tragedies in 30 minutes — the tuned settings, and what each change bought.

A ladder of ``es`` runs, each on the main report's short training-time budget (240 s),
every rung adding one change to the one before:

1. the main report's OpenAI-ES settings as first run (one-hot tanh RNN, hidden 64,
   P = 256, σ = 0.02, constant α = 0.01, 8 shared windows of 32 characters, ε drawn
   from a generator per member);
2. + ε gathered from the shared noise table (``--noise table``): more generations per second;
3. + the compiled population forward (``--compile``): more generations per second;
4. + a step-size schedule: α = 0.01 halved every 15,000 generations (``--lr-half-life``):
   the constant α's early progress, and smaller, less noisy steps late;

then the last rung's settings on the full budget (1,800 s). Validation as in the main
report (the tragedies' last 10%), so the numbers compare with its 240 s table and with
the bigram entropy of the training text (2.477 nats/char), the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from distlstm.experiments.es_shakespeare import es_loop, reference_levels, run_es, training_entropies
from distlstm.modes.es import ESRunConfig
from distlstm.runs import atomic_write_text, plot_curves, write_json


@dataclass(frozen=True)
class ESBudgetConfig:
    quick: bool = False
    seed: int = 0
    seconds: float = 1800.0  # the full budget of the tuned run
    rung_seconds: float = 240.0  # each rung of the ladder
    hidden: int = 64
    population: int = 256
    eval_every: int = 250
    eval_chars: int = 20_000
    compile: bool = True  # False skips the compiled rung (no C++ compiler, or the quick preset)
    lr: float = 0.01
    lr_half_life: float = 15_000.0

    @classmethod
    def preset(cls, quick: bool, seed: int = 0) -> ESBudgetConfig:
        if quick:
            return cls(quick=True, seed=seed, seconds=20.0, rung_seconds=5.0, hidden=16, population=32,
                       eval_every=25, eval_chars=2_000, compile=False, lr_half_life=200.0)
        return cls(seed=seed)

    def rungs(self) -> list[tuple[str, ESRunConfig]]:
        """(change, settings) of each rung, cumulative; the last is the tuned run's."""
        base = ESRunConfig(cell="rnn", hidden=self.hidden, population=self.population, sigma=0.02, lr=0.01,
                           eval_chars=self.eval_chars, noise="seeded")
        out = [("the 240 s report's first settings", base),
               ("+ ε from the shared noise table", replace(base, noise="table"))]
        if self.compile:
            out.append(("+ compiled population forward", replace(out[-1][1], compile=True)))
        out.append((f"+ α = {self.lr} halved every {self.lr_half_life:,.0f} generations",
                    replace(out[-1][1], lr=self.lr, lr_half_life=self.lr_half_life)))
        return out


def run(cfg: ESBudgetConfig, out: Path, show_progress: bool = True) -> list[dict[str, Any]]:
    """The ladder (run folders ``rung_<k>``) and the tuned run (``tuned``); ``report.md``, plot and summary."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    h1, h2 = training_entropies()
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    rungs = cfg.rungs()
    for k, (change, es_cfg) in enumerate(rungs):
        loop = es_loop(cfg.seed, cfg.eval_every, show_progress, seconds=cfg.rung_seconds)
        rows.append({"run": f"rung_{k}", "change": change, **run_es(es_cfg, loop, out / f"rung_{k}", curves,
                                                                      f"{k}: {change}")})
    loop = es_loop(cfg.seed, cfg.eval_every, show_progress, seconds=cfg.seconds)
    tuned = f"tuned, {cfg.seconds:.0f} s"
    rows.append({"run": "tuned", "change": tuned, **run_es(rungs[-1][1], loop, out / "tuned", curves, tuned)})
    write_json(out / "summary.json", rows)
    plot_curves(out / "val_vs_seconds.png",
                {n: ([r["seconds"] for r in c], [r["val_nats_per_char"] for r in c]) for n, c in curves.items()},
                xlabel="training time (s, 2 cores)", ylabel="validation nats / char",
                title="ES on Shakespeare: the 30-minute budget", hlines=reference_levels(h1, h2))
    atomic_write_text(out / "report.md", render(cfg, rows, rungs[-1][1], h1, h2))
    return rows


def render(cfg: ESBudgetConfig, rows: list[dict[str, Any]], tuned: ESRunConfig, h1: float, h2: float) -> str:
    lines = [
        f"# ES on Shakespeare in {cfg.seconds / 60:.0f} minutes", "",
        f"Shipped tragedies, last 10% held out (the first {cfg.eval_chars:,} characters validate); unigram entropy "
        f"{h1:.3f}, bigram conditional entropy {h2:.3f} nats/char of the training text"
        f"{' (quick preset)' if cfg.quick else ''}. Each rung adds one change to the one above and trains for "
        f"{cfg.rung_seconds:.0f} s; the tuned run trains the last rung's settings for {cfg.seconds:.0f} s. "
        f"Tuned settings: {tuned.cell.upper()} hidden {tuned.hidden}, population {tuned.population}, "
        f"σ = {tuned.sigma}, α = {tuned.lr}"
        + (f" halved every {tuned.lr_half_life:,.0f} generations" if tuned.lr_half_life else "")
        + f", {tuned.windows} windows of {tuned.window} characters"
        + (", compiled forward" if tuned.compile else "") + ".", "",
        "| run | change | seconds | generations | evaluations | validation nats/char | Δ vs rung above |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    previous = None
    for r in rows:
        delta = "" if previous is None or r["run"] == "tuned" else f"{r['val_nats_per_char'] - previous:+.3f}"
        lines.append(f"| {r['run']} | {r['change']} | {r['seconds']:.0f} | {r['generations']:,} | "
                     f"{r['evaluations']:,} | {r['val_nats_per_char']:.3f} | {delta} |")
        previous = r["val_nats_per_char"]
    final = rows[-1]["val_nats_per_char"]
    lines += [
        "", "![validation vs time](val_vs_seconds.png)", "",
        "## Findings", "",
        f"- The tuned run reaches {final:.3f} nats/char in {rows[-1]['seconds']:.0f} s: "
        f"{'below' if final < h2 else 'above'} the bigram entropy ({h2:.3f}).",
        f"- The rungs' Δ column is what each change bought on the {cfg.rung_seconds:.0f} s budget (one seed each).",
    ]
    return "\n".join(lines) + "\n"
