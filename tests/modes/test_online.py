"""The online mode in the run loop: stop-and-resume equality, flags vs --config, the forecaster, predict, errors."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, grad

from distlstm.cli import _online_command, build_parser, main
from distlstm.cli_runs import run_command
from distlstm.data.forecast import forecast_windows
from distlstm.data.table import read_table
from distlstm.modes import load_run
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.metrics import read_metrics
from tests.launch import launch

FAST = {"sgd": [], "ekf": [], "pf": ["--particles", "12"], "dsgd": [], "dekf": [],
        "dpf": ["--particles", "12", "--walk-steps", "2"], "ekf-stateful": ["--stateful", "--s0-carry", "0.01"]}


def series_csv(path: Path, n: int = 64) -> Path:
    """Two inputs and a target with a lagged dependence, one empty target cell."""
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(2))
    y = 5 + torch.cat([torch.zeros(1, dtype=torch.float64), 0.7 * a[:-1] - 0.4 * b[:-1]]) \
        + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    rows = [f"{a[i]:.5f},{b[i]:.5f},{'' if i == 30 else f'{y[i]:.5f}'}" for i in range(n)]
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    return path


def args_for(data: Path, algorithm: str, *extra: str) -> list[str]:
    name = algorithm.split("-")[0]
    return ["online", "--data", str(data), "--inputs", "a,b", "--target", "y", "--algorithm", name, "--nodes", "2",
            "--topology", "complete", "--hidden", "2", "--no-progress", *FAST[algorithm], *extra]


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items() if k != "seconds"}
            for r in rows]


def same_numbers(a: dict, b: dict) -> None:
    """Two summaries equal except timings."""
    timing = {"seconds", "seconds_per_step"}
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


@pytest.mark.parametrize("algorithm", list(FAST))
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, algorithm):
    data = series_csv(tmp_path / "s.csv")
    spec = _online_command()
    whole_dir, part_dir = tmp_path / "whole", tmp_path / "part"
    assert run_command(spec, parse(args_for(data, algorithm, "--steps", "16", "--checkpoint-every", "5",
                                            "--eval-every", "4", "--out", str(whole_dir)))) == 0
    assert run_command(spec, parse(args_for(data, algorithm, "--steps", "7", "--checkpoint-every", "5",
                                            "--eval-every", "4", "--out", str(part_dir)))) == 0
    assert load_run_checkpoint(part_dir)[0]["step"] == 7
    # --resume FOLDER alone continues with the stored configuration; only the budget changes
    assert run_command(spec, parse(["online", "--resume", str(part_dir), "--steps", "16"])) == 0
    a, _ = load_run_checkpoint(whole_dir)
    b, _ = load_run_checkpoint(part_dir)
    assert a["step"] == b["step"] == 16
    states_a, states_b = a["state"]["algorithm"]["states"], b["state"]["algorithm"]["states"]
    assert set(states_a) == set(states_b) and all(torch.equal(states_a[k], states_b[k]) for k in states_a)
    assert all(t.dtype == torch.float64 for t in states_a.values())
    assert torch.equal(a["state"]["generators"]["nodes"], b["state"]["generators"]["nodes"])
    for k, t in a["state"]["model"].items():
        assert torch.equal(t, b["state"]["model"][k]), k
    rows_a = without_time(list(read_metrics(whole_dir / "metrics.csv")))
    rows_b = without_time(list(read_metrics(part_dir / "metrics.csv")))
    assert [r["step"] for r in rows_a] == list(range(17))  # step 0: the untrained model's evaluation
    assert rows_a[:7] + rows_a[8:] == rows_b[:7] + rows_b[8:]
    step_metrics = ("step", "mse", "running_mse", "bytes_per_node", "messages_per_node")
    assert [rows_a[7][k] for k in step_metrics] == [rows_b[7][k] for k in step_metrics]  # b also evaluated at its stop
    same_numbers(json.loads((whole_dir / "summary.json").read_text()),
                 json.loads((part_dir / "summary.json").read_text()))
    assert (part_dir / "mse.csv").read_text() == (whole_dir / "mse.csv").read_text()


def test_flags_and_config_file_give_the_same_run(tmp_path):
    data = series_csv(tmp_path / "s.csv")
    spec = _online_command()
    assert run_command(spec, parse(args_for(data, "pf", "--steps", "6", "--seed", "3", "--out",
                                            str(tmp_path / "flags")))) == 0
    config = tmp_path / "flags" / "config.json"
    assert run_command(spec, parse(["online", "--config", str(config), "--out", str(tmp_path / "file")])) == 0
    assert json.loads(config.read_text()) == json.loads((tmp_path / "file" / "config.json").read_text())
    same_numbers(json.loads((tmp_path / "flags" / "summary.json").read_text()),
                 json.loads((tmp_path / "file" / "summary.json").read_text()))


def test_resume_with_another_algorithm_setting_is_refused(tmp_path, capsys):
    data = series_csv(tmp_path / "s.csv")
    assert main(args_for(data, "ekf", "--steps", "3", "--out", str(tmp_path / "r"))) == 0
    assert main(["online", "--resume", str(tmp_path / "r"), "--sigma2", "0.5"]) == 2
    assert "online.sigma2: None in the run, 0.5 now" in capsys.readouterr().err


@pytest.mark.parametrize("scaling", ["causal", "standardize"])
def test_forecaster_equals_the_model_at_the_final_theta(tmp_path, scaling):
    data = series_csv(tmp_path / "s.csv")
    assert main(args_for(data, "ekf", "--scaling", scaling, "--out", str(tmp_path / "r"))) == 0
    loaded = load_run(tmp_path / "r")
    ckpt, _ = load_run_checkpoint(tmp_path / "r")
    assert loaded.forecaster is not None and loaded.mode == "online"
    rows = loaded.forecaster(data)
    fc = forecast_windows(read_table(data), "y", ["a", "b"], window=2, scaling=scaling)  # the run's windows
    assert len(rows) == len(fc) and [r["row"] for r in rows] == fc.label_lines
    model = loaded.model
    with torch.no_grad():
        direct = fc.shift + fc.scale * model(fc.x)
    assert torch.allclose(torch.tensor([r["prediction"] for r in rows], dtype=torch.float64), direct,
                          rtol=0, atol=1e-12)
    # the interval: node 0's c · (H Σ Hᵀ + q‖H‖² + σ²), from the checkpoint's covariance, and c the conformal
    # quantile at level 1 − α_t of the node's normalised errors (the calibration's ring buffer of the last 100)
    P = ckpt["state"]["algorithm"]["states"]["P"][0]
    noise = ckpt["state"]["algorithm"]["states"]["noise"][0]
    n, level = min(int(noise[2]), 100), 1 - float(noise[3])  # α_t: the adaptive conformal level's miss rate
    ratios = sorted(noise[4 : 4 + n].tolist())
    c = ratios[max(min(math.ceil(level * (n + 1)), n), 1) - 1] / 1.959963984540054**2
    params = dict(model.named_parameters())
    names = list(params)
    i = 5
    h = grad(lambda p: functional_call(model, p, (fc.x[i : i + 1],))[0])({k: v.detach() for k, v in params.items()})
    H = torch.cat([h[k].reshape(-1) for k in names])
    var = c * (float(H @ P @ H) + 1e-6 * float(H @ H) + 0.01)
    half = 1.959963984540054 * float(fc.scale[i]) * math.sqrt(var)
    assert rows[i]["upper"] - rows[i]["prediction"] == pytest.approx(half, rel=1e-9)
    assert rows[i]["prediction"] - rows[i]["lower"] == pytest.approx(half, rel=1e-9)
    labelled = [r for r in rows if r["target"] is not None]
    assert len(labelled) == len(rows) - 1  # the empty target cell: a forecast without a label
    assert all(r["lower"] < r["prediction"] < r["upper"] for r in rows)


def test_predict_command_writes_forecasts_and_sgd_has_no_interval(tmp_path, capsys):
    data = series_csv(tmp_path / "s.csv")
    assert main(args_for(data, "sgd", "--out", str(tmp_path / "r"))) == 0
    assert main(["predict", "--run", str(tmp_path / "r"), "--data", str(data), "--out", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,target,prediction,lower,upper" and len(lines) == 1 + 64 - 20
    assert lines[1].endswith(",,")  # no predictive variance: no interval
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "r"), "--data", str(data), "--rows", "3"]) == 0
    assert "the last 3 of 44 forecasts" in capsys.readouterr().out


def test_predict_with_other_columns_names_them(tmp_path, capsys):
    data = series_csv(tmp_path / "s.csv")
    assert main(args_for(data, "sgd", "--steps", "3", "--out", str(tmp_path / "r"))) == 0
    other = tmp_path / "other.csv"
    other.write_text("a,c,y\n" + "\n".join(f"{i},{i % 3},{i * 0.5}" for i in range(40)) + "\n")
    assert main(["predict", "--run", str(tmp_path / "r"), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "missing ['b']" in err and "extra ['c']" in err and "trained on ['a', 'b', 'y']" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--algorithm", "sgd", "--particles", "10"], "--particles does not apply to sgd"),
    (["--algorithm", "pf", "--stateful"], "--stateful applies to ekf only, not pf"),
    (["--algorithm", "ekf", "--s0-carry", "0.1"], "--s0-carry does not apply to ekf without --stateful"),
    (["--nodes", "0"], "nodes must be a whole number ≥ 1, got 0 (fix --nodes)"),
])
def test_bad_settings_name_the_flag(tmp_path, capsys, args, message):
    assert main(["online", *args, "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a run that cannot start


@pytest.mark.multiprocess
def test_two_processes_stopped_and_resumed_equal_one_process(tmp_path):
    """DPF over 2 torchrun processes (one node each): 5 steps, resumed to 12, equals 12 steps in one process."""
    data = series_csv(tmp_path / "s.csv")
    argv = args_for(data, "dpf", "--topology", "ring")
    launch([*argv, "--steps", "5"], tmp_path / "two", processes=2)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              "-m", "distlstm.cli", "online", "--resume", str(tmp_path / "two"), "--steps", "12"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_command(_online_command(), parse([*argv, "--steps", "12", "--out", str(tmp_path / "one")])) == 0
    two, _ = load_run_checkpoint(tmp_path / "two")
    one, _ = load_run_checkpoint(tmp_path / "one")
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["step"] == one["step"] == 12
    for key, t in one["state"]["algorithm"]["states"].items():
        assert torch.equal(t, two["state"]["algorithm"]["states"][key]), key
    assert torch.equal(one["state"]["generators"]["nodes"], two["state"]["generators"]["nodes"])
    summary_one = json.loads((tmp_path / "one" / "summary.json").read_text())
    summary_two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary_two.pop("processes") == 2 and summary_one.pop("processes") == 1
    assert summary_two.pop("workers") == 2 and summary_one.pop("workers") == 1
    same_numbers(summary_one, summary_two)


def test_online_algorithms_reach_peers_only_through_the_communicator():
    import distlstm.online

    for path in Path(distlstm.online.__file__).parent.glob("*.py"):
        text = path.read_text()
        for banned in ("torch.distributed", "distlstm.runtime.dist", "distlstm.runs", "distlstm.experiments"):
            assert banned not in text, f"{path.name} imports {banned}"
