"""The shared noise table: slices of one table of normals, the same for any split of the population."""

from __future__ import annotations

import pytest
import torch

from distlstm.es.noise import noise_table, population_noise, table_offsets, table_size
from distlstm.es.strategy import ESConfig, ask, init, noise


@pytest.mark.parametrize("kind", ["table", "seeded"])
@pytest.mark.parametrize("mirrored", [True, False])
def test_any_split_of_the_members_gets_the_rows_of_the_whole_population(kind, mirrored):
    """Workers ask for their own ranges (odd starts, across the 1,024-index offset blocks): same rows."""
    P, n = 2200, 7
    whole = population_noise(3, 5, range(P), n, mirrored, torch.float64, kind)
    for start, stop in ((0, 1), (1, 4), (1023, 1030), (2047, 2049), (1100, 2200)):
        assert torch.equal(population_noise(3, 5, range(start, stop), n, mirrored, torch.float64, kind),
                           whole[start:stop])


def test_table_noise_is_a_slice_of_the_table_at_its_offset():
    n = 11
    rows = population_noise(0, 2, range(6), n, True, torch.float64, "table")
    offsets = table_offsets(0, 2, [0, 1, 2], n)
    table = noise_table(table_size(n), torch.float64)
    for j in range(6):
        o = int(offsets[j // 2])
        assert 0 <= o <= table.numel() - n
        torch.testing.assert_close(rows[j], (-1.0) ** j * table[o : o + n], rtol=0, atol=0)


def test_table_grows_with_the_parameters_and_is_standard_normal():
    assert table_size(10) == 1 << 24 and table_size(2_000_000) == 1 << 25
    table = noise_table(table_size(10))
    assert abs(float(table.mean())) < 1e-3 and abs(float(table.std()) - 1) < 1e-3


def test_table_draws_are_nearly_independent_across_members():
    """Slices of one generation rarely overlap: the members' ε are close to orthogonal, like fresh draws."""
    n, P = 5_000, 64
    eps = population_noise(1, 0, range(P), n, False, torch.float64, "table")
    gram = eps @ eps.T / n
    torch.testing.assert_close(gram.diagonal(), torch.ones(P, dtype=torch.float64), atol=0.1, rtol=0)
    assert float((gram - torch.diag(gram.diagonal())).abs().max()) < 0.1


def test_the_strategy_uses_the_noise_it_is_configured_with():
    state = init(torch.zeros(9, dtype=torch.float64))
    table, seeded = ESConfig(population=4), ESConfig(population=4, noise="seeded")
    assert torch.equal(noise(table, state), population_noise(0, 0, range(4), 9, True, torch.float64, "table"))
    assert torch.equal(noise(seeded, state), population_noise(0, 0, range(4), 9, True, torch.float64, "seeded"))
    assert not torch.equal(noise(table, state), noise(seeded, state))
    torch.testing.assert_close(ask(table, state), 0.02 * noise(table, state), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="unknown noise"):
        ESConfig(noise="gaussian")
