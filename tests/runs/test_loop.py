"""The run loop: resume equality, interrupts, folder rules, checkpoint fallbacks, config resolution."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from distlstm.cli_runs import RunCommand, add_run_command, resolve_command, run_command
from distlstm.runs.checkpoint import CHECKPOINT, PREVIOUS, load_run_checkpoint
from distlstm.runs.config import LoopConfig, config_document
from distlstm.runs.files import save_checkpoint
from distlstm.runs.loop import RunInterrupted, run
from tests.runs.toy import ToyConfig, ToyMode


def doc(toy: ToyConfig, loop: LoopConfig) -> dict:
    return config_document("toy", "online", {"toy": toy, "loop": loop})


def go(folder, loop: LoopConfig, toy: ToyConfig = ToyConfig(), **kw):  # noqa: B008
    return run(ToyMode(toy), loop, folder=folder, config=doc(toy, loop), **kw)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    whole = go(tmp_path / "a", LoopConfig(steps=20, eval_every=5, checkpoint_every=3, progress=False))
    part = go(tmp_path / "b", LoopConfig(steps=7, eval_every=5, checkpoint_every=3, progress=False))
    assert part.summary["steps"] == 7
    rest = go(tmp_path / "b", LoopConfig(steps=20, eval_every=5, checkpoint_every=3, progress=False), resume=True)
    a, _ = load_run_checkpoint(tmp_path / "a")
    b, _ = load_run_checkpoint(tmp_path / "b")
    assert torch.equal(a["state"]["model"]["theta"], b["state"]["model"]["theta"])
    assert [r["train_loss"] for r in whole.rows] == [r["train_loss"] for r in rest.rows]
    assert whole.summary["loss"] == rest.summary["loss"]
    assert (tmp_path / "a" / "metrics.png").exists() and (tmp_path / "a" / "toy.txt").exists()
    lines = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,seconds,loss,train_loss" and len(lines) == 22  # header, step 0 (untrained), 20 steps
    assert [(r["step"], r["train_loss"]) for r in rest.rows] == [(r["step"], r["train_loss"]) for r in whole.rows]
    evaluated = [(r["step"], r["loss"]) for r in whole.rows if r["loss"] == r["loss"]]
    assert evaluated == [(r["step"], r["loss"]) for r in rest.rows if r["step"] != 7 and r["loss"] == r["loss"]]


def test_two_runs_cannot_share_a_folder(tmp_path):
    from distlstm.runs.folder import run_lock

    with run_lock(tmp_path / "x"), pytest.raises(ValueError, match=r"in use by another run \(process \d+"):
        go(tmp_path / "x", LoopConfig(steps=2, progress=False))
    (tmp_path / "x" / ".lock").write_text("999999999 " + __import__("socket").gethostname())  # a dead process
    go(tmp_path / "x", LoopConfig(steps=2, progress=False))  # a stale lock is taken over
    assert not (tmp_path / "x" / ".lock").exists()


def test_flipped_bits_in_a_checkpoint_are_detected(tmp_path):
    go(tmp_path / "x", LoopConfig(steps=4, checkpoint_every=2, progress=False))
    ckpt, _ = load_run_checkpoint(tmp_path / "x")
    ckpt["state"]["model"]["theta"][0] = 1e37
    save_checkpoint(tmp_path / "x" / CHECKPOINT, ckpt)
    with pytest.warns(UserWarning, match="checkpoint.pt is damaged.*going on from the previous checkpoint"):
        older, path = load_run_checkpoint(tmp_path / "x")
    assert path.name == PREVIOUS and older["step"] == 2


def test_a_file_in_place_of_the_folder_is_an_error_before_any_work(tmp_path):
    (tmp_path / "f").write_text("x")
    mode = ToyMode(ToyConfig())
    with pytest.raises(ValueError, match="exists and is not a folder"):
        run(mode, LoopConfig(steps=2, progress=False), folder=tmp_path / "f")
    assert not hasattr(mode, "theta")  # nothing ran


def test_a_changed_seed_changes_the_numbers(tmp_path):
    a = go(None, LoopConfig(steps=5, progress=False))
    b = go(None, LoopConfig(steps=5, progress=False, seed=1))
    assert a.summary["loss"] != b.summary["loss"]


def test_sigint_checkpoints_then_resume_finishes(tmp_path):
    loop = LoopConfig(steps=12, eval_every=100, checkpoint_every=100, progress=False)
    with pytest.raises(RunInterrupted, match=r"interrupted at step 4: checkpoint written to .*--resume"):
        go(tmp_path / "r", loop, ToyConfig(interrupt_at=4))
    ckpt, _ = load_run_checkpoint(tmp_path / "r")
    assert ckpt["step"] == 4 and ckpt["last_metric"] > 0  # the interrupt evaluates too
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())  # the folder reads like a finished run's
    assert summary["stopped_by"] == "interrupted" and summary["steps"] == 4
    assert (tmp_path / "r" / "metrics.png").stat().st_size > 0
    resumed = go(tmp_path / "r", loop, ToyConfig(interrupt_at=4), resume=True)
    whole = go(None, loop)
    assert resumed.summary["loss"] == whole.summary["loss"]


def test_new_run_refuses_a_used_folder(tmp_path):
    loop = LoopConfig(steps=2, progress=False)
    go(tmp_path / "x", loop)
    with pytest.raises(ValueError, match="already holds a run; continue it with resume=True"):
        go(tmp_path / "x", loop)
    go(tmp_path / "x", loop, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not a distlstm run folder.*refusing"):
        go(other, loop, overwrite=True)
    assert (other / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match=r"no config.json"):
        go(other, loop, resume=True)


def test_unsafe_change_on_resume_lists_differences(tmp_path):
    go(tmp_path / "x", LoopConfig(steps=2, progress=False))
    with pytest.raises(ValueError, match=r"loop.seed: 0 in the run, 3 now; toy.lr: 0.1 in the run, 0.2 now"):
        go(tmp_path / "x", LoopConfig(steps=4, progress=False, seed=3), ToyConfig(lr=0.2), resume=True)
    go(tmp_path / "x", LoopConfig(steps=4, progress=False, eval_every=1), resume=True)  # budget and cadence: fine


def test_a_setting_added_after_the_run_was_written_is_no_difference(tmp_path):
    go(tmp_path / "x", LoopConfig(steps=2, progress=False))
    stored = json.loads((tmp_path / "x" / "config.json").read_text())
    del stored["toy"]["lr"]  # as if the run predates the --lr flag
    (tmp_path / "x" / "config.json").write_text(json.dumps(stored))
    assert go(tmp_path / "x", LoopConfig(steps=3, progress=False), resume=True).summary["steps"] == 3


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    go(tmp_path / "x", LoopConfig(steps=6, checkpoint_every=2, progress=False))
    (tmp_path / "x" / CHECKPOINT).write_bytes(b"\x00truncated")
    with pytest.warns(UserWarning, match=r"checkpoint.pt is not a readable distlstm checkpoint.*going on from"):
        ckpt, path = load_run_checkpoint(tmp_path / "x")
    assert path.name == PREVIOUS and ckpt["step"] == 4
    (tmp_path / "x" / PREVIOUS).write_bytes(b"bad too")
    with pytest.raises(ValueError, match=r"checkpoint.prev.pt is not a readable distlstm checkpoint"):
        load_run_checkpoint(tmp_path / "x")


@pytest.mark.parametrize(("payload", "message"), [
    ({"version": 1, "theta": torch.zeros(2)}, "written by distlstm 0.1"),
    ({"format": "distlstm-run", "version": 99, "mode": "online"}, "newer than this distlstm reads"),
    ({"format": "distlstm-run", "version": 2, "mode": "es"}, "checkpoint of a 'es' run, not of a 'online' run"),
    ({"something": "else"}, "not a distlstm run checkpoint"),
])
def test_foreign_checkpoints_are_refused(tmp_path, payload, message):
    (tmp_path / "config.json").write_text("{}")
    save_checkpoint(tmp_path / CHECKPOINT, payload)
    with pytest.raises(ValueError, match=message):
        load_run_checkpoint(tmp_path, "online")


TOY = RunCommand(name="toy", help="toy", description="toy", sections={"toy": ToyConfig},
                 make_mode=lambda s: ToyMode(s["toy"]), mode_name=lambda s: "online", default_out="runs/toy",
                 loop_defaults={"steps": 5, "eval_every": 2})


def parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_run_command(sub, TOY)
    return parser.parse_args(["toy", *argv])


def test_flags_and_config_file_give_the_same_run(tmp_path):
    by_flags = parse(["--lr", "0.3", "--steps", "6", "--out", str(tmp_path / "f"), "--no-progress"])
    assert run_command(TOY, by_flags) == 0
    stored = json.loads((tmp_path / "f" / "config.json").read_text())
    assert stored["toy"]["lr"] == 0.3 and stored["loop"]["steps"] == 6 and stored["loop"]["eval_every"] == 2
    (tmp_path / "c.json").write_text(json.dumps(stored))
    by_file = parse(["--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "g")])
    assert run_command(TOY, by_file) == 0
    a = json.loads((tmp_path / "f" / "summary.json").read_text())
    b = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert a["loss"] == b["loss"] and a["steps"] == b["steps"] == 6
    assert json.loads((tmp_path / "g" / "config.json").read_text()) == stored


def test_resume_from_folder_alone(tmp_path, capsys):
    assert run_command(TOY, parse(["--steps", "3", "--out", str(tmp_path / "r"), "--noise", "0.7",
                                   "--no-progress"])) == 0
    assert run_command(TOY, parse(["--resume", str(tmp_path / "r"), "--steps", "8"])) == 0
    whole = parse(["--steps", "8", "--out", str(tmp_path / "w"), "--noise", "0.7", "--no-progress"])
    assert run_command(TOY, whole) == 0
    a = json.loads((tmp_path / "r" / "summary.json").read_text())
    b = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert a["loss"] == b["loss"]
    with pytest.raises(ValueError, match=r"toy.noise: 0.7 in the run, 0.1 now"):
        run_command(TOY, parse(["--resume", str(tmp_path / "r"), "--noise", "0.1"]))
    with pytest.raises(ValueError, match="leave out --out"):
        resolve_command(TOY, parse(["--resume", str(tmp_path / "r"), "--out", "x"]))


def test_config_file_with_unknown_setting(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"toy": {"lrr": 1}}))
    with pytest.raises(ValueError, match=r"\[toy\]: unknown setting\(s\) \['lrr'\]"):
        resolve_command(TOY, parse(["--config", str(tmp_path / "c.json")]))


def test_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    go(tmp_path / "t", LoopConfig(steps=3, progress=False, tensorboard=True))
    assert list((tmp_path / "t" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_run_that_fails_to_start_leaves_its_folder_reusable(tmp_path):
    class Broken(ToyMode):
        def init(self, comm, seed):
            raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        run(Broken(ToyConfig()), LoopConfig(steps=2, progress=False), folder=tmp_path / "x")
    go(tmp_path / "x", LoopConfig(steps=2, progress=False))  # no --overwrite needed


def test_device_choice_within_what_the_mode_runs_on(tmp_path):
    from distlstm.runs.loop import resolve_device

    cpu_only, anywhere = ToyMode(ToyConfig()), ToyMode(ToyConfig())
    anywhere.devices = ("cpu", "cuda")
    assert resolve_device("cpu", anywhere).type == "cpu" and resolve_device("auto", cpu_only).type == "cpu"
    assert resolve_device("auto", anywhere).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="the online mode runs on the CPU only; use device= cpu"):
        resolve_device("cuda", cpu_only)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device= cuda: this machine has no CUDA GPU"):
            resolve_device("cuda", anywhere)
    with pytest.raises(SystemExit):
        parse(["--device", "tpu"])  # argparse refuses it (exit 2) listing the choices


def test_device_flag_on_a_command(tmp_path, capsys):
    assert run_command(TOY, parse(["--device", "cpu", "--out", str(tmp_path / "d"), "--no-progress"])) == 0
    assert json.loads((tmp_path / "d" / "config.json").read_text())["loop"]["device"] == "cpu"
    from distlstm._flags import cli_spelling

    # the toy mode, like the filters and ES, runs on the CPU only: refused before anything is written
    with pytest.raises(ValueError, match="runs on the CPU only; use --device cpu"), cli_spelling():
        run_command(TOY, parse(["--device", "cuda", "--out", str(tmp_path / "e")]))
    assert not (tmp_path / "e").exists()


def test_file_names_are_stored_absolute_so_a_run_resumes_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_command(TOY, parse(["--notes", "data/x.csv", "--steps", "2", "--out", "r", "--no-progress"])) == 0
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["toy"]["notes"] == str(tmp_path / "data" / "x.csv")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_command(TOY, parse(["--resume", str(tmp_path / "r"), "--steps", "3"])) == 0


def test_evaluated_rows_are_the_rows_with_the_metric(tmp_path):
    from distlstm.runs.metrics import evaluated_rows

    result = go(tmp_path / "x", LoopConfig(steps=7, eval_every=3, progress=False))
    assert len(result.rows) == 8  # read back from metrics.csv: every row has every column, NaN where empty
    assert [r["step"] for r in evaluated_rows(result.rows, "loss")] == [0, 3, 6, 7]
    assert [r["step"] for r in evaluated_rows(go(None, LoopConfig(steps=4, eval_every=2, progress=False)).rows,
                                              "loss")] == [0, 2, 4]  # in memory: rows without the key



def test_a_flipped_bit_in_the_plain_fields_is_an_error_not_a_different_step(tmp_path):
    # The state's checksum covers tensors and artifacts, not step/config beside them: without the
    # zip CRC check, a flipped bit in the pickled `step` resumed at another step without a word.
    import struct
    import zipfile

    from distlstm.runs.files import load_checkpoint

    go(tmp_path / "x", LoopConfig(steps=3, checkpoint_every=3, progress=False))
    path = tmp_path / "x" / CHECKPOINT
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the stored pickle: step, config, state
    for offset in range(start, start + info.compress_size):
        flipped = bytearray(raw)
        flipped[offset] ^= 1
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="is damaged"):
            load_checkpoint(path)


@pytest.mark.parametrize(("kw", "message"), [
    ({"seed": 2**70}, r"seed=? must be a whole number from 0 to 4294967295, got 1180591620717411303424"),
    ({"seed": -1}, r"seed=? must be .* got -1"),
    ({"stop_at": float("nan")}, r"stop_at=? must be a finite number, got nan")])
def test_a_seed_out_of_range_or_a_nan_stop_at_is_named(kw, message):
    # 2**70 failed deep in torch ("Overflow when unpacking long long"); a NaN --stop-at never stopped anything
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kw)
    LoopConfig(seed=2**32 - 1, stop_at=0.5)  # the edges that work


@pytest.mark.parametrize("under_torchrun", [True, False])
def test_a_lost_peer_leaves_sigterm_ignored_only_under_torchrun(monkeypatch, under_torchrun):
    """torchrun's agent SIGTERMs the survivors when one worker dies: they must live to print why they stop."""
    import signal

    from distlstm.runs.loop import PeerLost, _stop_signals

    if under_torchrun:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    else:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(PeerLost), _stop_signals([False]):
            raise PeerLost("rank 0: another worker stopped answering")
        after = signal.getsignal(signal.SIGTERM)
        assert after == (signal.SIG_IGN if under_torchrun else before)
        with pytest.raises(ValueError), _stop_signals([False]):  # any other error restores the handlers
            raise ValueError("not a lost peer")
        assert signal.getsignal(signal.SIGTERM) == after
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_time_budget_shows_progress_in_seconds_and_counts_the_steps(tmp_path, capsys):
    """A --seconds run's number of steps is unknown: the bar runs over the budget, not over --steps."""
    result = go(tmp_path / "t", LoopConfig(steps=10**9, seconds=1.0, eval_every=10**6))
    err = capsys.readouterr().err
    assert result.summary["stopped_by"] == "seconds"
    assert "/1 s [" in err and f"step={result.summary['steps']}" in err and "1000000000" not in err
    go(tmp_path / "n", LoopConfig(steps=3, eval_every=1))
    assert "3/3 [" in capsys.readouterr().err  # without a budget: steps
    go(tmp_path / "s", LoopConfig(steps=3, seconds=100.0, eval_every=1))
    assert "stopped_by=steps" in capsys.readouterr().err  # ended before the budget: the bar says why
