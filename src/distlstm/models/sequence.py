"""Run cells over batch × time, with per-sequence lengths and stacked layers.

:func:`run_layer` is the generic loop every cell runs through (and what ``vmap``
batches over parameter vectors). :class:`LSTM` stacks layers and is a drop-in for
``torch.nn.LSTM``: the same constructor arguments (``bidirectional`` included), call
and return convention, attributes, parameter names and state-dict keys, plus
``cell=`` to choose any registered cell.

Masking rule: at a padded step (``t >= lengths[b]``) sequence ``b``'s state is not
changed and its output is zero, so final states and pooled outputs equal those of
the sequence run alone. The reverse direction of a bidirectional layer reads each
sequence from its last valid step back to its first (:func:`reverse_padded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from distlstm._checks import (
    check_finite,
    check_lengths,
    check_ndim,
    check_size,
    is_transformed,
)
from distlstm.models.cells import Cell, LSTMCell, State, make_cell
from distlstm.models.peephole_fused import fusable, peephole_layer


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(T, B, 1) boolean: True where step t is inside sequence b."""
    t = torch.arange(steps, device=lengths.device)
    return (t[:, None] < lengths[None, :]).unsqueeze(-1)


def dropout_mask(like: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Inverted-dropout mask shaped as ``like``: Bernoulli(1 − rate) / (1 − rate), drawn with ``generator``.

    The mask is drawn on the generator's device and moved to ``like``'s: the runs keep
    their generators on the CPU, so that a seed gives the same masks on a GPU as on the
    CPU and a checkpoint's generator state fits either.
    """
    keep = 1.0 - rate
    where = like.device if generator is None else generator.device
    mask = torch.empty_like(like, device=where).bernoulli_(keep, generator=generator).div_(keep)
    return mask.to(like.device)


def run_layer(cell: Cell, x: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """Run ``cell`` over ``x`` (B, T, input_size) from ``state``.

    Returns ``(y, state)``: outputs (B, T, output_size), zero at padded steps, and the
    state after each sequence's last valid step.
    """
    xs = cell.input_projection(x).unbind(1)  # computed for all steps in one product
    masks = None if lengths is None else step_mask(lengths, len(xs)).unbind(0)
    ys = []
    for t, xi in enumerate(xs):
        y, new = cell.step(xi, state)
        if masks is None:
            state = new
        else:
            m = masks[t]
            state = cell.make_state([torch.where(m, n, s) for n, s in zip(new, state, strict=True)])
            y = y * m
        ys.append(y)
    return torch.stack(ys, 1), state


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (B, T, ...) within its valid length; padding stays put.

    Its own inverse: the reverse direction runs on ``reverse_padded(x)`` and its outputs
    are put back in time order by the same call.
    """
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    last = lengths[:, None] - 1
    index = torch.where(t <= last, last - t, t)  # (B, T)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class LSTM(nn.Module):
    """Multi-layer recurrent network with a choice of cell; a drop-in for ``nn.LSTM``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, device, dtype: as in ``torch.nn.LSTM`` (same order, so positional
            calls carry over).
        cell: a name from :data:`distlstm.models.cells.CELLS` (default ``"lstm"``).
        single_bias: one bias vector per gate (TensorFlow's and the papers' layout) instead
            of ``nn.LSTM``'s ``bias_ih`` + ``bias_hh``: the cells keep ``bias_ih`` only.
        fused: use ATen's fused LSTM kernel when every layer is a plain :class:`LSTMCell`
            (any α, any projection, either direction, with or without dropout), and run
            each unprojected peephole layer as one autograd node with a hand-written
            backward (:mod:`~distlstm.models.peephole_fused`; first order only, so
            double backward through a peephole layer needs ``fused=False``). Numerically
            the same maths; turn off to force the generic Python loop. The loop is always
            used inside ``torch.func`` transforms and ``torch.compile``.
        **cell_options: passed to every cell (e.g. ``alpha=3.75``, ``rank=64``,
            ``groups=4``, ``forget_gate=False``). A tuple or list with one entry per
            layer sets that option layer by layer, e.g. ``groups=(4, 8)`` (the paper's
            hierarchical G4-G8); ``single_bias`` may be given per layer the same way.

    Inputs: ``input, hx=None, lengths=None``
        * input: (L, N, H_in), or (N, L, H_in) with ``batch_first``, or (L, H_in)
          unbatched; a ``PackedSequence`` is accepted too (and one is returned).
        * hx: initial state, a tuple of tensors each (D·num_layers, N, size) with D = 2
          if bidirectional else 1 — for LSTM cells ``(h_0, c_0)``; zeros if omitted.
          Pass the returned state back in for stateful (carried) use.
        * lengths: (N,) integer valid lengths for a padded batch.

    Outputs: ``output, state``
        * output: (L, N, output_size) with ``output_size`` = D·(proj_size or hidden_size)
          (or batch-first / unbatched / packed as the input), zero at padded steps; with
          D = 2 the forward and reverse outputs are concatenated on the last axis.
        * state: ``(h_n, c_n)`` for LSTM cells, ``(h_n,)`` for the tanh RNN; each
          (D·num_layers, N, size), layer-major as ``nn.LSTM`` (index 2l + d), taken at
          every sequence's last valid step (the reverse direction's at its first).

    Parameters are owned by this module under ``nn.LSTM``'s names (``weight_ih_l0``,
    ``bias_hh_l1_reverse``, ``weight_hr_l0``…) in the cells' order, so
    ``named_parameters()`` and ``state_dict()`` agree and ``nn.LSTM`` weights load into
    the plain cell (``proj_size`` for LSTMP) and back. ``cells`` holds the cells in that
    order (layer-major, forward before reverse); they read their parameters from here.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 *, cell: str = "lstm", single_bias: bool | Sequence[bool] = False, fused: bool = True,
                 **cell_options: Any) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.proj_size = batch_first, float(dropout), proj_size
        self.bias, self.bidirectional = bias, bool(bidirectional)
        self.mode = "LSTM"
        self.cell_name, self.fused = cell, fused
        directions = 2 if self.bidirectional else 1
        options = dict(cell_options, single_bias=single_bias, bias=bias, device=device, dtype=dtype)
        if proj_size:
            options["proj_size"] = proj_size
        cells: list[Cell] = []
        for layer, layer_options in enumerate(per_layer_options(options, num_layers)):
            size_in = input_size if layer == 0 else directions * cells[-1].output_size
            for direction in range(directions):
                c = make_cell(cell, size_in, hidden_size, **layer_options)
                c.adopt_parameters(self, _suffix(layer, direction))
                cells.append(c)
        self.cells: tuple[Cell, ...] = tuple(cells)
        self.output_size = directions * cells[-1].output_size  # features of the output tensor
        self.dropout_generator: torch.Generator | None = None
        self._register_load_state_dict_pre_hook(_upgrade_keys, with_module=True)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def batched_backward(self) -> bool:
        """Whether autograd may run this module's backward under ``vmap`` (``is_grads_batched``): not
        through the fused peephole node, whose hand-written backward writes in place."""
        return not (self.fused and any(fusable(c) for c in self.cells))

    @property
    def _flat_weights_names(self) -> list[str]:
        return list(self._parameters)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [p for p in self._parameters.values() if p is not None]

    @property
    def _all_weights(self) -> list[list[str]]:
        """Parameter names per layer and direction, in ``nn.LSTM``'s order."""
        return [[f"{n}{_suffix(idx // self.num_directions, idx % self.num_directions)}"
                 for n in _NN_ORDER if getattr(c, n, None) is not None]
                for idx, c in enumerate(self.cells)]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """The parameters per layer and direction, each list in ``nn.LSTM``'s order."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op: parameters are separate tensors (``nn.LSTM`` compacts them for cuDNN)."""

    def __prepare_scriptable__(self) -> nn.Module:
        raise TypeError("distlstm.LSTM cannot be compiled by torch.jit.script (it picks cells and kernels in "
                        "Python); use torch.jit.trace, torch.compile or torch.export instead")

    def fill_forget_bias_(self, value: float) -> LSTM:
        """Set every layer's forget-gate bias b_f to ``value`` (see :meth:`Cell.fill_forget_bias_`)."""
        for c in self.cells:
            c.fill_forget_bias_(value)
        return self

    def init_state(self, batch: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | None = None) -> State:
        """Zero state, each tensor (D·num_layers, batch, size)."""
        per_cell = [c.init_state(batch, dtype=dtype, device=device) for c in self.cells]
        return tuple(torch.stack(parts) for parts in zip(*per_cell, strict=True))

    def forward(self, input: Tensor | PackedSequence, hx: State | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor | PackedSequence, State]:
        y, state = self._run(input, hx, lengths, outputs=True)
        assert y is not None
        return y, state

    def final_state(self, input: Tensor | PackedSequence, hx: State | None = None,
                    lengths: Tensor | None = None) -> State:
        """``forward(...)[1]`` without the outputs: the top layer's peephole node then skips writing them.

        The state is taken at each sequence's last valid step, so for one direction the top
        layer's h_n is the output at that step (what ``pool(..., "last")`` picks).
        """
        return self._run(input, hx, lengths, outputs=False)[1]

    def _run(self, input: Tensor | PackedSequence, hx: State | None, lengths: Tensor | None,
             outputs: bool) -> tuple[Tensor | PackedSequence | None, State]:
        packed: PackedSequence | None = None
        unbatched = False
        if isinstance(input, PackedSequence):
            packed = input
            if lengths is not None:
                raise ValueError("give lengths either through a PackedSequence or the lengths argument, not both")
            x, lengths = pad_packed_sequence(packed, batch_first=True)
        else:
            check_ndim(input, (2, 3), "input", "(seq_len, batch, features), batch-first, or (seq_len, features)")
            unbatched = input.dim() == 2
            x = input.unsqueeze(0) if unbatched else (input if self.batch_first else input.transpose(0, 1))
        check_size(x.shape[-1], self.input_size, "input feature size (last dimension)")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (the model's weights are "
                            f"{next(self.parameters()).dtype}), got {x.dtype}; convert it with .float()")
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype:  # as nn.LSTM: otherwise a bare "mat1 and mat2" error
            raise TypeError(f"input must have the model's dtype {weight.dtype}, got {x.dtype}; convert the input "
                            f"(x.to({weight.dtype})) or the model (.to({x.dtype}))")
        check_finite(x, "input")
        batch, steps = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("input has no time steps (seq_len = 0)")
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps).to(x.device)
        state = self._initial_state(hx, batch, x, unbatched)

        if self._can_fuse(x):
            y, state = self._forward_fused(x, state, lengths)
        else:
            y, state = self._forward_loop(x, state, lengths, outputs)

        if unbatched:
            state = tuple(s.squeeze(1) for s in state)
        if not outputs:
            return None, state
        if packed is not None:
            return _repack(y, packed), state
        if unbatched:
            return y.squeeze(0), state
        return (y if self.batch_first else y.transpose(0, 1)), state

    def _initial_state(self, hx: State | None, batch: int, x: Tensor, unbatched: bool) -> State:
        if hx is None:
            return self.init_state(batch, dtype=x.dtype, device=x.device)
        sizes = self.cells[0].state_sizes()
        if not isinstance(hx, (tuple, list)) or len(hx) != len(sizes):
            raise ValueError(f"hx must be a tuple of {len(sizes)} tensors (one per state part), "
                             f"got {type(hx).__name__}")
        hx = tuple(h.unsqueeze(1) if unbatched else h for h in hx)
        rows = len(self.cells)
        for k, (h, cell_size) in enumerate(zip(hx, sizes, strict=True)):
            if h.dim() != 3 or h.shape[0] != rows or h.shape[1] != batch or h.shape[2] != cell_size:
                raise ValueError(f"hx[{k}]: expected shape ({rows}, {batch}, {cell_size}), got {tuple(h.shape)}")
            check_finite(h, f"hx[{k}]")
        return hx

    def _forward_loop(self, x: Tensor, state: State, lengths: Tensor | None,
                      outputs: bool = True) -> tuple[Tensor, State]:
        """The layers one after another; without ``outputs`` the top layer's may skip them (x is then stale)."""
        finals = []
        directions = self.num_directions
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout and self.training:
                x = x * self._dropout_mask(x)
            outs = []
            for direction in range(directions):
                idx = layer * directions + direction
                c = self.cells[idx]
                start = c.make_state([s[idx] for s in state])
                if direction == 0:
                    top = layer == self.num_layers - 1 and directions == 1
                    y, last = self._run_layer(c, x, start, lengths, outputs or not top)
                else:
                    y, last = self._run_layer(c, reverse_padded(x, lengths), start, lengths)
                    y = reverse_padded(y, lengths)
                outs.append(y)
                finals.append(last)
            x = outs[0] if directions == 1 else torch.cat(outs, -1)
        return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True))

    def _run_layer(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None,
                   outputs: bool = True) -> tuple[Tensor, State]:
        """:func:`run_layer`, or for a peephole cell (when ``fused``) its one-node sequence (``peephole_fused``).

        Without ``outputs`` the peephole node does not write them and ``x`` comes back in their place.
        """
        if (self.fused and fusable(cell) and not is_transformed(x)
                and not any(is_transformed(p) for p in cell.cell_parameters())):
            y, last = peephole_layer(cell, x, state, lengths, outputs)  # type: ignore[arg-type]
            return (x if y is None else y), last
        return run_layer(cell, x, state, lengths)

    def _dropout_mask(self, x: Tensor) -> Tensor:
        """Inverted-dropout mask for ``x`` (B, T, F), drawn from ``dropout_generator``."""
        return dropout_mask(x, self.dropout, self.dropout_generator)

    def _can_fuse(self, x: Tensor) -> bool:
        if not self.fused or is_transformed(x) or any(is_transformed(p) for p in self._flat_weights):
            return False
        return all(type(c) is LSTMCell for c in self.cells)

    def _forward_fused(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        """The plain/sharpened/projected LSTM through ATen's fused kernel (as ``nn.LSTM``).

        With dropout in training mode each layer is its own kernel call and the mask is
        drawn between them exactly as the loop draws it (same shape, same generator), so
        both paths give the same numbers.
        """
        weights = [_fused_weights(c) for c in self.cells]  # type: ignore[arg-type]
        has_bias, d = self.cells[0].bias_ih is not None, self.num_directions
        h0, c0 = state
        training, bidi = self.training, self.bidirectional
        packed = None
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            order = packed.sorted_indices
            assert order is not None
            h0, c0 = h0[:, order], c0[:, order]

        def run(data: Tensor, ws: list[Tensor], h: Tensor, c: Tensor, layers: int) -> tuple[Tensor, Tensor, Tensor]:
            if packed is None:
                return torch.lstm(data, (h, c), ws, has_bias, layers, 0.0, training, bidi, True)
            return torch.lstm(data, packed.batch_sizes, (h, c), ws, has_bias, layers, 0.0, training, bidi)

        data = x if packed is None else packed.data
        if not (self.dropout and training and self.num_layers > 1):
            data, h_n, c_n = run(data, [w for ws in weights for w in ws], h0, c0, self.num_layers)
        else:
            hs, cs = [], []
            for layer in range(self.num_layers):
                rows = slice(layer * d, (layer + 1) * d)
                if layer > 0:
                    data = data * self._packed_dropout_mask(data, x.shape[:2], packed, lengths)
                ws = [w for ws in weights[rows] for w in ws]
                data, h, c = run(data, ws, h0[rows], c0[rows], 1)
                hs.append(h)
                cs.append(c)
            h_n, c_n = torch.cat(hs), torch.cat(cs)
        if packed is None:
            return data, (h_n, c_n)
        unorder = packed.unsorted_indices
        out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, unorder)
        y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return y, (h_n[:, unorder], c_n[:, unorder])

    def _packed_dropout_mask(self, data: Tensor, batch_steps: torch.Size, packed: PackedSequence | None,
                             lengths: Tensor | None) -> Tensor:
        """The loop's mask (drawn on the padded (B, T, F) layout) in ``data``'s layout."""
        mask = self._dropout_mask(data.new_empty(*batch_steps, data.shape[-1]))
        if packed is None or lengths is None:
            return mask
        return pack_padded_sequence(mask, lengths.cpu(), batch_first=True, enforce_sorted=False).data

    def extra_repr(self) -> str:
        extra = ", bidirectional=True" if self.bidirectional else ""
        extra += f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, cell={self.cell_name!r}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}{extra}, fused={self.fused}")


#: ``nn.LSTM``'s order of a layer's parameters (``all_weights``).
_NN_ORDER = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _suffix(layer: int, direction: int) -> str:
    """``nn.LSTM``'s parameter suffix: ``_l{layer}``, plus ``_reverse`` for direction 1."""
    return f"_l{layer}" + ("_reverse" if direction else "")


def _repack(y: Tensor, like: PackedSequence) -> PackedSequence:
    """``y`` (B, T, F) padded, packed with the batch sizes and sort order of ``like``."""
    order = like.sorted_indices
    y_sorted = y if order is None else y.index_select(0, order)
    lengths = _packed_lengths(like.batch_sizes)
    data = pack_padded_sequence(y_sorted, lengths, batch_first=True, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def _packed_lengths(batch_sizes: Tensor) -> Tensor:
    """Sorted (descending) sequence lengths of a packed batch, from its batch sizes."""
    b = int(batch_sizes[0])
    return (batch_sizes[None, :] > torch.arange(b)[:, None]).sum(1)


def per_layer_options(options: dict[str, Any], num_layers: int) -> list[dict[str, Any]]:
    """One option dict per layer: a tuple or list value gives layer ``l`` its entry ``l``."""
    for name, value in options.items():
        if isinstance(value, (tuple, list)) and len(value) != num_layers:
            raise ValueError(f"{name}: a per-layer {type(value).__name__} needs one entry per layer "
                             f"(num_layers={num_layers}), got length {len(value)}: {value!r}")
    return [{name: value[layer] if isinstance(value, (tuple, list)) else value
             for name, value in options.items()} for layer in range(num_layers)]


def gate_scale(cell: LSTMCell, like: Tensor) -> Tensor | None:
    """(4n,) the factor α on the rows of i, f, o and 1 on g, which folds σ(α·a) into the weights; None when α = 1."""
    if cell.alpha == 1.0:
        return None
    n = cell.hidden_size
    scale = torch.full((4 * n,), cell.alpha, dtype=like.dtype, device=like.device)
    scale[2 * n : 3 * n] = 1.0
    return scale


def _fused_weights(cell: LSTMCell) -> list[Tensor]:
    """The cell's weights in ATen's order, with σ(α·a) folded in by scaling rows i, f, o by α."""
    ws: list[Tensor] = [cell.weight_ih, cell.weight_hh]
    if cell.bias_ih is not None:  # ATen wants two biases: a zero b_hh stands in for single_bias
        ws += [cell.bias_ih, torch.zeros_like(cell.bias_ih) if cell.bias_hh is None else cell.bias_hh]
    scale = gate_scale(cell, ws[0])
    if scale is not None:
        ws = [w * (scale[:, None] if w.dim() == 2 else scale) for w in ws]
    if cell.weight_hr is not None:
        ws.append(cell.weight_hr)
    return ws


def _upgrade_keys(module: LSTM, state_dict: dict[str, Any], prefix: str, *_args: Any) -> None:
    """Load pre-hook: let each cell rename keys its older versions wrote (e.g. F-LSTM's ``bias``)."""
    for idx, c in enumerate(module.cells):
        c.upgrade_state_dict(state_dict, prefix, _suffix(idx // module.num_directions, idx % module.num_directions))
