"""Reference forecasters: RLS against batch least squares, and every reference on the learner's own steps."""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.data.observation import Observation
from distlstm.online.baselines import RecursiveLeastSquares, reference_records, rls_features, univariate_last_values

D = torch.float64


def series_streams(num_nodes: int = 2, steps: int = 25, seed: int = 0) -> list[list[Observation]]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.cumsum(torch.randn(num_nodes * steps + 2, generator=gen, dtype=D), 0)
    obs = [Observation(z[t - 2 : t].reshape(2, 1), float(z[t])) for t in range(2, len(z))]
    return [obs[k::num_nodes] for k in range(num_nodes)]


def test_rls_prediction_is_the_ridge_fit_of_the_past():
    """RLS with P₀ = δI predicts with β = (ΦᵀΦ + I/δ)⁻¹ Φᵀd over the pairs seen so far (closed form)."""
    stream = series_streams(1, 30)[0]
    rls = RecursiveLeastSquares(3, delta=100.0)
    phis, ds = [], []
    for ob in stream:
        phi = rls_features(ob.x)
        if phis:
            Phi, d = torch.stack(phis), torch.tensor(ds, dtype=D)
            beta = torch.linalg.solve(Phi.T @ Phi + torch.eye(3, dtype=D) / 100.0, Phi.T @ d)
            assert rls.predict(phi) == pytest.approx(float(beta @ phi), rel=1e-8, abs=1e-10)
        rls.update(phi, ob.d)
        phis.append(phi)
        ds.append(ob.d)


def test_references_play_the_online_protocol_on_the_given_steps():
    streams = series_streams(2, 25)
    refs = reference_records(streams, 20, univariate_last_values(streams))
    assert set(refs) == {"last_value", "mean_label", "linear_rls"} and all(r.steps == 20 for r in refs.values())
    # last value and running mean of the node's own past labels, by hand, at step 7 of node 1
    ob, past = streams[1][7], [o.d for o in streams[1][:7]]
    assert refs["last_value"].sq_errors[7][1] == pytest.approx((ob.d - float(ob.x[-1, 0])) ** 2)
    assert refs["mean_label"].sq_errors[7][1] == pytest.approx((ob.d - sum(past) / 7) ** 2)
    # final_mse: the last 20% of the 20 steps (16..19), both nodes
    tail = [(o.d - float(o.x[-1, 0])) ** 2 for s in streams for o in s[16:20]]
    assert refs["last_value"].final_mse() == pytest.approx(sum(tail) / len(tail))


def test_no_last_value_without_the_targets_past_and_missing_labels_are_skipped():
    gen = torch.Generator().manual_seed(1)
    streams = [[Observation(torch.randn(3, 2, generator=gen, dtype=D), math.nan if t == 2 else 0.5)
                for t in range(5)]]
    assert univariate_last_values(streams) is None
    refs = reference_records(streams, 5)
    assert set(refs) == {"mean_label", "linear_rls"}
    assert math.isnan(refs["mean_label"].sq_errors[2][0]) and refs["mean_label"].sq_errors[3][0] == 0.0
