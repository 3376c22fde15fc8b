"""Tables and forecasting windows: content by hand, missing labels, the causal scaler, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distlstm._flags import cli_spelling
from distlstm.data.forecast import forecast_windows
from distlstm.data.series import Scaler, load_series, windows
from distlstm.data.table import read_table


def write(folder: Path, text: str, name: str = "t.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def random_table(folder: Path, n: int = 60, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 3.0
    return write(folder, "a,b,y\n" + "\n".join(",".join(f"{x:.9f}" for x in row) for row in v.tolist()) + "\n")


def test_windows_by_hand_with_a_missing_label(tmp_path):
    path = write(tmp_path, "a,y\n1,10\n2,20\n3,\n4,40\n5,50\n")
    fc = forecast_windows(read_table(path), "y", ["a"], window=2, scaling="none")
    # window rows [e-2, e): features (a, past y), label y[e]; the missing y[2] is a NaN label and,
    # as a past value, carried forward from y[1]
    assert fc.ends.tolist() == [2, 3, 4]
    assert fc.x[0].tolist() == [[1, 10], [2, 20]] and math.isnan(float(fc.d[0]))
    assert fc.x[1].tolist() == [[2, 20], [3, 20]] and float(fc.d[1]) == 40
    assert fc.x[2].tolist() == [[3, 20], [4, 40]] and float(fc.d[2]) == 50
    assert fc.label_lines == [4, 5, 6] and fc.features == ["a", "y (past)"]
    assert fc.last_target.tolist() == [20, 20, 40]  # the naive forecast: last observed target
    ahead = forecast_windows(read_table(path), "y", ["a"], window=2, horizon=2, scaling="none", past_target=False)
    assert ahead.x[0].tolist() == [[1], [2]] and float(ahead.d[0]) == 40 and len(ahead) == 2


def test_one_series_with_the_whole_series_scaler_is_the_reproductions_windows(tmp_path):
    path = random_table(tmp_path)
    y = load_series(path, "y")
    old = windows(Scaler.fit(y)(y), 3)
    new = forecast_windows(read_table(path), "y", window=3, scaling="standardize").observations
    assert len(old) == len(new)
    assert all(torch.equal(o.x, n.x) and o.d == n.d for o, n in zip(old, new, strict=True))


def test_the_causal_scaler_uses_the_rows_before_each_forecast(tmp_path):
    path = random_table(tmp_path)
    table = read_table(path)
    fc = forecast_windows(table, "y", ["a", "b"], window=3, scaling="causal", warmup=10)
    assert int(fc.ends[0]) == 10
    for i in (0, 17):
        e = int(fc.ends[i])
        past = table.values[:e]
        mean, std = past.mean(0), past.std(0)  # unbiased, as the whole-series scaler
        torch.testing.assert_close(fc.x[i], (past[e - 3 : e] - mean) / std, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fc.d[i], (table.values[e, 2] - mean[2]) / std[2], rtol=1e-10, atol=1e-12)
        assert float(fc.to_data_units(fc.d)[i]) == pytest.approx(float(table.values[e, 2]), rel=1e-12)


def test_the_causal_scaler_never_reads_the_future(tmp_path):
    table = read_table(random_table(tmp_path))
    cut = 35
    future = read_table(random_table(tmp_path))
    future.values[cut:] = future.values[cut:] * 1e3 - 7.0  # the future changes completely
    a = forecast_windows(table, "y", ["a", "b"], window=4, warmup=8)
    b = forecast_windows(future, "y", ["a", "b"], window=4, warmup=8)
    known = a.ends <= cut  # forecasts made with rows < cut only
    assert int(known.sum()) > 20
    assert torch.equal(a.x[known], b.x[known]) and torch.equal(a.scale[known], b.scale[known])
    assert torch.equal(a.shift[known], b.shift[known])
    labels_known = a.ends < cut  # ... whose label row is before the cut too
    assert torch.equal(a.d[labels_known], b.d[labels_known])
    assert not torch.equal(a.x[~known], b.x[~known])  # the test can fail: later windows did change
    whole_a = forecast_windows(table, "y", ["a", "b"], window=4, scaling="standardize")
    whole_b = forecast_windows(future, "y", ["a", "b"], window=4, scaling="standardize")
    assert not torch.equal(whole_a.x[:5], whole_b.x[:5])  # the whole-series scaler does read the future


@pytest.mark.parametrize(("text", "message"), [
    ("a,y\n1,2\nx,3\n4,5\n", r"t.csv, line 3, column 'a': expected a finite number, got 'x'"),
    ("a,y\n1,2\n3\n4,5\n", r"t.csv, line 3: 1 cells, but the header has 2"),
    ("a,y\n", r"has a header \(a, y\) but no data rows"),
    ("a,y\n1,inf\n2,3\n", r"line 2, column 'y': expected a finite number, got 'inf'"),
])
def test_bad_tables_name_file_line_and_column(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_table(write(tmp_path, text))


def forecast(tmp_path: Path, text: str, **kwargs):
    kwargs = {"target": "y", "inputs": ["a"], "window": 2, **kwargs}
    return forecast_windows(read_table(write(tmp_path, text)), kwargs.pop("target"), kwargs.pop("inputs"), **kwargs)


RAMP = "a,y\n" + "".join(f"{i},{i * i % 7}\n" for i in range(30))


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    (RAMP, {"target": "z"}, r"no column 'z' in .*t.csv; its columns are \['a', 'y'\] \(fix target=\)"),
    (RAMP, {"inputs": ["a", "b"]}, r"no column 'b' .*\(fix inputs=\)"),
    ("a,b,c,y\n1,2,3,4\n5,6,7,8\n", {"inputs": ["a", "b", "c"]}, r"has 2 rows but 3 input columns"),
    (RAMP, {"window": 40, "scaling": "none"}, r"30 rows: window=40 plus a horizon of 1 leave no window"),
    (RAMP, {"window": 5, "warmup": 30}, r"causal scaler.s warmup=30\)"),
    ("a,y\n1,2\n,3\n4,5\n1,1\n", {"scaling": "none"}, r"t.csv, line 3, column 'a': empty cell"),
    ("a,y\n" + "".join(f"3,{i}\n" for i in range(30)), {}, r"column 'a' of .*t.csv is constant \(every value is 3\)"),
    ("a,y\n" + "".join(f"{(1 + i % 3) * 1e300},{i}\n" for i in range(30)), {"scaling": "standardize"},
     r"column 'a' .*scale is not finite \(values reach 3e\+300"),
    ("a,y\n" + "".join(f"{0 if i < 12 else i},{i}\n" for i in range(30)), {"warmup": 10},
     r"column 'a' .*fewer than 2 distinct values before line 12.*raise warmup="),
    (RAMP, {"inputs": ["y"]}, r"the target 'y' is also in inputs=.*past_target=False"),
    ("a,y\n" + "".join(f"{i},5\n" for i in range(30)), {}, r"column 'y' .* is constant .*nothing to learn"),
])
def test_bad_forecasting_input_names_the_option_that_fixes_it(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        forecast(tmp_path, text, **kwargs)


def test_on_the_command_line_messages_name_flags(tmp_path):
    with cli_spelling(), pytest.raises(ValueError, match=r"\(fix --target\)"):
        forecast(tmp_path, RAMP, target="z")
    with cli_spelling(), pytest.raises(ValueError, match=r"choose one with --column \(or several input series "
                                                          r"with --inputs and --target\)"):
        load_series(write(tmp_path, "a,b\n1,2\n3,4\n5,6\n"))
    with pytest.raises(ValueError, match=r"choose one with column=$"):
        load_series(write(tmp_path, "a,b\n1,2\n3,4\n5,6\n"))
