"""Every Python example in the README and the guides runs as written and does what its text says.

Each block runs in a fresh interpreter followed by a check written here against an
independent reference (``nn.LSTM``, a loop over the population, autograd, closed
forms). A check is found by a line of its example (the anchor), so examples can be
added or moved without renumbering; an example without exactly one check fails
``test_every_example_has_exactly_one_check``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/runs.md", "docs/online.md", "docs/es.md", "docs/bptt.md", "docs/lm.md"]
EXAMPLES = [(doc, i, block) for doc in DOCS
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))]

CHECKS = {
    ("docs/runs.md", "first = run(ESMode(es), LoopConfig(steps=4"): """
import torch
from distlstm.models.networks import CharLM
assert [r["step"] for r in rows] == list(range(9)) and first.summary["steps"] == 4
assert isinstance(loaded.model, CharLM) and not loaded.model.training and loaded.step == 8
assert text.startswith("ROMEO.") and len(text) == 46
with tempfile.TemporaryDirectory() as other:                          # uninterrupted: the same θ and numbers
    whole = run(ESMode(es), LoopConfig(steps=8, eval_every=2, progress=False), folder=other)
    again = distlstm.load_run(other)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
assert whole.summary["val_nats_per_char"] == more.summary["val_nats_per_char"]
""",
    ("README.md", "ref = torch.nn.LSTM(8, 32, num_layers=2"): """
assert output.shape == (4, 10, 32) and h_n.shape == c_n.shape == (2, 4, 32)
torch.testing.assert_close(lstm(x)[0], ref(x)[0])                      # the nn.LSTM weights really moved
for b, m in enumerate(lengths.tolist()):                             # padding: each sequence alone
    alone, (h_b, c_b) = lstm(x[b : b + 1, :m])
    torch.testing.assert_close(output[b, :m], alone[0])
    torch.testing.assert_close(h_n[:, b], h_b[:, 0])
    assert bool((output[b, m:] == 0).all())
assert lstmp(x)[0].shape == (4, 10, 16) and len(rnn(x)[1]) == 1
ref_bi = torch.nn.LSTM(8, 32, 2, batch_first=True, bidirectional=True)
assert set(ref_bi.state_dict()) <= set(bi.state_dict())                 # nn.LSTM's keys, both directions
assert y_bi.shape == (4, 10, 64) and h_bi.shape == c_bi.shape == (4, 4, 32)
assert sum(p.numel() for p in g4g8.parameters()) == sum(                 # Table 1's G4-G8 formula at p 16, n 64
    4 * 64 * (16 + 16) // k + 4 * 64 + 16 * 64 for k in (4, 8))
assert bool((g4g8.cells[1].bias_ih.view(8, 4, -1)[:, 1] == 1).all())    # b_f = 1 in every group
assert sum(p.numel() for p in flstm.parameters()) < sum(p.numel() for p in distlstm.LSTM(8, 32).parameters())
""",
    ("README.md", "fm = FunctionalModel(model)"): """
from torch.nn.utils import vector_to_parameters
assert d_hat.shape == (256, 1) and theta.shape == (fm.numel,)
for j in (0, 97, 255):                                               # one model at a time, by hand
    vector_to_parameters(population[j], model.parameters())
    torch.testing.assert_close(d_hat[j], model(seq).reshape(1))
vector_to_parameters(theta, model.parameters())
out = model(seq).sum()
grads = torch.autograd.grad(out, list(model.parameters()))
torch.testing.assert_close(value.reshape(()), out.detach())
torch.testing.assert_close(H.reshape(-1), torch.cat([g.reshape(-1) for g in grads]))
assert J.shape == (3, fm.numel) and outs.shape == (3,)
for b in range(3):                                                   # row b: the gradient of sequence b alone
    out_b = model(seqs[b : b + 1]).sum()
    grads_b = torch.autograd.grad(out_b, list(model.parameters()))
    torch.testing.assert_close(outs[b], out_b.detach())
    torch.testing.assert_close(J[b], torch.cat([g.reshape(-1) for g in grads_b]))
""",
    ("docs/online.md", "mode = run_streams(OnlineProblem(streams), \"dpf\""): """
assert set(mode.final_thetas()) == {0, 1, 2, 3} and all(len(row) == 4 for row in result.sq_errors)
assert 0.5 <= result.coverage95() <= 1.0 and result.bytes_per_node_per_step > 0
assert result.final_mse() < 0.05                # the series is standardised: predicting its mean gives ≈ 1
""",
    ("docs/bptt.md", "x1, _ = shards[1].window_at(0)"): """
assert int(x1[0, 0]) == 500                                          # 1000 ids / 8 streams: worker 1 from 4·125
assert len(single) == (1000 // 8 - 1) // 10 or len(single) == 1000 // 8 // 10
""",
    ("docs/bptt.md", "result = run(DDPMode(make_task"): """
import math
from distlstm.data.text import load_text
from distlstm.models.networks import CharLM
assert summary["samples"] == 40 * 8 * 32 and summary["steps"] == 40
assert isinstance(lm, CharLM) and not lm.training and result.summary["steps"] == 40
assert summary["val_nats_per_char"] < math.log(len(set(load_text()))) - 0.5   # well below a uniform guess
""",
    ("docs/bptt.md", "first = run(mode, LoopConfig("): """
from distlstm.bptt.tasks import mean_absolute_error
assert first["stopped_by"] == "stop_at" and first["test_mae"] <= 0.02
assert mean_absolute_error(mode.model, mode.task.test) == first["test_mae"]   # predicting the mean gives ≈ 0.33
assert more["steps"] == first["steps"] + 5 and more["evaluations"] > first["evaluations"]
""",
    ("docs/online.md", "forecast_windows(read_table(path)"): """
import torch
prices = [50 + (i * 7) % 11 for i in range(60)]
assert data.features == ["temp", "load", "price (past)"] and data.x.shape == (40, 6, 3)
torch.testing.assert_close(data.to_data_units(data.d), torch.tensor(prices[20:], dtype=torch.float64))
assert sum(len(s) for s in streams) == 40
""",
    ("docs/bptt.md", "class SineTask"): """
assert adam["test_mse"] < 0.1 and lbfgs["test_mse"] < 0.05           # predicting 0 gives ≈ 0.5
task = SineTask()
torch.testing.assert_close(task.train.y[:5], torch.sin(torch.linspace(0, 60, 1200, dtype=torch.float64))[12:17])
""",
    ("docs/lm.md", "lm = WordLM(vocab_size=500"): """
import math
import torch.nn.functional as F
full = F.cross_entropy(logits.reshape(-1, 500), ids[:, 1:].reshape(-1))   # full softmax by hand
assert abs(float(full) - math.log(500)) < 0.5                              # an untrained LM is near uniform
assert torch.isfinite(loss) and all(p.grad is not None for p in lm.parameters() if p.requires_grad)
greedy = lm.generate(ids[0, :3], 5, temperature=0.0)
assert torch.equal(greedy, lm.generate(ids[0, :3], 5, temperature=0.0))     # greedy is deterministic
first, _ = lm(ids[0, :3].unsqueeze(0))
assert int(greedy[0]) == int(first[0, -1].argmax())                         # and takes the argmax
""",
}


@pytest.mark.parametrize(("doc", "index", "code"), EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_documented_example_runs_and_does_what_it_says(doc, index, code):
    found = checks_for(doc, code)
    check = found[0] if len(found) == 1 else f"raise AssertionError('{len(found)} checks match this example')"
    done = subprocess.run([sys.executable, "-c", code + "\n" + check], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, f"{doc} example {index} failed:\n{done.stderr[-2000:]}"


def checks_for(doc: str, code: str) -> list[str]:
    return [check for (d, anchor), check in CHECKS.items() if d == doc and anchor in code]


def test_every_example_has_exactly_one_check():
    assert all(len(checks_for(doc, code)) == 1 for doc, _, code in EXAMPLES)
    used = {(doc, anchor) for doc, _, code in EXAMPLES for (d, anchor) in CHECKS if d == doc and anchor in code}
    assert used == set(CHECKS)                                                # no check is left without its example
