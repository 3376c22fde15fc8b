"""One gradient row per sequence for a :class:`SequenceRegressor` on ATen's fused LSTM: d̂_b and ∂d̂_b/∂θ.

The EKF's measurement row H = ∂d̂/∂θ and the DEKF's rows for its neighbours' sequences are
per-sequence gradients. Batched reverse mode (``is_grads_batched``, a ``vmap`` over the
backward graph) pays for every row; but every parameter of an LSTM layer meets sequence b
only through its pre-activations a_{t,b}, so one ordinary backward of Σ_b d̂_b, taken
with respect to the pre-activations, gives every row at once::

    a_t = W_ih x_t + b + W_hh h_{t-1}          (rows i, f, o of all three scaled by α: σ(α a))
    δa_{t,b} = ∂d̂_b / ∂a_{t,b}                   (Σ_b d̂_b does not mix sequences)
    ∂d̂_b/∂W_ih = Σ_t δa_{t,b} x_{t,b}ᵀ   ∂d̂_b/∂W_hh = Σ_t δa_{t,b} h_{t-1,b}ᵀ   ∂d̂_b/∂b = Σ_t δa_{t,b}
    ∂d̂_b/∂w = ȳ_b   (d̂ = wᵀ ȳ + c, ȳ the pooled outputs),   ∂d̂_b/∂c = 1

The pre-activations W_ih x_t + b are formed outside the kernel (one GEMM) and fed to
``torch.lstm`` through an identity input weight, so ATen still runs the recurrence; a
layer above the first takes the layer below's outputs as its x. Two rows come ≈ 1.5×
quicker than from the batched backward and one row 1.05–1.2× quicker than from plain
reverse mode (``BENCHMARKS.md``, online section, "Jacobian rows").

Only what the fused kernel runs is covered: plain LSTM cells (any α, one or two biases or
none, no projection), one direction, no dropout mask, the zero initial state; for any
other model :func:`regressor_rows` returns None and the caller differentiates generically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from distlstm._checks import check_finite, check_lengths, is_transformed
from distlstm.models.cells import LSTMCell
from distlstm.models.heads import pool
from distlstm.models.sequence import gate_scale

if TYPE_CHECKING:
    from distlstm.models.networks import SequenceRegressor


def covers(model: SequenceRegressor, x: Tensor) -> bool:
    """Whether :func:`regressor_rows` can differentiate ``model`` at input ``x`` (else the caller's generic path
    runs, with the model's own input checks)."""
    rnn = model.rnn
    if not all(type(c) is LSTMCell and c.weight_hr is None for c in rnn.cells):
        return False
    if not rnn.fused or rnn.bidirectional or is_transformed(x) or x.dim() != 3 or x.shape[-1] != rnn.input_size:
        return False
    if x.shape[1] == 0 or x.dtype != rnn.cells[0].weight_ih.dtype:
        return False
    return not (rnn.dropout and rnn.training and rnn.num_layers > 1)


class LayerParams(NamedTuple):
    """Layer l's weights among a regressor's parameters by name (one θ's views, or P members' stacked)."""

    name: str  # the template "rnn.{}_l<l>", e.g. name.format("weight_ih")
    w_ih: Tensor
    w_hh: Tensor
    bias: Tensor | None  # b_ih + b_hh, b_ih alone with single_bias, None without biases


def layer_params(params: Mapping[str, Tensor], layer: int) -> LayerParams:
    """Layer ``layer``'s weights and its combined bias (as :meth:`LSTMCell.combined_bias`) from ``params``."""
    name = f"rnn.{{}}_l{layer}"
    b_ih, b_hh = params.get(name.format("bias_ih")), params.get(name.format("bias_hh"))
    bias = None if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)
    return LayerParams(name, params[name.format("weight_ih")], params[name.format("weight_hh")], bias)


def regressor_rows(model: SequenceRegressor, params: Mapping[str, Tensor], x: Tensor,
                   lengths: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]] | None:
    """d̂ (B,) and, per parameter name, ∂d̂_b/∂param stacked over b (B, *shape); None if not :func:`covers`.

    ``params`` are the model's parameters by name (e.g. views of one θ), ``x`` (B, T, p)
    batch-first, ``lengths`` (B,) or None. Nothing is differentiated with respect to
    ``params`` themselves, so they need not require grad.
    """
    if not covers(model, x):
        return None
    check_finite(x, "input")
    rnn = model.rnn
    batch, steps = x.shape[0], x.shape[1]
    packed_order = None if lengths is None else check_lengths(lengths, batch, steps).to("cpu")
    rows: dict[str, Tensor] = {}
    with torch.enable_grad():
        inp = x.detach()
        pre, below, kept = [], [], []
        for layer, cell in enumerate(rnn.cells):
            name, w_ih, w_hh, bias = layer_params(params, layer)
            assert isinstance(cell, LSTMCell)  # covers() checked every cell
            scale = gate_scale(cell, x)
            w_hh = w_hh if scale is None else w_hh * scale[:, None]
            flat = inp.reshape(-1, inp.shape[-1])
            a = (flat @ w_ih.t() if bias is None else torch.addmm(bias, flat, w_ih.t())).view(batch, steps, -1)
            a = a if scale is None else a * scale
            a = a.detach().requires_grad_(True) if layer == 0 else a
            eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            h0 = a.new_zeros(1, batch, cell.hidden_size)
            if packed_order is None:
                y, _, _ = torch.lstm(a, (h0, h0), [eye, w_hh], False, 1, 0.0, False, False, True)
            else:
                packed = pack_padded_sequence(a, packed_order, batch_first=True, enforce_sorted=False)
                data, _, _ = torch.lstm(packed.data, packed.batch_sizes, (h0, h0), [eye, w_hh],
                                        False, 1, 0.0, False, False)
                ran = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
                y, _ = pad_packed_sequence(ran, batch_first=True, total_length=steps)
            pre.append(a)
            below.append(inp)
            kept.append((name, scale))
            inp = y
        pooled = pool(inp, lengths, model.pooling)
        w = params["head.linear.weight"]
        head_bias = params.get("head.linear.bias")
        out = pooled @ w[0] if head_bias is None else torch.addmv(head_bias.expand(batch), pooled, w[0])
        deltas = torch.autograd.grad(out.sum(), pre)
    outputs = [*below[1:], inp]  # layer l's y is layer l + 1's input
    for delta, layer_in, y, (name, scale) in zip(deltas, below, outputs, kept, strict=True):
        da = (delta if scale is None else delta * scale).transpose(1, 2)  # (B, 4n, T): δa of the unscaled a
        h_prev = torch.cat([y.new_zeros(batch, 1, y.shape[-1]), y[:, :-1]], 1).detach()
        rows[name.format("weight_ih")] = torch.bmm(da, layer_in.detach())
        rows[name.format("weight_hh")] = torch.bmm(da, h_prev)
        db = da.sum(-1)
        for bias_name in (name.format("bias_ih"), name.format("bias_hh")):
            if bias_name in params:
                rows[bias_name] = db
    rows["head.linear.weight"] = pooled.detach().unsqueeze(1)
    if head_bias is not None:
        rows["head.linear.bias"] = torch.ones(batch, 1, dtype=out.dtype, device=out.device)
    return out.detach(), rows
