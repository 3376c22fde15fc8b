"""The full-batch algorithm pieces: the objective, the CG iteration against SciPy, L-BFGS state, settings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from distlstm.bptt.fullbatch import (
    CGState,
    FullBatchConfig,
    FullBatchObjective,
    cg_iteration,
    cg_start,
    lbfgs_max_eval,
    lbfgs_step,
    make_lbfgs,
)
from distlstm.bptt.tasks import longlag_model
from distlstm.data.longlag import adding_problem


def objective():
    """The matrix-batch setting (peepholes, no forget gate, sharpened gates, float64) on a small adding problem."""
    net = longlag_model(4, 3.75, seed=0)
    data = adding_problem(64, 24, torch.Generator().manual_seed(1))

    def loss():
        return ((net(data.x, data.lengths) - data.y) ** 2).mean()

    return net, FullBatchObjective(net, loss)


def test_the_objective_is_the_mean_squared_error_and_its_gradient():
    _, obj = objective()
    theta = obj.theta()
    f, g = obj.value_and_grad(theta.numpy())
    data = adding_problem(64, 24, torch.Generator().manual_seed(1))
    ref = longlag_model(4, 3.75, seed=0)
    expected = ((ref(data.x, data.lengths) - data.y) ** 2).mean()
    expected.backward()
    assert f == float(expected.detach())
    torch.testing.assert_close(torch.from_numpy(g), torch.cat([p.grad.reshape(-1) for p in ref.parameters()]),
                               rtol=0, atol=0)
    obj.closure()  # the same θ again: remembered, not another pass over the data
    assert obj.evaluations == 1


def test_cg_takes_exactly_scipys_polak_ribiere_steps():
    """Ten iterations of our CG on the long-lag network equal SciPy's minimize(method="CG") bit for bit."""
    _, ours = objective()
    x0 = ours.theta().numpy().copy()
    state = cg_start(x0.copy(), ours.value_and_grad)
    for _ in range(10):
        nxt = cg_iteration(state, ours.value_and_grad, c2=0.1)
        assert nxt is not None
        state = nxt
    _, theirs = objective()
    ref = minimize(theirs.value_and_grad, x0, jac=True, method="CG", options={"maxiter": 10, "gtol": 0.0, "c2": 0.1})
    assert ref.nit == 10
    np.testing.assert_array_equal(state.x, ref.x)
    assert state.f == ref.fun and ours.evaluations == theirs.evaluations


@pytest.mark.parametrize("update", ["pr", "hs"])
def test_cg_on_a_convex_quadratic_converges_in_about_n_steps(update):
    a = np.diag(np.arange(1.0, 7.0))

    def quad(x):
        return float(0.5 * x @ a @ x), a @ x

    state = cg_start(np.ones(6), quad)
    for _ in range(12):
        nxt = cg_iteration(state, quad, c2=0.1, update=update)
        if nxt is None or not np.any(nxt.g):
            break
        state = nxt
    assert state.f < 1e-12


def test_cg_directions_follow_their_update_formula():
    """p_{k+1} = −g_{k+1} + β p_k with β = max(0, g_{k+1}ᵀy_k / g_kᵀg_k) (PR+) or max(0, g_{k+1}ᵀy_k / p_kᵀy_k) (HS+),
    written out with NumPy from the states each iteration returns; the two rules take other paths."""
    paths = {}
    for update in ("pr", "hs"):
        _, obj = objective()
        state = cg_start(obj.theta().numpy().copy(), obj.value_and_grad)
        for _ in range(4):
            nxt = cg_iteration(state, obj.value_and_grad, c2=0.1, update=update)
            assert nxt is not None
            y = nxt.g - state.g
            denominator = state.g @ state.g if update == "pr" else state.p @ y
            beta = max(0.0, (nxt.g @ y) / denominator)
            np.testing.assert_allclose(nxt.p, -nxt.g + beta * state.p, rtol=1e-12, atol=1e-15)
            assert nxt.p @ nxt.g <= -0.01 * (nxt.g @ nxt.g)  # sufficient descent, as the line search demands
            state = nxt
        paths[update] = state.x
    assert not np.array_equal(paths["pr"], paths["hs"])


def test_cg_state_round_trips_through_a_weights_only_checkpoint():
    _, obj = objective()
    state = cg_iteration(cg_start(obj.theta().numpy(), obj.value_and_grad), obj.value_and_grad, 0.1)
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    back = CGState.from_state_dict(torch.load(buf, weights_only=True))
    for name in ("x", "g", "p"):
        np.testing.assert_array_equal(getattr(back, name), getattr(state, name))
    assert (back.f, back.f_prev) == (state.f, state.f_prev)


def test_lbfgs_history_survives_a_weights_only_checkpoint_and_continues_identically():
    net, obj = objective()
    opt = make_lbfgs(obj.params, FullBatchConfig(max_iter=4))
    lbfgs_step(opt, obj.closure)
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "obj": obj.state_dict()}, buf)
    saved = opt.state_dict()["state"][0]
    assert {"d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss", "n_iter",
            "func_evals"} <= set(saved)
    whole = lbfgs_step(opt, obj.closure)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    net2, obj2 = objective()
    net2.load_state_dict(ckpt["model"])
    obj2.load_state_dict(ckpt["obj"])
    opt2 = make_lbfgs(obj2.params, FullBatchConfig(max_iter=4))
    opt2.load_state_dict(ckpt["opt"])
    assert lbfgs_step(opt2, obj2.closure) == whole
    assert torch.equal(obj2.theta(), obj.theta()) and obj2.evaluations == obj.evaluations


def test_a_non_finite_loss_is_a_clear_error():
    net = longlag_model(4, 3.75, seed=0)
    obj = FullBatchObjective(net, lambda: sum(p.sum() for p in net.parameters()) * float("nan"))
    with pytest.raises(FloatingPointError, match=r"full-batch loss is not finite \(nan\) at evaluation 1"):
        obj.closure()


def test_bad_settings():
    with pytest.raises(ValueError, match="max_iter must be at least 1"):
        FullBatchConfig(max_iter=0)
    with pytest.raises(ValueError, match="cg_c2 must lie in"):
        FullBatchConfig(cg_c2=1.0)
    with pytest.raises(ValueError, match="unknown full-batch method"):
        FullBatchConfig(method="newton")
    with pytest.raises(ValueError, match="unknown CG update 'fr'"):
        FullBatchConfig(cg_update="fr")
    with pytest.raises(ValueError, match="lr must be positive"):
        FullBatchConfig(lr=0.0)
    with pytest.raises(ValueError, match="tolerance_change must be non-negative"):
        FullBatchConfig(tolerance_change=-1.0)


def small_loss_lbfgs(tolerance: float) -> tuple[int, float]:
    """L-BFGS steps on an ill-conditioned least-squares problem whose loss is scaled by 1e-6, until a step finds
    no decrease: (steps taken, final loss / 1e-6)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, 6, dtype=torch.float64)
    y = x @ torch.randn(6, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    net = torch.nn.Linear(6, 1).double()
    obj = FullBatchObjective(net, lambda: 1e-6 * ((net(x) - y) ** 2).mean())
    opt = make_lbfgs(obj.params, FullBatchConfig(max_iter=5, tolerance_change=tolerance))
    for step in range(1, 200):
        start, loss = lbfgs_step(opt, obj.closure)
        if not loss < start:
            return step, loss / 1e-6
    raise AssertionError("L-BFGS never stopped")


def test_the_lbfgs_tolerance_is_what_a_small_loss_needs():
    """torch's default tolerance (1e-9 on changes of L) ends a run whose loss is ~1e-6 in its first step; the
    default of FullBatchConfig goes on to a loss 30× smaller. The multiplication runs stalled this way at L ≈ 2e-4."""
    steps, torch_default = small_loss_lbfgs(1e-9)
    assert steps == 1
    _, ours = small_loss_lbfgs(FullBatchConfig().tolerance_change)
    assert ours < torch_default / 30


def overshooting_lbfgs(max_eval: int | None) -> list[float]:
    """L on f(θ) = 50 θ², θ₀ = 0.01, after each of three one-iteration L-BFGS steps: the first trial step
    (t = min(1, 1/‖g‖₁) = 1, θ = −0.99) raises L, so a step only progresses if its line search may try again."""
    net = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(0.01)
    obj = FullBatchObjective(net, lambda: 50 * (net.weight**2).sum())
    if max_eval is None:
        opt = make_lbfgs(obj.params, FullBatchConfig(max_iter=1))
    else:
        opt = torch.optim.LBFGS(obj.params, max_iter=1, max_eval=max_eval, line_search_fn="strong_wolfe")
    return [lbfgs_step(opt, obj.closure)[1] for _ in range(3)]


def test_a_one_iteration_step_has_room_for_its_line_search():
    """torch's default max_eval (⌊1.25 · max_iter⌋ = 1) leaves a one-iteration step no line search: it returns
    t = 0 for ever. make_lbfgs allows max_iter + 1 evaluations, and the steps descend."""
    assert overshooting_lbfgs(max_eval=1) == [0.005] * 3  # torch's default: stuck at L(θ₀)
    assert overshooting_lbfgs(max_eval=None)[0] < 1e-12  # the search interpolates to the quadratic's minimum
    assert [lbfgs_max_eval(i) for i in (1, 2, 3, 4, 5, 8, 20)] == [2, 3, 4, 5, 6, 10, 25]
