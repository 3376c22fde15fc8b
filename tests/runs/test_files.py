"""Run-folder helpers: atomic writes and safe checkpoints."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from distlstm.runs.files import load_checkpoint, plot_curves, save_checkpoint, write_csv, write_json


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "ckpt.pt"
    payload = {"theta": torch.randn(5), "step": 3, "generator": torch.Generator().manual_seed(1).get_state()}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["theta"], payload["theta"]) and loaded["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))


class Arbitrary:
    """Any pickled object; weights_only loading must refuse it."""


def test_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": Arbitrary()}, path)
    with pytest.raises(ValueError, match="objects other than tensors and plain data, which are never unpickled"):
        load_checkpoint(path)
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable distlstm checkpoint"):
        load_checkpoint(path)


def test_csv_json_and_plot(tmp_path):
    write_csv(tmp_path / "m.csv", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert rows[1] == {"step": "2", "loss": "1.5"}
    write_json(tmp_path / "s.json", {"a": 1})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}
    plot_curves(tmp_path / "p.png", {"loss": ([1, 2], [2.0, 1.5])}, xlabel="step", ylabel="loss", title="t",
                hlines={"floor": 1.0})
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "x.csv", [])
