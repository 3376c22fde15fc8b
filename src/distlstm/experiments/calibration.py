"""Coverage of the filters' 95% predictive intervals, fixed σ² against the adaptive estimate.

For EKF, DEKF, PF and DPF at their default settings (the reproduction's sentence
settings on the sentence task), each in three variants (:data:`VARIANTS`,
:mod:`distlstm.ops.noise`): **fixed** σ² and the filter's own predictive variance;
**adaptive** σ² estimated from the innovations; **calibrated**: fixed σ², the interval's
variance scaled by c, a quantile of the last W normalised errors at a level that the
node's misses steer towards 95% coverage (adaptive conformal inference). On three data sets:

* **exchange** — the reproduction's exchange-rate task (:func:`ergen_kozat.exchange_streams`);
* **sentences** — the reproduction's sentence-valence task (:func:`ergen_kozat.sentence_streams`);
* **synthetic** — a nonlinear autoregression with known Gaussian noise
  (:func:`distlstm.data.nonlinear.nonlinear_ar`), standardised, windows of two values.

Coverage is the fraction of labels inside d̂ ± 1.96 √v over every node and step, with
its Wilson 95% confidence interval for a binomial proportion (n = labels scored)::

    p̃ = (p̂ + z²/2n) / (1 + z²/n),   half-width = z / (1 + z²/n) · √(p̂(1 − p̂)/n + z²/4n²)

The goal (issue 15) is 93–97% at default settings. Writes ``report.md`` (the table)
and ``summary.json`` to the output folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from distlstm.data.nonlinear import nonlinear_ar
from distlstm.data.observation import Observation
from distlstm.data.series import Scaler, split_round_robin, windows
from distlstm.experiments.ergen_kozat import SENTENCE_SETTINGS, ErgenKozatConfig, exchange_streams, sentence_streams
from distlstm.experiments.parallel import RunPool
from distlstm.modes.online import OnlineProblem, run_streams
from distlstm.network import make_topology, parse_edges
from distlstm.online import algorithm_settings
from distlstm.online.records import Z95
from distlstm.ops.noise import ACI_STEP, MISS_RATE
from distlstm.runs.files import atomic_write_text, write_json

FILTERS = ("ekf", "dekf", "pf", "dpf")
INTERVAL_WINDOW = 100  # W of the interval calibration in the "calibrated" variant
# variant → the settings it overrides: σ² fixed or adaptive, the interval calibrated or the filter's own
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {"noise": "fixed", "interval_window": 0},
    "adaptive": {"noise": "adaptive", "interval_window": 0},
    "calibrated": {"noise": "fixed", "interval_window": INTERVAL_WINDOW},
}
GOAL = (0.93, 0.97)

Streams = list[list[Observation]]


@dataclass(frozen=True)
class CalibrationConfig:
    quick: bool = False
    seed: int = 0
    nodes: int = 4
    edges: str = "0-1,1-2,2-3,3-0,0-2"  # the reproduction's graph
    exchange_steps: int | None = None  # per node; None = the whole series (466)
    sentences: int = 2000
    synthetic_length: int = 2000
    synthetic_noise_std: float = 0.3
    particles: int | None = None  # None: the defaults (500)
    filters: tuple[str, ...] = field(default=FILTERS)
    datasets: tuple[str, ...] = ("exchange", "sentences", "synthetic")
    variants: tuple[str, ...] = field(default=tuple(VARIANTS))

    @classmethod
    def preset(cls, quick: bool, seed: int = 0) -> CalibrationConfig:
        if quick:
            return cls(quick=True, seed=seed, exchange_steps=60, sentences=160, synthetic_length=240, particles=100)
        return cls(seed=seed)


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (lower, upper) for a binomial proportion hits / n (see the module docstring)."""
    if n < 1 or not 0 <= hits <= n:
        raise ValueError(f"need 0 ≤ hits ≤ n and n ≥ 1, got hits={hits}, n={n}")
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def coverage_figures(coverage95: float, labels: int) -> dict[str, float | int]:
    """Coverage of ``labels`` scored labels with its Wilson 95% CI, as report columns.

    For any online run: ``coverage_figures(mode.run_summary().coverage95, labels)``
    (e.g. the Ergen & Kozat reproduction's table can add these columns).
    """
    low, high = wilson_interval(round(coverage95 * labels), labels)
    return {"coverage95": coverage95, "ci_low": low, "ci_high": high, "labels": labels}


def in_goal(coverage: float) -> bool:
    return GOAL[0] <= coverage <= GOAL[1]


def synthetic_streams(cfg: CalibrationConfig) -> Streams:
    series = nonlinear_ar(cfg.synthetic_length + 2, cfg.synthetic_noise_std, seed=cfg.seed)
    return split_round_robin(windows(Scaler.fit(series, "standardize")(series), 2), cfg.nodes)


def datasets(cfg: CalibrationConfig) -> dict[str, tuple[Callable[[], Streams], int, dict[str, dict[str, Any]]]]:
    """name → (streams, hidden units, per-algorithm settings) as the reproduction runs them."""
    ek = ErgenKozatConfig(seed=cfg.seed, nodes=cfg.nodes, edges=cfg.edges, exchange_steps=cfg.exchange_steps,
                          sentences=cfg.sentences)
    return {"exchange": (lambda: exchange_streams(ek), ek.exchange_hidden, {}),
            "sentences": (lambda: sentence_streams(ek), ek.sentence_hidden, SENTENCE_SETTINGS),
            "synthetic": (lambda: synthetic_streams(cfg), ek.exchange_hidden, {})}


class Problems:
    """A process's data sets, each built once on first use (the sentence streams take seconds: word2vec)."""

    def __init__(self, cfg: CalibrationConfig) -> None:
        self.cfg = cfg
        self.topology = make_topology("edges", cfg.nodes, edges=parse_edges(cfg.edges))
        self.sets = datasets(cfg)
        self._problems: dict[str, tuple[OnlineProblem, int]] = {}

    def __getitem__(self, name: str) -> tuple[OnlineProblem, int]:
        """The data set's problem and its number of labels."""
        if name not in self._problems:
            streams = self.sets[name][0]()
            self._problems[name] = (OnlineProblem(streams, dataset=name),
                                    sum(ob.labelled for s in streams for ob in s))
        return self._problems[name]


def run_one(problems: Problems, spec: tuple[str, str, str]) -> dict[str, Any]:
    """The table row of one (data set, filter, variant) run, in this process or a worker."""
    ds, name, variant = spec
    cfg = problems.cfg
    problem, labels = problems[ds]
    _, hidden, settings = problems.sets[ds]
    overrides = {**settings.get(name, {}), **VARIANTS[variant]}
    if cfg.particles is not None and name in ("pf", "dpf"):
        overrides["num_particles"] = cfg.particles
    s = run_streams(problem, name, problems.topology, seed=cfg.seed, settings=overrides, hidden=hidden).run_summary()
    return {"dataset": ds, "algorithm": name, "variant": variant, **coverage_figures(s.coverage95, labels),
            "final_mse": s.final_mse, "mean_running_mse": s.mean_running_mse,
            "settings": algorithm_settings(name, overrides)}


def run(cfg: CalibrationConfig, out: Path, show_progress: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    """Every filter × noise mode × data set (on ``jobs`` processes; 0: one per core); writes ``summary.json``
    and ``report.md``; returns the rows."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    specs = [(ds, name, variant) for ds in datasets(cfg) if ds in cfg.datasets
             for name in cfg.filters for variant in cfg.variants]
    bar = tqdm(total=len(specs), desc="calibration", disable=not show_progress, unit="run")
    with RunPool(run_one, Problems, cfg, jobs=jobs, bar=bar) as pool:
        rows = pool.map(specs, "/".join)
    bar.close()
    write_json(out / "summary.json", rows)
    atomic_write_text(out / "report.md", render_report(cfg, rows))
    return rows


def render_report(cfg: CalibrationConfig, rows: list[dict[str, Any]]) -> str:
    lines = ["# Calibration of the filters' 95% predictive intervals", "",
             f"Sizes: exchange {cfg.exchange_steps or 'all'} steps per node, {cfg.sentences} sentences, a synthetic "
             f"series of {cfg.synthetic_length} (noise std {cfg.synthetic_noise_std} before standardising), "
             f"{cfg.particles or 'the default'} particles; seed {cfg.seed}. "
             f"{cfg.nodes} nodes, graph {cfg.edges}; every filter at its default settings (sentences: the "
             "reproduction's sentence settings). Variants: **fixed** σ² (the configured value) and the filter's own "
             "predictive variance; **adaptive** σ² estimated online from the innovations (`noise=adaptive`, "
             "window `noise_window` = 100); **calibrated**: fixed σ², the interval's variance scaled by c, the "
             f"quantile of the node's last {INTERVAL_WINDOW} normalised errors at level 1 − α_t, where α_t follows the "
             f"node's misses (α_{{t+1}} = α_t + {ACI_STEP} ({MISS_RATE:.2f} − miss_t), adaptive conformal inference; "
             "`interval_window`). "
             "Coverage is the fraction "
             "of labels inside d̂ ± 1.96 √v over all nodes and steps, with its Wilson 95% confidence interval. "
             f"Goal: {GOAL[0]:.0%}–{GOAL[1]:.0%}.", "",
             "| data | filter | variant | coverage | Wilson 95% CI | labels | final MSE |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['algorithm']} | {r['variant']} | {r['coverage95']:.3f} | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['labels']} | {r['final_mse']:.4g} |")
    lines.append("")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        inside = sum(in_goal(r["coverage95"]) for r in runs)
        lines.append(f"- {variant}: coverage inside the goal in {inside} of {len(runs)} runs.")
    return "\n".join(lines) + "\n"
