"""``distlstm online``: one algorithm on a user's univariate series, over a network of nodes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distlstm.data.series import EXCHANGE_RATES, Scaler, load_series, naive_mse, split_round_robin, windows
from distlstm.experiments.online_runs import DEFAULT_SETTINGS, regressor, run_one, write_curves
from distlstm.network.graphs import TOPOLOGIES, make_topology, parse_edges
from distlstm.network.torch_transport import TorchDistTransport
from distlstm.online import ALGORITHMS
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
                   help="CSV with one value per row (optional header); default: the shipped USD/DEM rates")
    p.add_argument("--column", default=None, help="column name or 0-based index when the CSV has several")
    p.add_argument("--algorithm", choices=list(ALGORITHMS), default="dekf", help="training algorithm")
    p.add_argument("--nodes", type=int, default=4, help="number of nodes K")
    p.add_argument("--topology", choices=TOPOLOGIES, default="ring", help="graph between the nodes")
    p.add_argument("--edges", default=None, help="edge list for --topology edges, e.g. '0-1,1-2,2-0'")
    p.add_argument("--window", type=int, default=2, help="predict the next value from this many previous ones")
    p.add_argument("--scaling", choices=["standardize", "minmax", "none"], default="standardize",
                   help="scaling fitted on the whole series (MSEs are reported in scaled units)")
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


def run_series(args: argparse.Namespace) -> dict[str, Any]:
    column: str | int | None = args.column
    if isinstance(column, str) and column.isdigit():
        column = int(column)
    series = load_series(args.data, column)
    z = Scaler.fit(series, args.scaling)(series)
    streams = split_round_robin(windows(z, args.window), args.nodes)
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
    fm, theta0 = regressor(1, args.hidden, args.seed)
    env = launched_env()
    transport = None
    if env is not None and env.world_size > 1:  # under torchrun: nodes spread over the processes
        init_distributed()
        transport = TorchDistTransport(topology, env.rank, env.world_size)
    main_process = env is None or env.is_main
    out = Path(args.out)
    result, summary = run_one(args.algorithm, streams, fm, theta0, topology, seed=args.seed, settings=settings,
                              dataset=Path(args.data).name, mse_naive=naive_mse(streams), steps=args.steps,
                              progress=not args.no_progress and main_process, transport=transport)
    data = summary.as_dict() | {"nodes": args.nodes, "topology": args.topology, "window": args.window,
                                "scaling": args.scaling, "hidden": args.hidden, "seed": args.seed,
                                "processes": 1 if env is None else env.world_size}
    if transport is not None:
        shutdown_distributed()
    if not main_process:
        return data
    out.mkdir(parents=True, exist_ok=True)
    write_curves(out, "mse", {args.algorithm: result}, f"{args.algorithm} on {Path(args.data).name}, "
                 f"{args.nodes} nodes ({args.topology})", reference={"last-value forecast": summary.mse_naive})
    write_json(out / "summary.json", data)
    return data
