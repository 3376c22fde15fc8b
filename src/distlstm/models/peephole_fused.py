"""The peephole LSTM over a whole sequence as one autograd node, with a hand-written backward.

The generic loop (:func:`~distlstm.models.sequence.run_layer`) records some twenty
autograd nodes per step, and autograd's backward adds as many again plus a copy of
every ``chunk``/``unbind`` gradient. For small cells (the matrix-batch network has
n = 4 units and 10,000 sequences) that per-op work dominates. Here one forward loop
writes the gate activations into preallocated buffers, and one backward loop turns
them into the pre-activation gradients δa_t, adding δa_t z_tᵀ to ∇W while both are
in cache (one product for W_ih, W_hh and b together; tried: one product over all
steps at the end, slower here, the (G·n × T·B) by (T·B × K) shape runs far below the
GEMM peak and needs δa of every step kept).

Per step, in gate order (i, f, g, o) — (i, g, o) without the forget gate, f ≡ 1 —
with the gate sharpness α already folded into the weights (rows of the sigmoid gates
and the peepholes p scaled by α, so σ(α(a + p ⊙ c)) = σ(αa + αp ⊙ c))::

    a_t = W [x_t; h_{t-1}] + b                       (W = [W_ih | W_hh], one GEMM)
    i = σ(a_i + p_i ⊙ c_{t-1})   f = σ(a_f + p_f ⊙ c_{t-1})   g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g    o = σ(a_o + p_o ⊙ c_t)      h_t = o ⊙ tanh(c_t)

Backward, with δh and δc the gradients reaching h_t and c_t::

    δa_o = δh ⊙ tanh(c_t) ⊙ o(1 − o)
    δc_t = δc + δh ⊙ o ⊙ (1 − tanh²c_t) + p_o ⊙ δa_o
    δa_i = δc_t ⊙ g ⊙ i(1 − i)   δa_f = δc_t ⊙ c_{t-1} ⊙ f(1 − f)   δa_g = δc_t ⊙ i ⊙ (1 − g²)
    δc_{t-1} = δc_t ⊙ f + p_i ⊙ δa_i + p_f ⊙ δa_f                      δh_{t-1} = W_hhᵀ δa_t
    ∇W = Σ_t δa_t [x_t; h_{t-1}]ᵀ   ∇b = Σ_t δa_t   ∇p_i = Σ_t δa_i ⊙ c_{t-1}   ∇p_o = Σ_t δa_o ⊙ c_t

Masking (the rule of :mod:`~distlstm.models.sequence`): steps before the shortest
sequence's end run unmasked; at a later step a finished sequence keeps its state
(``where``) and the outputs are zeroed once, at the end. Every tensor of the loop is
a slice of a preallocated time-major buffer written with ``out=``: no per-step
copies, no ``cat``. Activations kept for the backward, per sequence and step:
the gates (G·n values), c_t, tanh c_t and [x_t; h_{t-1}].
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from distlstm.models.cells import LSTMState, PeepholeLSTMCell, State

#: Buffers kept between calls, by (name, shape, dtype, device). Fresh memory costs a page
#: fault per 4 KiB on first touch, which for the full-batch evaluation cost more than the
#: arithmetic; reusing the buffers of the previous evaluation avoids it.
_WORKSPACE: OrderedDict[tuple[Any, ...], Tensor] = OrderedDict()
WORKSPACE_KEYS = 12  # buffers kept (the least recently used go first)


def _buffer(name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape``, the kept one unless a graph still holds it (saved for backward)."""
    key = (name, shape, like.dtype, like.device)
    kept = _WORKSPACE.get(key)
    if kept is not None and kept._use_count() == 1:  # type: ignore[attr-defined]  # only this cache refers to it
        _WORKSPACE.move_to_end(key)
        return kept
    fresh = like.new_empty(shape)
    if kept is None:
        _WORKSPACE[key] = fresh
        while len(_WORKSPACE) > WORKSPACE_KEYS:
            _WORKSPACE.popitem(last=False)
    return fresh


def clear_workspace() -> None:
    """Free the buffers :func:`peephole_sequence` keeps between calls."""
    _WORKSPACE.clear()


class _PeepholeSequence(torch.autograd.Function):
    """``(y (T, n, B), h_T (n, B), c_T (n, B))`` of a peephole layer, feature-major; see the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, h0: Tensor, c0: Tensor, weight: Tensor, peep: Tensor, has_bias: bool,
                first_masked: int, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        steps, features, batch = x.shape
        n = h0.shape[0]
        gates = weight.shape[0] // n  # G: 4 with the forget gate, 3 without
        inputs = weight.shape[1] - n  # x's features, plus a row of ones for the bias
        # z_t = [1; x_t; h_{t-1}] in slot t (h_T in the last): every step's GEMM operand, and
        # what the backward's ∇W += δa_t z_tᵀ reads.
        z = _buffer("z", (steps + 1, inputs + n, batch), x)
        z[:steps, inputs - features : inputs] = x
        z[steps, :inputs] = 0
        if has_bias:
            z[:steps, 0] = 1
        z[0, inputs:] = h0
        hs = z[:, inputs:]
        acts = _buffer("acts", (steps, gates, n, batch), x)  # i, (f,) g, o
        cs = _buffer("cs", (steps + 1, n, batch), x)  # c_{t-1} in slot t
        cs[0] = c0
        tcs = _buffer("tcs", (steps, n, batch), x)  # tanh c_t
        p_in, p_o = peep[: gates - 2].unsqueeze(-1), peep[gates - 2].unsqueeze(-1)
        for t in range(steps):
            a = acts[t]
            torch.mm(weight, z[t], out=a.view(-1, batch))
            c_prev, c = cs[t], cs[t + 1]
            a[: gates - 2].addcmul_(c_prev, p_in)  # i (and f) peek at c_{t-1}
            a[: gates - 1].sigmoid_()
            g = a[gates - 2].mul_(2).sub_(1)  # tanh(a/2) = 2σ(a) − 1: σ is ~3× cheaper than tanh
            if gates == 4:
                torch.mul(a[1], c_prev, out=c).addcmul_(a[0], g)
            else:
                torch.addcmul(c_prev, a[0], g, out=c)
            o = a[gates - 1].addcmul_(c, p_o).sigmoid_()  # o peeks at c_t
            tc = torch.mul(c, 2, out=tcs[t]).sigmoid_().mul_(2).sub_(1)
            torch.mul(o, tc, out=hs[t + 1])
            if t >= first_masked:
                assert mask is not None
                m = mask[t]  # finished sequences keep their state
                torch.where(m, c, c_prev, out=c)
                torch.where(m, hs[t + 1], hs[t], out=hs[t + 1])
        ctx.save_for_backward(z, acts, cs, tcs, weight, peep, mask)
        ctx.first_masked, ctx.features = first_masked, features
        y = hs[1:].clone() if mask is None else hs[1:] * mask  # zero at padded steps
        return y, hs[steps].clone(), cs[steps].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        z, acts, cs, tcs, weight, peep, mask = ctx.saved_tensors
        steps, gates, n, batch = acts.shape
        inputs = z.shape[1] - n
        first_masked = ctx.first_masked
        w_h = weight[:, inputs:].t().contiguous()  # (n, G·n)
        p_in, p_o = peep[: gates - 2].unsqueeze(-1), peep[gates - 2].unsqueeze(-1)
        if not dy.is_contiguous():  # e.g. the gradient of y's (B, T, n) view: a 2-D transpose, ATen's blocked copy
            dy = _buffer("dy", (steps, n, batch), dy).view(-1, batch).copy_(dy.reshape(-1, batch)).view_as(dy)
        rows, cols = weight.shape
        # ∇W = Σ_t δa_t z_tᵀ: added step by step while δa_t and z_t are in cache when the
        # (G·n × K) ∇W is small next to them (the full-batch network); else one product at
        # the end over δa kept for every step, which reads and writes ∇W once, not T times.
        per_step = rows * cols <= (rows + cols) * batch
        da = None if per_step else _buffer("da", (rows, steps, batch), acts)
        d = _buffer("d", (gates, n, batch), acts)  # δa_t
        products = _buffer("products", (gates - 1, n, batch), acts)
        dhs = (_buffer("dh0", (n, batch), acts), _buffer("dh1", (n, batch), acts))
        dpeep = _buffer("dpeep", (steps, gates - 1, n), acts)  # per-step sums
        dweight = torch.zeros_like(weight)
        w_x = weight[:, inputs - ctx.features : inputs].t().contiguous() if ctx.needs_input_grad[0] else None
        dx = acts.new_empty(steps, ctx.features, batch) if w_x is not None else None
        dh, dc = dh_n.clone(), dc_n.clone()
        skip_h = skip_c = None
        for t in range(steps - 1, -1, -1):
            a = acts[t]
            if da is not None:
                d = da[:, t].view(gates, n, batch)
            if t >= first_masked:
                m = mask[t]
                dht = dh.add_(dy[t] * m)
                skip_h, skip_c = torch.where(m, 0.0, dht), torch.where(m, 0.0, dc)
                dht, dc = torch.where(m, dht, 0.0), torch.where(m, dc, 0.0)
            else:
                dht = dh.add_(dy[t])
            o, tc, c_prev = a[gates - 1], tcs[t], cs[t]
            do = torch.mul(dht, tc, out=d[gates - 1]).mul_(o)
            do.addcmul_(do, o, value=-1)  # δa_o = δh ⊙ tanh c ⊙ o(1 − o)
            r = dht.mul_(o)  # δh ⊙ o (δh is not needed again)
            dct = dc.add_(r)
            dct.addcmul_(r.mul_(tc), tc, value=-1).addcmul_(do, p_o)  # δc_t
            torch.mul(dct, a[gates - 2], out=d[0])  # δi = δc_t ⊙ g
            if gates == 4:
                torch.mul(dct, c_prev, out=d[1])  # δf = δc_t ⊙ c_{t-1}
            g = a[gates - 2]
            dg = torch.mul(dct, a[0], out=d[gates - 2])  # δg = δc_t ⊙ i
            s, ds = a[: gates - 2], d[: gates - 2]
            ds.mul_(s).addcmul_(ds, s, value=-1)  # ⊙ σ' = s(1 − s) for i (and f)
            dg.addcmul_(torch.mul(dg, g, out=products[0]), g, value=-1).mul_(0.5)  # ⊙ (1 − g²)/2 = d(2σ(a) − 1)/da
            dc = dct.mul_(a[1]) if gates == 4 else dct
            for k in range(gates - 2):
                dc.addcmul_(d[k], p_in[k])
            d2 = d.view(-1, batch)
            if da is None:
                dweight.addmm_(d2, z[t].t())
            torch.sum(torch.mul(ds, c_prev, out=products[: gates - 2]), -1, out=dpeep[t, : gates - 2])
            torch.sum(torch.mul(do, cs[t + 1], out=products[gates - 2]), -1, out=dpeep[t, gates - 2])
            if dx is not None and w_x is not None:
                torch.mm(w_x, d2, out=dx[t])
            dh = torch.mm(w_h, d2, out=dhs[t % 2])
            if t >= first_masked:
                assert skip_h is not None and skip_c is not None
                dh.add_(skip_h)
                dc.add_(skip_c)
        dh = dh.clone() if any(dh is b for b in dhs) else dh  # kept buffers must not escape
        if da is not None:
            dweight = da.view(rows, -1).mm(z[:steps].transpose(0, 1).reshape(cols, -1).t())
        dpeep = dpeep.sum(0)
        return dx, dh, dc, dweight, dpeep, None, None, None


def peephole_sequence(x: Tensor, h0: Tensor, c0: Tensor, weight: Tensor, peep: Tensor, has_bias: bool,
                      lengths: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Run a peephole layer over feature-major ``x`` (T, I, B) in one autograd node, every gate one sigmoid.

    The gates are σ of their pre-activations, g included: g = 2σ(a_g) − 1, which is
    tanh(a_g / 2), so the caller doubles the g rows of ``weight`` (and folds in the
    sharpness α, see :func:`peephole_layer`). With ``has_bias`` the first column of
    ``weight`` is the bias b, multiplied by a row of ones, so ∇b comes out of the ∇W
    products. Batch-innermost ("feature-major") layout keeps every gate of every step
    one contiguous block. The buffers are kept for the next call of the same size
    (:func:`clear_workspace` frees them).

    Args:
        x: (T, I, B) inputs.
        h0, c0: (n, B) initial state.
        weight: (G·n, I + n), [W_ih | W_hh], or (G·n, 1 + I + n), [b | W_ih | W_hh] with
            ``has_bias``; gate order (i, f, g, o) or (i, g, o).
        peep: (G − 1, n) peephole weights (p_i, p_f, p_o) or (p_i, p_o).
        lengths: (B,) valid lengths (at most T), or None when every sequence has T steps.

    Returns:
        ``(y, h_T, c_T)``: y (T, n, B), zero at padded steps; h_T, c_T (n, B), the state after
        each sequence's last step.
    """
    steps = x.shape[0]
    first_masked = steps if lengths is None else min(int(lengths.min()), steps)
    mask = None  # (T, 1, B): True where step t is inside sequence b
    if first_masked < steps:
        assert lengths is not None
        mask = (torch.arange(steps, device=x.device)[:, None] < lengths.to(x.device)[None, :]).unsqueeze(1)
    out: tuple[Tensor, Tensor, Tensor] = _PeepholeSequence.apply(
        x, h0, c0, weight, peep, has_bias, first_masked, mask)
    return out


def fusable(cell: object) -> bool:
    """Whether :func:`peephole_layer` can run ``cell``: a peephole cell without projection."""
    return type(cell) is PeepholeLSTMCell and cell.weight_hr is None


def peephole_layer(cell: PeepholeLSTMCell, x: Tensor, state: State,
                   lengths: Tensor | None) -> tuple[Tensor, LSTMState]:
    """:func:`~distlstm.models.sequence.run_layer` for a peephole cell, through :func:`peephole_sequence`.

    ``x`` is (B, T, I) batch-first, ``lengths`` (B,) or None. The gate
    sharpness α is folded into the weights here (rows of i, f, o and the peepholes
    scaled by α), so autograd carries the gradient back to the cell's parameters.
    """
    n, names = cell.hidden_size, cell.gate_names
    weight = torch.cat([cell.weight_ih, cell.weight_hh], 1)
    bias, peep = cell.combined_bias(), cell.weight_ch * cell.alpha  # σ(α(a + p ⊙ c)): αp
    scale = torch.full((len(names), 1), cell.alpha, dtype=weight.dtype, device=weight.device)
    scale[names.index("g")] = 2.0  # tanh(a) = 2σ(2a) − 1
    if bias is not None:
        weight = torch.cat([bias.unsqueeze(1), weight], 1)
    weight = weight * scale.expand(-1, n).reshape(-1, 1)
    h0, c0 = state
    y, h, c = peephole_sequence(x.permute(1, 2, 0), h0.t(), c0.t(), weight, peep, bias is not None, lengths)
    return y.permute(2, 0, 1), LSTMState(h.t(), c.t())
