"""Initialisations other than each module's own (PyTorch's uniform ±1/√n).

* :func:`sparse_init_` — the matrix-batch paper's "sparse initialisation" for the long-lag
  problems, as its authors' MATLAB code draws it: small uniform weights, some of them
  zero, and input gates that start nearly closed.
"""

from __future__ import annotations

import torch
from torch import nn

INITS = ("sparse", "uniform")  # the long-lag tasks' choices; "uniform" is every module's own reset_parameters


def check_init(name: str) -> None:
    """Raise a clear error unless ``name`` is one of :data:`INITS`."""
    if name not in INITS:
        raise ValueError(f"unknown initialisation {name!r}; expected one of {INITS}")


SPARSE_SCALE = 0.1  # every weight and bias U(−0.1, 0.1)
SPARSE_ZERO_FRACTION = 0.4  # of them set to 0
SPARSE_INPUT_GATE_BIAS = -1.0  # added to the input gates' biases


def sparse_init_(model: nn.Module, generator: torch.Generator, scale: float = SPARSE_SCALE,
                 zero_fraction: float = SPARSE_ZERO_FRACTION,
                 input_gate_bias: float = SPARSE_INPUT_GATE_BIAS) -> nn.Module:
    """Re-draw every parameter of ``model`` in place: U(−scale, scale), each zero with probability
    ``zero_fraction``; then every gated cell's second bias (``bias_hh``) is 0, so a unit has one
    bias as in the paper, and its input gate's bias is shifted by ``input_gate_bias``.

    Why: the paper (Sec. 4, "state drifting") finds that cells without a forget gate grow
    their state from the start unless the input gate is more closed, and it trains with
    sparse initialisation (Conclusions). Its authors' code (LSTM-MATLAB, ``netInit.m``) draws
    U(−0.1, 0.1) weights, sets ≈ 40 % of them to zero and gives the input gates a bias of −1;
    with σ(α·a) at α = 3.75 that gate starts at σ(−3.75) ≈ 0.02. On the multiplication
    problem, in 15 runs per optimizer, L-BFGS, CG and momentum SGD reach the target in every
    run from it, against 9–10 of 15 from PyTorch's ±1/√n start
    (docs/results/matrix-batch/sparse-init).

    Every draw comes from ``generator``, parameter by parameter in ``named_parameters`` order.
    Returns ``model``.
    """
    if not 0.0 <= zero_fraction < 1.0:
        raise ValueError(f"zero_fraction must be in [0, 1), got {zero_fraction}")
    if not scale > 0.0:
        raise ValueError(f"scale must be positive, got {scale}")
    with torch.no_grad():
        for _, p in model.named_parameters():
            values = (torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1) * scale
            keep = torch.rand(p.shape, generator=generator, dtype=p.dtype) >= zero_fraction
            p.copy_(values * keep)
        for cell in _cells(model):
            gates = getattr(cell, "gate_names", None)
            bias_ih, bias_hh = getattr(cell, "bias_ih", None), getattr(cell, "bias_hh", None)
            if gates is None or "i" not in gates:
                continue
            if bias_ih is not None and bias_hh is not None:
                bias_hh.zero_()
            bias = bias_ih if bias_ih is not None else bias_hh
            if bias is not None:  # the last axis holds the gate blocks (G-LSTM's bias is (k, 4n/k))
                bias.view(*bias.shape[:-1], len(gates), -1)[..., gates.index("i"), :] += input_gate_bias
    return model


def _cells(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` and the cells its recurrent stacks hold (``LSTM.cells``, a tuple: the stack owns
    their parameters under nn.LSTM's names, so ``modules()`` does not reach them), each once."""
    found = {id(c): c for m in model.modules() for c in (m, *getattr(m, "cells", ()))}
    return list(found.values())
