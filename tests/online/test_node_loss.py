"""Online runs that lose nodes, in one process (the simulator of a dead worker): references by construction.

* "Survivors from the start" (``drops={k: 0}``) equals a run on the survivors' own graph, renumbered
  0 … S-1 — a different code path (a connected topology of S nodes, nothing lost) for diffusion SGD
  and DEKF, which draw no random numbers.
* A star that loses its hub leaves singletons: DPF (K = 1, resampling every step) at each leaf is then
  the leaf's own particle filter, drawing from the same per-node generator.
* A loss mid-run changes nothing before it, and the messages after it follow the reduced graph.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from distlstm.cli import main
from distlstm.modes.node_loss import NodeLeft, parse_drops
from distlstm.modes.online import OnlineConfig, OnlineMode, OnlineProblem
from distlstm.network import InProcessTransport, make_topology
from distlstm.network.graphs import Topology
from distlstm.online import algorithm_settings
from distlstm.online import records as records_module
from distlstm.online.dpf import DPF, walk_exponents
from distlstm.online.records import OnlineRecords
from distlstm.runs.checkpoint import load_run_checkpoint, save_run_checkpoint
from distlstm.runs.config import LoopConfig
from distlstm.runs.loop import run
from distlstm.runs.metrics import read_metrics
from distlstm.runtime.comm import LocalComm
from tests.network.test_node_loss_graphs import fresh

from .conftest import linear_streams

D = torch.float64
STEPS = 12


def records_of(fm, streams, algorithm: str, topo: Topology, settings: dict | None = None, *, drops=None,
               steps: int = STEPS, policy: str = "continue", folder=None, resume: bool = False,
               checkpoint_every: int = 1000, keep_steps: bool = True) -> OnlineMode:
    mode = OnlineMode(OnlineProblem(streams), algorithm, algorithm_settings(algorithm, settings), topo,
                      model=lambda _seed: (fm, torch.zeros(3, dtype=D)), on_node_loss=policy, drops=drops,
                      keep_steps=keep_steps)
    run(mode, LoopConfig(steps=steps, seed=3, progress=False, checkpoint_every=checkpoint_every), folder=folder,
        resume=resume)
    return mode


def survivors_final_mse(sq_errors: list[list[float]], survivors: list[int], fraction: float = 0.2) -> float:
    """The reference: the survivors' labelled squared errors over the last ``fraction`` of the kept steps."""
    start = int(len(sq_errors) * (1 - fraction))
    vals = [row[k] for row in sq_errors[start:] for k in survivors if not math.isnan(row[k])]
    return sum(vals) / len(vals) if vals else math.nan


def column(mode: OnlineMode, k: int) -> list[float]:
    return [row[k] for row in mode.records.sq_errors]


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("seconds_per_step",)}


def assert_flat_equals_kept(flat: OnlineMode, kept: OnlineMode) -> None:
    """A flat run (no per-step lists) reports what the run that kept them does, and the survivors' final MSE
    is the one computed by hand from the kept lists."""
    assert flat.records.sq_errors == [] and not flat.records.keep_steps
    s = flat.summary()
    assert without_timing(s) == without_timing(kept.summary())
    by_hand = survivors_final_mse(kept.records.sq_errors, s["survivors"])
    assert s["survivors_final_mse"] == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("algorithm", ["dsgd", "dekf"])
def test_survivors_from_the_start_equal_a_run_on_the_survivors_own_graph(linear_fm, algorithm):
    streams, _ = linear_streams(5, STEPS, 3, sigma=0.1, seed=0)
    topo = make_topology("ring", 5)
    survivors = [0, 1, 3, 4]  # the ring without 2 is the line 3-4-0-1
    lost = records_of(linear_fm, streams, algorithm, topo, drops={2: 0})
    own = records_of(linear_fm, [streams[k] for k in survivors], algorithm, fresh(topo, survivors))
    for i, k in enumerate(survivors):
        assert column(lost, k) == pytest.approx(column(own, i), rel=1e-12, abs=0)
        assert torch.allclose(lost.final_thetas()[k], own.final_thetas()[i], rtol=1e-12, atol=0)
    assert all(math.isnan(e) for e in column(lost, 2))
    assert lost.summary()["survivors_final_mse"] == pytest.approx(own.records.final_mse(), rel=1e-12)


def test_dpf_leaves_of_a_star_without_its_hub_are_their_own_particle_filters(linear_fm):
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.3, seed=1)
    star = make_topology("star", 4)
    common = {"num_particles": 25, "ess_threshold": 1.0, "sigma2": 0.1}
    dpf = records_of(linear_fm, streams, "dpf", star, {**common, "walk_steps": 1}, drops={0: 0})
    pf = records_of(linear_fm, streams, "pf", star, common)
    for k in (1, 2, 3):
        assert column(dpf, k) == pytest.approx(column(pf, k), rel=1e-9)
    assert dpf.summary()["components"] == [[1], [2], [3]]
    assert "fell apart into 3 parts that go on alone: {1} {2} {3}" in dpf.summary()["node_loss_report"]


@pytest.mark.parametrize("algorithm", ["dsgd", "dekf", "dpf"])
def test_a_loss_mid_run_keeps_the_past_and_the_survivors_go_on_over_the_reduced_graph(linear_fm, algorithm):
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=2)
    ring = make_topology("ring", 4)
    settings = {"num_particles": 20, "walk_steps": 2} if algorithm == "dpf" else None
    whole = records_of(linear_fm, streams, algorithm, ring, settings)
    lost = records_of(linear_fm, streams, algorithm, ring, settings, drops={1: 5})
    assert lost.records.sq_errors[:5] == whole.records.sq_errors[:5]
    assert all(math.isnan(row[1]) for row in lost.records.sq_errors[5:])
    assert all(not math.isnan(row[k]) for row in lost.records.sq_errors[5:] for k in (0, 2, 3))
    if algorithm != "dpf":  # per neighbour: ψ (DEKF: also its sequence and label); 4 nodes × 2 before, 2-3-0 after
        per = {"dsgd": 1, "dekf": 3}[algorithm]
        assert lost.records.messages_per_step[4] == 2 * per
        assert lost.records.messages_per_step[5] == pytest.approx((2 + 1 + 1) * per / 3)
    s = lost.summary()
    assert s["node_loss"] == [{"step": 5, "nodes": [1], "survivors": [0, 2, 3], "components": [[0, 2, 3]]}]
    assert s["skipped_labels"] == 0  # the lost node's empty slots are not missing labels
    by_hand = [row[k] for row in lost.records.sq_errors[int(STEPS * 0.8):] for k in (0, 2, 3)]
    assert s["survivors_final_mse"] == pytest.approx(sum(by_hand) / len(by_hand))
    assert s["node_loss_report"] == "node 1 left at step 5; survivors 0,2,3 go on connected"


@pytest.mark.parametrize("algorithm", ["dsgd", "dekf", "dpf"])
def test_a_flat_node_loss_run_reports_what_the_per_step_lists_give(linear_fm, algorithm):
    """Node 1 leaves at step 5, node 3 at step 10: inside the last 20% (steps 9-11), so its step 9 counts in
    final_mse but not in the survivors' final MSE; the ring falls apart into {0} and {2}."""
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=6)
    ring = make_topology("ring", 4)
    settings = {"num_particles": 20, "walk_steps": 2} if algorithm == "dpf" else None
    kept = records_of(linear_fm, streams, algorithm, ring, settings, drops={1: 5, 3: 10})
    flat = records_of(linear_fm, streams, algorithm, ring, settings, drops={1: 5, 3: 10}, keep_steps=False)
    assert_flat_equals_kept(flat, kept)
    s = flat.summary()
    assert s["survivors"] == [0, 2] and s["components"] == [[0], [2]]
    with_3 = survivors_final_mse(kept.records.sq_errors, [0, 2, 3])
    assert s["survivors_final_mse"] != pytest.approx(with_3, rel=1e-6)  # node 3's last error is left out
    assert s["final_mse"] == pytest.approx(with_3, rel=1e-12)


@pytest.mark.parametrize("keep_steps", [True, False])
def test_stopped_and_resumed_after_a_loss_equals_uninterrupted(linear_fm, tmp_path, keep_steps):
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=4)
    line = make_topology("line", 4)
    straight = records_of(linear_fm, streams, "dekf", line, drops={2: 3})
    records_of(linear_fm, streams, "dekf", line, drops={2: 3}, steps=7, folder=tmp_path / "r", keep_steps=keep_steps)
    resumed = records_of(linear_fm, streams, "dekf", line, drops={2: 3}, folder=tmp_path / "r", resume=True,
                         keep_steps=keep_steps)
    if keep_steps:
        got, want = torch.tensor(resumed.records.sq_errors), torch.tensor(straight.records.sq_errors)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
        assert without_timing(resumed.summary()) == without_timing(straight.summary())
    else:
        assert_flat_equals_kept(resumed, straight)
    assert resumed.summary()["node_loss"] == straight.summary()["node_loss"]
    assert resumed.summary()["components"] == [[0, 1], [3]]


def test_a_node_loss_checkpoint_does_not_grow_with_the_steps(linear_fm, tmp_path, monkeypatch):
    monkeypatch.setattr(records_module, "MAX_BLOCKS", 8)  # the block sums reach their bound after 8 steps
    streams, _ = linear_streams(4, 200, 3, sigma=0.1, seed=7)
    sizes = {}
    for steps in (40, 200):
        mode = records_of(linear_fm, streams, "dsgd", make_topology("ring", 4), drops={1: 20}, steps=steps,
                          folder=tmp_path / str(steps), keep_steps=False)
        saved = load_run_checkpoint(tmp_path / str(steps), "online")[0]["state"]["algorithm"]["records"]
        assert not any(name.startswith("step_") for name in saved) and "node_window" in saved
        sizes[steps] = sum(t.numel() for t in saved.values())
        assert mode.summary()["survivors_final_mse"] is not None
    # ≤ 8 blocks (and a header) of 2·4 per-node and 3 run sums, the sums, last MSE, seconds: whatever the steps
    bound = 2 * 4 * (8 + 1) + 3 * (8 + 1) + len(records_module._SUMS) + 2
    assert max(sizes.values()) <= bound < 200 * 4  # one per-step list alone would hold 200·4 numbers


def test_an_old_node_loss_checkpoint_with_per_step_lists_resumes_flat(linear_fm, tmp_path):
    """A checkpoint written before the per-node sums (step_* lists, no node_window) resumes in a flat run:
    the per-node sums are rebuilt from its lists, which are then dropped."""
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=4)
    line = make_topology("line", 4)
    straight = records_of(linear_fm, streams, "dekf", line, drops={2: 3, 0: 9})
    records_of(linear_fm, streams, "dekf", line, drops={2: 3, 0: 9}, steps=10, folder=tmp_path / "r")
    ckpt, _ = load_run_checkpoint(tmp_path / "r", "online")
    records = ckpt["state"]["algorithm"]["records"]
    assert "step_sq_errors" in records
    del records["node_window"]
    save_run_checkpoint(tmp_path / "r", {k: v for k, v in ckpt.items() if k not in ("format", "version", "checksum")})
    resumed = records_of(linear_fm, streams, "dekf", line, drops={2: 3, 0: 9}, folder=tmp_path / "r", resume=True,
                         keep_steps=False)
    assert_flat_equals_kept(resumed, straight)
    saved = load_run_checkpoint(tmp_path / "r", "online")[0]["state"]["algorithm"]["records"]
    assert not any(name.startswith("step_") for name in saved) and "node_window" in saved


def test_a_stop_run_resumed_to_continue_has_no_survivors_mse_rather_than_a_wrong_one(linear_fm, tmp_path):
    """Its checkpoint kept no per-node sums: the survivors' MSE over a window that began before the resume is
    unknown (null), while everything else is reported as by the run that could lose nodes from the start."""
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=4)
    ring = make_topology("ring", 4)
    records_of(linear_fm, streams, "dsgd", ring, steps=7, policy="stop", folder=tmp_path / "r", keep_steps=False)
    resumed = records_of(linear_fm, streams, "dsgd", ring, drops={1: 9}, folder=tmp_path / "r", resume=True,
                         keep_steps=False)
    straight = records_of(linear_fm, streams, "dsgd", ring, drops={1: 9})
    s, want = resumed.summary(), straight.summary()
    assert s["survivors_final_mse"] is None and want["survivors_final_mse"] is not None
    assert without_timing(s) == without_timing(want) | {"survivors_final_mse": None}


def test_the_stop_policy_ends_the_run_naming_the_node_and_the_flag(linear_fm):
    streams, _ = linear_streams(3, STEPS, 3, sigma=0.1, seed=0)
    with pytest.raises(NodeLeft, match=r"node 1 left before step 4 and on_node_loss= is stop"):
        records_of(linear_fm, streams, "dsgd", make_topology("ring", 3), drops={1: 4}, policy="stop")


@pytest.mark.parametrize(("text", "message"), [
    ("3", "takes NODE@STEP"), ("a@1", "takes NODE@STEP"), ("4@2", "names node 4, but the graph has nodes 0 … 3"),
    ("1@2,1@3", "names node 1 twice"), ("0@1,1@1,2@1,3@1", "drops all 4 nodes"), ("1@-2", "takes NODE@STEP")])
def test_bad_drop_lists_name_the_flag(text, message):
    with pytest.raises(ValueError, match=message):
        parse_drops(text, 4)
    with pytest.raises(ValueError, match=message):
        OnlineConfig(nodes=4, drop_node=text)
    assert parse_drops("2@0, 3@17", 4) == {2: 0, 3: 17}


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="on_node_loss= must be one of"):
        OnlineConfig(on_node_loss="pray")


def test_survivors_final_mse_by_hand():
    """The last 2 of 10 steps: node 0's errors 3, 3 and node 2's 5, 5 give 4 (node 1 has no label there);
    the last 6: node 0's 1 and five 3s give 16/6."""
    records = OnlineRecords("dsgd", 3, keep_steps=False, per_node=True)
    for row in [[1.0, 2.0, math.nan]] * 5 + [[3.0, math.nan, 5.0]] * 5:
        records.append(row, [math.nan] * 3, 0.0, 0.0, 0.0)
    assert records.final_mse_of([0, 2], fraction=0.2) == 4.0 and records.final_mse_of([0], fraction=0.6) == 8 / 3
    assert math.isnan(records.final_mse_of([1], fraction=0.2))


def test_dpf_exponents_on_a_reduced_graph_by_hand():
    """Ring 0-1-2-3-4-5-0 without 0 and 3: parts {1,2} and {4,5}, one edge each; K = 2 walk steps."""
    reduced = make_topology("ring", 6).without([0, 3])
    assert walk_exponents(reduced, 2, reduced.survivors) == {1: 1.0, 2: 1.0, 4: 1.0, 5: 1.0}  # 2·1 / (2·1)
    line = make_topology("ring", 5).without([0])  # the path 1-2-3-4: 3 edges
    assert walk_exponents(line, 4, line.survivors) == {1: 6 / 4, 2: 6 / 8, 3: 6 / 8, 4: 6 / 4}
    alone = make_topology("star", 3).without([0])
    assert walk_exponents(alone, 4, alone.survivors) == {1: 0.25, 2: 0.25}
    for topo in (reduced, line):  # over the stationary walk of each part the powers add up to one per step
        for part in topo.components():
            for j in part:
                pi = topo.degree(j) / (2 * topo.component_edges(j))
                assert 4 * pi * walk_exponents(topo, 4, [j])[j] == pytest.approx(1.0)


def test_the_command_reports_who_left_and_the_parts_that_went_on(tmp_path, capsys):
    args = ["online", "--algorithm", "dsgd", "--nodes", "3", "--topology", "line", "--steps", "12",
            "--drop-node", "1@4", "--no-progress"]
    assert main([*args, "--on-node-loss", "continue", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "node 1 left at step 4; the survivors fell apart into 2 parts that go on alone: {0} {2}; " \
           "survivors' final MSE (scaled)" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["components"] == [[0], [2]] and summary["survivors"] == [0, 2]
    rows = list(read_metrics(tmp_path / "r" / "metrics.csv"))[1:]  # the line 0-1-2, then no edges left
    assert [r["messages_per_node"] for r in rows] == pytest.approx([4 / 3] * 4 + [0.0] * 8, rel=1e-6)
    assert main([*args, "--out", str(tmp_path / "s")]) == 1  # the default policy: stop, with the flag to change it
    assert "node 1 left before step 4 and --on-node-loss is stop" in capsys.readouterr().err


class Failure(RuntimeError):
    """What a dead peer raises in a collective."""


class RankedTransport(InProcessTransport):
    """All nodes in this process, but owned by two ranks of two nodes each; one round fails once."""

    def __init__(self, topology: Topology, fail_at_round: int | None) -> None:
        super().__init__(topology)
        self.rounds, self.fail_at_round = 0, fail_at_round

    def owner(self, node: int) -> int:
        return node // 2

    def regroup(self, ranks: list[int]) -> list[int]:
        return [k for k in self.topology.survivors if self.owner(k) not in ranks]

    def neighbour_exchange(self, values):
        self._count()
        return super().neighbour_exchange(values)

    def route(self, outgoing):
        self._count()
        return super().route(outgoing)

    def _count(self) -> None:
        self.rounds += 1
        if self.rounds == self.fail_at_round:
            raise Failure("connection closed by peer")


class TwoRanks(LocalComm):
    """Rank 0 of two, until rank 1 dies: collectives are local, ``fail_reduce`` breaks one loop reduction,
    and the survivors agree on ``agreed`` (the steps the slowest survivor completed)."""

    def __init__(self, agreed: int, fail_at_round: int | None = None, fail_reduce: int | None = None) -> None:
        self.world_size, self.agreed, self.reduces = 2, agreed, 0
        self.fail_at_round, self.fail_reduce = fail_at_round, fail_reduce
        self.positions: list[int] = []

    def transport(self, topology: Topology) -> RankedTransport:
        return RankedTransport(topology, self.fail_at_round)

    def all_reduce_(self, tensor, op="sum"):
        self.reduces += 1
        if self.reduces == self.fail_reduce:
            raise Failure("connection closed by peer")
        return tensor

    def is_peer_failure(self, err: BaseException) -> bool:
        return isinstance(err, Failure)

    def regroup(self, position: int) -> tuple[list[int], int]:
        self.positions.append(position)
        self.world_size = 1
        return [0], self.agreed


@pytest.mark.parametrize(("algorithm", "where", "keep_steps"), [
    ("dpf", "in the step", True), ("dpf", "after the step", True), ("dekf", "in the step", True),
    ("dekf", "after the step", True),
    ("dpf", "after the step", False), ("dsgd", "after the step", False)])
def test_a_survivor_rolls_back_to_the_step_the_others_failed_in(linear_fm, algorithm, where, keep_steps,
                                                                monkeypatch):
    """Rank 1 (nodes 2, 3) dies during step 6: this survivor failed inside step 6 (its state half-updated,
    its generators drawn from), or finished step 6 and failed in the loop's reduction after it. Either
    way it repeats step 6 without nodes 2 and 3 — the simulator's run with both dropped before step 6.
    A flat run (no per-step lists) takes the finished step 6 out of its sums instead."""
    # the DPF's walk as rounds of messages, what ranks holding part of the graph run (the failure comes in one);
    # with every node in one process it moves indices instead, to the same numbers (test_dpf_fast.py)
    monkeypatch.setattr(DPF, "_holds_every_node", staticmethod(lambda transport: False))
    streams, _ = linear_streams(4, STEPS, 3, sigma=0.1, seed=5)
    ring = make_topology("ring", 4)
    settings = {"num_particles": 20, "walk_steps": 2} if algorithm == "dpf" else None
    # DPF: K = 2 walk rounds; DEKF: the sequences (before the prediction), the labels, then ψ. The DEKF's
    # failure comes in step 6's first round, the prediction's
    rounds_per_step, into = (3, 1) if algorithm == "dekf" else (2, 2)  # rounds count from 1
    comm = TwoRanks(agreed=6, fail_at_round=6 * rounds_per_step + into if where == "in the step" else None,
                    fail_reduce=7 if where == "after the step" else None)
    mode = OnlineMode(OnlineProblem(streams), algorithm, algorithm_settings(algorithm, settings), ring,
                      model=lambda _seed: (linear_fm, torch.zeros(3, dtype=D)), on_node_loss="continue",
                      keep_steps=keep_steps)
    run(mode, LoopConfig(steps=STEPS, seed=3, progress=False), comm=comm, folder=None)
    assert comm.positions == [6 if where == "in the step" else 7]
    simulated = records_of(linear_fm, streams, algorithm, ring, settings, drops={2: 6, 3: 6})
    if keep_steps:
        got, want = torch.tensor(mode.records.sq_errors), torch.tensor(simulated.records.sq_errors)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    else:
        assert_flat_equals_kept(mode, simulated)
        flat = records_of(linear_fm, streams, algorithm, ring, settings, drops={2: 6, 3: 6}, keep_steps=False)
        assert mode.records.to_tensors().keys() == flat.records.to_tensors().keys()
        for name, value in mode.records.to_tensors().items():  # the sums undone exactly, not to rounding
            if name != "seconds":
                assert torch.equal(value.nan_to_num(), flat.records.to_tensors()[name].nan_to_num()), name
    assert mode.summary()["node_loss"] == simulated.summary()["node_loss"]


def test_a_run_that_lost_node_0_keeps_the_first_survivors_model(tmp_path):
    assert main(["online", "--algorithm", "dsgd", "--nodes", "3", "--steps", "8", "--drop-node", "0@3",
                 "--on-node-loss", "continue", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    ckpt, _ = load_run_checkpoint(tmp_path / "r", "online")
    theta = ckpt["state"]["algorithm"]["states"]["theta"]
    assert not bool(theta[0].any()) and bool(theta[1:].isfinite().all())  # node 0's row: zeros (node_loss says it left)
    model = torch.cat([v.reshape(-1) for v in ckpt["state"]["model"].values()])
    assert torch.equal(model, theta[1])
    assert ckpt["state"]["algorithm"]["node_loss"][0]["nodes"] == [0]
