"""A run folder: what makes a folder a run, and the rules for starting, resuming or overwriting one.

A run folder holds ``config.json`` (the resolved configuration), ``checkpoint.pt`` (and
``checkpoint.prev.pt``), ``metrics.csv``, ``metrics.png``, ``summary.json`` and whatever
the mode adds (plots, samples). A new run refuses a non-empty folder unless told to
``overwrite`` it (and then only a folder that is a run, so a typo cannot wipe a folder
of other files); ``resume`` needs a run folder and accepts only the changes listed in
:data:`~distlstm.runs.config.SAFE_TO_CHANGE`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from distlstm._flags import on_cli
from distlstm.runs.checkpoint import CHECKPOINT, PREVIOUS
from distlstm.runs.config import SAFE_TO_CHANGE, config_differences, read_config_file
from distlstm.runs.files import atomic_write_text, write_json
from distlstm.runtime.dist import launcher_job

CONFIG = "config.json"
LOCK = ".lock"
JOB = ".torchrun-job"  # the torchrun job that started the run: its restarts continue it (started_by_this_job)


def is_run_folder(folder: Path) -> bool:
    return (folder / CONFIG).is_file() or (folder / CHECKPOINT).is_file() or (folder / PREVIOUS).is_file()


#: (command, section) → settings added after runs were written whose default then changed what a run does,
#: with the value such a run used: a stored configuration without the key is read with it, so a resumed run
#: goes on as it was made (and its config.json says so).
BEFORE_RECORDED: dict[tuple[str, str], dict[str, Any]] = {("train", "optim"): {"lbfgs_tolerance": 1e-9},
                                                       ("train", "task"): {"init": "uniform"}}


def stored_config(folder: Path) -> dict[str, Any]:
    """The configuration a run folder was started with (its ``config.json``; see :data:`BEFORE_RECORDED`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {folder}")
    if not (folder / CONFIG).is_file():
        raise ValueError(f"{folder} is not a distlstm run folder: it has no {CONFIG}")
    config = read_config_file(folder / CONFIG)
    for (command, section), values in BEFORE_RECORDED.items():
        if config.get("command") == command and isinstance(config.get(section), dict):
            config[section] = values | config[section]
    return config


def _resume_hint() -> str:
    return "--resume" if on_cli() else "resume=True"


def _overwrite_hint() -> str:
    return "--overwrite" if on_cli() else "overwrite=True"


def check_new(folder: Path, *, overwrite: bool = False) -> None:
    """Raise unless a new run may start in ``folder`` (absent, empty, or a run to overwrite)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(p.name != LOCK for p in folder.iterdir()):
        if not overwrite:
            what = "a run" if is_run_folder(folder) else "files"
            raise ValueError(f"{folder} already holds {what}; continue it with {_resume_hint()}, start over with "
                             f"{_overwrite_hint()}, or choose another folder")
        if not is_run_folder(folder):
            raise ValueError(f"{folder} holds files but is not a distlstm run folder (no {CONFIG} or {CHECKPOINT}); "
                             f"refusing to overwrite it")


def prepare_new(folder: Path, config: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Make ``folder`` the home of a new run (emptied if ``overwrite``) and write its ``config.json``.

    Call it holding the folder's lock (:func:`run_lock`): the lock file is kept.
    """
    folder = Path(folder)
    check_new(folder, overwrite=overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    write_json(folder / CONFIG, dict(config))
    job = launcher_job()
    if job is not None:  # after config.json: a folder holding the mark is always a run folder
        atomic_write_text(folder / JOB, job + "\n")


def started_by_this_job(folder: Path) -> bool:
    """Whether the run in ``folder`` was started by the torchrun job this worker belongs to.

    ``torchrun --max-restarts`` starts failed workers again with the first attempt's
    command line; a restarted worker continues the folder's run only when this holds,
    so a command pointed at another run's folder still gets the usual refusal.
    """
    job = launcher_job()
    mark = Path(folder) / JOB
    return job is not None and mark.is_file() and mark.read_text(encoding="utf-8").strip() == job


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (this process's PID and host) for the block: two runs never share a folder.

    A lock left by a process of this host that no longer exists is stale and taken over;
    a live one, or one from another host, is an error naming the holder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    mine = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text(encoding="utf-8", errors="replace").split()
            pid = int(holder[0]) if holder and holder[0].isdigit() else -1
            host = holder[1] if len(holder) > 1 else "?"
            if host == socket.gethostname() and pid > 0 and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise ValueError(f"{folder} is in use by another run (process {pid} on {host}; lock file {lock}). Wait "
                             "for it to end, choose another folder, or delete the lock file if that run is gone") \
                from None
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def check_resume(folder: Path, config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Check that ``config`` may continue the run in ``folder``; returns the (safe) changes.

    Raises with the list of differences when anything outside the safe set changed
    (the mode, the data, the model, the algorithm's settings, the seed).
    """
    old = stored_config(folder)
    if old.get("mode") != config.get("mode") or old.get("command") != config.get("command"):
        raise ValueError(f"{folder} is a {old.get('command')!r} run ({old.get('mode')} mode), not a "
                         f"{config.get('command')!r} run ({config.get('mode')} mode)")
    diff = config_differences(old, config)
    unsafe = {k: v for k, v in diff.items() if k not in SAFE_TO_CHANGE}
    if unsafe:
        listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in sorted(unsafe.items()))
        safe = ", ".join(sorted(s.split(".")[1] for s in SAFE_TO_CHANGE))
        raise ValueError(f"cannot resume {folder} with changed settings ({listed}). A resumed run may change only "
                         f"the budget and the reporting ({safe}); start a new run for anything else")
    return diff


def record_resume(folder: Path, config: Mapping[str, Any]) -> None:
    """Store the (safely) changed configuration of a resumed run."""
    write_json(Path(folder) / CONFIG, dict(config))
