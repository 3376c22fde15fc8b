"""The ``online`` mode: Ergen & Kozat's online training, one run-loop step per time step.

One :meth:`OnlineMode.step` at time t, for every node k (the nodes of this process;
the others run in the other processes of a ``torchrun`` group)::

    d̂_{k,t}, v_{k,t} ← predict(state_k, X_{k,t})          before the label
    record (d_{k,t} − d̂_{k,t})² and v_{k,t}                 NaN: no label / no variance
    state ← update(state, labels, transport)               every node at once (neighbour messages)

Step metrics (the same on every process: the per-node records are gathered through the
communicator each step): ``mse`` (the node-averaged squared error at t), ``running_mse``
(the time-averaged MSE so far: the paper's learning curve), ``bytes_per_node`` and
``messages_per_node``. :meth:`OnlineMode.evaluate` adds ``final_mse`` (the last 20% of the
steps so far) and ``coverage95`` (labels inside the 95% predictive interval). The
metric that ``--stop-at`` compares is ``running_mse``.

A checkpoint holds every node's algorithm state (θ, covariance Σ, particles and
log-weights, the stateful EKF's carry), every node's generator, the records, and what
a forecaster needs (scaling, feature names, window, horizon, target). Its ``model`` is
node 0's estimate as a :class:`~distlstm.models.networks.SequenceRegressor` state dict:
one node's model is a coherent model with its own predictive variance, where an
average of the nodes' θ (which need not agree without communication) is not.

Nodes may leave a run (``--on-node-loss continue``; ``--drop-node`` injects the fault):
the survivors go on over the reduced graph, a lost node's records are NaN, and the
summary names who left when and the survivors' final error (``modes/node_loss.py``).
Under torchrun, :meth:`OnlineMode.recover` is what the loop calls when a peer died.
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distlstm._flags import option
from distlstm.data.forecast import SCALINGS, Forecasts, forecast_windows
from distlstm.data.observation import Observation
from distlstm.data.series import EXCHANGE_RATES, series_column, split_round_robin
from distlstm.data.table import read_table
from distlstm.models.functional import FunctionalModel
from distlstm.modes.node_loss import (
    POLICIES,
    NodeLeft,
    NodeLoss,
    check_policy,
    lost_slots,
    parse_drops,
)
from distlstm.network.graphs import TOPOLOGIES, Topology, make_topology, parse_edges
from distlstm.network.transport import Transport
from distlstm.online import ALGORITHMS, DEFAULT_SETTINGS, algorithm_settings, make_algorithm, regressor
from distlstm.online.base import OnlineAlgorithm, Prediction, State
from distlstm.online.baselines import reference_records, univariate_last_values
from distlstm.online.ekf import LINEARISATIONS
from distlstm.online.records import OnlineRecords, check_streams, node_generator, squared_error
from distlstm.ops.noise import NOISE_MODES
from distlstm.ops.psd import check_psd
from distlstm.runs.config import Described, LoopConfig, flag
from distlstm.runs.files import plot_curves, write_csv
from distlstm.runs.loop import run
from distlstm.runtime.comm import Communicator, LocalComm

ModelBuilder = Callable[[int], tuple[FunctionalModel, Tensor]]  # seed → (model, common initial θ₀)


def _positive(name: str, value: int, cli: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r} (fix {option(name, cli)})")


@dataclass(frozen=True)
class OnlineDataConfig:
    """Which series an online run forecasts, and how windows are cut and scaled (``data/forecast.py``)."""

    data: str = flag(str(EXCHANGE_RATES), "CSV, one row per time step, optional header; default: the shipped "
                                          "USD/DEM rates", path=True)
    column: str | None = flag(None, "the one series to forecast from its own past (name or 0-based index) when the "
                                    "CSV has several columns")
    inputs: str | None = flag(None, "comma-separated input series (names or indices), e.g. 'temp,load'; needs "
                                    "--target")
    target: str | None = flag(None, "the series to forecast; an empty cell there is a missing label (predicted, not "
                                    "scored, no update)")
    horizon: int = flag(1, "forecast the target this many rows after the window's last row (1: the next row)")
    past_target: bool = flag(True, "with --inputs: do not add the target's past values as a feature",
                             negate="--no-past-target")
    window: int = flag(2, "rows of past values in each input sequence")
    scaling: str = flag("causal", "causal: each forecast scales with the mean and standard deviation of earlier "
                                  "rows only; standardize / minmax: fitted on the whole series, future included (the "
                                  "paper reproduction's choice); none", choices=SCALINGS)
    warmup: int = flag(20, "--scaling causal: the first rows only feed the scaler's statistics (no forecasts)")

    def input_list(self) -> list[str]:
        return [c.strip() for c in self.inputs.split(",") if c.strip()] if self.inputs else []

    def __post_init__(self) -> None:
        if self.column is not None and (self.input_list() or self.target is not None):
            raise ValueError(f"{option('column', '--column')} picks one series; with "
                             f"{option('inputs', '--inputs')}/{option('target', '--target')} leave it out")
        if self.input_list() and self.target is None:
            raise ValueError(f"{option('inputs', '--inputs')} needs {option('target', '--target')} (the series to "
                             "forecast)")


# Config field → (the algorithm's setting, the algorithms it applies to).
_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lr": ("lr", ("sgd", "dsgd")),
    "sigma2": ("sigma2", ("ekf", "dekf", "pf", "dpf")),
    "q": ("q", ("ekf", "dekf", "pf", "dpf")),
    "s0": ("s0", ("ekf", "dekf", "pf", "dpf")),
    "particles": ("num_particles", ("pf", "dpf")),
    "walk_steps": ("walk_steps", ("dpf",)),
    "resampling": ("resampling", ("pf", "dpf")),
    "ess_threshold": ("ess_threshold", ("pf", "dpf")),
    "joseph": ("joseph", ("ekf", "dekf")),
    "s0_carry": ("s0_carry", ("ekf",)),  # --stateful only
    "q_carry": ("q_carry", ("ekf",)),  # --stateful only
    "noise": ("noise", ("ekf", "dekf", "pf", "dpf")),
    "noise_window": ("noise_window", ("ekf", "dekf", "pf", "dpf")),
    "interval_window": ("interval_window", ("ekf", "dekf", "pf", "dpf")),
    "linearisation": ("linearisation", ("dekf",)),
}


@dataclass(frozen=True)
class OnlineConfig:
    """The algorithm, the network of nodes and the model; a setting left None takes the algorithm's default."""

    algorithm: str = flag("dekf", "training algorithm", choices=tuple(ALGORITHMS))
    nodes: int = flag(4, "number of nodes K")
    topology: str = flag("ring", "graph between the nodes", choices=TOPOLOGIES)
    edges: str | None = flag(None, "edge list for --topology edges, e.g. '0-1,1-2,2-0'")
    hidden: int = flag(4, "LSTM units n")
    single_bias: bool = flag(False, "one bias per gate: Ergen & Kozat's θ, n_θ = n + 4(np + n² + n) (default: "
                                    "nn.LSTM's two biases per gate, 4n more entries the output cannot tell apart)")
    lr: float | None = flag(None, "SGD step size μ (sgd, dsgd); default per algorithm")
    sigma2: float | None = flag(None, "measurement noise variance σ² (ekf, dekf, pf, dpf); default per algorithm")
    q: float | None = flag(None, "process noise / particle jitter variance per step (ekf, dekf, pf, dpf); default "
                                 "per algorithm")
    s0: float | None = flag(None, "initial covariance Σ₀ = s0·I, or the initial particle spread (ekf, dekf, pf, "
                                  "dpf); default per algorithm")
    particles: int | None = flag(None, "particles N per node (pf, dpf); default per algorithm")
    walk_steps: int | None = flag(None, "random-walk steps K per time step (dpf); default per algorithm")
    resampling: str | None = flag(None, "systematic, residual or multinomial (pf, dpf); default systematic")
    ess_threshold: float | None = flag(None, "resample when ESS < threshold·N; 1 = every step (pf, dpf); default 0.5")
    s0_carry: float | None = flag(None, "initial variance of the carried state (ekf --stateful); default 0")
    q_carry: float | None = flag(None, "process noise variance on the carried state per step (ekf --stateful; the "
                                       "paper's noise covers the whole state); default 0")
    noise: str | None = flag(None, "measurement noise σ² (ekf, dekf, pf, dpf): adaptive = estimated online from the "
                                   "prediction errors, starting at --sigma2; fixed = --sigma2 throughout (default)",
                             choices=NOISE_MODES)
    noise_window: int | None = flag(None, "steps the adaptive σ² estimate averages over, older ones forgotten (ekf, "
                                          "dekf, pf, dpf); default 100")
    interval_window: int | None = flag(None, "calibrate the 95%% interval on each node's last W prediction errors "
                                             "(ekf, dekf, pf, dpf): the variance is scaled so that 95%% of them fall "
                                             "inside; 0 = the filter's own variance; default per algorithm")
    linearisation: str | None = flag(None, "dekf: block = every neighbour's measurement linearised at the predicted "
                                           "state and absorbed in one update (Cattivelli & Sayed; default); "
                                           "sequential = one update per neighbour, re-linearised at the running "
                                           "estimate", choices=LINEARISATIONS)
    joseph: bool = flag(False, "Joseph-form covariance update (ekf, dekf)")
    stateful: bool = flag(False, "ekf only: carry the LSTM state from each window to the next and filter [carry; θ]")
    on_node_loss: str = flag("stop", "when a node leaves the run (its worker process died, or --drop-node): stop "
                                     "(the last checkpoint is kept and the message says how to resume) or continue: "
                                     "the survivors agree on the reduced graph within --collective-timeout and go on "
                                     "over it (Metropolis weights and the DPF's walk recomputed; each part of a graph "
                                     "that fell apart goes on alone)", choices=POLICIES)
    drop_node: str | None = flag(None, "fault injection: NODE@STEP[,NODE@STEP…] removes NODE before its 0-based step "
                                       "STEP (NODE@0: a run that never had it); under torchrun the worker that runs "
                                       "NODE kills itself there, taking all its nodes along", metavar="NODE@STEP")
    check_every: int = flag(100, "ekf, dekf: test every node's covariance Σ for positive semidefiniteness (a "
                                 "Cholesky factorisation) every N steps; a failure stops the run naming node and step")

    def __post_init__(self) -> None:
        _positive("nodes", self.nodes, "--nodes")
        _positive("hidden", self.hidden, "--hidden")
        check_policy(self.on_node_loss)
        parse_drops(self.drop_node, self.nodes)
        _positive("check_every", self.check_every, "--check-every")
        self.settings()  # a setting that does not apply to the algorithm is an error now, not at init
        self._check_values()
        self._check_edges()

    def _check_values(self) -> None:
        """The algorithm's own checks of the settings' values, with the flag that fixes a bad one."""
        try:
            make_algorithm(self.algorithm, regressor(1, 1, 0)[0],
                           **algorithm_settings(self.algorithm, self.settings()))
        except ValueError as err:
            flags = [option(f, "--" + f.replace("_", "-")) for f, (setting, _) in _SETTINGS.items()
                     if re.search(rf"\b{setting}\b", str(err))]
            raise ValueError(f"{err} (fix {' / '.join(flags)})" if flags else str(err)) from None

    def _check_edges(self) -> None:
        if self.topology == "edges" and not self.edges:
            raise ValueError(f"{option('topology', '--topology')} edges needs an edge list: "
                             f"{option('edges', '--edges')} '0-1,1-2,2-0'")
        if self.edges and self.topology != "edges":
            raise ValueError(f"{option('edges', '--edges')} is the edge list of {option('topology', '--topology')} "
                             f"edges, not of {self.topology}")
        if self.edges:
            try:
                graph = make_topology("edges", self.nodes, edges=parse_edges(self.edges))
            except ValueError as err:
                raise ValueError(f"{err} (fix {option('edges', '--edges')}: pairs of node ids 0 … "
                                 f"{self.nodes - 1}, or {option('nodes', '--nodes')})") from None
            if graph.num_nodes != self.nodes:
                raise ValueError(f"{option('edges', '--edges')} {self.edges!r} joins {graph.num_nodes} nodes but "
                                 f"{option('nodes', '--nodes')} is {self.nodes}: give every node an edge, or "
                                 f"{option('nodes', '--nodes')} {graph.num_nodes}")

    def settings(self) -> dict[str, Any]:
        """The settings given, as the algorithm's config fields (defaults of :data:`DEFAULT_SETTINGS` not merged)."""
        name = self.algorithm
        if self.stateful and name != "ekf":
            raise ValueError(f"{option('stateful', '--stateful')} applies to ekf only, not {name}")
        out: dict[str, Any] = {"stateful": True} if self.stateful else {}
        for f in fields(self):
            if f.name not in _SETTINGS:
                continue
            value = getattr(self, f.name)
            if value is None or value is False:
                continue
            setting, applies = _SETTINGS[f.name]
            carry = f.name in ("s0_carry", "q_carry")
            if name not in applies or (carry and not self.stateful):
                flag_text = "--" + f.name.replace("_", "-")
                raise ValueError(f"{option(f.name, flag_text)} does not apply to {name}"
                                 + (" without --stateful" if carry and name == "ekf" else ""))
            out[setting] = value
        return out


@dataclass
class OnlineProblem:
    """What an online run learns from: one stream of observations per node, and how to report on it.

    ``forecasts`` (a run on a CSV) lets the summary give MSEs in the target's own units
    and a last-value reference (without it, a univariate series' windows give the
    last value); ``artifacts`` is what a forecaster needs to cut and scale another file
    the same way (stored in the checkpoint).
    """

    streams: list[list[Observation]]
    dataset: str = ""
    forecasts: Forecasts | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.streams[0][0].x.shape[-1])


def csv_problem(data: OnlineDataConfig, nodes: int) -> OnlineProblem:
    """The observations of ``data`` split round-robin over ``nodes`` (what ``distlstm online`` runs on)."""
    table = read_table(data.data)
    inputs = data.input_list()
    target = data.target if data.target is not None else series_column(table, data.column)
    fc = forecast_windows(table, target, inputs, window=data.window, horizon=data.horizon, scaling=data.scaling,
                          warmup=data.warmup, past_target=data.past_target)
    if len(fc) < nodes:
        raise ValueError(f"{data.data} gives {len(fc)} forecasts, fewer than the {nodes} nodes: every node needs at "
                         f"least one (fix {option('nodes', '--nodes')})")
    artifacts = {"columns": list(table.names), "has_header": table.has_header,
                 "inputs": [table.column_name(table.index(c, ("inputs", "--inputs"))) for c in inputs],
                 "target": fc.target, "target_index": table.index(target, ("target", "--target")),
                 "input_indices": [table.index(c, ("inputs", "--inputs")) for c in inputs],
                 "features": list(fc.features), "window": data.window, "horizon": data.horizon,
                 "scaling": data.scaling, "warmup": data.warmup, "past_target": data.past_target,
                 "maps": [list(m) for m in fc.maps]}
    return OnlineProblem(split_round_robin(fc.observations, nodes), dataset=Path(data.data).name, forecasts=fc,
                         artifacts=artifacts)


@dataclass(frozen=True)
class RunSummary:
    """The figures every online run reports (``summary.json`` entries; the reproduction's table rows)."""

    dataset: str
    algorithm: str
    final_mse: float
    mse_naive: float  # the last-value forecast over the same steps as final_mse (NaN if the target is unknown)
    running_mse_end: float
    mean_running_mse: float  # area under the learning curve / steps: lower = faster convergence
    coverage95: float
    seconds_per_step: float
    bytes_per_node_per_step: float
    messages_per_node_per_step: float
    skipped_labels: int
    steps: int
    n_theta: int
    settings: dict[str, Any]
    # reference → {"final_mse", "mean_running_mse"}, each over the same steps as the learner's figure
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: _none_if_nan(v) for k, v in self.__dict__.items()}
        out["references"] = {name: {k: _none_if_nan(v) for k, v in figs.items()}
                             for name, figs in self.references.items()}
        return out


def _none_if_nan(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


class OnlineMode:
    """One online algorithm on per-node streams over a graph (see the module docstring).

    ``settings`` are the algorithm's full settings (:func:`~distlstm.online.algorithm_settings`
    merges the defaults); ``model`` builds the model and the common θ₀ from the seed
    (default: Ergen & Kozat's :class:`SequenceRegressor` with ``hidden`` units, one bias per gate if
    ``single_bias``).
    """

    name: str = "online"
    metric: str = "running_mse"
    plot_columns: Sequence[str] = ("mse", "running_mse")

    def __init__(self, problem: OnlineProblem, algorithm: str, settings: Mapping[str, Any], topology: Topology, *,
                 hidden: int = 4, model: ModelBuilder | None = None, topology_name: str = "",
                 on_node_loss: str = "stop", drops: Mapping[int, int] | None = None,
                 single_bias: bool = False, keep_steps: bool = True, check_every: int = 100) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")
        self.problem, self.algorithm_name, self.settings = problem, algorithm, dict(settings)
        self.topology, self.topology_name, self.hidden = topology, topology_name or "graph", hidden
        self.single_bias = single_bias
        self.max_steps: int | None = check_streams(problem.streams, topology.num_nodes)
        self.model = model or (lambda seed: regressor(problem.input_size, hidden, seed, single_bias=single_bias))
        self.seed = 0
        self.comm: Communicator = LocalComm()
        self.on_node_loss, self.drops = check_policy(on_node_loss), dict(drops or {})
        self.losses: list[NodeLoss] = []
        self.keep_steps = keep_steps
        self.per_node = on_node_loss == "continue"  # per-node window sums: the final MSE of whoever survives
        self.check_every = check_every
        _positive("check_every", check_every, "--check-every")

    # -- the loop's interface -------------------------------------------------------------------------------------

    def init(self, comm: Communicator, seed: int) -> None:
        self.comm, self.seed = comm, seed
        self.fm, theta0 = self.model(seed)
        self.algorithm: OnlineAlgorithm = make_algorithm(self.algorithm_name, self.fm, **self.settings)
        self.transport: Transport = comm.transport(self.topology)
        nodes = self.transport.local_nodes
        self.gens = {k: node_generator(seed, k) for k in nodes}
        self.states: dict[int, State] = {k: self.algorithm.init(theta0, k, self.gens[k]) for k in nodes}
        self.records = OnlineRecords(self.algorithm_name, self.topology.num_nodes, keep_steps=self.keep_steps,
                                     per_node=self.per_node)
        self.losses = []
        self._start: tuple[int, dict[int, State], dict[int, Tensor]] | None = None
        fc = self.problem.forecasts
        self._factors = (fc.scale**2).tolist() if fc is not None else None  # scaled → data units, per observation

    def step(self, step: int) -> Mapping[str, float]:
        self._drop_due(step)
        started = time.perf_counter()
        alg, transport, nodes = self.algorithm, self.transport, self.transport.local_nodes
        if self.on_node_loss == "continue" and self.comm.world_size > 1:  # what recover() rolls back to
            self._start = (step, {k: _copy(s) for k, s in self.states.items()},
                           {k: self.gens[k].get_state() for k in nodes})
        obs = {k: self.problem.streams[k][step] for k in nodes}
        before = [transport.stats.bytes[k] for k in nodes], [transport.stats.messages[k] for k in nodes]
        preds: dict[int, Prediction] = alg.predict_nodes(self.states, {k: obs[k].x for k in nodes}, transport)
        errors = [self._squared_error(obs[k], preds[k], f"{alg.name} at node {k}, step {step}") for k in nodes]
        self.states = alg.update(self.states, obs, preds, transport, self.gens, step)
        local = torch.tensor([[errors[i], preds[k].var, transport.stats.bytes[k] - before[0][i],
                               transport.stats.messages[k] - before[1][i], time.perf_counter() - started]
                              for i, k in enumerate(nodes)], dtype=torch.float64)
        every = self.comm.all_gather_cat(local).tolist()  # (K, 5): nodes are contiguous blocks in rank order
        live = self.transport.topology.survivors  # all K nodes unless some left the run
        by_node = dict(zip(live, every, strict=True))
        rows = [by_node.get(k, [math.nan] * 5) for k in range(self.topology.num_nodes)]
        k_all = self.topology.num_nodes
        factors = self._factors[step * k_all:(step + 1) * k_all] if self._factors is not None else None
        sent, messages = sum(r[2] for r in every) / len(live), sum(r[3] for r in every) / len(live)
        self.records.append([r[0] for r in rows], [r[1] for r in rows], sent, messages, max(r[4] for r in every),
                            factors)
        if (step + 1) % self.check_every == 0:
            self.check_covariances(step)
        rec = self.records
        return {"mse": rec.last_mse, "running_mse": rec.running_mse_now, "bytes_per_node": sent,
                "messages_per_node": messages}

    def check_covariances(self, step: int | None) -> None:
        """Every local node's Σ must still be a covariance (a Cholesky test; ``ops/psd.py``); None: a loaded state."""
        for k, state in self.states.items():
            P = getattr(state, "P", None)
            if P is not None:
                when = "in the checkpoint loaded" if step is None else f"step {step + 1}"
                check_psd(P, f"{self.algorithm_name} at node {k}, {when}",
                          f"try {option('joseph', '--joseph')} (the Joseph-form update keeps Σ symmetric positive "
                          f"semidefinite), a larger {option('sigma2', '--sigma2')} or a smaller "
                          f"{option('s0', '--s0')}")

    # -- nodes that leave the run (modes/node_loss.py) -------------------------------------------------------------

    def _drop_due(self, step: int) -> None:
        """--drop-node: remove the nodes due before ``step`` (in one process), or die with them (under torchrun)."""
        due = sorted(k for k, at in self.drops.items() if at == step and k not in self.transport.topology.lost)
        if not due:
            return
        if self.comm.world_size > 1:
            if set(due) & set(self.transport.local_nodes):
                os.kill(os.getpid(), signal.SIGKILL)  # a crash, not a goodbye: the survivors must notice alone
            return
        if self.on_node_loss != "continue":
            raise NodeLeft(f"node{'s' if len(due) > 1 else ''} {', '.join(map(str, due))} left before step {step} "
                           f"and {option('on_node_loss', '--on-node-loss')} is stop; give continue to go on with "
                           "the survivors")
        self.lose_nodes(due, step)

    def lose_nodes(self, nodes: Sequence[int], step: int) -> None:
        """Go on without ``nodes`` from ``step`` on: the reduced graph, their states dropped, the event recorded."""
        reduced = self.transport.topology.without(nodes)
        self.transport.lose(reduced)
        for k in nodes:
            self.states.pop(k, None)
            self.gens.pop(k, None)
        self.losses.append(NodeLoss.of(step, nodes, reduced))

    def recover(self) -> int | None:
        """After a worker died (under torchrun): agree with the survivors and return the step to go on from.

        Every survivor reports the steps it completed; a peer can be at most one step
        ahead (it cannot pass a gather the others did not reach), so the agreed step is
        the smallest, and a survivor that is ahead, or failed inside a step, rolls back
        to the step's start. None: the policy is stop, or the worker that writes the
        run folder (rank 0) is gone.
        """
        if self.on_node_loss != "continue":
            return None
        done = self.records.steps
        members, agreed = self.comm.regroup(done)
        regroup = getattr(self.transport, "regroup", None)
        if regroup is None or members[0] != 0:
            return None
        gone = regroup(members)
        if self._start is not None and self._start[0] == agreed:
            _, states, gens = self._start
            self.states = dict(states)
            for k, g in gens.items():
                self.gens[k].set_state(g)
        if done > agreed + 1:
            raise RuntimeError(f"this survivor completed {done} steps and the others {agreed}: a survivor can be "
                               "at most one step ahead (it cannot pass a gather the others did not reach)")
        if done > agreed:  # the step the others did not complete is taken out of the records
            self.records.undo_last()
        if gone:
            self.lose_nodes(gone, agreed)
        return agreed

    @staticmethod
    def _squared_error(ob: Observation, pred: Prediction, where: str) -> float:
        if not math.isfinite(pred.mean):
            raise FloatingPointError(f"{where}: the prediction is {pred.mean}; the estimate diverged")
        if not ob.labelled:
            return math.nan
        err = squared_error(ob.d, pred.mean)
        if math.isinf(err):
            raise FloatingPointError(f"{where}: the squared prediction error overflows (label {ob.d:.3g}, "
                                     f"prediction {pred.mean:.3g}); check the data's scale")
        return err

    def evaluate(self) -> Mapping[str, float]:
        rec = self.records
        return {"running_mse": rec.running_mse_now, "final_mse": rec.final_mse(), "coverage95": rec.coverage95()}

    def state_dict(self) -> dict[str, Any]:
        """Every node's state and generator (gathered to every process), the records, the model and artifacts."""
        nodes = self.transport.local_nodes
        first = self.states[nodes[0]]
        node_states = {f: self._gather(torch.stack([getattr(self.states[k], f) for k in nodes]))
                       for f in first._fields}
        gens = self._gather(torch.stack([self.gens[k].get_state() for k in nodes]))
        if self.losses:  # rows by node id: zero states and generators where a node left (node_loss says which)
            live = self.transport.topology.survivors
            node_states = {f: self._by_node(v, live, 0.0) for f, v in node_states.items()}
            gens = self._by_node(gens, live, 0)
        shown = self.transport.topology.survivors[0]  # node 0, or the first survivor
        theta0 = self.algorithm.estimate(type(first)(*(node_states[f][shown] for f in first._fields)))
        return {"model": {k: v.clone() for k, v in self.fm.spec.unflatten(theta0).items()},
                "algorithm": {"name": self.algorithm_name, "settings": dict(self.settings), "states": node_states,
                              "records": self.records.to_tensors(),
                              "node_loss": [e.as_dict() for e in self.losses]},
                "generators": {"nodes": gens},
                "artifacts": {**self.problem.artifacts, "input_size": self.problem.input_size, "hidden": self.hidden,
                              "single_bias": self.single_bias, "algorithm": self.algorithm_name,
                              "settings": dict(self.settings)}}

    def _gather(self, local: Tensor) -> Tensor:
        return self.comm.all_gather_cat(local) if self.comm.world_size > 1 else local

    def _by_node(self, rows: Tensor, live: Sequence[int], fill: float) -> Tensor:
        """``rows`` of the nodes ``live`` placed at their ids among all K, ``fill`` elsewhere."""
        out = rows.new_full((self.topology.num_nodes, *rows.shape[1:]), fill)
        out[list(live)] = rows
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        algo = state["algorithm"]
        if algo["name"] != self.algorithm_name:
            raise ValueError(f"the checkpoint is of a {algo['name']} run, not {self.algorithm_name}")
        losses = [NodeLoss.from_dict(d) for d in algo.get("node_loss", [])]
        if losses and self.comm.world_size > 1:
            raise ValueError("this run lost nodes; continue it in one process (distlstm online --resume FOLDER): "
                             "the lost workers' nodes cannot be given back to a process group")
        for event in losses:
            self.lose_nodes(event.nodes, event.step)
        nodes = self.transport.local_nodes
        kind = type(self.states[nodes[0]])
        saved = algo["states"]
        if set(saved) != set(kind._fields) or next(iter(saved.values())).shape[0] != self.topology.num_nodes:
            raise ValueError(f"the checkpoint's node states ({sorted(saved)}, "
                             f"{next(iter(saved.values())).shape[0]} nodes) do not fit this run "
                             f"({list(kind._fields)}, {self.topology.num_nodes} nodes)")
        self.states = {k: kind(*(saved[f][k].clone() for f in kind._fields)) for k in nodes}
        for k in nodes:
            self.gens[k].set_state(state["generators"]["nodes"][k].clone())
        self.records = OnlineRecords.from_tensors(self.algorithm_name, self.topology.num_nodes, algo["records"],
                                                  keep_steps=self.keep_steps, per_node=self.per_node)
        self.check_covariances(None)  # a resumed Σ must be a covariance before the first step uses it

    def run_summary(self, references: Mapping[str, OnlineRecords] | None = None) -> RunSummary:
        """The reproduction's figures of the steps run so far (``references``: :meth:`references`, if computed)."""
        rec = self.records
        refs = {name: {"final_mse": r.final_mse(), "mean_running_mse": _mean(r.running_mse())}
                for name, r in (self.references() if references is None else references).items()}
        return RunSummary(
            dataset=self.problem.dataset, algorithm=self.algorithm_name, final_mse=rec.final_mse(),
            mse_naive=refs.get("last_value", {}).get("final_mse", math.nan), running_mse_end=rec.running_mse_now,
            mean_running_mse=rec.mean_running_mse, coverage95=rec.coverage95(),
            seconds_per_step=rec.seconds_per_step, bytes_per_node_per_step=rec.bytes_per_node_per_step,
            messages_per_node_per_step=rec.messages_per_node_per_step,
            skipped_labels=rec.skipped_labels - lost_slots(self.losses, rec.steps),
            steps=rec.steps, n_theta=self.fm.numel, settings=dict(self.settings), references=refs)

    def summary(self) -> dict[str, Any]:
        references = self.references()  # replays every stream: once per summary
        out = self.run_summary(references).as_dict() | {
            "nodes": self.topology.num_nodes, "topology": self.topology_name, "hidden": self.hidden, "seed": self.seed,
            "processes": self.comm.world_size} | self._loss_summary()
        fc, art = self.problem.forecasts, self.problem.artifacts
        if fc is None:
            return out
        return out | self._data_units(references) | {
            "mse_units": f"final_mse, mse_naive, references, running_mse_end and mse.csv: scaled {fc.target} "
                         f"({art['scaling']}); "
                         f"*_data_units: squared units of {fc.target}",
            "target": fc.target, "features": fc.features, "horizon": art["horizon"],
            "missing_labels": int(torch.isnan(fc.d).sum()), "observations": len(fc), "window": art["window"],
            "scaling": art["scaling"], "warmup": art["warmup"] if art["scaling"] == "causal" else 0}

    def _loss_summary(self) -> dict[str, Any]:
        """Which nodes left at which step, the parts that went on, and the survivors' final error."""
        if not self.losses:
            return {}
        reduced = self.transport.topology
        return {"node_loss": [e.as_dict() for e in self.losses], "survivors": reduced.survivors,
                "components": reduced.components(),
                "survivors_final_mse": _none_if_nan(self.records.final_mse_of(reduced.survivors)),
                "node_loss_report": "; ".join(e.describe() for e in self.losses)}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        """``mse.csv`` (per-step node-averaged and running MSE, scaled units) and ``mse.png`` (with the references).

        Streamed from the loop's rows (read back from metrics.csv one at a time), so a
        run of 10⁶ steps writes them in flat memory; the plot keeps about 2,000 points.
        """
        name = self.algorithm_name
        stride = max(1, math.ceil(self.records.steps / 2000))
        xs: list[float] = []
        ys: list[float] = []
        tmp = folder / "mse.csv.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["step", f"{name}_mse", f"{name}_running_mse"])
            for row in rows:
                step = int(row["step"])
                if step < 1:  # the evaluation before training has no error
                    continue
                running = float(row["running_mse"])
                writer.writerow([step, _fmt(float(row["mse"])), _fmt(running)])
                if step % stride == 0 and math.isfinite(running):
                    xs.append(step)
                    ys.append(running)
        os.replace(tmp, folder / "mse.csv")
        if xs:
            plot_curves(folder / "mse.png", {name: (xs, ys)}, xlabel="time step (per node)",
                        ylabel="running MSE (averaged over nodes)",
                        title=f"{name} on {self.problem.dataset}, {self.topology.num_nodes} nodes "
                              f"({self.topology_name})",
                        hlines={f"{ref} (final MSE)": r.final_mse() for ref, r in self.references().items()}, logy=True)

    # -- figures ---------------------------------------------------------------------------------------------------

    def final_thetas(self) -> dict[int, Tensor]:
        """Every local node's point estimate θ̂."""
        return {k: self.algorithm.estimate(s) for k, s in self.states.items()}

    def references(self) -> dict[str, OnlineRecords]:
        """The reference forecasters' records over the steps run (:mod:`distlstm.online.baselines`)."""
        fc, streams = self.problem.forecasts, self.problem.streams
        k_all = self.topology.num_nodes
        if fc is not None:  # step t of node k is observation t·K + k
            last: list[list[float]] | None = [[float(fc.last_target[t * k_all + k]) for t in range(len(streams[k]))]
                                              for k in range(k_all)]
        else:
            last = univariate_last_values(streams)
        return reference_records(streams, self.records.steps, last, self._factors)

    def _data_units(self, refs: Mapping[str, OnlineRecords]) -> dict[str, float | None]:
        """The run's MSEs in the target's own units (the records' data-units sums: e² · scale² per observation)."""
        rec = self.records
        naive = refs.get("last_value")
        values = {"final_mse_data_units": rec.final_mse(data_units=True),
                  "running_mse_end_data_units": rec.running_mse_data_units,
                  "mse_naive_data_units": naive.final_mse(data_units=True) if naive else math.nan}
        return {k: _none_if_nan(v) for k, v in values.items()}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _copy(state: State) -> State:
    """A node state whose tensors an update cannot change in place (what a rolled-back step starts from)."""
    return type(state)(*(t.clone() if isinstance(t, Tensor) else t for t in state))


def write_curves(out: Path, stem: str, results: Mapping[str, OnlineRecords], title: str,
                 reference: Mapping[str, float] | None = None) -> None:
    """``{stem}.csv`` (per-step node-averaged and running MSE per algorithm) and ``{stem}.png``."""
    steps = max(r.steps for r in results.values())
    rows = []
    curves = {name: r.mse_curve() for name, r in results.items()}
    runnings = {name: r.running_mse() for name, r in results.items()}
    for t in range(steps):
        row: dict[str, Any] = {"step": t + 1}
        for name in results:
            row[f"{name}_mse"] = _fmt(curves[name][t]) if t < len(curves[name]) else ""
            row[f"{name}_running_mse"] = _fmt(runnings[name][t]) if t < len(runnings[name]) else ""
        rows.append(row)
    write_csv(out / f"{stem}.csv", rows)
    plot_curves(out / f"{stem}.png",
                {name: (list(range(1, len(r) + 1)), r) for name, r in runnings.items()},
                xlabel="time step (per node)", ylabel="running MSE (averaged over nodes)", title=title,
                hlines=reference, logy=True)


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"


def run_streams(problem: OnlineProblem, algorithm: str, topology: Topology, *, seed: int = 0,
                settings: Mapping[str, Any] | None = None, steps: int | None = None, hidden: int = 4,
                model: ModelBuilder | None = None, comm: Communicator | None = None,
                single_bias: bool = False) -> OnlineMode:
    """Run one algorithm in memory (no run folder) and return the finished mode (records, states, summary).

    ``settings`` override :data:`~distlstm.online.DEFAULT_SETTINGS`; ``steps`` stops early.
    """
    mode = OnlineMode(problem, algorithm, algorithm_settings(algorithm, settings), topology, hidden=hidden,
                      model=model, single_bias=single_bias, keep_steps=True)
    assert mode.max_steps is not None
    total = mode.max_steps if steps is None else min(steps, mode.max_steps)
    run(mode, LoopConfig(steps=total, seed=seed, progress=False, eval_every=total, checkpoint_every=total),
        comm=comm, folder=None)
    return mode


# -- the command's configuration -----------------------------------------------------------------------------------

SECTIONS: dict[str, type] = {"data": OnlineDataConfig, "online": OnlineConfig}
LOOP_DEFAULTS: dict[str, Any] = {"steps": Described(1_000_000_000, "the whole stream")}  # unless --steps says fewer


def make_online_mode(sections: Mapping[str, Any]) -> OnlineMode:
    """The mode of ``distlstm online`` from its resolved config sections."""
    data: OnlineDataConfig = sections["data"]
    cfg: OnlineConfig = sections["online"]
    loop: LoopConfig = sections["loop"]
    problem = csv_problem(data, cfg.nodes)
    topology = make_topology(cfg.topology, cfg.nodes, seed=loop.seed,
                             edges=parse_edges(cfg.edges) if cfg.edges else None)
    return OnlineMode(problem, cfg.algorithm, algorithm_settings(cfg.algorithm, cfg.settings()), topology,
                      hidden=cfg.hidden, topology_name=cfg.topology, on_node_loss=cfg.on_node_loss,
                      drops=parse_drops(cfg.drop_node, cfg.nodes), single_bias=cfg.single_bias, keep_steps=False,
                      check_every=cfg.check_every)


def load(ckpt: Mapping[str, Any], folder: Path) -> Any:
    """The run's model (node 0's estimate) and a forecaster for CSV files with the run's columns."""
    from distlstm.modes.online_predict import load_online

    return load_online(ckpt, folder)


__all__ = ["DEFAULT_SETTINGS", "LOOP_DEFAULTS", "SECTIONS", "OnlineConfig", "OnlineDataConfig", "OnlineMode",
           "OnlineProblem", "RunSummary", "csv_problem", "load", "make_online_mode", "run_streams", "write_curves"]
