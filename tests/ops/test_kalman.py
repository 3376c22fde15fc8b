"""The rank-1 Kalman update against the textbook matrix form; exact symmetry without a symmetrise pass."""

from __future__ import annotations

import pytest
import torch

from distlstm.ops.kalman import DOWNDATE_ROWS, block_update, scalar_update, symmetrise_

D = torch.float64


def random_spd(n: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=gen, dtype=D)
    m = a @ a.T / n + 0.1 * torch.eye(n, dtype=D)
    return 0.5 * (m + m.T)  # a GEMM's a·aᵀ is not bitwise symmetric


@pytest.mark.parametrize("joseph", [False, True])
@pytest.mark.parametrize("q", [0.0, 0.01])
def test_matches_textbook_update_with_folded_time_update(joseph, q):
    gen = torch.Generator().manual_seed(0)
    n = 7
    P, a, H = random_spd(n, gen), torch.randn(n, generator=gen, dtype=D), torch.randn(n, generator=gen, dtype=D)
    upd = scalar_update(a, P, H, torch.tensor(0.3, dtype=D), 0.05, joseph, q=q)
    Pp = P + q * torch.eye(n, dtype=D)  # textbook: time update, then measurement update
    S = H @ Pp @ H + 0.05
    K = Pp @ H / S
    I_KH = torch.eye(n, dtype=D) - torch.outer(K, H)
    P_ref = I_KH @ Pp @ I_KH.T + 0.05 * torch.outer(K, K) if joseph else I_KH @ Pp
    torch.testing.assert_close(upd.a, a + K * 0.3, atol=1e-12, rtol=0)
    torch.testing.assert_close(upd.P, P_ref, atol=1e-12, rtol=0)
    assert float(upd.r) == pytest.approx(float(S))


@pytest.mark.parametrize("joseph", [False, True])
def test_covariance_stays_exactly_symmetric(joseph):
    gen = torch.Generator().manual_seed(1)
    n = 50
    P, a = random_spd(n, gen), torch.zeros(n, dtype=D)
    for _ in range(200):
        H = torch.randn(n, generator=gen, dtype=D)
        upd = scalar_update(a, P, H, torch.randn((), generator=gen, dtype=D), 0.1, joseph, q=1e-4)
        a, P = upd.a, upd.P
    assert torch.equal(P, P.T)  # bit for bit, with no symmetrisation pass
    assert float(torch.linalg.eigvalsh(P).min()) > 0


@pytest.mark.parametrize(("n", "tile"), [(1, 128), (7, 3), (130, 128), (300, 64)])
def test_symmetrise_in_place_gives_the_out_of_place_numbers(n, tile):
    gen = torch.Generator().manual_seed(n)
    P = torch.randn(n, n, generator=gen, dtype=torch.float64)
    want = 0.5 * (P + P.mT)
    got = P.clone()
    assert symmetrise_(got, tile, in_place_from=1) is got
    assert torch.equal(got, want)  # bit for bit, including the tiles' edges
    assert torch.equal(symmetrise_(P.clone(), tile, in_place_from=n + 1), want)  # small: the plain expression


@pytest.mark.parametrize("joseph", [False, True])
@pytest.mark.parametrize("m", [1, 3, DOWNDATE_ROWS + 2])
def test_block_update_keeps_the_covariance_exactly_symmetric(joseph, m):
    """Both downdates (m elementwise passes up to DOWNDATE_ROWS rows, a matmul and symmetrisation above) and
    the Joseph form. n = 131: no multiple of a vector width (the kernels' tails are crossed), and a size where a
    plain ``addmm`` downdate of rank 3 came out asymmetric on the x86 build this was written on."""
    gen = torch.Generator().manual_seed(m)
    n = 131
    P, a = random_spd(n, gen), torch.zeros(n, dtype=D)
    for _ in range(100):
        H = torch.randn(m, n, generator=gen, dtype=D)
        upd = block_update(a, P, H, torch.randn(m, generator=gen, dtype=D), 0.1, joseph, q=1e-4)
        a, P = upd.a, upd.P
    assert torch.equal(P, P.T)
    assert float(torch.linalg.eigvalsh(P).min()) > 0


@pytest.mark.parametrize("given_ph", ["none", "first row", "every row"])
@pytest.mark.parametrize("m", [1, 3, DOWNDATE_ROWS + 2])
def test_block_update_is_the_information_form(m, given_ph):
    """Σ⁻¹ ← Σ_pred⁻¹ + HᵀH/σ², â ← â + Σ Hᵀ e / σ² (an independent closed form, with explicit inverses);
    also with the first row's Σ H₀ᵀ handed in, as the DEKF's update does with its prediction's, or every
    row's, as its prediction round computes them."""
    gen = torch.Generator().manual_seed(10 + m)
    n, sigma2, q = 9, 0.3, 0.02
    P, a = random_spd(n, gen), torch.randn(n, generator=gen, dtype=D)
    H, e = torch.randn(m, n, generator=gen, dtype=D), torch.randn(m, generator=gen, dtype=D)
    PH = {"none": None, "first row": P @ H[0], "every row": P @ H.mT}[given_ph]
    upd = block_update(a, P, H, e, sigma2, q=q, PH=PH)
    P_post = torch.linalg.inv(torch.linalg.inv(P + q * torch.eye(n, dtype=D)) + H.T @ H / sigma2)
    torch.testing.assert_close(upd.P, P_post, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(upd.a, a + P_post @ H.T @ e / sigma2, atol=1e-12, rtol=1e-10)
