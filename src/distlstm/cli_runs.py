"""Commands that start a run: flags from the config sections, --config / --resume / --overwrite, the loop.

A :class:`RunCommand` names its config sections (the loop's section is added to every
command); :func:`add_run_command` declares their flags, and :func:`run_command` resolves
the configuration (defaults < the command's defaults < ``--config FILE`` or the resumed
run's ``config.json`` < the flags given), builds the mode, and runs the loop inside the
process group that ``torchrun`` describes (a local one when run alone).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distlstm._argtypes import positive_float
from distlstm._output import print_line
from distlstm.runs.checkpoint import CHECKPOINT, PREVIOUS
from distlstm.runs.config import (
    LoopConfig,
    add_section_arguments,
    config_document,
    file_source_note,
    given_values,
    read_config_file,
    resolve_sections,
)
from distlstm.runs.folder import started_by_this_job, stored_config
from distlstm.runs.loop import PeerLost, RunInterrupted, RunResult, print_interrupted, resolve_device, run
from distlstm.runs.mode import Mode
from distlstm.runtime.comm import Communicator, open_comm
from distlstm.runtime.dist import restart_count, restarts_left


@dataclass(frozen=True)
class RunCommand:
    """A ``distlstm`` command that runs a mode in the run loop."""

    name: str  # the command: online, es, train
    help: str
    description: str
    sections: Mapping[str, type]  # section name → config dataclass (the loop's is added)
    make_mode: Callable[[Mapping[str, Any]], Mode]  # resolved sections → the mode
    mode_name: Callable[[Mapping[str, Any]], str]  # resolved sections → "online", "es", "ddp", "fullbatch"
    default_out: str
    loop_defaults: Mapping[str, Any] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)  # section → heading in --help
    report: Callable[[RunResult, Path], str] | None = None  # the line printed at the end (rank 0)

    def all_sections(self) -> dict[str, type]:
        return {**self.sections, "loop": LoopConfig}


def add_run_command(sub: Any, spec: RunCommand) -> argparse.ArgumentParser:
    """Add ``spec`` as a subcommand: one flag per config field, and the run-folder flags."""
    p = sub.add_parser(spec.name, help=spec.help, description=spec.description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, cls in spec.all_sections().items():
        group = p.add_argument_group(spec.titles.get(name, "run loop" if name == "loop" else name))
        add_section_arguments(group, name, cls, spec.loop_defaults if name == "loop" else None)
    g = p.add_argument_group("run folder")
    g.add_argument("--out", default=None, help=f"folder of a new run (default: {spec.default_out}); it must be empty "
                   "or absent, unless --overwrite. Under torchrun --max-restarts, restarted workers continue the "
                   "run this job started in it from its last checkpoint (docs/multi-host.md)")
    g.add_argument("--resume", metavar="FOLDER", default=None,
                   help="continue the run in FOLDER with its stored configuration; flags given may change only "
                        "the budget and reporting (--steps and --seconds are totals: give more than the run has "
                        "done; --stop-at, --eval-every, --checkpoint-every, --no-progress, --tensorboard, "
                        "--device)")
    g.add_argument("--overwrite", action="store_true", help="start a new run in --out even if it holds a run "
                   "(its files are deleted)")
    g.add_argument("--config", metavar="FILE", default=None,
                   help="read settings from a JSON file shaped like a run's config.json (flags given override it)")
    g.add_argument("--collective-timeout", type=positive_float, default=120.0, metavar="SECONDS",
                   help="under torchrun: a worker that waits this long for a peer ends the run with an error "
                        "instead of hanging")
    p.set_defaults(func=lambda args: run_command(spec, args))
    return p


def resolve_command(spec: RunCommand, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Path,
                                                                          bool]:
    """(sections, config document, folder, resume) from the parsed flags."""
    if args.resume is not None and (args.out is not None or args.config is not None or args.overwrite):
        raise ValueError("--resume FOLDER continues a run with its own configuration: leave out --out, --config "
                         "and --overwrite")
    stored: dict[str, Any] = {}
    if args.resume is not None:
        stored = stored_config(Path(args.resume))
        if stored.get("command") != spec.name:
            raise ValueError(f"{args.resume} is a {stored.get('command')!r} run; resume it with distlstm "
                             f"{stored.get('command')} --resume {args.resume}")
        where = f"{args.resume}/config.json"
    elif args.config is not None:
        stored = read_config_file(args.config)
        if stored.get("command", spec.name) != spec.name:
            raise ValueError(f"{args.config} configures a {stored['command']!r} run, not {spec.name!r}")
        where = args.config
    else:
        where = "config"
    sections = resolve_sections(spec.all_sections(), args, mode_defaults={"loop": spec.loop_defaults},
                                stored=stored, where=where)
    doc = config_document(spec.name, spec.mode_name(sections), sections)
    folder = Path(args.resume or args.out or spec.default_out)
    return sections, doc, folder, args.resume is not None


def _config_file_note(spec: RunCommand, args: argparse.Namespace, message: str) -> str | None:
    """Where a setting an error names came from when ``--config FILE`` (not a flag) gave it (see file_source_note)."""
    if args.config is None:
        return None
    stored = read_config_file(args.config)
    for name in spec.all_sections():
        given = given_values(args, name)
        from_file = {k: v for k, v in stored.get(name, {}).items() if k not in given}
        note = file_source_note(message, name, from_file, args.config)
        if note is not None:
            return note
    return None


def elastic_restart(spec: RunCommand, comm: Communicator, folder: Path, resume: bool,
                    overwrite: bool) -> tuple[bool, bool]:
    """(resume, overwrite) for a worker that ``torchrun --max-restarts`` started again: continue the job's run.

    torchrun restarts every worker with the first attempt's command line. When ``folder``
    holds a run this torchrun job started (:func:`started_by_this_job`), the workers
    resume it from its last checkpoint, or start it over if it died before writing one;
    any other folder keeps the usual rules (a new run refuses a folder that holds one).
    Rank 0, the one worker sure to see the folder, decides and every worker follows,
    so no worker starts anew while the others resume.
    """
    if restart_count() == 0 or resume:
        return resume, overwrite
    decision = 0  # the usual rules
    if comm.is_main and started_by_this_job(folder):
        decision = 1 if (folder / CHECKPOINT).is_file() or (folder / PREVIOUS).is_file() else 2
        print(f"distlstm {spec.name}: torchrun restarted the workers (restart {restart_count()}); "
              + (f"continuing {folder} from its last checkpoint" if decision == 1 else
                 f"starting {folder} over (it had no checkpoint yet)"), file=sys.stderr)
    decision = int(comm.broadcast_(torch.tensor([decision]))[0])
    return {0: (False, overwrite), 1: (True, False), 2: (False, True)}[decision]


def run_command(spec: RunCommand, args: argparse.Namespace) -> int:
    sections, doc, folder, resume = resolve_command(spec, args)
    try:
        mode = spec.make_mode(sections)
    except (ValueError, TypeError) as err:
        note = _config_file_note(spec, args, str(err))
        if note is None:
            raise
        raise type(err)(f"{err}; {note}") from None
    device = resolve_device(sections["loop"].device, mode)  # before any process group: the backend follows it
    try:
        return _run_in_group(spec, args, mode, sections, doc, folder, resume, device)
    except PeerLost as err:  # every survivor says so once, with its rank; the group is left without a barrier
        left = restarts_left()  # exit non-zero either way: torchrun restarts the group only after a failure
        restarting = f"; under torchrun --max-restarts ({left} restart(s) left) the workers are restarted and " \
            "continue from it by themselves" if left else ""
        print_line(f"distlstm {spec.name}: error: {err}{restarting}")
        return 1


def _run_in_group(spec: RunCommand, args: argparse.Namespace, mode: Mode, sections: Mapping[str, Any],
                  doc: dict[str, Any], folder: Path, resume: bool, device: torch.device) -> int:
    with open_comm(timeout_s=args.collective_timeout, device=device) as comm:
        resume, overwrite = elastic_restart(spec, comm, folder, resume, args.overwrite)
        try:
            result = run(mode, sections["loop"], comm=comm, folder=folder, config=doc, resume=resume,
                         overwrite=overwrite)
        except RunInterrupted as err:
            return print_interrupted(err) if comm.is_main else 130
        if comm.is_main:
            line = spec.report(result, folder) if spec.report is not None else \
                f"{result.summary['metric']} {result.summary[result.summary['metric']]:.5g}"
            print(f"{line}; wrote {folder}/ (config.json, metrics.csv, metrics.png, summary.json, checkpoint.pt)")
    return 0
