"""The ``distlstm`` command line.

Every command explains itself with ``--help``; only commands that work are listed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import torch

from distlstm import __version__
from distlstm._argtypes import nonnegative_int, positive_int
from distlstm._flags import cli_spelling
from distlstm._output import print_line
from distlstm.cli_runs import RunCommand, add_run_command
from distlstm.experiments.charlm_demo import DemoConfig
from distlstm.modes import es as es_mode
from distlstm.runs.loop import RunResult


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, threads and the distributed backends this machine can use."""
    import networkx
    import numpy

    from distlstm.models import peephole_kernel
    from distlstm.ops import downdate_kernel
    from distlstm.runtime.dist import available_backends

    backends = available_backends()
    info = {
        "distlstm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "networkx": networkx.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count(),
        "distributed_available": bool(backends),
        "distributed_backends": [name for name, ok in backends.items() if ok],
        "default_backend": "nccl" if torch.cuda.is_available() and backends.get("nccl") else "gloo",
        "peephole_loops": peephole_kernel.status(),  # small float64 peephole layers: C++ or ATen loops
        "kalman_downdate": downdate_kernel.status(),  # the EKF/DEKF covariance downdate: one C++ pass or ATen's
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and write the Markdown report."""
    from distlstm.bench.report import run

    out = None if args.output == "-" else Path(args.output)
    text = run(out, quick=args.quick, compile=args.compile, repeats=args.repeats,
               notes_file=Path(args.notes) if args.notes else None,
               sections=tuple(part.strip() for part in args.sections.split(",") if part.strip()),
               progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True), update=args.update)
    if out is None:
        print(text)
    else:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the character LSTM demo and write its run folder."""
    from distlstm.experiments.charlm_demo import run_demo
    from distlstm.runs.loop import RunInterrupted, print_interrupted

    steps = args.steps or (300 if args.quick else DemoConfig.steps)
    cfg = DemoConfig(text=args.text, cell=args.cell, cell_opt=tuple(args.cell_opt), hidden=args.hidden, steps=steps,
                     eval_every=max(1, min(DemoConfig.eval_every, steps // 4)), seed=args.seed)
    try:
        summary = run_demo(cfg, Path(args.out), show_progress=not args.no_progress, overwrite=args.overwrite)
    except RunInterrupted as err:
        return print_interrupted(err)
    print(f"validation {summary['val_nats_per_char']:.3f} nats/char "
          f"(unigram entropy {summary['unigram_entropy']:.3f}, bigram {summary['bigram_entropy']:.3f}) "
          f"after {summary['steps']} steps in {summary['seconds']:.0f} s; report: {Path(args.out) / 'report.md'}")
    return 0


def _online_report(result: RunResult, folder: Path) -> str:
    """The line ``distlstm online`` prints at the end: MSEs in the target's units and in scaled units."""
    s = result.summary
    return (f"{s['algorithm']}: final MSE {_g(s.get('final_mse_data_units'))} in {s['target']}'s units squared "
            f"(last-value forecast on the same last 20% of steps {_g(s.get('mse_naive_data_units'))}; scaled: "
            f"{_g(s['final_mse'])} vs "
            f"{_g(s['mse_naive'])}), {s['skipped_labels']} missing labels, {s['seconds_per_step'] * 1e3:.1f} ms/step, "
            f"{s['bytes_per_node_per_step']:,.0f} bytes/node/step, {s['processes']} process(es)"
            + (f"\n{s['node_loss_report']}; survivors' final MSE (scaled) {_g(s['survivors_final_mse'])}"
               if "node_loss" in s else ""))


def _online_command() -> RunCommand:
    from distlstm.modes.online import LOOP_DEFAULTS, SECTIONS, make_online_mode

    return RunCommand(
        name="online", help="online training of an LSTM regressor on a CSV series over a network",
        description="Every node receives its own share of the windows (round-robin) and, at each step, predicts the "
                    "target from the previous --window rows (of the series itself, or of --inputs plus the target's "
                    "past), sees the truth (an empty target cell: no label, no update), then updates with the chosen "
                    "algorithm (sgd, ekf, pf: no communication; dsgd, dekf, dpf: with graph neighbours). Values are "
                    "scaled causally by default (statistics of earlier rows only). One run-loop step is one time step "
                    "of every node; --steps stops early (default: the whole stream).\n\n"
                    "Writes into --out: summary.json (MSEs in scaled units and in the target's own units), mse.csv "
                    "(scaled units) and mse.png, metrics.csv / metrics.png (per step: mse, running_mse, bytes and "
                    "messages per node; every --eval-every steps: final_mse, coverage95), config.json and "
                    "checkpoint.pt (every node's filter state: continue with --resume FOLDER; forecast another CSV "
                    "with distlstm predict --run FOLDER --data new.csv). Under torchrun the nodes are spread over "
                    "the processes.\n\nExample: distlstm online --data prices.csv --inputs temp,load --target price "
                    "--window 6 --out runs/p",
        sections=SECTIONS, make_mode=make_online_mode, mode_name=lambda _sections: "online",
        default_out="runs/online", loop_defaults=LOOP_DEFAULTS,
        titles={"data": "data (the series and its windows)", "online": "algorithm, network and model"},
        report=_online_report)


def cmd_predict(args: argparse.Namespace) -> int:
    """Forecast a CSV with a run's model; print a table or write a CSV."""
    from distlstm.modes import load_run
    from distlstm.runs.files import write_csv

    loaded = load_run(args.run)
    if loaded.forecaster is None:
        raise ValueError(f"{args.run} is a {loaded.command!r} run ({loaded.mode} mode), whose model makes no forecasts "
                         "of a CSV; predict works for runs of distlstm online and distlstm train --task csv")
    rows = loaded.forecaster(Path(args.data))
    if not rows:
        raise ValueError(f"{args.data} gives no window to forecast (too few rows for the run's window and warm-up)")
    if args.out:
        write_csv(Path(args.out), [{k: "" if v is None else v for k, v in r.items()} for r in rows])
        print(f"{len(rows)} forecasts of {args.data} with the model of {args.run} (step {loaded.step}); "
              f"wrote {args.out}")
        return 0
    print(f"{'line':>6} {'target':>12} {'prediction':>12} {'lower 95%':>12} {'upper 95%':>12}")
    shown = rows if len(rows) <= args.rows else rows[-args.rows:]
    for r in shown:
        print(f"{r['row']:>6} {_g(r['target']):>12} {_g(r['prediction']):>12} {_g(r['lower']):>12} "
              f"{_g(r['upper']):>12}")
    if len(shown) < len(rows):
        print(f"(the last {len(shown)} of {len(rows)} forecasts; --out FILE writes them all)")
    return 0


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5g}"


def _es_report(result: RunResult, folder: Path) -> str:
    s = result.summary
    return (f"{s['method']} {s['model']}: validation {s['val_nats_per_char']:.3f} nats/char after "
            f"{s['generations']} generations ({s['evaluations']:,} evaluations, {s['seconds']:.0f} s, "
            f"{s['workers']} worker(s))")


ES_COMMAND = RunCommand(
    name="es", help="train a character model with evolution strategies (alone or under torchrun)",
    description="Evolution strategies on a character RNN/LSTM: every generation (one --steps step), each worker "
                "evaluates its share of the population on text windows that every member shares, only scalar "
                "fitnesses are exchanged (all_gather), and every worker applies the same update. Federated ES "
                "(--data-split iid or by-play): each client keeps its own shard of the text (by-play: whole plays), "
                "scores every member on it and sends only its fitnesses; the update uses their sum. Writes a run "
                "folder (config.json, metrics.csv, metrics.png, summary.json, checkpoint.pt); --resume FOLDER "
                "continues a run, distlstm sample --run FOLDER generates text from it.\n\n"
                "example: distlstm es --cell lstm --population 128 --seconds 300 --out runs/es-lstm\n"
                "         distlstm es --data-split by-play --clients 7 --windows 4 --out runs/es-by-play",
    sections={"es": es_mode.ESRunConfig}, make_mode=lambda s: es_mode.ESMode(s["es"]), mode_name=lambda s: "es",
    default_out="runs/es", loop_defaults=es_mode.LOOP_DEFAULTS,
    titles={"es": "evolution strategies (text, model, strategy)"}, report=_es_report)


def cmd_sample(args: argparse.Namespace) -> int:
    """Print text generated by the language model of a run."""
    from distlstm.experiments.sampling import sample_text

    if args.temperature < 0:
        raise ValueError(f"--temperature must be positive (or 0 for greedy decoding), got {args.temperature}")
    temperature = 0.0 if args.greedy else args.temperature
    print(sample_text(Path(args.run), args.prompt, args.length, temperature, args.seed, args.unknown))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run a paper reproduction and write its report."""
    if args.seeds is not None and args.paper not in ("ergen-kozat", "matrix-batch"):
        raise ValueError(f"--seeds applies to ergen-kozat and matrix-batch, not {args.paper}")
    if args.jobs is not None and args.paper not in ("ergen-kozat", "calibration", "matrix-batch"):
        raise ValueError(f"--jobs applies to ergen-kozat, calibration and matrix-batch, not {args.paper}")
    serial_jobs = 1 if args.jobs is None else args.jobs  # ergen-kozat's and calibration's default
    if (args.budget or args.federated) and args.paper != "es-shakespeare":
        raise ValueError(f"--budget and --federated are parts of es-shakespeare, not of {args.paper}")
    if args.paper == "es-shakespeare" and args.budget:
        from distlstm.experiments import es_budget

        rows = es_budget.run(es_budget.ESBudgetConfig.preset(args.quick, seed=args.seed), Path(args.out),
                             show_progress=not args.no_progress)
        print(f"wrote {Path(args.out) / 'report.md'}: tuned ES {rows[-1]['val_nats_per_char']:.3f} nats/char after "
              f"{rows[-1]['seconds']:.0f} s")
        return 0
    if args.paper == "es-shakespeare" and args.federated:
        from distlstm.experiments import es_federated

        rows = es_federated.run(es_federated.ESFederatedConfig.preset(args.quick, seed=args.seed), Path(args.out),
                                show_progress=not args.no_progress)
        print(f"wrote {Path(args.out) / 'federated.md'}: validation nats/char on the held-out play " + ", ".join(
            f"{r['data_split']} {r['val_nats_per_char']:.3f}" for r in rows))
        return 0
    if args.paper == "es-shakespeare":
        from distlstm.experiments import es_shakespeare

        rows = es_shakespeare.run(es_shakespeare.ESShakespeareConfig.preset(args.quick, seed=args.seed),
                                  Path(args.out), show_progress=not args.no_progress)
        best = min((r for r in rows if r["method"] != "backprop"), key=lambda r: r["val_nats_per_char"])
        print(f"wrote {Path(args.out) / 'report.md'}: best ES {best['model']} {best['val_nats_per_char']:.3f} "
              f"nats/char (source's plateau 3.35)")
        return 0
    if args.paper == "matrix-batch":
        from distlstm.experiments import matrix_batch
        from distlstm.experiments.parallel import resolve_jobs

        mb = matrix_batch.MatrixBatchConfig.preset(args.quick, seed=args.seed, seeds=args.seeds)
        if args.jobs is not None:
            mb = dataclasses.replace(mb, jobs=resolve_jobs(args.jobs))
        rows = matrix_batch.run(mb, Path(args.out), show_progress=not args.no_progress)
        print(f"wrote {Path(args.out) / 'report.md'}: " + "; ".join(
            f"{r['optimizer']} α={r['alpha']:g} {r['successes']}/{r['runs']}" for r in rows))
        return 0
    if args.paper == "flstm-glstm":
        from distlstm.experiments import flstm_glstm

        summary = flstm_glstm.run(flstm_glstm.FLSTMGLSTMConfig.preset(args.quick, seed=args.seed), Path(args.out),
                                  show_progress=not args.no_progress)
        print(f"wrote {Path(args.out) / 'report.md'}: validation perplexity " + ", ".join(
            f"{r['model']} {r['val_perplexity']:.1f}" for r in summary if r["workers"] == 1))
        return 0
    if args.paper == "ergen-kozat":
        from distlstm.experiments import ergen_kozat

        cfg = ergen_kozat.ErgenKozatConfig.preset(args.quick, seed=args.seed, seeds=args.seeds)
        findings = ergen_kozat.run(cfg, Path(args.out), show_progress=not args.no_progress, jobs=serial_jobs)
        pairs = findings["sentence_pairs"]
        print(f"wrote {Path(args.out) / 'report.md'}: sentence ordering over {cfg.seeds} seeds: "
              f"{len(pairs['agree'])} pairs agree with the paper, {len(pairs['disagree'])} disagree, "
              f"{len(pairs['unresolved'])} unresolved; DPF fastest on exchange rates (separated 95% intervals): "
              f"{findings['exchange_dpf_fastest_separated']}")
        return 0
    if args.paper == "calibration":
        from distlstm.experiments import calibration

        rows = calibration.run(calibration.CalibrationConfig.preset(args.quick, seed=args.seed), Path(args.out),
                               show_progress=not args.no_progress, jobs=serial_jobs)
        inside = {v: sum(calibration.in_goal(r["coverage95"]) for r in rows if r["variant"] == v)
                  for v in calibration.VARIANTS}
        print(f"wrote {Path(args.out) / 'report.md'}: runs with coverage in 93–97%: "
              + ", ".join(f"{v} {n}" for v, n in inside.items()))
        return 0
    raise ValueError(f"unknown reproduction {args.paper!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distlstm",
        description="Train LSTM networks across many workers. Run 'distlstm COMMAND --help' for each command.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"distlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="versions, threads and available distributed backends",
                       description=cmd_info.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="time cells and batched θ side by side; write BENCHMARKS.md",
                       description="Time forward+backward of every cell against torch.nn.LSTM, and a batched "
                                   "forward of many parameter vectors against a Python loop, side by side in one "
                                   "process; write the ratios as Markdown.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="BENCHMARKS.md", help="Markdown file to write, or - for standard output")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds, for smoke tests)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the cell loop (adds about a minute of compilation per size)")
    p.add_argument("--repeats", type=positive_int, default=None, help="timed rounds per candidate "
                   "(default 10, or 3 with --quick)")
    p.add_argument("--sections", default="cells,batched,online,es,bptt,fullbatch,lm,longrun",
                   help="comma-separated sections to run: cells, batched, online, es, bptt, fullbatch (one "
                        "full-batch loss + gradient of the matrix-batch network), lm (word-LM training "
                        "words/s: LSTMP, F-LSTM, G-LSTM), longrun (memory over 10^5 online steps, checkpoint size, "
                        "write time and overhead per mode), and evotorch (needs the "
                        "evotorch package: `make bench-evotorch`)")
    p.add_argument("--notes", default="docs/benchmark-notes.md",
                   help="Markdown appended to the report (analysis of the numbers); skipped if missing")
    p.add_argument("--update", action="store_true",
                   help="replace only the sections run in the existing --output file and keep the others (the "
                        "header names the refreshed sections), e.g. --sections longrun --update")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train a character LSTM on Shakespeare (the README's main job)",
                       description="Train a character-level language model on the shipped Shakespeare "
                                   "tragedies with backprop — distlstm train --task char-lm with the demo's "
                                   "settings (Adam, 32 stateful streams of 64 characters, a 32-wide embedding) — "
                                   "and write a train run folder (config.json, metrics.csv, metrics.png, "
                                   "summary.json, checkpoint.pt; continue it with distlstm train --resume FOLDER) "
                                   "plus loss.png with the unigram and bigram entropies, sample.txt and report.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder to write")
    p.add_argument("--text", default=None, help="train on this UTF-8 text file instead of the tragedies")
    p.add_argument("--cell", default="lstm", help="cell name (lstm, peephole, sharpened, rnn, ...)")
    p.add_argument("--cell-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="cell option, repeatable: rank=32 (flstm), groups=4 (glstm), proj_size=64 (lstmp), "
                        "alpha=3.75 (gate sharpness), forget_gate=0 (peephole)")
    p.add_argument("--hidden", type=positive_int, default=DemoConfig.hidden, help="hidden units")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (a demo run of before)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default 3000, 300 --quick)")
    p.add_argument("--quick", action="store_true", help="a few seconds of training")
    p.add_argument("--seed", type=int, default=0, help="run seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    add_run_command(sub, _online_command())

    p = sub.add_parser("predict", help="forecast a CSV with the model of a run (online, train --task csv)",
                       description="Load the newest checkpoint of --run and forecast every window of --data, a CSV "
                                   "with the run's columns (scaled as the run scaled its own file: causal scaling "
                                   "with the new file's earlier rows, a fitted scaling with the run's maps). Each "
                                   "row: the label's line, the target, the prediction and a 95% interval where the "
                                   "algorithm has a predictive variance (EKF/DEKF, PF/DPF), in the target's units.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, metavar="FOLDER", default=argparse.SUPPRESS,
                   help="the run folder (holding checkpoint.pt)")
    p.add_argument("--data", required=True, metavar="CSV", default=argparse.SUPPRESS,
                   help="CSV to forecast, with the columns the run was trained on")
    p.add_argument("--out", default=None, help="write every forecast to this CSV (row,target,prediction,lower,upper) "
                   "instead of printing a table")
    p.add_argument("--rows", type=positive_int, default=20, help="forecasts shown without --out (the last ones)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("reproduce", help="reproduce a paper's experiments and write a report",
                       description="Reproductions: ergen-kozat (online distributed LSTM training: SGD, EKF, PF, "
                                   "diffusion SGD, DEKF, DPF on exchange rates and sentence valence, with the DPF "
                                   "N/K sweep); es-shakespeare (evolution strategies for a character RNN and LSTM "
                                   "against backprop on the same budget); matrix-batch (full-batch L-BFGS and CG "
                                   "against momentum SGD on the multiplication problem, α = 3.75 vs 1, "
                                   "matrix-batched vs looped, 1 vs 2 workers); flstm-glstm (Kuchaiev & Ginsburg's "
                                   "word LM with LSTMP, F-LSTM, G-2/4/8 and G4-G8 layers on Shakespeare, equal "
                                   "training time, 1 and 2 workers; about 25 minutes, --quick about 3); "
                                   "calibration (coverage of the 95% intervals of EKF, DEKF, PF and DPF with fixed "
                                   "σ², adaptive σ² and calibrated intervals on exchange rates, sentences and a "
                                   "synthetic nonlinear series, with Wilson confidence intervals). Writes "
                                   "report.md, summary.json, CSVs and PNGs into --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paper", choices=["ergen-kozat", "es-shakespeare", "matrix-batch", "flstm-glstm", "calibration"],
                   help="which reproduction")
    p.add_argument("--quick", action="store_true", help="small preset (under 2 minutes)")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--budget", action="store_true",
                      help="es-shakespeare only: the 30-minute version instead: a ladder of 240 s ES runs, each "
                           "adding one change (shared noise table, compiled forward, step-size schedule), then the "
                           "tuned settings for 1800 s (about 50 minutes in all); writes report.md")
    part.add_argument("--federated", action="store_true",
                      help="es-shakespeare only: federated ES instead: shared windows against 7 clients holding "
                           "IID shards and 7 holding one play each (non-IID), validated on the held-out last play "
                           "(about 30 minutes); writes federated.md")
    p.add_argument("--out", default="runs/reproduce", help="run folder to write")
    p.add_argument("--seed", type=int, default=0, help="run seed")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="ergen-kozat: evaluation seeds per configuration, reported as mean ± 95%% CI (default 5; "
                        "--quick 2). matrix-batch: runs per optimizer at α 3.75 (default 3; a third as many, at "
                        "least 2, at α 1; every run has up to 450 s of training time, so 15 seeds are 60 runs)")
    p.add_argument("--jobs", type=nonnegative_int, default=None,
                   help="ergen-kozat and calibration: run the independent runs on this many local processes "
                        "(default 1; 0: one per CPU core), each with cores / jobs torch threads; the figures are "
                        "those of 1 (the serial path; up to the last digits where torch's thread count changes the "
                        "order of sums), only the timings differ. The full ergen-kozat run takes more than 1.5 hours "
                        "with 1 job; with N free cores, roughly that / N plus the longest run. matrix-batch: runs "
                        "at a time, one thread each (default 2; 0: one per CPU core); every run has its own "
                        "training-time budget, so give it cores that are otherwise idle")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)

    add_run_command(sub, ES_COMMAND)

    from distlstm.cli_train import TRAIN

    add_run_command(sub, TRAIN)

    p = sub.add_parser("sample", help="generate text from the language model of a run",
                       description="Print the prompt followed by generated characters (char-lm) or words "
                                   "(word-lm), each drawn from the model's softmax at --temperature, or the most "
                                   "probable one with --greedy (--temperature 0). Example: distlstm sample --run "
                                   "runs/train --prompt 'ROMEO.' --length 200",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", "--checkpoint", dest="run", required=True, metavar="FOLDER",
                   help="run folder of distlstm train (--task char-lm or word-lm), distlstm es or a reproduction's "
                        "language-model run (or one checkpoint file in it); its newest readable checkpoint is used")
    p.add_argument("--prompt", default=None, help="text to start from (characters or words of the training "
                   "text; default: 'ROMEO.' and a line break when the model knows those symbols, else a line break "
                   "or the model's most frequent word)")
    p.add_argument("--length", type=positive_int, default=300, help="characters or words to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (> 0; 0 decodes greedily)")
    p.add_argument("--greedy", action="store_true", help="always take the most probable next symbol "
                   "(deterministic; same as --temperature 0)")
    p.add_argument("--unknown", choices=["error", "replace"], default="error",
                   help="prompt symbols outside the vocabulary: stop with an error, or replace them with the "
                        "unknown symbol (a space for characters, <unk> for words)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=cmd_sample)
    return parser


@contextlib.contextmanager
def _plain_warnings(prog: str) -> Iterator[None]:
    """distlstm's own warnings as one line for the user ("distlstm es: warning: …"), not Python's
    file:line report with the source line; other packages' warnings keep Python's format."""
    package = str(Path(__file__).parent)
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if filename.startswith(package):
            print_line(f"{prog}: warning: {message}", file)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: Sequence[str] | None = None) -> int:
    # ATen's notice on every projected (LSTMP, F/G-LSTM word-model) run; nn.LSTM gives it too, and it is no fault.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    args = build_parser().parse_args(argv)
    try:
        with cli_spelling(), _plain_warnings(f"distlstm {args.command}"):  # messages name --flags, not arguments
            return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError, ImportError) as err:
        print_line(f"distlstm {args.command}: error: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
