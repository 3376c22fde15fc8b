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

Masking (the rule of :mod:`~distlstm.models.sequence`: a finished sequence keeps its
state, its outputs are zero): the columns are sorted by decreasing length once, so at
step t the sequences still running are the first ``active[t]`` columns and every op of
the step runs on that slice alone — no ``where``, no mask, no work for finished
sequences. A finished sequence's final state stays in the slot of its last step (h_T and
c_T are gathered from there) and its δh, δc wait untouched in the backward until its
last step comes round. Every tensor of the loop is a slice of a preallocated time-major
buffer written with ``out=``: no per-step copies, no ``cat``. Activations kept for the
backward, per sequence and step: the gates (G·n values), C_t, s_t and [x_t; h_{t-1}].

The loop keeps the cell state as C_t = −2 c_t, and s_t = σ(C_t), so that tanh c_t = 1 − 2 s_t
and h_t = o ⊙ (1 − 2 s_t) cost one sigmoid and one ``addcmul`` (2σ(2c) − 1 took four
passes, then a product); the peepholes read C through −½ p, and in the backward
δc ⊙ (1 − tanh²c_t) = 2 s_t ⊙ (r + q) with r = δh ⊙ o, q = r ⊙ tanh c_t. Three elementwise
passes less per step: 129 → 122 ms for the full-batch evaluation (measured side by side,
one thread).

Two implementations of the two loops, the same buffers and formulas: for float64 cells on
the CPU with at most ``peephole_kernel.MAX_WEIGHTS`` weights, the C++ loops of
:mod:`~distlstm.models.peephole_kernel`, which run the batch in blocks of columns with
all steps of a block in cache (full-batch evaluation 121 → 75 ms, BENCHMARKS.md);
otherwise, or where no C++ compiler is found, the ATen loops below (``_forward_loop``,
``_backward_loop``), one op per line over the whole batch, whose GEMMs BLAS runs well for
large cells.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from distlstm.models import peephole_kernel
from distlstm.models.cells import LSTMState, PeepholeLSTMCell, State

#: Buffers kept between calls, by (name, shape, dtype, device). Fresh memory costs a page
#: fault per 4 KiB on first touch, which for the full-batch evaluation cost more than the
#: arithmetic; reusing the buffers of the previous evaluation avoids it.
_WORKSPACE: OrderedDict[tuple[Any, ...], Tensor] = OrderedDict()
WORKSPACE_KEYS = 16  # buffers kept (the least recently used go first)


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
                lengths: Tensor | None, outputs: bool) -> tuple[Tensor, Tensor, Tensor]:
        steps, features, batch = x.shape
        n = h0.shape[0]
        gates = weight.shape[0] // n  # G: 4 with the forget gate, 3 without
        inputs = weight.shape[1] - n  # x's features, plus a row of ones for the bias
        order, active = _sort_by_length(lengths, steps, batch)
        kernel = peephole_kernel.kernel_for(weight, x, peep)
        # z_t = [1; x_t; h_{t-1}] in slot t (h_T in the last): every step's GEMM operand, and
        # what the backward's ∇W += δa_t z_tᵀ reads.
        z = _buffer("z", (steps + 1, inputs + n, batch), x)
        if order is not None:  # columns by decreasing length: step t runs on the first active[t] only
            h0, c0 = h0.index_select(1, order), c0.index_select(1, order)
        z[steps, :inputs] = 0
        if has_bias:
            z[:steps, 0] = 1
        z[0, inputs:] = h0
        hs = z[:, inputs:]
        acts = _buffer("acts", (steps, gates, n, batch), x)  # i, (f,) g, o
        cs = _buffer("cs", (steps + 1, n, batch), x)  # C_{t-1} = −2 c_{t-1} in slot t
        torch.mul(c0, -2, out=cs[0])
        tcs = _buffer("tcs", (steps, n, batch), x)  # s_t = σ(C_t) = σ(−2 c_t): tanh c_t = 1 − 2 s_t
        p_in, p_o = -0.5 * peep[: gates - 2].unsqueeze(-1), -0.5 * peep[gates - 2].unsqueeze(-1)  # p ⊙ c = −½p ⊙ C
        if kernel is not None:
            kernel.forward(x, order, weight.contiguous(), p_in, p_o, z, acts, cs, tcs,
                           torch.tensor(active, dtype=torch.int64))
        else:
            _forward_loop(x, order, weight, p_in, p_o, z, acts, cs, tcs, active)
        ctx.save_for_backward(z, acts, cs, tcs, weight, peep, order)
        ctx.active, ctx.features, ctx.outputs, ctx.kernel = active, features, outputs, kernel
        if order is None:
            h_n, c_n = hs[steps].clone(), cs[steps].mul(-0.5)
        else:
            assert lengths is not None
            last, column = lengths.clamp(max=steps), torch.argsort(order)  # sorted position of every sequence
            h_n, c_n = hs[last, :, column].t().contiguous(), cs[last, :, column].t().mul(-0.5)
        if not outputs:
            y = x.new_empty(0)
            ctx.mark_non_differentiable(y)
        else:
            y = hs[1:].clone() if order is None else _columns(hs[1:], torch.argsort(order))
        return y, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        z, acts, cs, tcs, weight, peep, order = ctx.saved_tensors
        steps, gates, n, batch = acts.shape
        inputs = z.shape[1] - n
        active: list[int] = ctx.active
        # δa_g is kept doubled, δc_t ⊙ i ⊙ (1 − g²), one op less per step: its column of W_hhᵀ
        # (and W_ihᵀ) and its rows of ∇W take the ½ of d(2σ(a) − 1)/da = (1 − g²)/2 instead.
        # δa_f is kept as −2 δa_f (it comes from C_{t-1} = −2 c_{t-1}): its columns and rows take −½.
        half = torch.ones(gates, n, 1, dtype=weight.dtype, device=weight.device)
        half[gates - 2] = 0.5
        if gates == 4:
            half[1] = -0.5
        half = half.view(-1, 1)
        w_h = (weight[:, inputs:] * half).t().contiguous()  # (n, G·n)
        p_in, p_o = peep[: gates - 2].unsqueeze(-1) * half.view(gates, n, 1)[: gates - 2], peep[gates - 2].unsqueeze(-1)
        dys: Tensor | None = dy  # δy, in the sorted columns
        if not ctx.outputs:
            dys = None
        elif order is not None:
            dys = _columns(dy, order, out=_buffer("dy", (steps, n, batch), dy))
        elif not dy.is_contiguous():  # e.g. the gradient of y's (B, T, n) view: a 2-D transpose, ATen's blocked copy
            dys = _buffer("dy", (steps, n, batch), dy).view(-1, batch).copy_(dy.reshape(-1, batch)).view_as(dy)
        dweight = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
        w_x = (weight[:, inputs - ctx.features : inputs] * half).t().contiguous() if ctx.needs_input_grad[0] else None
        dx = acts.new_zeros(steps, ctx.features, batch) if w_x is not None else None
        if order is None:
            dh, dc = (t.clone(memory_format=torch.contiguous_format) for t in (dh_n, dc_n))
        else:
            dh, dc = dh_n.index_select(1, order), dc_n.index_select(1, order)
        if ctx.kernel is not None:  # the forward's choice: the ATen backward reads z where the kernel wrote none
            dpeep_sum = torch.zeros(gates - 1, n, dtype=weight.dtype)
            ctx.kernel.backward(z, acts, cs, tcs, w_h, w_x, p_in.contiguous(), p_o.contiguous(), dys, dh, dc, dweight,
                                dpeep_sum, dx, torch.tensor(active, dtype=torch.int64))
        else:
            dpeep_sum = _backward_loop(z, acts, cs, tcs, w_h, w_x, p_in, p_o, dys, dh, dc, dweight, dx, active)
        dweight.mul_(half)
        dpeep_scale = torch.full((gates - 1, 1), -0.5, dtype=weight.dtype, device=weight.device)  # C = −2c
        if gates == 4:
            dpeep_scale[1] = 0.25  # −2 δa_f ⊙ C_{t-1} = 4 δa_f ⊙ c_{t-1}
        if order is not None:
            column = torch.argsort(order)
            dh, dc = dh.index_select(1, column), dc.index_select(1, column)
            dx = None if dx is None else _columns(dx, column)
        return dx, dh, dc, dweight, dpeep_sum * dpeep_scale, None, None, None


def _forward_loop(x: Tensor, order: Tensor | None, weight: Tensor, p_in: Tensor, p_o: Tensor, z: Tensor, acts: Tensor,
                  cs: Tensor, tcs: Tensor, active: list[int]) -> None:
    """The forward's ATen loop, step by step over the batch: x into z, then ``acts``, ``cs[1:]``, ``tcs`` and h.

    ``peephole_kernel.cpp`` runs the same loop block by block.
    """
    steps, gates, n, batch = acts.shape
    inputs, features = z.shape[1] - n, x.shape[1]
    if order is None:
        z[:steps, inputs - features : inputs] = x
    else:
        _columns(x, order, out=z[:steps, inputs - features : inputs])
    hs = z[:, inputs:]
    for t in range(steps):
        k = active[t]
        a, c_prev, c, h = acts[t, ..., :k], cs[t, :, :k], cs[t + 1, :, :k], hs[t + 1, :, :k]
        torch.mm(weight, z[t, :, :k], out=acts[t].view(-1, batch)[:, :k])
        a[: gates - 2].addcmul_(c_prev, p_in)  # i (and f) peek at c_{t-1}
        a[: gates - 1].sigmoid_()
        g = a[gates - 2].mul_(2).sub_(1)  # tanh(a/2) = 2σ(a) − 1: σ is ~3× cheaper than tanh
        if gates == 4:  # C_t = f C_{t-1} − 2 i g
            torch.mul(a[1], c_prev, out=c).addcmul_(a[0], g, value=-2)
        else:
            torch.addcmul(c_prev, a[0], g, value=-2, out=c)
        o = a[gates - 1].addcmul_(c, p_o).sigmoid_()  # o peeks at c_t
        s = torch.sigmoid(c, out=tcs[t, :, :k])
        torch.addcmul(o, o, s, value=-2, out=h)  # o ⊙ tanh c_t = o ⊙ (1 − 2s)
        if k < batch:
            hs[t + 1, :, k:] = 0  # finished sequences: y is zero, their final state lies in slot lengths[b]


def _backward_loop(z: Tensor, acts: Tensor, cs: Tensor, tcs: Tensor, w_h: Tensor, w_x: Tensor | None, p_in: Tensor,
                   p_o: Tensor, dys: Tensor | None, dh: Tensor, dc: Tensor, dweight: Tensor, dx: Tensor | None,
                   active: list[int]) -> Tensor:
    """The backward's ATen loop, step by step over the batch: δh, δc in place, ∇W (unscaled) and δx added.

    Returns the peepholes' sums (G − 1, n), before their scales; see ``peephole_kernel.cpp``
    for the same loop block by block.
    """
    steps, gates, n, batch = acts.shape
    rows, cols = dweight.shape
    # ∇W = Σ_t δa_t z_tᵀ: added step by step while δa_t and z_t are in cache when the
    # (G·n × K) ∇W is small next to them (the full-batch network); else one product at
    # the end over δa kept for every step, which reads and writes ∇W once, not T times.
    per_step = rows * cols <= (rows + cols) * batch
    da = None if per_step else _buffer("da", (rows, steps, batch), acts)
    if da is not None and steps and active[-1] < batch:
        da.zero_()  # finished columns' δa stay zero in the one product
    d_full = _buffer("d", (gates, n, batch), acts)  # δa_t
    products = _buffer("products", (n, batch), acts)
    dpeep = _buffer("dpeep", (gates - 1, n, batch), acts).zero_()  # Σ_t δa_i ⊙ C_{t-1} (δa_f …), δa_o ⊙ C_t
    for t in range(steps - 1, -1, -1):
        k = active[t]
        d_t = d_full if da is None else da[:, t].view(gates, n, batch)
        d, d_rows = d_t[..., :k], d_t.view(-1, batch)[:, :k]  # δa_t, and as (G·n, k)
        a, dht, dct = acts[t, ..., :k], dh[:, :k], dc[:, :k]
        if dys is not None:
            dht.add_(dys[t, :, :k])
        o, s, c_prev = a[gates - 1], tcs[t, :, :k], cs[t, :, :k]
        r = dht.mul_(o)  # r = δh ⊙ o (δh_t is not needed again: the product below overwrites it)
        q = torch.addcmul(r, r, s, value=-2, out=d[gates - 1])  # q = r ⊙ tanh c = r ⊙ (1 − 2s)
        dct.addcmul_(torch.add(r, q, out=products[:, :k]), s, value=2)  # δc + r ⊙ (1 − tanh² c) = δc + 2s(r + q)
        do = q.addcmul_(q, o, value=-1)  # δa_o = δh ⊙ tanh c ⊙ o(1 − o) = q ⊙ (1 − o)
        dct.addcmul_(do, p_o)  # δc_t
        torch.mul(dct, a[gates - 2], out=d[0])  # δi = δc_t ⊙ g
        if gates == 4:
            torch.mul(dct, c_prev, out=d[1])  # −2 δf = δc_t ⊙ C_{t-1}
        g = a[gates - 2]
        dg = torch.mul(dct, a[0], out=d[gates - 2])  # δg = δc_t ⊙ i
        s, ds = a[: gates - 2], d[: gates - 2]
        ds.mul_(s).addcmul_(ds, s, value=-1)  # ⊙ σ' = s(1 − s) for i (and f)
        dg.addcmul_(torch.mul(dg, g, out=products[:, :k]), g, value=-1)  # ⊙ (1 − g²): 2 δa_g
        if gates == 4:
            dct.mul_(a[1])  # δc_{t-1} = δc_t ⊙ f + …
        for j in range(gates - 2):
            dct.addcmul_(d[j], p_in[j])
        if da is None:
            dweight.addmm_(d_rows, z[t, :, :k].t())
        dpeep[: gates - 2, :, :k].addcmul_(ds, c_prev)
        dpeep[gates - 2, :, :k].addcmul_(do, cs[t + 1, :, :k])
        if dx is not None and w_x is not None:
            torch.mm(w_x, d_rows, out=dx[t, :, :k])
        torch.mm(w_h, d_rows, out=dht)  # δh_{t-1}
    if da is not None:
        torch.mm(da.view(rows, -1), z[:steps].transpose(0, 1).reshape(cols, -1).t(), out=dweight)
    return dpeep.sum(-1)


def _sort_by_length(lengths: Tensor | None, steps: int, batch: int) -> tuple[Tensor | None, list[int]]:
    """The columns by decreasing length (None when all run every step) and the count still running at each step.

    Step t runs on the first ``active[t]`` columns of the sorted batch, so a finished
    sequence is neither computed nor masked: its state stays in the slot of its last step.
    """
    if lengths is None or int(lengths.min()) >= steps:
        return None, [batch] * steps
    order = torch.argsort(lengths, descending=True, stable=True)
    ended = torch.bincount(lengths.clamp(max=steps), minlength=steps + 1).cumsum(0)  # ended[t]: length ≤ t
    return order, (batch - ended[:steps]).tolist()


def _columns(t: Tensor, index: Tensor, out: Tensor | None = None) -> Tensor:
    """``t[..., index]`` for a (T, F, B) ``t``, written into ``out`` (a new tensor if None).

    A ``t`` that is a view of a batch-first (B, T, F) tensor (the layer's input, the
    gradient of its output) is gathered by whole rows into a kept buffer and transposed
    from there: ``index_select`` along the last axis reads one element per cache line.
    """
    out = t.new_empty(t.shape) if out is None else out
    rows = t.permute(2, 0, 1)
    if not rows.is_contiguous():
        return torch.gather(t, 2, index.expand(t.shape), out=out)
    picked = torch.index_select(rows, 0, index, out=_buffer("rows", tuple(rows.shape), t))
    return out.copy_(picked.permute(1, 2, 0))


def peephole_sequence(x: Tensor, h0: Tensor, c0: Tensor, weight: Tensor, peep: Tensor, has_bias: bool,
                      lengths: Tensor | None, outputs: bool = True) -> tuple[Tensor, Tensor, Tensor]:
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
        outputs: False when only the final state is wanted: y is then an empty tensor, and
            neither written nor differentiated (a regressor pooling the last step reads h_T).

    Returns:
        ``(y, h_T, c_T)``: y (T, n, B), zero at padded steps; h_T, c_T (n, B), the state after
        each sequence's last step.
    """
    if lengths is not None:
        lengths = lengths.to(x.device)
    out: tuple[Tensor, Tensor, Tensor] = _PeepholeSequence.apply(
        x, h0, c0, weight, peep, has_bias, lengths, outputs)
    return out


def fusable(cell: object) -> bool:
    """Whether :func:`peephole_layer` can run ``cell``: a peephole cell without projection."""
    return type(cell) is PeepholeLSTMCell and cell.weight_hr is None


def peephole_layer(cell: PeepholeLSTMCell, x: Tensor, state: State,
                   lengths: Tensor | None, outputs: bool = True) -> tuple[Tensor | None, LSTMState]:
    """:func:`~distlstm.models.sequence.run_layer` for a peephole cell, through :func:`peephole_sequence`.

    ``x`` is (B, T, I) batch-first, ``lengths`` (B,) or None. The gate
    sharpness α is folded into the weights here (rows of i, f, o and the peepholes
    scaled by α), so autograd carries the gradient back to the cell's parameters.
    With ``outputs=False`` the outputs are not computed and None is returned in their place.
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
    y, h, c = peephole_sequence(x.permute(1, 2, 0), h0.t(), c0.t(), weight, peep, bias is not None, lengths,
                                outputs)
    return (y.permute(2, 0, 1) if outputs else None), LSTMState(h.t(), c.t())
