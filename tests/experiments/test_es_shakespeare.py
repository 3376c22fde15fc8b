"""The ES reproduction and the sample command write what they promise."""

from __future__ import annotations

import json

import pytest

from distlstm.cli import main
from distlstm.experiments.es_shakespeare import ESShakespeareConfig, run

KEYS = {"model", "method", "val_nats_per_char", "seconds", "evaluations"}


def test_tiny_reproduction_and_sampling(tmp_path, capsys):
    cfg = ESShakespeareConfig(seconds=1.0, hidden=16, population=32, eval_every=5, eval_chars=1000)
    rows = run(cfg, tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == rows and all(set(r) >= KEYS for r in rows)
    assert {(r["model"], r["method"]) for r in rows} == {
        ("rnn", "openai-es"), ("rnn", "plain"), ("lstm", "openai-es"), ("rnn", "backprop"), ("lstm", "backprop")}
    for name in ("report.md", "val_vs_seconds.png", "val_vs_generations.png", "es_rnn_openai-es/checkpoint.pt",
                 "backprop_lstm/metrics.csv"):
        assert (tmp_path / name).is_file(), name
    assert "temperature 0.8" in (tmp_path / "report.md").read_text()
    assert main(["sample", "--checkpoint", str(tmp_path / "backprop_rnn" / "checkpoint.pt"), "--prompt", "KING",
                 "--length", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("KING") and len(out.rstrip("\n")) == 44


def test_sample_rejects_unknown_characters_and_bad_checkpoints(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad)]) == 2
    assert "not a readable distlstm checkpoint" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_es_reproduction_from_the_command_line(tmp_path):
    assert main(["reproduce", "es-shakespeare", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())
    best_es = min(r["val_nats_per_char"] for r in rows if r["method"] == "openai-es")
    assert best_es < 3.35  # the source's plateau, within 15 s per run
