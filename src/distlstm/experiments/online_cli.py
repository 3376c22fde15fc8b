"""``distlstm online``: one algorithm on a user's series (one, or several inputs and a target), over a network.

Data: ``--column`` (one series, forecast from its own past) or ``--inputs`` and
``--target`` (several input series; the target's past values are an extra feature
unless ``--no-past-target``); windows and scaling in ``data/forecast.py``. Scaling is
causal by default (each forecast uses statistics of earlier rows only). MSEs are
reported in scaled units (``final_mse``, as the reproduction) and in the target's own
units (``*_data_units``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from distlstm.data.forecast import SCALINGS, Forecasts, forecast_windows
from distlstm.data.series import EXCHANGE_RATES, series_column, split_round_robin
from distlstm.data.table import read_table
from distlstm.experiments.online_runs import DEFAULT_SETTINGS, regressor, run_one, write_curves
from distlstm.network.graphs import TOPOLOGIES, make_topology, parse_edges
from distlstm.network.torch_transport import TorchDistTransport
from distlstm.online import ALGORITHMS
from distlstm.online.loop import OnlineResult
from distlstm.runs import write_json
from distlstm.runtime.dist import init_distributed, launched_env, shutdown_distributed

SETTING_FLAGS = {  # flag → (config field, type, help)
    "lr": ("lr", float, "SGD step size μ (sgd, dsgd)"),
    "sigma2": ("sigma2", float, "measurement noise variance σ² (ekf, dekf, pf, dpf)"),
    "q": ("q", float, "process noise / particle jitter variance per step (ekf, dekf, pf, dpf)"),
    "s0": ("s0", float, "initial covariance Σ₀ = s0·I, or the initial particle spread (ekf, dekf, pf, dpf)"),
    "particles": ("num_particles", int, "particles N per node (pf, dpf)"),
    "walk_steps": ("walk_steps", int, "random-walk steps K per time step (dpf)"),
    "resampling": ("resampling", str, "systematic, residual or multinomial (pf, dpf)"),
    "ess_threshold": ("ess_threshold", float, "resample when ESS < threshold·N; 1 = every step (pf)"),
    "s0_carry": ("s0_carry", float, "initial variance of the carried state (ekf --stateful)"),
}


def add_online_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(EXCHANGE_RATES),
                   help="CSV, one row per time step, optional header; default: the shipped USD/DEM rates")
    p.add_argument("--column", default=None,
                   help="the one series to forecast from its own past (name or 0-based index) when the CSV has "
                        "several columns")
    p.add_argument("--inputs", default=None,
                   help="comma-separated input series (names or indices), e.g. 'temp,load'; needs --target")
    p.add_argument("--target", default=None,
                   help="the series to forecast; an empty cell there is a missing label (predicted, not scored, "
                        "no update)")
    p.add_argument("--horizon", type=int, default=1,
                   help="forecast the target this many rows after the window's last row (1: the next row)")
    p.add_argument("--no-past-target", action="store_true",
                   help="with --inputs: do not add the target's past values as a feature")
    p.add_argument("--algorithm", choices=list(ALGORITHMS), default="dekf", help="training algorithm")
    p.add_argument("--nodes", type=int, default=4, help="number of nodes K")
    p.add_argument("--topology", choices=TOPOLOGIES, default="ring", help="graph between the nodes")
    p.add_argument("--edges", default=None, help="edge list for --topology edges, e.g. '0-1,1-2,2-0'")
    p.add_argument("--window", type=int, default=2, help="rows of past values in each input sequence")
    p.add_argument("--scaling", choices=SCALINGS, default="causal",
                   help="causal: each forecast scales with the mean and standard deviation of earlier rows only; "
                        "standardize / minmax: fitted on the whole series, future included (the paper "
                        "reproduction's choice); none")
    p.add_argument("--warmup", type=int, default=20,
                   help="--scaling causal: the first rows only feed the scaler's statistics (no forecasts)")
    p.add_argument("--hidden", type=int, default=4, help="LSTM units n")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps per node")
    p.add_argument("--seed", type=int, default=0, help="run seed (initial θ, noise, resampling, walks)")
    p.add_argument("--joseph", action="store_true", help="Joseph-form covariance update (ekf, dekf)")
    p.add_argument("--stateful", action="store_true",
                   help="ekf only: carry the LSTM state from each window to the next and filter [carry; θ]")
    for flag, (_, kind, text) in SETTING_FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, default=None,
                       help=f"{text}; default per algorithm")
    p.add_argument("--out", default="runs/online", help="run folder to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_forecasts(args: argparse.Namespace) -> Forecasts:
    """The observations ``distlstm online`` runs on, from --data and the column flags."""
    table = read_table(args.data)
    inputs = [c.strip() for c in args.inputs.split(",") if c.strip()] if args.inputs else []
    if args.column is not None and (inputs or args.target is not None):
        raise ValueError("--column picks one series; with --inputs/--target leave it out")
    if inputs and args.target is None:
        raise ValueError("--inputs needs --target (the series to forecast)")
    target = args.target if args.target is not None else series_column(table, args.column)
    return forecast_windows(table, target, inputs, window=args.window, horizon=args.horizon, scaling=args.scaling,
                            warmup=args.warmup, past_target=not args.no_past_target)


def run_series(args: argparse.Namespace) -> dict[str, Any]:
    data = load_forecasts(args)
    streams = split_round_robin(data.observations, args.nodes)
    edges = parse_edges(args.edges) if args.edges else None
    topology = make_topology(args.topology, args.nodes, seed=args.seed, edges=edges)
    settings = {field: getattr(args, flag) for flag, (field, _, _) in SETTING_FLAGS.items()
                if getattr(args, flag) is not None}
    known = set(DEFAULT_SETTINGS[args.algorithm]) | ({"resampling", "ess_threshold"} if "pf" in args.algorithm
                                                      else set())
    if args.joseph:  # an error below for the algorithms without a covariance, as every other flag
        settings["joseph"] = True
    if args.algorithm in ("ekf", "dekf"):
        known.add("joseph")
    if args.stateful:
        if args.algorithm != "ekf":
            raise ValueError(f"--stateful applies to ekf only, not {args.algorithm}")
        settings["stateful"] = True
        known |= {"stateful", "s0_carry"}
    unused = sorted(set(settings) - known)
    if unused:
        raise ValueError(f"--{unused[0].replace('num_particles', 'particles').replace('_', '-')} does not apply "
                         f"to {args.algorithm}")
    fm, theta0 = regressor(len(data.features), args.hidden, args.seed)
    env = launched_env()
    transport = None
    if env is not None and env.world_size > 1:  # under torchrun: nodes spread over the processes
        init_distributed()
        transport = TorchDistTransport(topology, env.rank, env.world_size)
    main_process = env is None or env.is_main
    out = Path(args.out)
    result, summary = run_one(args.algorithm, streams, fm, theta0, topology, seed=args.seed, settings=settings,
                              dataset=Path(args.data).name, mse_naive=_naive(data, args.nodes, args.steps, scaled=True),
                              steps=args.steps, progress=not args.no_progress and main_process, transport=transport)
    out_data = summary.as_dict() | _data_units(result, data, args.nodes, args.steps) | {
        "mse_units": f"final_mse, mse_naive, running_mse_end and mse.csv: scaled {data.target} ({args.scaling}); "
                     f"*_data_units: squared units of {data.target}",
        "target": data.target, "features": data.features, "horizon": args.horizon,
        "missing_labels": int(torch.isnan(data.d).sum()), "observations": len(data),
        "nodes": args.nodes, "topology": args.topology, "window": args.window, "scaling": args.scaling,
        "warmup": args.warmup if args.scaling == "causal" else 0, "hidden": args.hidden, "seed": args.seed,
        "processes": 1 if env is None else env.world_size}
    if transport is not None:
        shutdown_distributed()
    if not main_process:
        return out_data
    out.mkdir(parents=True, exist_ok=True)
    write_curves(out, "mse", {args.algorithm: result}, f"{args.algorithm} on {Path(args.data).name}, "
                 f"{args.nodes} nodes ({args.topology})", reference={"last-value forecast": summary.mse_naive})
    write_json(out / "summary.json", out_data)
    return out_data


def _used(data: Forecasts, nodes: int, steps: int | None) -> int:
    """Observations the run consumes: the round-robin split drops the remainder of len / K; --steps stops early."""
    per_node = len(data) // nodes if steps is None else min(steps, len(data) // nodes)
    return per_node * nodes


def _naive(data: Forecasts, nodes: int, steps: int | None, scaled: bool) -> float:
    """MSE of the last observed target value as the forecast (the random-walk baseline)."""
    n = _used(data, nodes, steps)
    err = (data.d[:n] - data.last_target[:n]) * (1.0 if scaled else data.scale[:n])
    err = err[torch.isfinite(err)]
    return float((err * err).mean()) if len(err) else math.nan


def _data_units(result: OnlineResult, data: Forecasts, nodes: int, steps: int | None) -> dict[str, float | None]:
    """The run's MSEs in the target's own units: step t of node k is observation t·K + k."""
    factor = (data.scale**2).tolist()
    errors = [[e * factor[t * nodes + k] for k, e in enumerate(row)] for t, row in enumerate(result.sq_errors)]
    converted = replace(result, sq_errors=errors)
    values = {"final_mse_data_units": converted.final_mse(), "running_mse_end_data_units": converted.running_mse()[-1],
              "mse_naive_data_units": _naive(data, nodes, steps, scaled=False)}
    return {k: None if math.isnan(v) else v for k, v in values.items()}
