"""Independent runs on several processes: the same figures as one process, in the serial order, failures named."""

from __future__ import annotations

import json
import re
import time

import pytest

from distlstm.cli import main
from distlstm.experiments import calibration
from distlstm.experiments.calibration import CalibrationConfig
from distlstm.experiments.ergen_kozat import ErgenKozatConfig, run
from distlstm.experiments.parallel import RunFailed, RunPool, resolve_jobs


def scaled(context: dict[str, float], spec: tuple[int, float]) -> float:
    """A worker's job: sleep (later specs finish first), fail on a negative value, else scale it."""
    value, pause = spec
    time.sleep(pause)
    if value < 0:
        raise ValueError(f"negative value {value}")
    return context["scale"] * value


def make_context(scale: float) -> dict[str, float]:
    return {"scale": scale}


class Bar:
    def __init__(self) -> None:
        self.n, self.labels = 0, []

    def update(self) -> None:
        self.n += 1

    def set_postfix_str(self, label: str) -> None:
        self.labels.append(label)


@pytest.mark.parametrize(("jobs", "error", "message"), [
    (1, ValueError, r"^negative value -7$"),  # the serial path raises the run's own error
    (2, RunFailed, r"^run value -7 failed: ValueError: negative value -7$"),  # a worker's error names the run
])
def test_results_in_the_order_of_the_specs_and_a_failing_run_named(jobs, error, message):
    specs = [(1, 0.6), (2, 0.0), (3, 0.0), (4, 0.0)]  # with 2 workers the first finishes last
    bar = Bar()
    started = []
    with pytest.raises(error, match=message), RunPool(scaled, make_context, 10.0, jobs=jobs, bar=bar) as pool:
        # sent costliest first (4, 3, 2, 1), returned in the order of the specs
        assert pool.map(specs, lambda s: f"value {s[0]}", cost=lambda s: s[0]) == [10.0, 20.0, 30.0, 40.0]
        assert pool.map([(5, 0.0)], str) == [50.0]  # the workers (and their context) serve a second phase
        assert bar.n == 5 and len(bar.labels) >= 5
        started.append(time.monotonic())
        pool.map([(-7, 0.0), (8, 0.0)] + [(9, 60.0)] * (jobs > 1), lambda s: f"value {s[0]}")
    assert time.monotonic() - started[0] < 30  # the 60 s run in flight was stopped, not waited for


def test_jobs_must_be_a_whole_number_at_least_zero(tmp_path, capsys):
    assert resolve_jobs(3) == 3 and resolve_jobs(0) >= 1
    with pytest.raises(ValueError, match=r"fix --jobs"):
        resolve_jobs(-1)
    with pytest.raises(SystemExit):
        main(["reproduce", "ergen-kozat", "--jobs", "-1", "--out", str(tmp_path)])
    assert "argument --jobs: must be a whole number ≥ 0, got -1" in capsys.readouterr().err
    assert main(["reproduce", "flstm-glstm", "--jobs", "2", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--jobs applies to ergen-kozat, calibration and matrix-batch, not flstm-glstm" in capsys.readouterr().err


TIMING = ("seconds_per_step",)


def without_timings(value):
    """The JSON figures less the timing fields (wall-clock: the only thing jobs may change)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_ergen_kozat_on_two_processes_gives_the_serial_figures(tmp_path):
    # 12 small runs: tuning (2 labels × 2 factors), evaluation (2 labels × 2 seeds), the sweep (2 points × 2 seeds)
    cfg = ErgenKozatConfig(tasks=("exchange",), exchange_steps=20, seeds=2, tune_factors=(1.0, 3.0), particles=10,
                           algorithms=("sgd", "dpf"), sweep_particles=(10,), sweep_walk_steps=(2,),
                           sweep_fixed_particles=10)
    f1 = run(cfg, tmp_path / "j1", show_progress=False, jobs=1)
    f2 = run(cfg, tmp_path / "j2", show_progress=False, jobs=2)
    for name in ("summary.json", "tuning.json", "sweep.json"):
        one, two = (json.loads((tmp_path / j / name).read_text()) for j in ("j1", "j2"))
        assert without_timings(one) == without_timings(two), name
    summary = json.loads((tmp_path / "j1" / "summary.json").read_text())
    assert [(r["dataset"], r["algorithm"]) for r in summary] == [("exchange", "sgd"), ("exchange", "dpf")]
    assert len({v for r in summary for v in r["final_mse"]["values"]}) == 4  # each seed its own run
    assert {k: v for k, v in f1.items() if not k.endswith("time_grows")} == \
        {k: v for k, v in f2.items() if not k.endswith("time_grows")}
    timing = re.compile(r"\d+(\.\d+)? ms|Time per step grows: \w+")  # the report's timings
    reports = [timing.sub("", (tmp_path / j / "report.md").read_text()) for j in ("j1", "j2")]
    assert reports[0] == reports[1] and "| dpf |" in reports[0]


def test_calibration_on_two_processes_gives_the_serial_rows(tmp_path):
    cfg = CalibrationConfig(datasets=("synthetic",), filters=("ekf", "pf"), synthetic_length=120, particles=20)
    one = calibration.run(cfg, tmp_path / "j1", show_progress=False, jobs=1)
    two = calibration.run(cfg, tmp_path / "j2", show_progress=False, jobs=2)
    assert one == two and [(r["algorithm"], r["variant"]) for r in two] == [
        (a, v) for a in ("ekf", "pf") for v in calibration.VARIANTS]
    assert (tmp_path / "j1" / "report.md").read_text() == (tmp_path / "j2" / "report.md").read_text()
