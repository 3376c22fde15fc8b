"""The Ergen & Kozat reproduction and the online command write what they promise."""

from __future__ import annotations

import json

import pytest

from distlstm.cli import main
from distlstm.experiments.ergen_kozat import ErgenKozatConfig, compare_with_paper, pairwise_agreement, run
from distlstm.modes.online import RunSummary

KEYS = {"algorithm", "final_mse", "mse_naive", "seconds_per_step", "bytes_per_node_per_step"}


def test_pairwise_agreement():
    assert pairwise_agreement(["a", "b", "c"], ("a", "b", "c")) == (3, 3)
    assert pairwise_agreement(["c", "b", "a"], ("a", "b", "c")) == (0, 3)
    assert pairwise_agreement(["b", "a", "c"], ("a", "b", "c")) == (2, 3)  # only (a, b) is swapped
    assert pairwise_agreement(["c", "a"], ("a", "b", "c")) == (0, 1)  # pairs with a missing name do not count


def summary(dataset, algorithm, final_mse, mean_running_mse=1.0):
    return RunSummary(dataset=dataset, algorithm=algorithm, final_mse=final_mse, mse_naive=1.0, running_mse_end=1.0,
                      mean_running_mse=mean_running_mse, coverage95=0.9, seconds_per_step=0.1,
                      bytes_per_node_per_step=0.0, messages_per_node_per_step=0.0, skipped_labels=0, steps=10,
                      n_theta=5, settings={})


def sweep_point(axis, value, final_mse, running, seconds):
    return {"axis": axis, "value": value, "final_mse": final_mse, "mean_running_mse": running,
            "seconds_per_step": seconds}


def test_verdicts_on_hand_made_summaries():
    # sentences (final MSE, highest first in the paper: ekf > sgd > pf > dekf > dpf): ours swaps sgd and ekf
    sentences = [summary("sentences", a, m) for a, m in
                 (("ekf", 0.3), ("sgd", 0.4), ("pf", 0.2), ("dekf", 0.1), ("dpf", 0.05), ("dsgd", 9.0))]
    # exchange (mean running MSE, fastest first in the paper: dpf, pf, sgd, ekf): ours has pf fastest
    exchange = [summary("exchange", a, 1.0, r) for a, r in
                (("sgd", 0.3), ("ekf", 0.4), ("pf", 0.1), ("dsgd", 0.35), ("dekf", 0.5), ("dpf", 0.2))]
    sweep = [sweep_point("N", 10, 0.5, 0.6, 1.0), sweep_point("N", 20, 0.3, 0.55, 2.0),
             sweep_point("N", 40, 0.2, 0.45, 3.0),  # MSE gains 0.2 then 0.1 (diminishing); running 0.05 then 0.1
             sweep_point("K", 4, 0.2, 0.3, 2.0), sweep_point("K", 1, 0.3, 0.2, 1.0),  # given out of order
             sweep_point("K", 2, 0.1, 0.25, 1.5)]  # by K: 0.3, 0.1, 0.2, not monotone
    f = compare_with_paper(sentences + exchange, sweep)
    assert f["sentence_order_ours"] == ["sgd", "ekf", "pf", "dekf", "dpf"]  # dsgd is not in the paper's list
    assert f["sentence_pairs_agree"] == (9, 10)
    assert f["exchange_speed_order_ours"] == ["pf", "dpf", "sgd", "dsgd", "ekf", "dekf"]
    assert f["exchange_dpf_fastest"] is False
    assert f["exchange_pairs_agree"] == (5, 6)  # only (dpf, pf) is the other way round
    assert f["sweep_N_mse"] == [0.5, 0.3, 0.2] and f["sweep_N_monotone"] and f["sweep_N_diminishing"]
    assert f["sweep_N_running_monotone"] and not f["sweep_N_running_diminishing"]
    assert f["sweep_K_mse"] == [0.3, 0.1, 0.2] and not f["sweep_K_monotone"]
    assert not f["sweep_K_running_monotone"] and f["sweep_K_time_grows"] and f["sweep_N_time_grows"]


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
    got = json.loads((out / "summary.json").read_text())
    assert set(got) >= KEYS and got["algorithm"] == "dpf" and (out / "mse.csv").is_file()
    # every one of a node's N = 50 particles moves at each of the K = 2 walk steps: [θ | log ω] in float64
    assert got["bytes_per_node_per_step"] == 2 * 50 * (got["n_theta"] + 1) * 8
    assert got["n_theta"] == 4 * 4 * (1 + 4 + 2) + 4  # LSTM (1 input, 4 units, two biases) and the head w
    rows = (out / "mse.csv").read_text().splitlines()
    # causal scaling (the default): the first 20 rows only feed the scaler, rows 20…119 are forecast,
    # round robin on 3 nodes
    assert len(rows) == 1 + got["steps"] and got["steps"] == (120 - 20) // 3


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


def test_online_command_single_bias_is_the_papers_theta_and_loads_back(tmp_path):
    from distlstm.modes import load_run

    data = tmp_path / "series.csv"
    data.write_text("value\n" + "\n".join(str(0.01 * (i % 13) + 1.0) for i in range(60)) + "\n")
    out = tmp_path / "sb"
    assert main(["online", "--data", str(data), "--algorithm", "ekf", "--single-bias", "--steps", "5",
                 "--out", str(out), "--no-progress"]) == 0
    got = json.loads((out / "summary.json").read_text())
    assert got["n_theta"] == 4 + 4 * (4 * 1 + 4 * 4 + 4)  # n + 4(np + n² + n), p = 1, n = 4
    loaded = load_run(out)
    assert "rnn.bias_hh_l0" not in dict(loaded.model.named_parameters())
    assert len(loaded.forecaster(data)) > 0
