"""The Ergen & Kozat reproduction and the online command write what they promise."""

from __future__ import annotations

import json

import pytest

from distlstm.cli import main
from distlstm.experiments.ergen_kozat import ErgenKozatConfig, pairwise_agreement, run

KEYS = {"algorithm", "final_mse", "mse_naive", "seconds_per_step", "bytes_per_node_per_step"}


def test_pairwise_agreement():
    assert pairwise_agreement(["a", "b", "c"], ("a", "b", "c")) == (3, 3)
    assert pairwise_agreement(["c", "b", "a"], ("a", "b", "c")) == (0, 3)


def test_tiny_reproduction_writes_the_run_folder(tmp_path):
    cfg = ErgenKozatConfig(exchange_steps=12, sentences=60, sweep_particles=(20, 40), sweep_walk_steps=(1, 2))
    findings = run(cfg, tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {(e["dataset"], e["algorithm"]) for e in summary} == {
        (d, a) for d in ("exchange", "sentences") for a in ("sgd", "ekf", "pf", "dsgd", "dekf", "dpf")}
    assert all(set(e) >= KEYS for e in summary)
    for name in ("report.md", "config.json", "sweep.json", "mse_exchange.csv", "mse_exchange.png",
                 "mse_sentences.csv", "mse_sentences.png", "sweep_N.png", "sweep_K.png"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text()
    assert "Against the paper's findings" in report and "Hong Kong" in report
    assert set(findings["sentence_order_ours"]) == {"ekf", "sgd", "pf", "dekf", "dpf"}


def test_online_command_on_a_users_csv(tmp_path):
    data = tmp_path / "series.csv"
    data.write_text("value\n" + "\n".join(str(0.01 * (i % 17) + 1.0) for i in range(120)) + "\n")
    out = tmp_path / "run"
    assert main(["online", "--data", str(data), "--algorithm", "dpf", "--nodes", "3", "--topology", "ring",
                 "--particles", "50", "--walk-steps", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= KEYS and summary["algorithm"] == "dpf" and summary["settings"]["num_particles"] == 50
    assert summary["bytes_per_node_per_step"] > 0 and (out / "mse.csv").is_file() and (out / "mse.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--algorithm", "ekf", "--particles", "10"], "--particles does not apply to ekf"),
    (["--topology", "edges", "--edges", "0-1,2-3"], "disconnected"),
    (["--algorithm", "pf", "--sigma2", "0"], "sigma2"),
])
def test_online_command_bad_settings(tmp_path, capsys, args, message):
    assert main(["online", *args, "--steps", "3", "--out", str(tmp_path), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_quick_reproduction_from_the_command_line(tmp_path):
    assert main(["reproduce", "ergen-kozat", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 12 and all(set(e) >= KEYS for e in summary)


def test_online_command_stateful_ekf(tmp_path):
    out = tmp_path / "st"
    assert main(["online", "--algorithm", "ekf", "--stateful", "--s0-carry", "0.01", "--steps", "20",
                 "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["stateful"] is True and summary["n_theta"] == 116
