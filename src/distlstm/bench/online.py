"""Online algorithms: time per step, particles batched vs looped, EKF vs the memory floor.

* Time per online step (4 nodes on a ring, sequences of 10 steps with p = 8 features)
  for every algorithm at hidden sizes 8, 16, 32 (n_θ ≈ 600, 1,700, 5,400), and the
  DEKF in both linearisations (block: one update at the predicted state, the default;
  sequential: one rank-1 update per neighbour) to compare with the EKF.
* A particle filter's N model evaluations in one batched call against a Python loop.
* One EKF step (gradient, gain, rank-1 covariance update) against one read and one
  write of the n_θ × n_θ covariance (a copy into a fresh tensor on huge pages, as the
  update's): the memory-bandwidth floor of any O(n_θ²) update.
* Each distributed filter's step against its local filter's, timed side by side in one
  process (interleaved rounds, median): DPF vs PF at the same N with K = 4, DEKF (block
  and sequential) vs EKF per node, 4 nodes on a ring. A step is every node's prediction
  (``predict_nodes``, as in a run) and update on the same observations, each step going on
  from the last one's states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from distlstm import native
from distlstm.bench.functional import loop_vs_batched
from distlstm.data.observation import Observation
from distlstm.models.functional import FunctionalModel
from distlstm.modes.online import OnlineProblem, run_streams
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import ALGORITHMS, DEFAULT_SETTINGS, EKF, make_algorithm, regressor
from distlstm.online.ekf import EKFState
from distlstm.ops import downdate_kernel, kalman, memory
from distlstm.timing import compare


@dataclass(frozen=True)
class StepRow:
    algorithm: str
    hidden: int
    n_theta: int
    ms_per_step: float
    bytes_per_node_per_step: float


@dataclass(frozen=True)
class ParticleRow:
    particles: int
    n_theta: int
    loop_ms: float
    batched_ms: float


@dataclass(frozen=True)
class RatioRow:
    algorithm: str  # the distributed filter
    baseline: str  # its local filter
    hidden: int
    n_theta: int
    particles: int  # N (0 for the Kalman filters)
    ms: float  # one step, all 4 nodes
    baseline_ms: float


@dataclass(frozen=True)
class RowsRow:
    hidden: int
    n_theta: int
    rows: int  # m sequences differentiated in one call
    ms: float  # the default: one backward w.r.t. the pre-activations
    generic_ms: float  # reverse mode, batched over the rows when m > 1


@dataclass(frozen=True)
class DowndateRow:
    n_theta: int
    rank: int  # m rows w_k
    ms: float  # one C++ pass (ops/downdate_kernel.cpp)
    aten_ms: float  # one ATen pass per row


@dataclass(frozen=True)
class EKFRow:
    hidden: int
    n_theta: int
    step_ms: float
    floor_ms: float


def _streams(nodes: int, steps: int, p: int, length: int, seed: int = 0) -> list[list[Observation]]:
    gen = torch.Generator().manual_seed(seed)
    return [[Observation(torch.randn(length, p, generator=gen, dtype=torch.float64),
                         float(torch.randn((), generator=gen))) for _ in range(steps)] for _ in range(nodes)]


def bench_steps(hidden_sizes: tuple[int, ...] = (8, 16, 32), steps: int = 6, particles: int = 200,
                progress: Callable[[str], None] | None = None) -> list[StepRow]:
    """Seconds per online step of every algorithm (first step excluded as warm-up)."""
    rows = []
    streams = _streams(4, steps + 1, 8, 10)
    topology = make_topology("ring", 4)
    runs: list[tuple[str, str, dict[str, Any]]] = [(name, name, {}) for name in ALGORITHMS]
    runs.append(("dekf sequential", "dekf", {"linearisation": "sequential"}))
    for h in hidden_sizes:
        fm, _ = regressor(8, h, seed=0)
        for label, name, extra in runs:
            if progress:
                progress(f"online step: {label}, hidden {h}")
            settings: dict[str, Any] = {"num_particles": particles} if "num_particles" in DEFAULT_SETTINGS[name] else {}
            settings |= extra
            run_streams(OnlineProblem([s[:1] for s in streams]), name, topology, settings=settings, hidden=h)  # warm-up
            res = run_streams(OnlineProblem([s[1:] for s in streams]), name, topology, settings=settings,
                              hidden=h).records
            rows.append(StepRow(label, h, fm.numel, res.seconds_per_step * 1e3, res.bytes_per_node_per_step))
    return rows


def bench_particles(counts: tuple[int, ...] = (100, 300, 1000), hidden: int = 8, repeats: int = 5,
                    progress: Callable[[str], None] | None = None) -> list[ParticleRow]:
    """h(θ^i; X) for N particles: one batched call against a loop over particles."""
    fm, theta0 = regressor(8, hidden, seed=0)
    x = torch.randn(1, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = []
    for n in counts:
        if progress:
            progress(f"particles batched vs looped: N = {n}")
        particles = theta0 + 0.1 * torch.randn(n, fm.numel, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            t = compare(loop_vs_batched(fm, particles, x), repeats=repeats)
        rows.append(ParticleRow(n, fm.numel, t["loop"] * 1e3, t["batched"] * 1e3))
    return rows


def _ekf_step(ekf: EKF, state: EKFState, obs: Observation) -> Callable[[], object]:
    """One predict + update from ``state`` on ``obs`` (the state is not advanced)."""
    gen = torch.Generator()
    return lambda: ekf.update_node(state, obs, ekf.predict(state, obs.x), gen, "bench")


def _copy(P: torch.Tensor) -> Callable[[], object]:
    """One read and one write of Σ, into a tensor allocated as the update's (``ops/memory.py``)."""
    return lambda: memory.empty_like(P).copy_(P)


def bench_ekf_floor(hidden_sizes: tuple[int, ...] = (8, 16, 32), repeats: int = 5,
                    progress: Callable[[str], None] | None = None) -> list[EKFRow]:
    """One EKF predict+update against a copy of Σ into a tensor allocated as the update's (one read, one write)."""
    rows = []
    x = torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for h in hidden_sizes:
        if progress:
            progress(f"EKF step vs covariance floor: hidden {h}")
        fm, theta0 = regressor(8, h, seed=0)
        ekf = EKF(fm)
        state = ekf.init(theta0, 0, torch.Generator())

        t = compare({"step": _ekf_step(ekf, state, Observation(x, 0.5)), "floor": _copy(state.P)}, repeats=repeats)
        rows.append(EKFRow(h, fm.numel, t["step"] * 1e3, t["floor"] * 1e3))
    return rows


def _downdate(P: torch.Tensor, rows: torch.Tensor, one_pass: bool) -> Callable[[], object]:
    """Σ − Σ_k w_k w_kᵀ into a fresh Σ (allocated as the filters do): the C++ loop at any size, or the ATen passes."""
    kernel = downdate_kernel.load()
    if one_pass and kernel is not None:
        return lambda: kernel.downdate(P, rows, memory.empty_like(P))
    return _aten_passes(lambda: kalman.downdate(P, rows))


def bench_downdate(hidden_sizes: tuple[int, ...] = (8, 16, 32), ranks: tuple[int, ...] = (2, 3), repeats: int = 9,
                   progress: Callable[[str], None] | None = None) -> list[DowndateRow]:
    """Σ − Σ_k w_k w_kᵀ at the regressors' n_θ: the one-pass C++ loop against one ATen pass per row, side by side.

    Empty where the kernel is not built (no compiler, ``DISTLSTM_NATIVE=0``).
    """
    if downdate_kernel.load() is None:
        return []
    rows = []
    gen = torch.Generator().manual_seed(0)
    for h in hidden_sizes:
        n = regressor(8, h, seed=0)[0].numel
        if progress:
            progress(f"covariance downdate: n_θ = {n}")
        A = torch.randn(n, n, generator=gen, dtype=torch.float64)
        P = A + A.mT
        del A
        for m in ranks:
            w = torch.randn(m, n, generator=gen, dtype=torch.float64) / n
            t = compare({"kernel": _downdate(P, w, True), "aten": _downdate(P, w, False)}, repeats=repeats)
            rows.append(DowndateRow(n, m, t["kernel"] * 1e3, t["aten"] * 1e3))
    return rows


def _rows_call(fm: FunctionalModel, theta: torch.Tensor, x: torch.Tensor) -> Callable[[], object]:
    """∂d̂/∂θ at θ for the sequences x (m, T, p): ``value_and_grad`` for one, ``jacobian`` for more."""
    if x.shape[0] == 1:
        return lambda: fm.value_and_grad(theta, x)
    return lambda: fm.jacobian(theta, x)


def bench_jacobian_rows(hidden_sizes: tuple[int, ...] = (8, 16, 32), counts: tuple[int, ...] = (1, 2),
                        steps: int = 10, repeats: int = 20,
                        progress: Callable[[str], None] | None = None) -> list[RowsRow]:
    """∂d̂/∂θ for m sequences: the regressor's per-sequence rows against generic reverse mode, side by side."""
    rows = []
    x = torch.randn(max(counts), steps, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for h in hidden_sizes:
        if progress:
            progress(f"Jacobian rows: hidden {h}")
        fm, theta = regressor(8, h, seed=0)
        generic = FunctionalModel(fm.module, fast_paths=False)
        for m in counts:
            fns = {name: _rows_call(model, theta, x[:m]) for name, model in (("rows", fm), ("generic", generic))}
            t = compare(fns, repeats=repeats)
            rows.append(RowsRow(h, fm.numel, m, t["rows"] * 1e3, t["generic"] * 1e3))
    return rows


def _network_step(name: str, hidden: int, settings: dict[str, Any], nodes: int = 4) -> Callable[[], object]:
    """Every node's predict + update of ``name`` on a ring of ``nodes`` on fixed observations; each call goes on
    from the states the last one left, as a run does (so each step frees the states two steps old, and its fresh
    Σ or particles take memory a run would give them, not memory fresh from the system)."""
    fm, theta0 = regressor(8, hidden, seed=0)
    alg = make_algorithm(name, fm, **settings)
    transport = InProcessTransport(make_topology("ring", nodes))
    gens = {k: torch.Generator().manual_seed(k) for k in range(nodes)}
    states = {k: alg.init(theta0, k, gens[k]) for k in range(nodes)}
    obs = {k: stream[0] for k, stream in enumerate(_streams(nodes, 1, 8, 10))}

    def step() -> object:
        preds = alg.predict_nodes(states, {k: ob.x for k, ob in obs.items()}, transport)
        states.update(alg.update(states, obs, preds, transport, gens, 1))
        return preds
    return step


def bench_filter_ratios(particle_counts: tuple[int, ...] = (200, 1000), particle_hidden: int = 8,
                        hidden_sizes: tuple[int, ...] = (8, 16, 32), repeats: int = 7,
                        progress: Callable[[str], None] | None = None) -> list[RatioRow]:
    """DPF vs PF (same N, K = 4) and DEKF vs EKF (per node; block and sequential), side by side in one process."""
    rows = []
    for n in particle_counts:
        if progress:
            progress(f"DPF vs PF step: N = {n}")
        fns = {name: _network_step(name, particle_hidden, {"num_particles": n} | extra)
               for name, extra in (("pf", {}), ("dpf", {"walk_steps": 4}))}
        t = compare(fns, repeats=repeats, warmup=1)
        rows.append(RatioRow("dpf", "pf", particle_hidden, regressor(8, particle_hidden, 0)[0].numel, n,
                             t["dpf"] * 1e3, t["pf"] * 1e3))
    for h in hidden_sizes:
        if progress:
            progress(f"DEKF vs EKF step: hidden {h}")
        variants = {"dekf block": _network_step("dekf", h, {"linearisation": "block"}),
                    "dekf block, ATen passes": _aten_passes(_network_step("dekf", h, {"linearisation": "block"})),
                    "dekf sequential": _network_step("dekf", h, {"linearisation": "sequential"})}
        t = compare({"ekf": _network_step("ekf", h, {}), **variants}, repeats=repeats, warmup=1)
        n_theta = regressor(8, h, 0)[0].numel
        rows += [RatioRow(name, "ekf", h, n_theta, 0, t[name] * 1e3, t["ekf"] * 1e3) for name in variants]
    return rows


def _aten_passes(step: Callable[[], object]) -> Callable[[], object]:
    """``step`` with the covariance downdate's C++ loop switched off (one ATen pass per row)."""
    def call() -> object:
        with native.use(False):
            return step()
    return call
