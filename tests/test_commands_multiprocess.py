"""The train and es commands under torchrun equal one process (slow: each starts several interpreters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distlstm.runs import load_checkpoint
from distlstm.runs.checkpoint import load_run_checkpoint
from tests.launch import launch

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def theta(path: Path) -> torch.Tensor:
    ckpt = load_checkpoint(path)
    model = ckpt["state"]["model"]
    return torch.cat([t.reshape(-1) for t in model.values()])


@pytest.mark.parametrize("optimizer", ["lbfgs", "cg"])
def test_train_full_batch_command_two_workers_equal_one(tmp_path, optimizer):
    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "64", "--test-size", "16",
            "--optimizer", optimizer, "--steps", "3", "--eval-every", "1", "--no-progress"]
    launch(args, tmp_path / "one", 1)
    launch(args, tmp_path / "two", 2)
    torch.testing.assert_close(theta(tmp_path / "two" / "checkpoint.pt"), theta(tmp_path / "one" / "checkpoint.pt"),
                               atol=1e-8, rtol=0)
    one, two = (json.loads(Path(tmp_path, d, "summary.json").read_text()) for d in ("one", "two"))
    assert two["workers"] == 2 and two["test_mae"] == pytest.approx(one["test_mae"], abs=1e-6)


def test_train_char_lm_command_two_workers_equal_one(tmp_path):
    common = ["train", "--task", "char-lm", "--hidden", "16", "--window", "8", "--dtype", "float64", "--steps", "4",
              "--eval-every", "2", "--eval-chars", "500", "--no-progress"]
    launch([*common, "--batch", "8"], tmp_path / "one", 1)
    launch([*common, "--batch", "4"], tmp_path / "two", 2)
    torch.testing.assert_close(theta(tmp_path / "two" / "checkpoint.pt"), theta(tmp_path / "one" / "checkpoint.pt"),
                               atol=1e-6, rtol=0)
    # --resume FOLDER alone continues, under torchrun with the run's number of workers; one process is refused
    resume = ["train", "--steps", "6", "--no-progress"]
    launch([*resume, "--resume", str(tmp_path / "one")], None, 1)
    launch([*resume, "--resume", str(tmp_path / "two")], None, 2)
    torch.testing.assert_close(theta(tmp_path / "two" / "checkpoint.pt"), theta(tmp_path / "one" / "checkpoint.pt"),
                               atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["steps"] == 6
    with pytest.raises(AssertionError, match=r"resume with 2 worker\(s\)"):
        launch([*resume, "--steps", "8", "--resume", str(tmp_path / "two")], None, 1)


@pytest.mark.parametrize("variant", [
    ["--cell", "lstm", "--strategy", "plain"],  # the plain rule with the LSTM
    ["--data-split", "by-play", "--clients", "2"],  # federated: two clients in two processes, or simulated in one
], ids=["plain-lstm", "federated"])
def test_es_two_workers_equal_one(tmp_path, variant):
    args = ["es", *variant, "--steps", "3", "--hidden", "8", "--population", "8", "--windows", "2", "--window", "8",
            "--eval-every", "3", "--eval-chars", "300", "--no-progress"]
    launch(args, tmp_path / "one", 1)
    launch(args, tmp_path / "two", 2)
    a, b = (load_run_checkpoint(tmp_path / d)[0]["state"]["algorithm"] for d in ("one", "two"))
    assert a["generation"] == b["generation"] == 3
    assert torch.equal(a["theta"], b["theta"])
