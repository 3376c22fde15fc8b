"""``distlstm online`` on a user's table: several inputs and a target, missing labels, causal scaling, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from distlstm.cli import main


def three_input_csv(path: Path, n: int = 160, missing_every: int = 9) -> Path:
    """y[t] = 10 + 3·(0.6 a − 0.5 b + 0.4 c)[t − 1] + small noise; every 9th target cell empty."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    y = torch.zeros(n, dtype=torch.float64)
    y[1:] = 0.6 * a[:-1] - 0.5 * b[:-1] + 0.4 * c[:-1]
    y = 10 + 3 * y + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    rows = [f"{a[i]:.6f},{b[i]:.6f},{c[i]:.6f},{'' if i % missing_every == 4 else f'{y[i]:.6f}'}" for i in range(n)]
    path.write_text("a,b,c,y\n" + "\n".join(rows) + "\n")
    return path


def online(tmp_path: Path, data: Path, name: str, *args: str) -> dict:
    out = tmp_path / name
    assert main(["online", "--data", str(data), "--algorithm", "ekf", "--nodes", "1", "--topology", "complete",
                 *args, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


def test_three_inputs_beat_each_single_input(tmp_path, capsys):
    data = three_input_csv(tmp_path / "multi.csv")
    common = ["--target", "y", "--no-past-target", "--window", "2", "--seed", "3"]
    full = online(tmp_path, data, "abc", "--inputs", "a,b,c", *common)
    printed = capsys.readouterr().out
    singles = {col: online(tmp_path, data, col, "--inputs", col, *common) for col in "abc"}
    for col, single in singles.items():
        assert full["final_mse_data_units"] < 0.6 * single["final_mse_data_units"], col
    assert full["features"] == ["a", "b", "c"] and full["scaling"] == "causal" and full["warmup"] == 20
    # every 9th target is missing: counted, predicted without a score, not an error
    expected_missing = sum(1 for i in range(20, 160) if i % 9 == 4)
    assert full["missing_labels"] == expected_missing == full["skipped_labels"]
    assert "y's units squared" in printed and f"{expected_missing} missing labels" in printed
    # MSE in data units ≈ scaled MSE × the target's variance (the causal scale is ≈ 3·0.88 late in the series)
    ratio = full["final_mse_data_units"] / full["final_mse"]
    assert 3.0 < ratio < 12.0


def test_one_column_csv_works_as_before(tmp_path):
    data = tmp_path / "one.csv"
    data.write_text("value\n" + "\n".join(str(1.0 + 0.01 * (i % 17)) for i in range(80)) + "\n")
    causal = online(tmp_path, data, "causal", "--steps", "30")
    whole = online(tmp_path, data, "whole", "--steps", "30", "--scaling", "standardize")
    assert causal["features"] == whole["features"] == ["value (past)"]
    assert whole["observations"] == 78 and causal["observations"] == 60  # 20 warm-up rows feed the scaler only
    assert causal["final_mse_data_units"] is not None and whole["mse_naive_data_units"] > 0


@pytest.mark.parametrize(("args", "message"), [
    ([], r"has 4 columns \['a', 'b', 'c', 'y'\]; choose one with --column \(or several input series with "
         r"--inputs and --target\)"),
    (["--inputs", "a,b"], "--inputs needs --target"),
    (["--inputs", "a,q", "--target", "y"], r"no column 'q' in .*multi.csv; its columns are \['a', 'b', 'c', 'y'\] "
                                           r"\(fix --inputs\)"),
    (["--column", "y", "--target", "y"], "--column picks one series"),
    (["--target", "y", "--window", "500"], r"multi.csv has 160 rows: --window 500 plus a horizon of 1 leave no "
                                           r"window to forecast; shorten --window, or add rows"),
    (["--target", "y", "--warmup", "1"], r"warm-up of at least 2 rows .*\(fix --warmup\)"),
])
def test_online_errors_name_the_flag(tmp_path, capsys, args, message):
    data = three_input_csv(tmp_path / "multi.csv")
    assert main(["online", "--data", str(data), *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distlstm online: error:") and re.search(message, err), err


def test_a_missing_input_cell_names_file_line_and_column(tmp_path, capsys):
    data = three_input_csv(tmp_path / "multi.csv")
    lines = data.read_text().splitlines()
    lines[6] = "," + lines[6].split(",", 1)[1]  # line 7 of the file: empty 'a'
    data.write_text("\n".join(lines) + "\n")
    assert main(["online", "--data", str(data), "--inputs", "a,b", "--target", "y", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "multi.csv, line 7, column 'a': empty cell" in capsys.readouterr().err


def test_the_last_value_reference_in_data_units_is_the_scaled_one_times_the_scale_squared(tmp_path):
    """With --scaling standardize every observation has the same scale s, so each data-units MSE is s² times
    the scaled one: the reference's as the learner's (both from the records' per-observation factors)."""
    data = three_input_csv(tmp_path / "t.csv")
    s = online(tmp_path, data, "std", "--inputs", "a,b,c", "--target", "y", "--scaling", "standardize")
    s2 = s["final_mse_data_units"] / s["final_mse"]
    assert s2 != pytest.approx(1.0)  # the scale is not 1: the check below can tell the units apart
    assert s["mse_naive_data_units"] == pytest.approx(s["mse_naive"] * s2, rel=1e-9)
