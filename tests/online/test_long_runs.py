"""Long online runs: running sums equal the per-step reference, the final window, flat memory, PSD checks."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from distlstm.bench.robust import _Probe, long_ekf_mode, rss_mib
from distlstm.modes.online import OnlineMode
from distlstm.online import records as records_module
from distlstm.online.records import Z95, OnlineRecords
from distlstm.ops.psd import psd_problem
from distlstm.runs.config import LoopConfig
from distlstm.runs.loop import run
from distlstm.runtime.comm import LocalComm


def _random_step(gen: torch.Generator, nodes: int) -> tuple[list[float], list[float], float, float, float]:
    errors = (torch.rand(nodes, generator=gen, dtype=torch.float64) ** 2).tolist()
    variances = (torch.rand(nodes, generator=gen, dtype=torch.float64) * 0.2).tolist()
    if torch.rand((), generator=gen) < 0.2:
        errors[0] = math.nan  # a missing label
    return errors, variances, 10.0, 2.0, 0.001


def _random_records(steps: int, nodes: int = 3, seed: int = 0, keep: bool = True,
                    per_node: bool = False) -> OnlineRecords:
    gen = torch.Generator().manual_seed(seed)
    rec = OnlineRecords("ekf", nodes, keep_steps=keep, per_node=per_node)
    for _ in range(steps):
        rec.append(*_random_step(gen, nodes))
    return rec


def _window_reference(rec: OnlineRecords, start: int) -> float:
    vals = [v for row in rec.sq_errors[start:] for v in row if not math.isnan(v)]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("steps", [1, 5, 8, 9, 37, 123])
def test_final_window_is_the_last_fifth_exact_while_blocks_are_single_steps(monkeypatch, steps):
    monkeypatch.setattr(records_module, "MAX_BLOCKS", 8)
    rec = _random_records(steps)
    block = rec.window.block
    cut = int(steps * 0.8)
    start = cut // block * block  # the documented start: the block boundary at or before ⌊0.8·S⌋
    assert start <= cut < start + block and block <= max(1, 2 * steps // 8)
    if steps <= 8:
        assert block == 1 and start == cut
    assert rec.final_mse() == pytest.approx(_window_reference(rec, start), rel=1e-12)


@pytest.mark.parametrize("steps", [1, 5, 8, 9, 37, 123])
def test_per_node_final_window_equals_the_per_step_reference(monkeypatch, steps):
    monkeypatch.setattr(records_module, "MAX_BLOCKS", 8)
    rec = _random_records(steps, nodes=4, per_node=True)
    start = int(steps * 0.8) // rec.window.block * rec.window.block
    for nodes in ([0], [1, 3], [0, 1, 2, 3]):
        vals = [row[k] for row in rec.sq_errors[start:] for k in nodes if not math.isnan(row[k])]
        want = sum(vals) / len(vals) if vals else math.nan
        assert rec.final_mse_of(nodes) == pytest.approx(want, rel=1e-12, nan_ok=True)
    assert rec.final_mse_of([0, 1, 2, 3]) == pytest.approx(rec.final_mse(), rel=1e-12, nan_ok=True)
    assert math.isnan(_random_records(steps, nodes=4).final_mse_of([0]))  # no per-node sums kept


def test_undoing_the_last_step_is_exact_across_block_merges(monkeypatch):
    """Appending step t, undoing it and appending another gives the records of the other alone, bit for bit
    (every t of 40 with 4 blocks at most: merges at steps 4, 8, 16 and 32)."""
    monkeypatch.setattr(records_module, "MAX_BLOCKS", 4)
    gen = torch.Generator().manual_seed(5)
    steps = [_random_step(gen, 3) for _ in range(40)]
    others = [_random_step(gen, 3) for _ in range(40)]
    for t in range(40):
        undone = OnlineRecords("ekf", 3, keep_steps=True, per_node=True)
        direct = OnlineRecords("ekf", 3, keep_steps=True, per_node=True)
        for s in steps[:t]:
            undone.append(*s)
            direct.append(*s)
        undone.append(*steps[t])
        undone.undo_last()
        with pytest.raises(RuntimeError, match="only the last step"):
            undone.undo_last()
        for rec in (undone, direct):
            rec.append(*others[t])
            for s in steps[t + 1:]:
                rec.append(*s)
        got, want = undone.to_tensors(), direct.to_tensors()
        assert got.keys() == want.keys()
        for name in got:
            assert torch.equal(got[name].nan_to_num(), want[name].nan_to_num()), (t, name)  # step_* lists too


def test_running_sums_equal_the_per_step_reference():
    rec = _random_records(200)
    running = rec.running_mse()
    assert rec.running_mse_now == pytest.approx(running[-1], rel=1e-12)
    assert rec.mean_running_mse == pytest.approx(sum(running) / len(running), rel=1e-12)
    pairs = [(e, v) for errs, vs in zip(rec.sq_errors, rec.variances, strict=True)
             for e, v in zip(errs, vs, strict=True) if not math.isnan(e)]
    assert rec.coverage95() == sum(e <= Z95 * Z95 * v for e, v in pairs) / len(pairs)
    assert rec.skipped_labels == sum(math.isnan(e) for row in rec.sq_errors for e in row) > 0
    assert rec.final_mse() == pytest.approx(_window_reference(rec, int(200 * 0.8)), rel=1e-12)
    assert rec.bytes_per_node_per_step == 10.0 and rec.steps == 200


def test_records_checkpoint_is_flat_and_round_trips(monkeypatch):
    monkeypatch.setattr(records_module, "MAX_BLOCKS", 16)
    sizes = {}
    for steps in (100, 1000, 5000):
        rec = _random_records(steps, keep=False)
        assert rec.sq_errors == [] and rec.steps == steps
        saved = rec.to_tensors()
        sizes[steps] = sum(t.numel() for t in saved.values())
        back = OnlineRecords.from_tensors("ekf", 3, saved)
        for name in ("final_mse", "coverage95"):
            assert getattr(back, name)() == getattr(rec, name)()
        assert (back.running_mse_now, back.mean_running_mse, back.skipped_labels, back.steps) == \
            (rec.running_mse_now, rec.mean_running_mse, rec.skipped_labels, rec.steps)
    bound = 3 * (16 + 1) + len(records_module._SUMS) + 2  # ≤ 16 blocks of 3 sums, a header, the sums, last MSE, seconds
    assert max(sizes.values()) <= bound and sizes[5000] <= bound  # whatever the number of steps


def test_a_checkpoint_with_per_step_lists_still_loads():
    rec = _random_records(40)
    old = {"sq_errors": torch.tensor(rec.sq_errors, dtype=torch.float64),
           "variances": torch.tensor(rec.variances, dtype=torch.float64),
           "bytes": torch.tensor(rec.bytes_per_step, dtype=torch.float64),
           "messages": torch.tensor(rec.messages_per_step, dtype=torch.float64),
           "seconds": torch.tensor(rec.seconds, dtype=torch.float64)}
    back = OnlineRecords.from_tensors("ekf", 3, old)
    assert back.final_mse() == pytest.approx(rec.final_mse(), rel=1e-12)
    assert back.coverage95() == rec.coverage95() and back.steps == 40


def test_a_node_loss_checkpoint_with_per_step_lists_loads_flat():
    """Before the per-node sums, a run that could lose nodes stored its per-step lists: a flat run rebuilds the
    per-node sums from them and drops the lists; a run that keeps its lists gets them back."""
    rec = _random_records(40, nodes=4, per_node=True)
    old = {name: t for name, t in rec.to_tensors().items() if name != "node_window"}
    assert "step_sq_errors" in old
    flat = OnlineRecords.from_tensors("ekf", 4, old, keep_steps=False, per_node=True)
    assert flat.sq_errors == [] and not flat.keep_steps
    assert flat.final_mse_of([1, 2]) == rec.final_mse_of([1, 2]) and flat.final_mse() == rec.final_mse()
    assert not any(name.startswith("step_") for name in flat.to_tensors())
    kept = OnlineRecords.from_tensors("ekf", 4, old, keep_steps=True, per_node=True)
    back = torch.tensor(kept.sq_errors, dtype=torch.float64)
    assert kept.keep_steps and torch.equal(back.nan_to_num(), old["step_sq_errors"].nan_to_num())


def test_per_step_lists_are_refused_clearly_when_not_kept():
    with pytest.raises(ValueError, match=r"metrics\.csv"):
        _random_records(3, keep=False).running_mse()


def test_the_covariance_check_runs_every_k_steps_and_names_node_and_step(monkeypatch):
    mode = long_ekf_mode(50, check_every=7)
    seen = []
    monkeypatch.setattr(mode, "check_covariances", lambda step: seen.append(step + 1))
    run(mode, LoopConfig(steps=30, progress=False), folder=None)
    assert seen == [7, 14, 21, 28]

    mode = long_ekf_mode(50)
    mode.init(LocalComm(), 0)
    P = mode.states[0].P.clone()
    P[0, 1] = P[1, 0] = 2 * float(P.diagonal()[:2].max())  # diagonal unchanged and positive: not PSD
    mode.states[0] = mode.states[0]._replace(P=P)
    with pytest.raises(FloatingPointError, match=r"ekf at node 0, step 12: the covariance Σ .* not positive "
                                                  r"semidefinite \(smallest eigenvalue -"):
        mode.check_covariances(11)


def test_psd_problem_accepts_valid_covariances_and_nothing_else():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    singular = a @ a.T  # rank 3 of 6: PSD, not PD
    assert psd_problem(singular) is None and psd_problem(torch.eye(4)) is None
    assert "not positive semidefinite" in psd_problem(singular - 1e-3 * torch.eye(6, dtype=torch.float64))
    assert "NaN/inf" in psd_problem(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]))
    assert "negative" in psd_problem(torch.diag(torch.tensor([1.0, -1.0])))


def _long_run(tmp_path, steps: int, marks: tuple[int, ...]) -> tuple[OnlineMode, dict[int, float]]:
    rss: dict[int, float] = {}
    mode = long_ekf_mode(steps, check_every=1000)
    run(_Probe(mode, marks, lambda s: rss.__setitem__(s, rss_mib())),  # type: ignore[arg-type]
        LoopConfig(steps=steps, progress=False, eval_every=1000, checkpoint_every=10_000), folder=tmp_path / "run")
    return mode, rss


def _check_long_run(tmp_path, mode: OnlineMode, steps: int) -> None:
    assert mode.records.steps == steps and mode.records.sq_errors == []
    assert psd_problem(mode.states[0].P) is None
    with (tmp_path / "run" / "mse.csv").open() as f:
        assert sum(1 for _ in csv.reader(f)) == steps + 1  # every step streamed, and the header
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert sum(t.numel() for t in ckpt["state"]["algorithm"]["records"].values()) <= \
        4 * (records_module.MAX_BLOCKS + 1) + 20


def test_a_few_thousand_ekf_steps_stream_to_disk(tmp_path):
    mode, _ = _long_run(tmp_path, 3_000, ())
    _check_long_run(tmp_path, mode, 3_000)


@pytest.mark.slow
def test_100k_ekf_steps_in_flat_memory_with_a_psd_covariance(tmp_path):
    mode, rss = _long_run(tmp_path, 100_000, (10_000, 100_000))
    _check_long_run(tmp_path, mode, 100_000)
    # the per-step lists alone would take ≈ 30 MiB here; allocator noise stays well below 16 MiB
    assert rss[100_000] - rss[10_000] < 16, rss
