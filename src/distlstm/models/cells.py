"""Recurrent cells: one time step each, ``forward(x_t, state) -> (y_t, state)``.

Every cell splits its step in two so that a sequence runner can do the part that
depends only on the input for all time steps in one matrix product:

* ``input_projection(x)`` maps ``(..., input_size)`` to whatever ``step`` needs;
* ``step(xi_t, state)`` does the recurrent part and returns ``(y_t, new_state)``.

Gated cells share one pointwise update (:func:`lstm_pointwise`). With pre-activations
``a`` in ``nn.LSTM``'s gate order (i, f, g, o) and gate sharpness α (Eom et al.'s
"sharpened" gates; α = 1 is the ordinary cell)::

    i = σ(α a_i)   f = σ(α a_f)   g = tanh(a_g)   o = σ(α a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    y_t = o ⊙ tanh(c_t)            (then h_t = W_hr y_t for projected cells)

Ergen & Kozat's symbols map as z ↔ g, y ↔ h.

Bias rule, the same for every cell: by default a cell has ``nn.LSTM``'s two bias
vectors ``bias_ih`` and ``bias_hh`` (so state dicts move both ways) and the bias b of
each gate is their sum; with ``single_bias=True`` it has one vector ``bias_ih`` = b and
``bias_hh`` is ``None`` (TensorFlow's and the papers' layout, and their parameter
counts). :meth:`Cell.fill_forget_bias_` sets the forget gate's b in either layout.

Registry: :data:`CELLS` maps a name to a cell class and default options;
:func:`make_cell` builds one by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distlstm._checks import check_finite, check_ndim, check_positive_int, check_size


class LSTMState(NamedTuple):
    """State of a gated cell: ``h`` (B, output_size) and ``c`` (B, hidden_size)."""

    h: Tensor
    c: Tensor


class RNNState(NamedTuple):
    """State of the tanh RNN: ``h`` (B, hidden_size)."""

    h: Tensor


State = tuple[Tensor, ...]


def sharp_sigmoid(z: Tensor, alpha: float) -> Tensor:
    """σ(α z): the gate activation with sharpness α."""
    return torch.sigmoid(alpha * z) if alpha != 1.0 else torch.sigmoid(z)


def lstm_pointwise(a: Tensor, c: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Gate activations and cell update from pre-activations.

    Args:
        a: (..., 4n) pre-activations in gate order i, f, g, o.
        c: (..., n) previous cell state c_{t-1}.
        alpha: gate sharpness α in σ(α·a).

    Returns:
        ``(y, c_t)``, both (..., n): ``y = o ⊙ tanh(c_t)``.
    """
    n = c.shape[-1]
    # One sigmoid over all four blocks (the g block's is unused) beats three small calls.
    s = sharp_sigmoid(a, alpha)
    c = torch.addcmul(s[..., n : 2 * n] * c, s[..., :n], torch.tanh(a[..., 2 * n : 3 * n]))
    return s[..., 3 * n :] * torch.tanh(c), c


class Cell(nn.Module):
    """Base class: one recurrent step, split into input projection and recurrent step.

    Attributes:
        input_size: features of ``x_t``.
        hidden_size: units n (the size of ``c``).
        output_size: size of ``y_t`` and ``h`` (``proj_size`` if projected, else n).
    """

    input_size: int
    hidden_size: int
    output_size: int
    #: Gate blocks along the last axis of the pre-activations and biases, in order.
    gate_names: tuple[str, ...] = ()
    bias: bool
    single_bias: bool
    bias_ih: nn.Parameter | None
    bias_hh: nn.Parameter | None

    def adopt_parameters(self, owner: nn.Module, suffix: str) -> None:
        """Move this cell's parameters to ``owner`` as ``{name}{suffix}``; the cell keeps reading them.

        :class:`~distlstm.LSTM` owns its cells' parameters under ``nn.LSTM``'s names
        (``weight_ih_l0``, ``bias_hh_l1_reverse``…), so ``named_parameters()``, the state
        dict, ``functional_call`` and ``torch.export`` all see one name per tensor. The
        cell looks each name up in the owner's parameter dict at every access, so
        parameters swapped in by ``functional_call`` or ``.to()`` are the ones used.
        """
        names = {name: name + suffix for name in self._parameters}
        for name, p in self._parameters.items():
            owner.register_parameter(name + suffix, p)
        self._parameters.clear()
        # Not a submodule of the owner's tree: plain attributes, set past Module.__setattr__.
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_owner_names", names)

    def __getattr__(self, name: str) -> Any:
        names = self.__dict__.get("_owner_names")
        if names is not None and name in names:
            owner, full = self.__dict__["_owner"], names[name]
            params = owner.__dict__["_parameters"]
            # A parametrization or weight-drop wrapper may have moved it out of the dict.
            return params[full] if full in params else getattr(owner, full)
        return super().__getattr__(name)

    def cell_parameters(self) -> list[Tensor]:
        """This cell's parameters, whether it owns them or an :class:`~distlstm.LSTM` does."""
        names = self.__dict__.get("_owner_names")
        if names is None:
            return list(self.parameters())
        return [getattr(self, name) for name in names]

    def upgrade_state_dict(self, state_dict: dict[str, Any], prefix: str, suffix: str = "") -> None:
        """Rename, in place, keys an older version of this cell wrote (``{prefix}{name}{suffix}``)."""

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        self.upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _add_biases(self, shape: tuple[int, ...], bias: bool, single_bias: bool,
                    make: Callable[..., nn.Parameter]) -> None:
        """Register ``bias_ih`` and ``bias_hh`` of ``shape`` (``bias_hh`` only without ``single_bias``)."""
        self.bias, self.single_bias = bool(bias), bool(single_bias)
        self.bias_ih = make(*shape) if bias else None
        self.bias_hh = make(*shape) if bias and not single_bias else None

    def combined_bias(self) -> Tensor | None:
        """The bias b of the gates: ``bias_ih + bias_hh``, or ``bias_ih`` alone with ``single_bias``."""
        if self.bias_ih is None:
            return None
        return self.bias_ih if self.bias_hh is None else self.bias_ih + self.bias_hh

    def fill_forget_bias_(self, value: float) -> Cell:
        """Make the forget gate's bias b_f equal ``value`` (b_f = 1 is Jozefowicz et al.'s advice).

        With two biases ``bias_ih`` gets ``value`` and ``bias_hh`` zero in the forget rows,
        so their sum is ``value``; other gates are left alone. Works for any layout whose
        last bias axis is the gate blocks (``gate_names``), G-LSTM's (k, 4n/k) included.
        """
        if "f" not in self.gate_names:
            raise ValueError(f"{type(self).__name__} has no forget gate (gates {self.gate_names or 'none'}); "
                             "fill_forget_bias_ needs a cell with one")
        if self.bias_ih is None:
            raise ValueError(f"{type(self).__name__} has no bias (built with bias=False); "
                             "fill_forget_bias_ needs one")
        k, blocks = self.gate_names.index("f"), len(self.gate_names)
        with torch.no_grad():
            for b, v in ((self.bias_ih, value), (self.bias_hh, 0.0)):
                if b is not None:
                    b.view(*b.shape[:-1], blocks, -1)[..., k, :].fill_(v)
        return self

    def state_sizes(self) -> tuple[int, ...]:
        """Feature size of each state tensor, in state order."""
        return (self.output_size, self.hidden_size)

    def init_state(self, batch: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | None = None) -> State:
        """Zero state for ``batch`` sequences."""
        p = self.cell_parameters()[0]
        dtype, device = dtype or p.dtype, device or p.device
        zeros = [torch.zeros(batch, s, dtype=dtype, device=device) for s in self.state_sizes()]
        return self.make_state(zeros)

    def make_state(self, tensors: list[Tensor]) -> State:
        return LSTMState(*tensors)

    def input_projection(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement input_projection")

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step on ``x`` (B, input_size) or (input_size,); ``state`` defaults to zeros.

        Returns ``(y_t, state)`` with ``y_t`` (B, output_size) (unbatched if ``x`` was).
        """
        check_ndim(x, (1, 2), "x", "(batch, input_size) or (input_size,)")
        check_size(x.shape[-1], self.input_size, "x feature size (last dimension)")
        check_finite(x, "x")
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
            state = None if state is None else self.make_state([s.unsqueeze(0) for s in state])
        if state is None:
            state = self.init_state(x.shape[0], dtype=x.dtype, device=x.device)
        self.check_state(state, x.shape[0])
        y, state = self.step(self.input_projection(x), state)
        if unbatched:
            return y.squeeze(0), self.make_state([s.squeeze(0) for s in state])
        return y, state

    def check_state(self, state: State, batch: int) -> None:
        sizes = self.state_sizes()
        if len(state) != len(sizes):
            raise ValueError(f"state: expected {len(sizes)} tensors, got {len(state)}")
        for k, (s, n) in enumerate(zip(state, sizes, strict=True)):
            if s.shape != (batch, n):
                raise ValueError(f"state[{k}]: expected shape ({batch}, {n}), got {tuple(s.shape)}")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, output_size={self.output_size}"


CELLS: dict[str, tuple[type[Cell], dict[str, Any]]] = {}


def register_cell(name: str, **defaults: Any) -> Callable[[type[Cell]], type[Cell]]:
    """Class decorator: register ``cls`` under ``name`` with default options."""

    def wrap(cls: type[Cell]) -> type[Cell]:
        if name in CELLS:
            raise ValueError(f"cell {name!r} is already registered")
        CELLS[name] = (cls, defaults)
        return cls

    return wrap


def make_cell(name: str, input_size: int, hidden_size: int, **options: Any) -> Cell:
    """Build the cell registered as ``name``; ``options`` override its defaults."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS)}")
    cls, defaults = CELLS[name]
    return cls(input_size, hidden_size, **{**defaults, **options})


def _uniform_(params: Iterable[Tensor], bound: float) -> None:
    with torch.no_grad():
        for p in params:
            p.uniform_(-bound, bound)


class _GatedCell(Cell):
    """Shared set-up of gated cells: sizes, sharpness α and the optional projection W_hr."""

    gate_names: tuple[str, ...] = ("i", "f", "g", "o")

    def __init__(self, input_size: int, hidden_size: int, *, proj_size: int = 0, alpha: float = 1.0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        if proj_size < 0 or (proj_size >= hidden_size and proj_size != 0):
            raise ValueError(f"proj_size must be 0 (none) or in [1, hidden_size={hidden_size}), got {proj_size}")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha (gate sharpness) must be a positive finite number, got {alpha!r}")
        self.proj_size = proj_size
        self.alpha = float(alpha)
        self.output_size = proj_size or hidden_size
        self._device, self._dtype = device, dtype
        self.weight_hr: nn.Parameter | None = self._param(proj_size, hidden_size) if proj_size else None

    def _param(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(*shape, device=self._device, dtype=self._dtype))

    def _project(self, y: Tensor) -> Tensor:
        return y if self.weight_hr is None else F.linear(y, self.weight_hr)

    def reset_parameters(self) -> None:
        """``nn.LSTM``'s initialisation: every parameter ~ U(-1/√n, 1/√n)."""
        _uniform_(self.cell_parameters(), 1.0 / math.sqrt(self.hidden_size))

    def extra_repr(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        return f"{self.input_size}, {self.hidden_size}{extra}, alpha={self.alpha}"


@register_cell("lstm")
@register_cell("lstmp", proj_size=None)
@register_cell("sharpened", alpha=3.75)
class LSTMCell(_GatedCell):
    """LSTM without peepholes (Ergen & Kozat §1), optionally projected (LSTMP) or sharpened.

    Parameters use ``nn.LSTM``'s names and layout (gate order i, f, g, o):
    ``weight_ih`` (4n, input_size), ``weight_hh`` (4n, output_size), ``bias_ih``,
    ``bias_hh`` (4n,; ``bias_ih`` only with ``single_bias``), and ``weight_hr``
    (proj_size, n) when ``proj_size > 0`` (LSTMP, Sak et al. 2014: ``h_t = W_hr (o ⊙ tanh c_t)``).

    Registered as ``lstm``, ``lstmp`` (needs ``proj_size``) and ``sharpened`` (α = 3.75,
    the matrix-batch paper's value).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int | None = 0,
                 alpha: float = 1.0, single_bias: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if proj_size is None:
            raise ValueError("the lstmp cell needs proj_size (the size of the projected output h)")
        super().__init__(input_size, hidden_size, proj_size=proj_size, alpha=alpha, device=device, dtype=dtype)
        gates = 4 * hidden_size
        self.weight_ih = self._param(gates, input_size)
        self.weight_hh = self._param(gates, self.output_size)
        self._add_biases((gates,), bias, single_bias, self._param)
        self.reset_parameters()

    def input_projection(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.combined_bias())

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        y, c = lstm_pointwise(torch.addmm(xi, h, self.weight_hh.t()), c, self.alpha)
        h = self._project(y)
        return h, LSTMState(h, c)


@register_cell("peephole")
class PeepholeLSTMCell(_GatedCell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000), forget gate optional.

    With peephole weights p (``weight_ch``, one row per sigmoid gate)::

        i = σ(α(a_i + p_i ⊙ c_{t-1}))      f = σ(α(a_f + p_f ⊙ c_{t-1}))
        c_t = f ⊙ c_{t-1} + i ⊙ tanh(a_g)  o = σ(α(a_o + p_o ⊙ c_t))
        y_t = o ⊙ tanh(c_t)

    With ``forget_gate=False`` (the matrix-batch paper's long-lag setting) f ≡ 1, the
    gate order is (i, g, o) and ``weight_ch`` has rows (p_i, p_o).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_gate: bool = True,
                 proj_size: int = 0, alpha: float = 1.0, single_bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(input_size, hidden_size, proj_size=proj_size, alpha=alpha, device=device, dtype=dtype)
        self.forget_gate = forget_gate
        self.gate_names = ("i", "f", "g", "o") if forget_gate else ("i", "g", "o")
        n_gates = len(self.gate_names)
        self.weight_ih = self._param(n_gates * hidden_size, input_size)
        self.weight_hh = self._param(n_gates * hidden_size, self.output_size)
        self.weight_ch = self._param(n_gates - 1, hidden_size)
        self._add_biases((n_gates * hidden_size,), bias, single_bias, self._param)
        self.reset_parameters()

    input_projection = LSTMCell.input_projection

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        a = torch.addmm(xi, h, self.weight_hh.t())
        sig = functools.partial(sharp_sigmoid, alpha=self.alpha)
        p = self.weight_ch
        if self.forget_gate:
            a_i, a_f, a_g, a_o = a.chunk(4, -1)
            c = sig(a_f + p[1] * c) * c + sig(a_i + p[0] * c) * torch.tanh(a_g)
        else:
            a_i, a_g, a_o = a.chunk(3, -1)
            c = c + sig(a_i + p[0] * c) * torch.tanh(a_g)
        h = self._project(sig(a_o + p[-1] * c) * torch.tanh(c))
        return h, LSTMState(h, c)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_gate={self.forget_gate}"


@register_cell("flstm", rank=None)
class FLSTMCell(_GatedCell):
    """Factorized LSTM (F-LSTM, Kuchaiev & Ginsburg 2017): ``T = W2 (W1 [x; h]) + b``.

    The 4n × (input + output) gate matrix W of the LSTM(P) is replaced by the product
    of ``weight_1`` = W1 (r, input_size + output_size) and ``weight_2`` = W2 (4n, r),
    with inner rank r ≤ min(4n, input + output): (input + output + 4n)·r weights instead
    of 4n·(input + output). The bias b (4n,) follows the rule of every cell:
    ``bias_ih + bias_hh`` by default, ``bias_ih`` alone with ``single_bias`` (Table 1's
    F512 count: one 4n bias per layer). With r = input + output it can express any LSTM(P).
    """

    def __init__(self, input_size: int, hidden_size: int, rank: int | None = None, bias: bool = True,
                 proj_size: int = 0, alpha: float = 1.0, single_bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if rank is None:
            raise ValueError("the flstm cell needs rank (the inner dimension r of W2·W1)")
        super().__init__(input_size, hidden_size, proj_size=proj_size, alpha=alpha, device=device, dtype=dtype)
        self.rank = check_positive_int(rank, "rank")
        full = min(4 * hidden_size, input_size + self.output_size)
        if rank > full:
            raise ValueError(f"rank={rank} is larger than the matrix it factors allows: r must be at most "
                             f"min(4·hidden_size, input_size + output_size) = {full}")
        self.weight_1 = self._param(rank, input_size + self.output_size)
        self.weight_2 = self._param(4 * hidden_size, rank)
        self._add_biases((4 * hidden_size,), bias, single_bias, self._param)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W1 preserves the input's scale, W2 and b start as ``nn.LSTM`` would on r inputs."""
        _uniform_([self.weight_1], math.sqrt(3.0 / self.weight_1.shape[1]))
        rest = [p for p in (self.weight_2, self.bias_ih, self.bias_hh, self.weight_hr) if p is not None]
        _uniform_(rest, 1.0 / math.sqrt(self.hidden_size))

    def upgrade_state_dict(self, state_dict: dict[str, Any], prefix: str, suffix: str = "") -> None:
        # Before the common bias rule the F-LSTM had one bias named ``bias``: load it as b.
        old = state_dict.pop(f"{prefix}bias{suffix}", None)
        if isinstance(old, Tensor) and f"{prefix}bias_ih{suffix}" not in state_dict:
            state_dict[f"{prefix}bias_ih{suffix}"] = old
            if self.bias_hh is not None:
                state_dict[f"{prefix}bias_hh{suffix}"] = torch.zeros_like(old)

    def input_projection(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_1[:, : self.input_size])

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        u = torch.addmm(xi, h, self.weight_1[:, self.input_size :].t())  # (B, r)
        y, c = lstm_pointwise(F.linear(u, self.weight_2, self.combined_bias()), c, self.alpha)
        h = self._project(y)
        return h, LSTMState(h, c)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}"


@register_cell("glstm", groups=None)
class GLSTMCell(_GatedCell):
    """Group LSTM (G-LSTM, Kuchaiev & Ginsburg 2017 §2.2): the gate transform T split into k groups.

    ``x_t``, ``h_{t-1}`` and ``c`` are split into k equal groups ``x^j``, ``h^j``, ``c^j``;
    group j computes its gates from its own inputs only::

        (i^j, f^j, g^j, o^j) = T_j(x^j_t, h^j_{t-1}) = W^j [x^j_t; h^j_{t-1}] + b^j,
                               T_j: R^{(input+output)/k} → R^{4n/k}
        c^j_t = f^j ⊙ c^j_{t-1} + i^j ⊙ g^j
        y_t   = (o^1 ⊙ tanh c^1_t, …, o^k ⊙ tanh c^k_t)        (n,)
        h_t   = P y_t                                          P = W_hr (p, n), one full matrix

    Only T is grouped: the projection P mixes the groups (as in the paper, whose counts
    in Table 1 need a full p × n P). Without a projection h = y and the k groups are k
    independent LSTMs. Parameters (k leading, gate order i, f, g, o within a group):
    ``weight_ih`` (k, 4n/k, input/k), ``weight_hh`` (k, 4n/k, output/k), ``bias_ih``,
    ``bias_hh`` (k, 4n/k) and ``weight_hr`` (p, n). Weights: 4n·(input + output)/k + p·n.
    k = 1 is the LSTM(P).
    """

    def __init__(self, input_size: int, hidden_size: int, groups: int | None = None, bias: bool = True,
                 proj_size: int = 0, alpha: float = 1.0, single_bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if groups is None:
            raise ValueError("the glstm cell needs groups (the number k of independent groups)")
        check_positive_int(groups, "groups")
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size), ("proj_size", proj_size)):
            if size % groups:
                raise ValueError(f"{name}={size} must be divisible by groups={groups}")
        super().__init__(input_size, hidden_size, proj_size=proj_size, alpha=alpha, device=device, dtype=dtype)
        self.groups = k = groups
        m = hidden_size // k
        self.weight_ih = self._param(k, 4 * m, input_size // k)
        self.weight_hh = self._param(k, 4 * m, self.output_size // k)
        self._add_biases((k, 4 * m), bias, single_bias, self._param)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each group's T starts as an ``nn.LSTM`` of n/k units would; P as ``nn.LSTM``'s (1/√n)."""
        group = [p for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh) if p is not None]
        _uniform_(group, 1.0 / math.sqrt(self.hidden_size // self.groups))
        if self.weight_hr is not None:
            _uniform_([self.weight_hr], 1.0 / math.sqrt(self.hidden_size))

    def input_projection(self, x: Tensor) -> Tensor:
        xg = x.unflatten(-1, (self.groups, -1))  # (..., k, input/k)
        xi = torch.einsum("...ki,kgi->...kg", xg, self.weight_ih)
        b = self.combined_bias()
        return xi if b is None else xi + b  # (..., k, 4n/k)

    def _group_preactivations(self, xi: Tensor, h: Tensor) -> Tensor:
        """T_j for every group, group-major (k, B, 4n/k) so each group's product is one slice of a bmm."""
        hg = h.unflatten(-1, (self.groups, -1)).transpose(0, 1)  # (k, B, output/k)
        return torch.baddbmm(xi.transpose(0, 1), hg, self.weight_hh.transpose(1, 2))

    def gate_preactivations(self, x: Tensor, h: Tensor) -> Tensor:
        """``T_j(x^j, h^j)`` for x (B, input_size) and h (B, output_size): (B, k, 4n/k)."""
        return self._group_preactivations(self.input_projection(x), h).transpose(0, 1)

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        a = self._group_preactivations(xi, h)
        y, cg = lstm_pointwise(a, c.unflatten(-1, (self.groups, -1)).transpose(0, 1), self.alpha)
        h = self._project(y.transpose(0, 1).flatten(-2))  # y (k, B, n/k) → (B, n) → P y
        return h, LSTMState(h, cg.transpose(0, 1).flatten(-2))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}"


@register_cell("rnn")
class RNNCell(Cell):
    """Elman RNN with tanh, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    The character model of the federated-ES source. Parameter names follow ``nn.RNN``
    (``single_bias``: ``bias_ih`` alone, as every cell). It has no gates, so
    :meth:`fill_forget_bias_` refuses it.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, single_bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = self.output_size = check_positive_int(hidden_size, "hidden_size")

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype))

        self.weight_ih = param(hidden_size, input_size)
        self.weight_hh = param(hidden_size, hidden_size)
        self._add_biases((hidden_size,), bias, single_bias, param)
        _uniform_(self.cell_parameters(), 1.0 / math.sqrt(hidden_size))

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def make_state(self, tensors: list[Tensor]) -> State:
        return RNNState(*tensors)

    input_projection = LSTMCell.input_projection

    def step(self, xi: Tensor, state: State) -> tuple[Tensor, State]:
        h = torch.tanh(torch.addmm(xi, state[0], self.weight_hh.t()))
        return h, RNNState(h)
