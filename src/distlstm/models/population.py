"""A :class:`SequenceRegressor` on plain LSTM layers evaluated at P parameter vectors at once, without ``vmap``.

Particle filters evaluate d̂ = h(θ^i; X) for every particle θ^i on the same sequences.
``vmap`` over the module does it in one call, but each of its per-step ops is a batching
rule over the module's generic loop. Written out for the population the step is::

    A^i = X W_ih^iᵀ + b^i                 all steps: one ``bmm`` over the P members
    a_t^i = A_t^i + h_{t-1}^i W_hh^iᵀ     one ``baddbmm`` over the P members per step
    (h_t^i, c_t^i) = LSTM pointwise(a_t^i, c_{t-1}^i)   (i, f, g, o; σ(α a) on i, f, o)

which for hidden 8, N = 1,000 particles and 10 steps ran 1.3× as fast as the ``vmap``
call, and up to 2× for smaller populations (the "batched θ" table of ``BENCHMARKS.md``
has both). Masking and
pooling follow :mod:`~distlstm.models.sequence` and :func:`~distlstm.models.heads.pool`:
a padded step leaves the state unchanged and outputs zero. Every member's numbers are
the same whatever the population's size (products per member, pooling summed in step
order), which the DPF's two walks rely on to agree bit for bit. Models the fused kernel does
not run (:func:`~distlstm.models.per_sequence.covers`) get None, and the caller's ``vmap``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from distlstm._checks import check_finite, check_lengths, is_transformed
from distlstm.models.cells import LSTMCell, lstm_pointwise
from distlstm.models.per_sequence import covers, layer_params
from distlstm.models.sequence import step_mask

if TYPE_CHECKING:
    from distlstm.models.networks import SequenceRegressor


def regressor_population(model: SequenceRegressor, params: Mapping[str, Tensor], x: Tensor,
                         lengths: Tensor | None = None) -> Tensor | None:
    """d̂ (P, B) for the P members of ``params`` (name → (P, *shape)) on shared ``x`` (B, T, p); None if not covered.

    ``lengths`` (B,) or None, as for the module.
    """
    if not covers(model, x) or any(is_transformed(p) for p in params.values()):
        return None
    check_finite(x, "input")
    batch, steps = x.shape[0], x.shape[1]
    if lengths is not None:
        lengths = check_lengths(lengths, batch, steps).to(x.device)
    masks = None if lengths is None else step_mask(lengths, steps).unsqueeze(1)  # (T, 1, B, 1)
    members = params["head.linear.weight"].shape[0]
    ys: Tensor | None = None  # (T, P, B, n): the layer below's outputs
    for layer, cell in enumerate(model.rnn.cells):
        assert isinstance(cell, LSTMCell)  # covers() checked every cell
        _, w_ih, w_hh, bias = layer_params(params, layer)
        gates = w_ih.shape[1]
        # one bmm over the members, each member its own product
        if ys is None:  # the members share x (B, T, p), read time-major
            inputs = x.transpose(0, 1).reshape(1, steps * batch, -1).expand(members, -1, -1)
        else:  # each member's own inputs
            inputs = ys.transpose(0, 1).reshape(members, steps * batch, -1)
        pre = torch.bmm(inputs, w_ih.transpose(1, 2)).view(members, steps, batch, gates).transpose(0, 1)
        if bias is not None:
            pre = pre + bias[None, :, None, :]
        pre = pre.contiguous()  # time-major: each step's block is one contiguous (P, B, 4n) slice
        w_hh_t = w_hh.transpose(1, 2)
        h = x.new_zeros(members, batch, cell.hidden_size)
        c = torch.zeros_like(h)
        top = layer == len(model.rnn.cells) - 1
        outs: list[Tensor] = []
        pooled: Tensor | None = None  # the top layer's pooling, accumulated step by step
        for t in range(steps):
            y, c_new = lstm_pointwise(torch.baddbmm(pre[t], h, w_hh_t), c, cell.alpha)
            if masks is None:
                h, c = y, c_new
            else:
                m = masks[t]
                h, c = torch.where(m, y, h), torch.where(m, c_new, c)
                y = y * m
            if not top:
                outs.append(y)
            elif model.pooling == "mean":  # summed in step order: a member's numbers do not depend on P
                pooled = y if pooled is None else pooled + y
            elif model.pooling == "max":
                y = y if masks is None else torch.where(masks[t], y, float("-inf"))
                pooled = y if pooled is None else torch.maximum(pooled, y)
        if not top:
            ys = torch.stack(outs)
    if model.pooling == "last":
        pooled = h  # the state after each sequence's last valid step is its output there
    assert pooled is not None
    if model.pooling == "mean":
        pooled = pooled / steps if lengths is None else pooled / lengths.unsqueeze(-1).to(pooled.dtype)
    out = torch.bmm(pooled, params["head.linear.weight"].transpose(1, 2)).squeeze(-1)  # (P, B)
    head_bias = params.get("head.linear.bias")
    return out if head_bias is None else out + head_bias
