"""Hand-made mutants of the core numerics: each must make some test fail.

Every mutant is one textual change to one source file (the Kalman update, the DPF
exponent, the Metropolis weights, the ES shaping, gradient and update, the shared
noise, the resamplers, SGD's clipping). For each, the package is copied to a
temporary folder, the change applied there — the working tree is never touched — and
the tests that should notice it run against the copy (``PYTHONPATH``). A mutant whose
tests still pass *survives*: a hole in the suite. Usage::

    python tools/mutants.py            # all mutants; exit 1 if any survives
    python tools/mutants.py kalman     # only mutants whose name contains "kalman"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    name: str
    file: str  # under src/distlstm/
    old: str
    new: str
    tests: tuple[str, ...]


KALMAN_TESTS = ("tests/ops/test_kalman.py", "tests/test_properties.py", "tests/online/test_filters.py")
ES_TESTS = ("tests/es/test_strategy.py", "tests/es/test_reference.py")
DPF_TESTS = ("tests/online/test_dpf_exponent.py", "tests/online/test_filters.py")
RESAMPLING_TESTS = ("tests/ops/test_resampling.py", "tests/test_properties.py")
MUTANTS = [
    Mutant("kalman: innovation variance without σ²", "ops/kalman.py", "r = H @ u + sigma2", "r = H @ u + 0.0 * sigma2",
           KALMAN_TESTS),
    Mutant("kalman: mean moves against the innovation", "ops/kalman.py", "a = a + K * innovation",
           "a = a - K * innovation", KALMAN_TESTS),
    Mutant("kalman: time update left out of the gain", "ops/kalman.py", "u = PH + q * H if has_q else PH", "u = PH",
           KALMAN_TESTS),
    Mutant("kalman: Joseph form without K σ² Kᵀ", "ops/kalman.py", "K, K, alpha=float(r))",
           "K, K, alpha=float(r) - sigma2)", KALMAN_TESTS),
    Mutant("kalman: process noise not added to Σ", "ops/kalman.py", "P.diagonal().add_(q)", "P.diagonal().add_(0 * q)",
           KALMAN_TESTS),
    Mutant("dpf: exponent without the 2 of 2|E|", "online/dpf.py", "2 * topo.num_edges / (K * topo.degree(j))",
           "topo.num_edges / (K * topo.degree(j))", DPF_TESTS),
    Mutant("dpf: exponent without the degree", "online/dpf.py", "2 * topo.num_edges / (K * topo.degree(j))",
           "2 * topo.num_edges / (K * 2)", DPF_TESTS),
    Mutant("metropolis: 1/(max+1) instead of 1/max(n_k, n_l)", "network/graphs.py",
           "1.0 / max(size[a], size[b])", "1.0 / (max(size[a], size[b]) + 1)",
           ("tests/network/test_graphs.py", "tests/test_properties.py")),
    Mutant("centred ranks over P instead of P − 1", "es/shaping.py", "ranks / (p - 1) - 0.5", "ranks / p - 0.5",
           ES_TESTS),
    Mutant("z-score without the mean", "es/shaping.py", "(f - f.mean()) / std", "f / std", ES_TESTS),
    Mutant("ES gradient without 1/σ", "es/strategy.py", "/ (cfg.population * cfg.sigma)", "/ cfg.population",
           ES_TESTS),
    Mutant("ES weight decay pushes outwards", "es/strategy.py", "g = g - cfg.weight_decay * state.theta",
           "g = g + cfg.weight_decay * state.theta", ES_TESTS),
    Mutant("Adam without the second-moment bias correction", "es/strategy.py", "(v / (1 - cfg.beta2**t))", "v",
           ES_TESTS),
    Mutant("plain SGD rule descends", "es/strategy.py", "theta, m, v = state.theta + cfg.lr * g",
           "theta, m, v = state.theta - cfg.lr * g", ES_TESTS),
    Mutant("mirrored twin not negated (one member)", "es/noise.py", "1.0 - 2.0 * (member % 2)", "1.0", ES_TESTS),
    Mutant("mirrored twin not negated (population)", "es/noise.py", "sign = -1.0 if mirrored and j % 2 else 1.0",
           "sign = 1.0", ES_TESTS),
    Mutant("systematic resampling spreads over M + 1", "ops/resampling.py", "(u + torch.arange(M, dtype=W.dtype)) / M",
           "(u + torch.arange(M, dtype=W.dtype)) / (M + 1)", RESAMPLING_TESTS),
    Mutant("residual resampling rounds instead of flooring", "ops/resampling.py", "copies = torch.floor(M * W).long()",
           "copies = torch.round(M * W).long()", RESAMPLING_TESTS),
    Mutant("PF likelihood without the 1/2", "online/pf.py", "return -0.5 * (d - h) ** 2 / sigma2",
           "return -(d - h) ** 2 / sigma2", ("tests/online/test_likelihood.py", "tests/online/test_filters.py")),
    Mutant("SGD clipping ignored", "online/sgd.py", "if norm > cfg.max_step:", "if norm > 2 * cfg.max_step:",
           ("tests/online/test_sgd.py",)),
]


def run_mutant(m: Mutant, timeout: float) -> tuple[str, float]:
    """'killed', 'survived' or 'error' (the text to replace was not found), and seconds taken."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        target = src / "distlstm" / m.file
        text = target.read_text(encoding="utf-8")
        if text.count(m.old) != 1:
            return "error", 0.0
        target.write_text(text.replace(m.old, m.new), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *m.tests]
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            outcome = "survived" if done.returncode == 0 else "killed"
        except subprocess.TimeoutExpired:
            outcome = "killed"  # a hang is noticed too
    return outcome, time.perf_counter() - start


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or any(a in m.name for a in argv)]
    survivors = []
    for m in chosen:
        outcome, seconds = run_mutant(m, timeout=600)
        print(f"{outcome:8s} {seconds:6.1f}s  {m.name}  ({m.file})", flush=True)
        if outcome != "killed":
            survivors.append(m.name)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants killed" +
          (f"; surviving or broken: {survivors}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
