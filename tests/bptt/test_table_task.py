"""``--task csv``: a user's table trained by the DDP optimizers, alone and on 2 workers (full-batch: tests/modes)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.bptt.table_task import TableTask
from distlstm.cli import main
from distlstm.modes.ddp import OptimConfig
from distlstm.runs import load_checkpoint
from distlstm.runs.config import LoopConfig
from distlstm.runtime.comm import open_comm
from tests.bptt.test_ddp import table_file as table
from tests.bptt.test_ddp import train

OPTIM = OptimConfig(optimizer="adam", lr=0.02, clip=1.0)
LOOP = LoopConfig(steps=6, eval_every=3, checkpoint_every=100, seed=2, progress=False)



def task(data: str, rank: int = 0, world: int = 1, batch: int = 16, **kw) -> TableTask:
    return TableTask(data=data, target="y", inputs=("a", "b"), rank=rank, world_size=world, window=4,
                     batch_size=batch, hidden=8, **kw)


def test_split_in_time_and_scaler_fitted_on_the_training_rows(tmp_path):
    t = task(table(tmp_path / "t.csv"))
    # 240 rows, the last 48 are the test part; windows of 4 rows forecast rows 4 … 239
    assert len(t.train) == 188 and len(t.test) == 48
    y = torch.tensor([float(line.split(",")[2]) for line in (tmp_path / "t.csv").read_text().splitlines()[1:]],
                     dtype=torch.float64)
    assert t.scale == pytest.approx(float(y[:192].std()), rel=1e-12)  # training rows only
    assert float(t.test.y[0]) == pytest.approx(float((y[192] - y[:192].mean()) / t.scale), rel=1e-12)


def test_adam_learns_the_table_and_beats_the_mean_predictor(tmp_path):
    t = task(table(tmp_path / "t.csv"))
    summary = train(lambda _r, _w: t, optim=OPTIM, loop=replace(LOOP, steps=150, eval_every=50)).summary
    assert summary["test_mse"] < 0.25 * summary["test_mse_mean_predictor"]
    assert summary["test_mse_units"] == "y's units squared" and summary["features"] == ["a", "b", "y (past)"]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with open_comm() as comm:
        train(lambda r, w: task(data, r, w, batch=8), Path(out), optim=OPTIM, loop=LOOP, comm=comm)


def theta(out: Path) -> torch.Tensor:
    ckpt = load_checkpoint(out / "checkpoint.pt")
    return torch.cat([t.reshape(-1) for t in ckpt["state"]["model"].values()])


@pytest.mark.multiprocess
def test_two_workers_equal_one_process_with_twice_the_batch(tmp_path):
    data = table(tmp_path / "t.csv")
    torch.set_num_threads(1)
    single = train(lambda _r, _w: task(data, batch=16), tmp_path / "one", optim=OPTIM, loop=LOOP).summary
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, data, str(tmp_path / "two")), nprocs=2, join=True)
    torch.testing.assert_close(theta(tmp_path / "two"), theta(tmp_path / "one"), atol=1e-8, rtol=0)
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["workers"] == 2 and two["test_mse"] == pytest.approx(single["test_mse"], rel=1e-6)


def test_train_command_on_a_csv(tmp_path, capsys):
    data = table(tmp_path / "t.csv")
    out = tmp_path / "cli"
    assert main(["train", "--task", "csv", "--data", data, "--inputs", "a,b", "--target", "y", "--window", "4",
                 "--hidden", "8", "--optimizer", "adam", "--steps", "4", "--eval-every", "2", "--stop-at", "1e9",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "adam: test_mse" in printed and "(--stop-at reached)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reached_stop_at"] and summary["steps"] == 0  # --stop-at: the untrained model is below 1e9


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "y"], "--task csv needs --data FILE and --target COLUMN"),
    (["--data", "{data}", "--target", "q"], r"no column 'q' in .*t.csv; its columns are \['a', 'b', 'y'\] "
                                            r"\(fix --target\)"),
    (["--data", "{data}", "--target", "y", "--window", "400"], "--window 400 plus a horizon of 1 leave no window"),
    (["--data", "{data}", "--target", "y", "--test-fraction", "0.001"], r"the test part holds no labelled window; "
                                                                         r"change --test-fraction"),
    (["--data", "{data}", "--target", "y", "--batch", "500"], r"fewer than one global batch .* lower --batch"),
])
def test_csv_task_errors_name_the_flag(tmp_path, capsys, args, message):
    import re

    data = table(tmp_path / "t.csv")
    argv = ["train", "--task", "csv", *[a.replace("{data}", data) for a in args], "--steps", "1",
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_glstm_on_one_hot_characters_names_embedding(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("abcdefg hij.\n" * 400)  # 11 distinct characters: not a multiple of 4
    assert main(["train", "--task", "char-lm", "--text", str(text), "--cell", "glstm", "--cell-opt", "groups=4",
                 "--steps", "1", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "one-hot characters (13: the text's vocabulary) is not a multiple of 4" in err and "--embedding 64" in err
    assert main(["train", "--task", "char-lm", "--text", str(text), "--cell", "glstm", "--cell-opt", "groups=4",
                 "--embedding", "8", "--hidden", "8", "--batch", "2", "--window", "8", "--eval-chars", "50",
                 "--steps", "1", "--out", str(tmp_path / "ok"), "--no-progress"]) == 0
