"""The Ergen & Kozat reproduction and the online command write what they promise."""

from __future__ import annotations

import json

import pytest

from distlstm.cli import main
from distlstm.experiments.ergen_kozat import ErgenKozatConfig, compare_with_paper, exchange_streams, run

KEYS = {"algorithm", "final_mse", "mse_naive", "seconds_per_step", "bytes_per_node_per_step"}


def interval(mean, half, n=5):
    """A figure over n seeds with mean ``mean`` and 95% half-width ``half`` (the values are not used)."""
    return {"mean": mean, "ci95": [mean - half, mean + half], "values": [mean] * n}


def row(dataset, algorithm, final_mse, running=1.0, half=0.01):
    return {"dataset": dataset, "algorithm": algorithm, "final_mse": interval(final_mse, half),
            "mean_running_mse": interval(running, half)}


def sweep_point(axis, value, final_mse, running, seconds, half=0.01):
    return {"axis": axis, "value": value, "final_mse": interval(final_mse, half),
            "mean_running_mse": interval(running, half), "seconds_per_step": seconds}


def test_orderings_count_only_where_intervals_separate():
    # sentences (final MSE, highest first in the paper: ekf > sgd > pf > dekf > dpf): ours swaps sgd and ekf,
    # and pf and dekf overlap (0.2 ± 0.06 and 0.15 ± 0.01)
    sentences = [row("sentences", "ekf", 0.3), row("sentences", "sgd", 0.4), row("sentences", "pf", 0.2, half=0.06),
                 row("sentences", "dekf", 0.15), row("sentences", "dpf", 0.05), row("sentences", "dsgd", 9.0)]
    # exchange (mean running MSE, fastest first in the paper: dpf, pf, sgd, ekf): ours has pf fastest
    exchange = [row("exchange", a, 1.0, r) for a, r in
                (("sgd", 0.3), ("ekf", 0.4), ("pf", 0.1), ("dsgd", 0.35), ("dekf", 0.5), ("dpf", 0.2))]
    sweep = [sweep_point("N", 10, 0.5, 0.6, 1.0), sweep_point("N", 20, 0.3, 0.55, 2.0),
             sweep_point("N", 40, 0.2, 0.45, 3.0),  # MSE gains 0.2 then 0.1 (diminishing); running 0.05 then 0.1
             sweep_point("K", 4, 0.2, 0.3, 2.0), sweep_point("K", 1, 0.3, 0.2, 1.0),  # given out of order
             sweep_point("K", 2, 0.1, 0.25, 1.5)]  # by K: 0.3, 0.1, 0.2, not monotone
    f = compare_with_paper(sentences + exchange, sweep)
    assert f["sentence_order_ours"] == ["sgd", "ekf", "pf", "dekf", "dpf"]  # dsgd is not in the paper's list
    assert f["sentence_pairs"]["disagree"] == ["ekf/sgd"]
    assert f["sentence_pairs"]["unresolved"] == ["pf/dekf"]
    assert len(f["sentence_pairs"]["agree"]) == 8
    assert f["exchange_speed_order_ours"] == ["pf", "dpf", "sgd", "dsgd", "ekf", "dekf"]
    assert f["exchange_dpf_fastest_separated"] is False
    assert f["exchange_pairs"]["disagree"] == ["dpf/pf"] and len(f["exchange_pairs"]["agree"]) == 5
    assert f["sweep_N_mse"] == [0.5, 0.3, 0.2] and f["sweep_N_mse_monotone"] and f["sweep_N_mse_diminishing"]
    assert f["sweep_N_mse_ends_separate"]
    assert f["sweep_N_running_monotone"] and not f["sweep_N_running_diminishing"]
    assert f["sweep_K_mse"] == [0.3, 0.1, 0.2] and not f["sweep_K_mse_monotone"]
    assert not f["sweep_K_running_monotone"] and f["sweep_K_time_grows"] and f["sweep_N_time_grows"]


@pytest.mark.slow  # about 40 s of CPU: 26 small runs
def test_tiny_reproduction_values(tmp_path):
    cfg = ErgenKozatConfig(exchange_steps=30, sentences=40, seeds=2, tune_factors=(1.0, 3.0), particles=10,
                           algorithms=("sgd", "ekf", "dekf"), sweep_particles=(10, 20), sweep_walk_steps=(1, 2),
                           sweep_fixed_particles=10)
    findings = run(cfg, tmp_path, show_progress=False)
    rows = json.loads((tmp_path / "summary.json").read_text())
    by = {(r["dataset"], r["algorithm"]): r for r in rows}
    assert set(by) == {(d, a) for d in ("exchange", "sentences") for a in ("sgd", "ekf", "dekf")}
    # the paper's θ: n + 4(np + n² + n)
    assert by["exchange", "sgd"]["n_theta"] == 4 + 4 * (4 * 1 + 16 + 4)
    assert by["sentences", "sgd"]["n_theta"] == 8 + 4 * (8 * 9 + 64 + 8)
    for r in rows:  # every figure over both evaluation seeds, with an interval around its mean
        assert r["seeds"] == [1, 2] and len(r["final_mse"]["values"]) == 2
        lo, hi = r["final_mse"]["ci95"]
        assert lo <= r["final_mse"]["mean"] <= hi
    # the EKF family learns the exchange rates faster than SGD (mean running MSE, mean over seeds)
    for name in ("ekf", "dekf"):
        assert by["exchange", name]["mean_running_mse"]["mean"] < by["exchange", "sgd"]["mean_running_mse"]["mean"]
    # the last-value reference is scored on the same last 20% of steps as final_mse (24..29 of 30), by hand
    streams = exchange_streams(cfg)
    tail = [(ob.d - float(ob.x[-1, 0])) ** 2 for s in streams for ob in s[24:30]]
    assert by["exchange", "ekf"]["references"]["last_value"]["final_mse"] == pytest.approx(sum(tail) / len(tail))
    # the tuning met the protocol: on exchange every chosen setting reaches the common final error
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    target = tuning["exchange"]["target"]
    assert all(p["final_mse"] <= target * 1.05 for p in tuning["exchange"]["chosen"].values())
    report = (tmp_path / "report.md").read_text()
    assert "Against the paper's findings" in report and "Hong Kong" in report and "95%" in report
    assert set(findings["sentence_order_ours"]) == {"ekf", "sgd", "dekf"}


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
    assert len(summary) == 14 and all(len(e["final_mse"]["values"]) == 2 for e in summary)


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


def test_seeds_flag_belongs_to_ergen_kozat_and_matrix_batch(tmp_path, capsys):
    assert main(["reproduce", "flstm-glstm", "--seeds", "3", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--seeds applies to ergen-kozat and matrix-batch, not flstm-glstm" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fix --seeds"):
        ErgenKozatConfig(seeds=0)
