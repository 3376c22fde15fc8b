"""Every Python example in the README and the guides runs as written and does what its text says.

Each block runs in a fresh interpreter followed by a check written here against an
independent reference (``nn.LSTM``, a loop over the population, autograd, closed
forms); a new example without a check fails ``test_every_example_has_a_check``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/online.md", "docs/es.md", "docs/bptt.md", "docs/lm.md"]
EXAMPLES = [(doc, i, block) for doc in DOCS
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))]

CHECKS = {
    ("README.md", 0): """
assert output.shape == (4, 10, 32) and h_n.shape == c_n.shape == (2, 4, 32)
torch.testing.assert_close(lstm(x)[0], ref(x)[0])                      # the nn.LSTM weights really moved
for b, m in enumerate(lengths.tolist()):                             # padding: each sequence alone
    alone, (h_b, c_b) = lstm(x[b : b + 1, :m])
    torch.testing.assert_close(output[b, :m], alone[0])
    torch.testing.assert_close(h_n[:, b], h_b[:, 0])
    assert bool((output[b, m:] == 0).all())
assert lstmp(x)[0].shape == (4, 10, 16) and len(rnn(x)[1]) == 1
assert sum(p.numel() for p in flstm.parameters()) < sum(p.numel() for p in distlstm.LSTM(8, 32).parameters())
""",
    ("README.md", 1): """
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
""",
    ("docs/online.md", 0): """
assert set(result.final_thetas) == {0, 1, 2, 3} and all(len(row) == 4 for row in result.sq_errors)
assert 0.5 <= result.coverage95() <= 1.0 and result.bytes_per_node_per_step > 0
assert result.final_mse() < 0.05                # the series is standardised: predicting its mean gives ≈ 1
""",
    ("docs/bptt.md", 0): """
assert int(x1[0, 0]) == 500                                          # 1000 ids / 8 streams: worker 1 from 4·125
assert len(single) == (1000 // 8 - 1) // 10 or len(single) == 1000 // 8 // 10
""",
    ("docs/bptt.md", 1): """
import math
from distlstm.data.text import load_text
assert summary["samples"] == 40 * 8 * 32 and summary["steps"] == 40
assert summary["val_nats_per_char"] < math.log(len(set(load_text()))) - 0.5   # well below a uniform guess
""",
    ("docs/bptt.md", 2): """
assert result.losses[-1] < 0.1 * result.losses[0]
assert mean_absolute_error(model, test) < 0.05                      # predicting the mean (1.0) gives ≈ 0.33
""",
}


@pytest.mark.parametrize(("doc", "index", "code"), EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_documented_example_runs_and_does_what_it_says(doc, index, code):
    check = CHECKS.get((doc, index), "raise AssertionError('no check for this example')")
    done = subprocess.run([sys.executable, "-c", code + "\n" + check], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, f"{doc} example {index} failed:\n{done.stderr[-2000:]}"


def test_every_example_has_a_check():
    assert {(doc, i) for doc, i, _ in EXAMPLES} == set(CHECKS)
