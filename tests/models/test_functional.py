"""Flat θ: round trips, batched forward against a loop, gradients against autograd."""

from __future__ import annotations

import pytest
import torch

from distlstm.models import CELLS, CharLM, FunctionalModel, ParamSpec, SequenceRegressor, assign, flatten

D = torch.float64
OPTIONS = {"lstmp": {"proj_size": 2}, "flstm": {"rank": 3}, "glstm": {"groups": 2}}


def regressor(cell: str = "lstm") -> SequenceRegressor:
    torch.manual_seed(0)
    return SequenceRegressor(2, 4, num_layers=2, cell=cell, **OPTIONS.get(cell, {})).double()


def test_flatten_unflatten_is_identity():
    model = regressor()
    spec = ParamSpec.of(model)
    theta = flatten(model)
    assert theta.shape == (spec.numel,) == (sum(p.numel() for p in model.parameters()),)
    params = spec.unflatten(theta)
    for name, p in model.named_parameters():
        assert torch.equal(params[name], p)
    assert torch.equal(spec.flatten(params), theta)
    batch = torch.randn(3, spec.numel, dtype=D)
    assert torch.equal(spec.flatten({k: v[1] for k, v in spec.unflatten(batch).items()}), batch[1])


def test_assign_writes_theta_into_the_module():
    model = regressor()
    theta = torch.randn(ParamSpec.of(model).numel, dtype=D)
    assign(model, theta)
    assert torch.equal(flatten(model), theta)


def test_slice_locates_a_parameter():
    model = regressor()
    spec = ParamSpec.of(model)
    theta = flatten(model)
    torch.testing.assert_close(theta[spec.slice("head.linear.weight")], model.head.linear.weight.reshape(-1))


def test_ergen_kozat_parameter_count():
    """n_θ = n + 4(np + n² + n) with one bias per gate; we keep nn.LSTM's two, so + 4n."""
    n, p = 5, 3
    n_theta = ParamSpec.of(SequenceRegressor(p, n)).numel
    assert n_theta == n + 4 * (n * p + n * n + n) + 4 * n


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_batched_forward_equals_loop(cell):
    model = regressor(cell)
    fm = FunctionalModel(model)
    thetas = fm.flatten() + 0.1 * torch.randn(6, fm.numel, dtype=D, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 5, 2, dtype=D)
    lengths = torch.tensor([5, 2, 4])
    batched = fm(thetas, x, lengths)
    loop = torch.stack([fm(t, x, lengths) for t in thetas])
    assert batched.shape == (6, 3)
    torch.testing.assert_close(batched, loop)
    assign(model, thetas[2])
    torch.testing.assert_close(model(x, lengths), loop[2])


def test_batched_forward_with_per_member_inputs():
    fm = FunctionalModel(regressor())
    thetas = fm.flatten() + 0.1 * torch.randn(4, fm.numel, dtype=D)
    xs = torch.randn(4, 2, 3, 2, dtype=D)
    out = fm(thetas, xs, per_member=True)
    loop = torch.stack([fm(t, x) for t, x in zip(thetas, xs, strict=True)])
    torch.testing.assert_close(out, loop)


def test_batched_forward_of_a_char_lm():
    torch.manual_seed(2)
    model = CharLM(7, 5, cell="rnn").double()
    fm = FunctionalModel(model)
    thetas = fm.flatten() + 0.1 * torch.randn(3, fm.numel, dtype=D)
    ids = torch.randint(0, 7, (2, 4))
    logits, _state = fm(thetas, ids)
    assert logits.shape == (3, 2, 4, 7)
    torch.testing.assert_close(logits[1], fm(thetas[1], ids)[0])


def test_value_and_grad_is_the_autograd_gradient():
    model = regressor("peephole")
    fm = FunctionalModel(model)
    x = torch.randn(1, 6, 2, dtype=D)
    value, grad = fm.value_and_grad(fm.flatten(), x)
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(value, out[0])
    torch.testing.assert_close(grad, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))


def test_jacobian_rows_are_per_output_gradients():
    fm = FunctionalModel(regressor())
    theta = fm.flatten()
    x = torch.randn(3, 4, 2, dtype=D)
    out, jac = fm.jacobian(theta, x)
    assert jac.shape == (3, fm.numel)
    for k in range(3):
        v, g = fm.value_and_grad(theta, x[k : k + 1])
        torch.testing.assert_close(out[k], v)
        torch.testing.assert_close(jac[k], g)


def test_theta_of_the_wrong_size_is_rejected():
    fm = FunctionalModel(regressor())
    x = torch.randn(1, 3, 2, dtype=D)
    with pytest.raises(ValueError, match=rf"expected shape \({fm.numel},\) or \(B, {fm.numel}\), got \(3,\)"):
        fm(torch.zeros(3, dtype=D), x)
    with pytest.raises(ValueError, match="expected shape"):
        fm(torch.zeros(2, 2, fm.numel, dtype=D), x)
    with pytest.raises(TypeError, match="floating point"):
        fm(torch.zeros(fm.numel, dtype=torch.long), x)
    with pytest.raises(ValueError, match="NaN"):
        fm(torch.full((fm.numel,), float("nan"), dtype=D), x)
    with pytest.raises(ValueError, match="leading dimension 2"):
        fm(torch.zeros(2, fm.numel, dtype=D), x, per_member=True)
    with pytest.raises(ValueError, match="scalar output"):
        fm.value_and_grad(fm.flatten(), torch.randn(2, 3, 2, dtype=D))


def test_compiled_population_call_equals_vmap():
    """FunctionalModel(compile=True) must give the numbers of the plain vmap path."""
    torch.manual_seed(3)
    model = SequenceRegressor(2, 4)
    fm, cfm = FunctionalModel(model), FunctionalModel(model, compile=True)
    thetas = fm.flatten() + 0.1 * torch.randn(8, fm.numel)
    x, lengths = torch.randn(3, 5, 2), torch.tensor([5, 2, 4])
    with torch.no_grad():
        torch.testing.assert_close(cfm(thetas, x, lengths), fm(thetas, x, lengths))
