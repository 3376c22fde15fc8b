"""The ES reproduction and the sample command write what they promise."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from distlstm.cli import main
from distlstm.data.text import CharVocab, load_text, split_ids
from distlstm.es.fitness import char_fitness, char_loss
from distlstm.es.strategy import STRATEGIES, ask, init, tell
from distlstm.es.text import build_model, generation_windows
from distlstm.experiments.charlm_demo import entropies
from distlstm.experiments.es_shakespeare import ESShakespeareConfig, run
from distlstm.models.functional import flatten
from distlstm.modes import load_run

KEYS = {"model", "method", "val_nats_per_char", "seconds", "evaluations"}


def ask_tell_theta(cfg: ESShakespeareConfig, cell: str, strategy: str, train: torch.Tensor, vocab_size: int,
                   generations: int) -> torch.Tensor:
    """θ after ``generations`` of a bare ask/tell loop: the ES runs of the reproduction before the run loop."""
    fm = build_model(vocab_size, cell, cfg.hidden, cfg.seed)
    lr = cfg.plain_lr if strategy == "plain" else cfg.lr
    es = replace(STRATEGIES[strategy], population=cfg.population, sigma=cfg.sigma, lr=lr, seed=cfg.seed)
    state = init(fm.flatten())
    for g in range(generations):
        x, y = generation_windows(train, cfg.seed, g, windows=8, window=32)
        state, _ = tell(es, state, char_fitness(fm, ask(es, state), x, y))
    return state.theta


def test_tiny_reproduction_and_sampling(tmp_path, capsys):
    cfg = ESShakespeareConfig(seconds=1.0, hidden=16, population=32, eval_every=3, eval_chars=1000, generations=3)
    rows = run(cfg, tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(set(r) >= KEYS for r in summary)
    # every reported loss is the loss of the checkpoint beside it, recomputed here on the validation text
    text = load_text()
    vocab = CharVocab.from_text(text)
    train, val = split_ids(vocab.encode(text))
    for r in summary:
        if r["method"] == "backprop":  # a train run: the model's state dict, flattened in parameter order
            theta = flatten(load_run(tmp_path / f"backprop_{r['model']}").model)
        else:  # an es run folder: the same numbers as a bare ask/tell loop
            theta = flatten(load_run(tmp_path / f"es_{r['model']}_{r['method']}").model)
            assert r["generations"] == 3 and r["evaluations"] == 3 * 32
            assert torch.equal(theta, ask_tell_theta(cfg, r["model"], r["method"], train, len(vocab), 3)), r
        fm = build_model(len(vocab), r["model"], cfg.hidden, cfg.seed)
        assert r["val_nats_per_char"] == pytest.approx(char_loss(fm, theta, val[: cfg.eval_chars + 1]), abs=1e-3), r
    assert {(r["model"], r["method"]) for r in rows} == {
        ("rnn", "openai-es"), ("rnn", "plain"), ("lstm", "openai-es"), ("rnn", "backprop"), ("lstm", "backprop")}
    for name in ("report.md", "val_vs_seconds.png", "val_vs_generations.png", "es_rnn_openai-es/checkpoint.pt",
                 "es_rnn_plain/config.json", "backprop_lstm/metrics.csv"):
        assert (tmp_path / name).is_file(), name
    assert "temperature 0.8" in (tmp_path / "report.md").read_text()
    assert main(["sample", "--run", str(tmp_path / "es_lstm_openai-es"), "--prompt", "KING", "--length", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("KING") and len(out.rstrip("\n")) == 44
    assert set(out) <= set(vocab.chars)
    assert main(["sample", "--run", str(tmp_path / "es_rnn_plain"), "--prompt", "KING\u2603", "--length", "5"]) == 2
    err = capsys.readouterr().err
    assert "outside the model's vocabulary: ['\u2603']" in err and "--unknown replace" in err
    # an ES run of the reproduction is an es run folder: distlstm es continues it
    assert main(["es", "--resume", str(tmp_path / "es_rnn_plain"), "--steps", "4"]) == 0
    assert load_run(tmp_path / "es_rnn_plain").step == 4


def test_sample_rejects_unknown_characters_and_bad_checkpoints(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad)]) == 2
    assert "not a readable distlstm checkpoint" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "holds no checkpoint.pt: not a distlstm run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_es_reproduction_from_the_command_line(tmp_path):
    assert main(["reproduce", "es-shakespeare", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())
    best_es = min(r["val_nats_per_char"] for r in rows if r["method"] == "openai-es")
    text = load_text()
    vocab = CharVocab.from_text(text)
    train, _ = split_ids(vocab.encode(text))
    unigram, _ = entropies(train, len(vocab))
    # below letter frequencies alone (3.35, the source's plateau, is above the unigram entropy ≈ 3.32); a 15 s
    # budget leaves little margin (3.27 on the CI machine), so the bound is the entropy itself
    assert best_es < unigram, (best_es, unigram)


def test_tiny_federated_comparison_validates_every_split_on_the_held_out_play(tmp_path):
    from distlstm.data.text_shards import holdout_split
    from distlstm.experiments.es_federated import ESFederatedConfig
    from distlstm.experiments.es_federated import run as run_federated

    cfg = ESFederatedConfig(clients=2, windows=1, window=8, generations=3, hidden=8, population=8, eval_every=3,
                            eval_chars=300)
    rows = run_federated(cfg, tmp_path, show_progress=False)
    text = load_text()
    vocab = CharVocab.from_text(text)
    _, val = holdout_split(text, vocab.encode(text), "play")
    assert [r["data_split"] for r in rows] == ["shared", "iid", "by-play"]
    for r in rows:
        folder = tmp_path / f"federated_{r['data_split']}"
        stored = json.loads((folder / "config.json").read_text())["es"]
        assert stored["holdout"] == "play" and stored["windows"] == (2 if r["data_split"] == "shared" else 1)
        fm = build_model(len(vocab), "rnn", 8, cfg.seed)
        assert r["val_nats_per_char"] == pytest.approx(char_loss(fm, flatten(load_run(folder).model), val[:301]),
                                                       abs=1e-4), r
        assert r["fitness_bytes_per_generation"] == (8 if r["data_split"] == "shared" else 2 * 8) * 4
    report = (tmp_path / "federated.md").read_text()
    assert "| by-play | 2 |" in report and "client 1: MACBETH" in report
    assert (tmp_path / "federated_val.png").is_file()


def test_tiny_budget_ladder_adds_one_change_per_rung(tmp_path, capsys):
    from distlstm.experiments.es_budget import ESBudgetConfig
    from distlstm.experiments.es_budget import run as run_budget

    cfg = replace(ESBudgetConfig.preset(quick=True), seconds=1.0, rung_seconds=0.5, hidden=8, population=8,
                  eval_chars=300)
    rows = run_budget(cfg, tmp_path, show_progress=False)
    assert [r["run"] for r in rows] == ["rung_0", "rung_1", "rung_2", "tuned"]
    settings = [json.loads((tmp_path / r["run"] / "config.json").read_text())["es"] for r in rows]
    assert settings[0]["noise"] == "seeded" and settings[0]["lr_half_life"] is None
    assert settings[1] == {**settings[0], "noise": "table"}
    assert settings[2] == {**settings[1], "lr_half_life": 200.0}
    assert settings[3] == settings[2]  # the tuned run is the last rung on the full budget
    report = (tmp_path / "report.md").read_text()
    assert "| tuned |" in report and "bigram entropy" in report and (tmp_path / "val_vs_seconds.png").is_file()
    assert main(["reproduce", "matrix-batch", "--budget", "--out", str(tmp_path / "x")]) == 2
    assert "--budget and --federated are parts of es-shakespeare" in capsys.readouterr().err
