"""Per-sequence gradient rows from one backward (``SequenceRegressor.per_sequence_grads``).

The reference is the generic path of :class:`FunctionalModel` (reverse mode batched over
the rows, ``is_grads_batched``), which knows nothing of the δa trick, and for one model a
central finite difference of d̂ itself.
"""

from __future__ import annotations

import pytest
import torch

from distlstm.models.functional import FunctionalModel
from distlstm.models.per_sequence import regressor_rows
from tests.models.regressors import CONFIGS, IDS, functional_regressor


def model_and_theta(seed: int = 0, **options):
    gen = torch.Generator().manual_seed(seed)
    fm = functional_regressor(seed, **options)
    theta = fm.flatten() + 0.2 * torch.randn(fm.numel, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    return fm, theta, x


def generic(fm: FunctionalModel, method: str, *args, **kwargs):
    """``fm``'s method with the module's rows switched off."""
    return getattr(FunctionalModel(fm.module, fast_paths=False), method)(*args, **kwargs)


@pytest.mark.parametrize("options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("lengths", [None, torch.tensor([7, 3, 5, 1])], ids=["full", "padded"])
def test_rows_equal_the_generic_jacobian(options, lengths):
    fm, theta, x = model_and_theta(**options)
    kwargs = {} if lengths is None else {"lengths": lengths}
    assert regressor_rows(fm.module, fm.spec.unflatten(theta), x, lengths) is not None  # the hook runs
    out, jac = fm.jacobian(theta, x, **kwargs)
    want_out, want_jac = generic(fm, "jacobian", theta, x, **kwargs)
    assert jac.shape == (4, fm.numel)
    torch.testing.assert_close(out, want_out, rtol=0, atol=1e-13)
    torch.testing.assert_close(jac, want_jac, rtol=0, atol=1e-13)
    assert jac.abs().max() > 1e-3  # not a trivially zero Jacobian


@pytest.mark.parametrize("options", CONFIGS[:3], ids=IDS[:3])
def test_one_row_equals_plain_reverse_mode(options):
    fm, theta, x = model_and_theta(seed=1, **options)
    value, grad = fm.value_and_grad(theta, x[:1])
    want_value, want_grad = generic(fm, "value_and_grad", theta, x[:1])
    assert value.shape == () and grad.shape == (fm.numel,)
    torch.testing.assert_close(value, want_value, rtol=0, atol=1e-13)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-13)


def test_rows_match_finite_differences():
    fm, theta, x = model_and_theta(seed=2, num_layers=2, alpha=3.75, head_bias=True)
    lengths = torch.tensor([7, 2, 6, 4])
    _, jac = fm.jacobian(theta, x, lengths=lengths)
    eps = 1e-6
    for k in torch.randperm(fm.numel, generator=torch.Generator().manual_seed(0))[:25].tolist():
        step = torch.zeros_like(theta)
        step[k] = eps
        fd = (fm(theta + step, x, lengths=lengths) - fm(theta - step, x, lengths=lengths)) / (2 * eps)
        torch.testing.assert_close(jac[:, k], fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("options", [
    {"bidirectional": True}, {"cell": "peephole"}, {"proj_size": 2}, {"num_layers": 2, "dropout": 0.5},
], ids=["bidirectional", "peephole", "projection", "dropout"])
def test_models_outside_the_fused_kernel_fall_back(options):
    fm, theta, x = model_and_theta(**options)
    fm.module.train("dropout" in options)
    covered = regressor_rows(fm.module, fm.spec.unflatten(theta), x)
    assert covered is None
    if "dropout" not in options:  # a training-mode dropout draws a fresh mask per call
        out, jac = fm.jacobian(theta, x)  # the peephole layer's backward cannot be vmapped: one per row
        for b in range(x.shape[0]):
            value, grad = fm.value_and_grad(theta, x[b : b + 1])
            torch.testing.assert_close(out[b], value, rtol=0, atol=1e-13)
            torch.testing.assert_close(jac[b], grad, rtol=0, atol=1e-13)


def test_a_carried_state_falls_back():
    fm, theta, x = model_and_theta()
    assert fm.module.per_sequence_grads(fm.spec.unflatten(theta), x, state=fm.module.init_state(4)) is None


def test_bad_input_gets_the_models_errors():
    fm, theta, x = model_and_theta()
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="input"):
        fm.jacobian(theta, bad)
    with pytest.raises(ValueError, match="lengths"):
        fm.jacobian(theta, x, lengths=torch.tensor([7, 9, 1, 1]))
    with pytest.raises(ValueError, match="feature size"):
        fm.jacobian(theta, x[..., :2])
    with pytest.raises(ValueError, match="scalar output"):
        fm.value_and_grad(theta, x)
