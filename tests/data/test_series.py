"""CSV series loading, scaling, windows and the node split."""

from __future__ import annotations

import pytest
import torch

from distlstm.data.series import EXCHANGE_RATES, Scaler, load_series, naive_mse, split_round_robin, windows


def test_shipped_exchange_rates():
    dm = load_series(EXCHANGE_RATES)
    assert dm.shape == (1867,) and dm.dtype == torch.float64
    assert float(dm[0]) == pytest.approx(0.5861)  # 1980-01-02, USD per DEM
    assert float(load_series(EXCHANGE_RATES, "bp")[0]) == pytest.approx(2.249)


def test_plain_and_headed_csv(tmp_path):
    (tmp_path / "plain.csv").write_text("1.0\n2.5\n\n3.0\n")
    assert load_series(tmp_path / "plain.csv").tolist() == [1.0, 2.5, 3.0]
    (tmp_path / "head.csv").write_text("day,value\n1,10\n2,11\n3,12\n")
    assert load_series(tmp_path / "head.csv", "value").tolist() == [10.0, 11.0, 12.0]
    assert load_series(tmp_path / "head.csv", 1).tolist() == [10.0, 11.0, 12.0]


def test_bad_csvs_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("value\n1\nabc\n3\n")
    with pytest.raises(ValueError, match="line 3, column 'value': expected a finite number, got 'abc'"):
        load_series(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("1\nnan\n3\n4\n")
    with pytest.raises(ValueError, match="line 2"):
        load_series(tmp_path / "nan.csv")
    (tmp_path / "two.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(ValueError, match=r"2 columns \['a', 'b'\]; choose one"):
        load_series(tmp_path / "two.csv")
    with pytest.raises(ValueError, match="no column 'c'"):
        load_series(tmp_path / "two.csv", "c")
    (tmp_path / "short.csv").write_text("1\n2\n")
    with pytest.raises(ValueError, match="at least 3 values"):
        load_series(tmp_path / "short.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        load_series(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError):
        load_series(tmp_path / "missing.csv")


def test_windows_split_and_naive_forecast():
    s = torch.arange(10.0, dtype=torch.float64)
    obs = windows(s, 2)
    assert len(obs) == 8 and obs[0].x.tolist() == [[0.0], [1.0]] and obs[0].d == 2.0
    streams = split_round_robin(obs, 3)
    assert [ob.d for ob in streams[1]] == [3.0, 6.0]  # windows 1 and 4
    assert naive_mse(streams) == pytest.approx(1.0)  # a ramp: the last value is always 1 short
    with pytest.raises(ValueError, match="no window of 12"):
        windows(s, 12)
    with pytest.raises(ValueError, match="fewer than 9 nodes"):
        split_round_robin(obs[:8], 9)


def test_scalers():
    s = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    z = Scaler.fit(s)(s)
    assert float(z.mean()) == pytest.approx(0.0) and float(z.std()) == pytest.approx(1.0)
    m = Scaler.fit(s, "minmax")(s)
    assert float(m.min()) == -1.0 and float(m.max()) == 1.0
    with pytest.raises(ValueError, match="unknown scaling"):
        Scaler.fit(s, "log")
