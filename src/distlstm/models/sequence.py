"""Run cells over batch × time, with per-sequence lengths and stacked layers.

:func:`run_layer` is the generic loop every cell runs through (and what ``vmap``
batches over parameter vectors). :class:`LSTM` stacks layers and is a drop-in for
``torch.nn.LSTM``: the same constructor arguments, call and return convention, and
state-dict keys, plus ``cell=`` to choose any registered cell.

Masking rule: at a padded step (``t >= lengths[b]``) sequence ``b``'s state is not
changed and its output is zero, so final states and pooled outputs equal those of
the sequence run alone.
"""

from __future__ import annotations

import re
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


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """(T, B, 1) boolean: True where step t is inside sequence b."""
    t = torch.arange(steps, device=lengths.device)
    return (t[:, None] < lengths[None, :]).unsqueeze(-1)


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


_KEY = re.compile(r"^cells\.(\d+)\.(\w+)$")
_NN_KEY = re.compile(r"^(\w+)_l(\d+)$")


class LSTM(nn.Module):
    """Multi-layer recurrent network with a choice of cell; a drop-in for ``nn.LSTM``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size:
            as in ``torch.nn.LSTM``.
        cell: a name from :data:`distlstm.models.cells.CELLS` (default ``"lstm"``).
        single_bias: one bias vector per gate (TensorFlow's and the papers' layout) instead
            of ``nn.LSTM``'s ``bias_ih`` + ``bias_hh``: the cells keep ``bias_ih`` only.
        fused: use ATen's fused LSTM kernel when every layer is a plain :class:`LSTMCell`
            (any α, any projection). Numerically the same maths; turn off to force the
            generic Python loop. The loop is always used inside ``torch.func`` transforms.
        device, dtype: where and how to allocate parameters.
        **cell_options: passed to every cell (e.g. ``alpha=3.75``, ``rank=64``,
            ``groups=4``, ``forget_gate=False``). A tuple or list with one entry per
            layer sets that option layer by layer, e.g. ``groups=(4, 8)`` (the paper's
            hierarchical G4-G8); ``single_bias`` may be given per layer the same way.

    Inputs: ``input, hx=None, lengths=None``
        * input: (L, N, H_in), or (N, L, H_in) with ``batch_first``, or (L, H_in)
          unbatched; a ``PackedSequence`` is accepted too.
        * hx: initial state, a tuple of tensors each (num_layers, N, size) — for LSTM
          cells ``(h_0, c_0)``; zeros if omitted. Pass the returned state back in for
          stateful (carried) use.
        * lengths: (N,) integer valid lengths for a padded batch.

    Outputs: ``output, state``
        * output: (L, N, output_size) (or batch-first / unbatched as the input), zero at
          padded steps.
        * state: ``(h_n, c_n)`` for LSTM cells, ``(h_n,)`` for the tanh RNN; each
          (num_layers, N, size), taken at every sequence's last valid step.

    State-dict keys are ``nn.LSTM``'s (``weight_ih_l0``, ``bias_hh_l1``, ``weight_hr_l0``…),
    so ``nn.LSTM`` weights load into the plain cell (``proj_size`` for LSTMP) and back.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, proj_size: int = 0,
                 cell: str = "lstm", single_bias: bool | Sequence[bool] = False, fused: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **cell_options: Any) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.proj_size = batch_first, float(dropout), proj_size
        self.cell_name, self.fused = cell, fused
        options = dict(cell_options, single_bias=single_bias, bias=bias, device=device, dtype=dtype)
        if proj_size:
            options["proj_size"] = proj_size
        cells: list[Cell] = []
        for layer, layer_options in enumerate(per_layer_options(options, num_layers)):
            size_in = input_size if layer == 0 else cells[-1].output_size
            cells.append(make_cell(cell, size_in, hidden_size, **layer_options))
        self.cells = nn.ModuleList(cells)
        self.layers: tuple[Cell, ...] = tuple(cells)  # typed view of self.cells
        self.output_size = cells[-1].output_size
        self.dropout_generator: torch.Generator | None = None
        self._register_state_dict_hook(_to_nn_lstm_keys)
        self._register_load_state_dict_pre_hook(_from_nn_lstm_keys)

    def fill_forget_bias_(self, value: float) -> LSTM:
        """Set every layer's forget-gate bias b_f to ``value`` (see :meth:`Cell.fill_forget_bias_`)."""
        for cell in self.layers:
            cell.fill_forget_bias_(value)
        return self

    def init_state(self, batch: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | None = None) -> State:
        """Zero state, each tensor (num_layers, batch, size)."""
        per_layer = [c.init_state(batch, dtype=dtype, device=device) for c in self.layers]
        return tuple(torch.stack(parts) for parts in zip(*per_layer, strict=True))

    def forward(self, input: Tensor | PackedSequence, hx: State | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor | PackedSequence, State]:
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("give lengths either through a PackedSequence or the lengths argument, not both")
            x, lengths = pad_packed_sequence(input, batch_first=True)
        else:
            check_ndim(input, (2, 3), "input", "(seq_len, batch, features), batch-first, or (seq_len, features)")
            unbatched = input.dim() == 2
            x = input.unsqueeze(0) if unbatched else (input if self.batch_first else input.transpose(0, 1))
        check_size(x.shape[-1], self.input_size, "input feature size (last dimension)")
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
            y, state = self._forward_loop(x, state, lengths)

        if packed:
            assert lengths is not None
            return pack_padded_sequence(y, lengths.cpu(), batch_first=True, enforce_sorted=False), state
        if unbatched:
            return y.squeeze(0), tuple(s.squeeze(1) for s in state)
        return (y if self.batch_first else y.transpose(0, 1)), state

    def _initial_state(self, hx: State | None, batch: int, x: Tensor, unbatched: bool) -> State:
        if hx is None:
            return self.init_state(batch, dtype=x.dtype, device=x.device)
        sizes = self.layers[0].state_sizes()
        if not isinstance(hx, (tuple, list)) or len(hx) != len(sizes):
            raise ValueError(f"hx must be a tuple of {len(sizes)} tensors (one per state part), "
                             f"got {type(hx).__name__}")
        hx = tuple(h.unsqueeze(1) if unbatched else h for h in hx)
        for k, (h, cell_size) in enumerate(zip(hx, sizes, strict=True)):
            if h.dim() != 3 or h.shape[0] != self.num_layers or h.shape[1] != batch or h.shape[2] != cell_size:
                raise ValueError(f"hx[{k}]: expected shape ({self.num_layers}, {batch}, {cell_size}), "
                                 f"got {tuple(h.shape)}")
            check_finite(h, f"hx[{k}]")
        return hx

    def _forward_loop(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        finals = []
        for layer, cell in enumerate(self.layers):
            if layer > 0 and self.dropout and self.training:
                x = self._dropout(x)
            x, last = run_layer(cell, x, cell.make_state([s[layer] for s in state]), lengths)
            finals.append(last)
        return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True))

    def _dropout(self, x: Tensor) -> Tensor:
        keep = 1.0 - self.dropout
        mask = torch.bernoulli(torch.full_like(x, keep), generator=self.dropout_generator)
        return x * mask / keep

    def _can_fuse(self, x: Tensor) -> bool:
        if not self.fused or (self.dropout and self.training and self.num_layers > 1):
            return False
        if is_transformed(x) or any(is_transformed(p) for p in self.parameters()):
            return False
        return all(type(c) is LSTMCell for c in self.layers)

    def _forward_fused(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        """The plain/sharpened/projected LSTM through ATen's fused kernel (as ``nn.LSTM``)."""
        weights: list[Tensor] = []
        for c in self.layers:
            assert isinstance(c, LSTMCell)
            weights += _fused_weights(c)
        has_bias = self.layers[0].bias_ih is not None
        h0, c0 = state
        if lengths is None:
            y, h_n, c_n = torch.lstm(x, (h0, c0), weights, has_bias, self.num_layers, 0.0,
                                     self.training, False, True)
            return y, (h_n, c_n)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        assert order is not None and unorder is not None
        data, h_n, c_n = torch.lstm(packed.data, packed.batch_sizes, (h0[:, order], c0[:, order]), weights,
                                    has_bias, self.num_layers, 0.0, self.training, False)
        out = PackedSequence(data, packed.batch_sizes, order, unorder)
        y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return y, (h_n[:, unorder], c_n[:, unorder])

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, cell={self.cell_name!r}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, fused={self.fused}")


def per_layer_options(options: dict[str, Any], num_layers: int) -> list[dict[str, Any]]:
    """One option dict per layer: a tuple or list value gives layer ``l`` its entry ``l``."""
    for name, value in options.items():
        if isinstance(value, (tuple, list)) and len(value) != num_layers:
            raise ValueError(f"{name}: a per-layer {type(value).__name__} needs one entry per layer "
                             f"(num_layers={num_layers}), got length {len(value)}: {value!r}")
    return [{name: value[layer] if isinstance(value, (tuple, list)) else value
             for name, value in options.items()} for layer in range(num_layers)]


def _fused_weights(cell: LSTMCell) -> list[Tensor]:
    """The cell's weights in ATen's order, with σ(α·a) folded in by scaling rows i, f, o by α."""
    ws: list[Tensor] = [cell.weight_ih, cell.weight_hh]
    if cell.bias_ih is not None:  # ATen wants two biases: a zero b_hh stands in for single_bias
        ws += [cell.bias_ih, torch.zeros_like(cell.bias_ih) if cell.bias_hh is None else cell.bias_hh]
    if cell.alpha != 1.0:
        n = cell.hidden_size
        scale = torch.full((4 * n,), cell.alpha, dtype=ws[0].dtype, device=ws[0].device)
        scale[2 * n : 3 * n] = 1.0
        ws = [w * (scale[:, None] if w.dim() == 2 else scale) for w in ws]
    if cell.weight_hr is not None:
        ws.append(cell.weight_hr)
    return ws


def _to_nn_lstm_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, _meta: Any) -> None:
    """State-dict hook: ``cells.{k}.{name}`` → ``{name}_l{k}`` (``nn.LSTM``'s keys)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        m = _KEY.match(key[len(prefix) :])
        if m:
            state_dict[f"{prefix}{m.group(2)}_l{m.group(1)}"] = state_dict.pop(key)


def _from_nn_lstm_keys(state_dict: dict[str, Any], prefix: str, *_args: Any) -> None:
    """Load pre-hook: ``{name}_l{k}`` → ``cells.{k}.{name}``; other keys are left to be reported."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        m = _NN_KEY.match(key[len(prefix) :])
        if m:
            state_dict[f"{prefix}cells.{m.group(2)}.{m.group(1)}"] = state_dict.pop(key)

