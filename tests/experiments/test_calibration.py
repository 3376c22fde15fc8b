"""The calibration experiment on a small synthetic run: every variant runs, the table and the CIs are right."""

from __future__ import annotations

import json

from distlstm.experiments.calibration import VARIANTS, CalibrationConfig, run, wilson_interval


def test_calibration_table_on_the_synthetic_series(tmp_path):
    cfg = CalibrationConfig(datasets=("synthetic",), filters=("ekf",), synthetic_length=240)
    rows = run(cfg, tmp_path, show_progress=False)
    assert [(r["algorithm"], r["variant"]) for r in rows] == [(a, v) for a in ("ekf",) for v in VARIANTS]
    for r in rows:
        assert r["labels"] == 240
        assert (r["ci_low"], r["ci_high"]) == wilson_interval(round(r["coverage95"] * 240), 240)
        assert r["ci_low"] <= r["coverage95"] <= r["ci_high"]
    by = {(r["algorithm"], r["variant"]): r for r in rows}
    # σ² = 0.01 against a noise variance near 0.5 (standardised): the fixed filter's interval is far too narrow
    assert by["ekf", "fixed"]["coverage95"] < 0.6
    assert by["ekf", "calibrated"]["coverage95"] > by["ekf", "fixed"]["coverage95"] + 0.2
    assert by["ekf", "calibrated"]["final_mse"] == by["ekf", "fixed"]["final_mse"]  # the interval only
    report = (tmp_path / "report.md").read_text()
    assert report.count("| synthetic |") == len(rows)
    assert json.loads((tmp_path / "summary.json").read_text())[0]["variant"] == "fixed"
