"""The regressor at P parameter vectors without ``vmap`` (``SequenceRegressor.population_forward``).

The reference is ``FunctionalModel(..., fast_paths=False)``: ``vmap`` over the module's own
generic loop, which shares no code with the population path.
"""

from __future__ import annotations

import pytest
import torch

from distlstm.models.functional import FunctionalModel
from distlstm.models.population import regressor_population
from tests.models.regressors import CONFIGS, IDS, functional_regressor


def population(members: int = 6, seed: int = 0, **options):
    gen = torch.Generator().manual_seed(seed)
    fm = functional_regressor(seed, **options)
    thetas = fm.flatten() + 0.3 * torch.randn(members, fm.numel, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    return fm, thetas, x


@pytest.mark.parametrize("options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("lengths", [None, torch.tensor([7, 3, 5, 1])], ids=["full", "padded"])
def test_population_equals_vmap_over_the_module(options, lengths):
    fm, thetas, x = population(**options)
    assert regressor_population(fm.module, fm.spec.unflatten(thetas), x, lengths) is not None  # the own path runs
    kwargs = {} if lengths is None else {"lengths": lengths}
    got = fm(thetas, x, **kwargs)
    want = FunctionalModel(fm.module, fast_paths=False)(thetas, x, **kwargs)
    assert got.shape == want.shape == (6, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    assert got.std() > 1e-3  # the members differ


def test_a_members_numbers_do_not_depend_on_the_population():
    """Bit for bit, whatever else is evaluated in the call: the DPF's two walks rely on it."""
    fm, thetas, x = population(members=200, seed=3, num_layers=2)
    lengths = torch.tensor([7, 3, 5, 1])
    full = fm(thetas, x, lengths=lengths)
    for size in (1, 3, 7, 40, 129):
        assert torch.equal(fm(thetas[:size], x, lengths=lengths), full[:size]), size
    picked = torch.tensor([150, 2, 77])
    assert torch.equal(fm(thetas[picked], x, lengths=lengths), full[picked])


@pytest.mark.parametrize("options", [
    {"bidirectional": True}, {"cell": "peephole"}, {"proj_size": 2}, {"cell": "flstm", "rank": 2},
], ids=["bidirectional", "peephole", "projection", "flstm"])
def test_other_models_are_vmapped(options):
    fm, thetas, x = population(**options)
    assert regressor_population(fm.module, fm.spec.unflatten(thetas), x) is None
    torch.testing.assert_close(fm(thetas, x), FunctionalModel(fm.module, fast_paths=False)(thetas, x),
                               rtol=0, atol=0)


def test_bad_input_gets_the_models_errors():
    fm, thetas, x = population()
    bad = x.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="input"):
        fm(thetas, bad)
    with pytest.raises(ValueError, match="lengths"):
        fm(thetas, x, lengths=torch.tensor([0, 1, 2, 3]))
