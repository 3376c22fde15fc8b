"""ES training on text: it learns, resumes exactly, splits over workers like one worker, rejects bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from distlstm.data.text import CharVocab, load_text, split_ids
from distlstm.es.fitness import char_loss
from distlstm.es.train import ESRunConfig, build_model, load_es_checkpoint, train_es
from distlstm.runs import read_csv_numbers

TINY = {"hidden": 16, "population": 32, "windows": 4, "window": 16, "eval_every": 10, "eval_chars": 2000, "lr": 0.03,
        "checkpoint_every": 5}


def test_a_tiny_char_model_learns_within_seconds(tmp_path):
    cfg = ESRunConfig(generations=60, **TINY)
    text = load_text(cfg.text)
    vocab = CharVocab.from_text(text)
    _, val = split_ids(vocab.encode(text))
    fm = build_model(len(vocab), cfg.cell, cfg.hidden, cfg.seed)
    untrained = char_loss(fm, fm.flatten(), val[: cfg.eval_chars + 1])
    summary = train_es(cfg, tmp_path, show_progress=False)
    rows = load_es_checkpoint(tmp_path / "checkpoint.pt")["rows"]
    assert summary["val_nats_per_char"] <= rows[0]["val_nats_per_char"]
    assert summary["val_nats_per_char"] < untrained - 0.4, (untrained, summary["val_nats_per_char"])
    # the reported loss is the loss at the returned θ, recomputed here; the CSV holds the checkpoint's rows
    assert summary["val_nats_per_char"] == pytest.approx(char_loss(fm, summary["theta"], val[: cfg.eval_chars + 1]),
                                                         abs=1e-4)
    csv = read_csv_numbers(tmp_path / "metrics.csv")
    assert [r["generation"] for r in csv] == [r["generation"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert [r["val_nats_per_char"] for r in csv] == pytest.approx([r["val_nats_per_char"] for r in rows])


def test_resume_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    straight = train_es(ESRunConfig(generations=10, **TINY), tmp_path / "a", show_progress=False)
    train_es(ESRunConfig(generations=5, **TINY), tmp_path / "b", show_progress=False)
    resumed = train_es(ESRunConfig(generations=10, **TINY), tmp_path / "b", resume=True, show_progress=False)
    assert torch.equal(straight["theta"], resumed["theta"])


def test_bad_input(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc" * 5)
    with pytest.raises(ValueError, match=r"too short|fewer than a window"):
        train_es(ESRunConfig(text=str(short), **TINY), tmp_path / "x", show_progress=False)
    with pytest.raises(ValueError, match="unknown strategy"):
        ESRunConfig(strategy="cma")
    with pytest.raises(ValueError, match="multiple of the 3 workers"):
        train_es(ESRunConfig(generations=1, **TINY), tmp_path / "y", show_progress=False, world_size=3)


@pytest.mark.multiprocess
def test_two_workers_give_the_theta_of_one_worker(tmp_path):
    args = ["es", "--generations", "6", "--hidden", "16", "--population", "32", "--windows", "4", "--window", "16",
            "--eval-every", "3", "--eval-chars", "1000", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "distlstm.cli", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "distlstm.cli", *args, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_es_checkpoint(tmp_path / "one" / "checkpoint.pt")
    b = load_es_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert b["generation"] == a["generation"] == 6
    assert torch.equal(a["theta"], b["theta"])
