"""The compiled population forward (torch.compile) gives the eager fitness, in the fitness and in a run."""

from __future__ import annotations

import pytest
import torch

from distlstm.es.fitness import char_fitness
from distlstm.es.strategy import ESConfig, ask, init
from distlstm.es.text import build_model
from distlstm.modes.es import ESMode, ESRunConfig
from distlstm.runtime.comm import LocalComm

pytestmark = pytest.mark.slow  # each compilation takes tens of seconds on a busy CPU


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_compiled_fitness_equals_the_eager_one(cell):
    eager = build_model(20, cell, 8, seed=0)
    compiled = build_model(20, cell, 8, seed=0, compile=True)
    thetas = ask(ESConfig(population=6, sigma=0.1), init(eager.flatten()))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 20, (3, 5), generator=gen), torch.randint(0, 20, (3, 5), generator=gen)
    want = char_fitness(eager, thetas, x, y, chunk=4)  # a block of 4 and one of 2: two compiled shapes
    got = char_fitness(compiled, thetas, x, y, chunk=4)
    assert want.unique().numel() == 6  # the members differ, so equality is not vacuous
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_compiled_es_run_follows_the_eager_one():
    cfg = dict(hidden=8, population=6, windows=2, window=5, eval_chars=200)
    modes = []
    for compile in (False, True):
        mode = ESMode(ESRunConfig(compile=compile, **cfg))  # type: ignore[arg-type]
        mode.init(LocalComm(), 0)
        for g in range(2):
            mode.step(g + 1)
        modes.append(mode)
    torch.testing.assert_close(modes[1].state.theta, modes[0].state.theta, rtol=0, atol=1e-5)
    assert not torch.equal(modes[0].state.theta, modes[0].fm.flatten())  # θ moved from its start
