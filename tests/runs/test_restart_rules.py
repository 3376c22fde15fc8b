"""torchrun --max-restarts, in one process: which folder a restarted worker continues, and the store it meets in.

torchrun's environment is set by hand (``TORCHELASTIC_RUN_ID``, ``MASTER_ADDR``/``PORT``,
``TORCHELASTIC_RESTART_COUNT``); the kill -9 of a real worker is in test_elastic.py (slow).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch.distributed as dist

from distlstm.cli import main
from distlstm.cli_runs import elastic_restart
from distlstm.cli_train import TRAIN
from distlstm.runs.folder import JOB, prepare_new, started_by_this_job
from distlstm.runtime.comm import LocalComm
from distlstm.runtime.dist import attempt_store, launcher_job, restarts_left
from tests.launch import free_port
from tests.small_runs import assert_same_run, command_args


@pytest.fixture
def torchrun_env(monkeypatch):
    """A worker's environment under torchrun (world size 1: no process group), first attempt, 2 restarts allowed."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29411")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    return monkeypatch


def test_the_job_is_the_rendezvous_id_and_the_store_address(torchrun_env):
    assert launcher_job() == "job-a 127.0.0.1:29411"
    torchrun_env.setenv("MASTER_PORT", "29412")  # a second job with the same --rdzv-id gets another store port
    assert launcher_job() == "job-a 127.0.0.1:29412"
    torchrun_env.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert restarts_left() == 0
    torchrun_env.delenv("TORCHELASTIC_RUN_ID")
    assert launcher_job() is None


def test_a_new_run_under_torchrun_is_marked_with_its_job(tmp_path, torchrun_env):
    prepare_new(tmp_path / "r", {"command": "es"})
    assert (tmp_path / "r" / JOB).read_text() == "job-a 127.0.0.1:29411\n" and started_by_this_job(tmp_path / "r")
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "job-b")
    assert not started_by_this_job(tmp_path / "r")
    torchrun_env.delenv("TORCHELASTIC_RUN_ID")
    prepare_new(tmp_path / "alone", {"command": "es"})  # outside torchrun: no mark
    assert not (tmp_path / "alone" / JOB).exists() and not started_by_this_job(tmp_path / "alone")


def test_a_restarted_worker_resumes_or_restarts_only_its_own_jobs_run(tmp_path, torchrun_env, capsys):
    comm, folder = LocalComm(), tmp_path / "r"
    prepare_new(folder, {"command": "train"})
    assert elastic_restart(TRAIN, comm, folder, False, False) == (False, False)  # the first attempt: as given
    torchrun_env.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic_restart(TRAIN, comm, folder, False, False) == (False, True)  # no checkpoint yet: start over
    assert "starting " + str(folder) + " over (it had no checkpoint yet)" in capsys.readouterr().err
    (folder / "checkpoint.pt").write_bytes(b"")
    assert elastic_restart(TRAIN, comm, folder, False, True) == (True, False)  # --overwrite must not wipe it
    assert "continuing " + str(folder) + " from its last checkpoint" in capsys.readouterr().err
    assert elastic_restart(TRAIN, comm, folder, True, False) == (True, False)  # a --resume command resumes anyway
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "job-b")  # another job's folder: the usual rules
    assert elastic_restart(TRAIN, comm, folder, False, False) == (False, False)
    assert elastic_restart(TRAIN, comm, tmp_path / "absent", False, False) == (False, False)


def test_a_restarted_command_continues_its_folder_with_the_numbers_of_one_run(tmp_path, torchrun_env, capsys):
    args = command_args("es", tmp_path, 1)
    assert main([*args, "--steps", "3", "--out", str(tmp_path / "r")]) == 0
    torchrun_env.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the same command line once more (a larger --steps
    assert main([*args, "--steps", "6", "--out", str(tmp_path / "r")]) == 0  # shows that it continued)
    assert "continuing" in capsys.readouterr().err
    torchrun_env.delenv("TORCHELASTIC_RUN_ID")
    assert main([*args, "--steps", "6", "--out", str(tmp_path / "whole")]) == 0
    assert_same_run(tmp_path / "r", tmp_path / "whole", "es")
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "job-b")  # a restart of another job is refused the folder
    assert main([*args, "--steps", "6", "--out", str(tmp_path / "r")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_each_restart_attempt_meets_in_a_store_prefix_of_its_own(torchrun_env):
    """The c10d rendezvous keeps one store per job: an attempt's workers must not read the dead attempt's keys."""
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    torchrun_env.setenv("MASTER_PORT", str(port))
    torchrun_env.setenv("RANK", "0")
    torchrun_env.setenv("WORLD_SIZE", "1")
    torchrun_env.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # as torchrun tells its workers
    for attempt in ("0", "1"):
        torchrun_env.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
        attempt_store(timedelta(seconds=10)).set("rank_0", f"address of attempt {attempt}")
    assert server.get("distlstm/attempt_0/rank_0") == b"address of attempt 0"
    assert server.get("distlstm/attempt_1/rank_0") == b"address of attempt 1"
