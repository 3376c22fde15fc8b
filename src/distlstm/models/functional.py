"""Flat parameter vectors θ and models evaluated at them.

EKF, particle filters and evolution strategies treat a model as a map ``θ, X ↦ d̂``
on a flat vector θ ∈ R^{n_θ}. This module gives

* :class:`ParamSpec` — names, shapes and offsets of a module's parameters in θ, with
  ``flatten`` / ``unflatten`` (``unflatten`` returns views, and works on a batch
  Θ (B, n_θ) as well as on one θ);
* :class:`FunctionalModel` — the module evaluated at one θ, or at a batch Θ of B
  parameter vectors in one call (``torch.func.vmap`` over ``functional_call``, no
  Python loop over B), and the gradient / Jacobian of its output with respect to θ
  (the EKF's ``H = ∂d̂/∂θ``).

The order of θ is the module's ``named_parameters()`` order. For :class:`~distlstm.LSTM`
cells that is ``nn.LSTM``'s layout (gate order i, f, g, o; z ↔ g). Ergen & Kozat write
θ = [w; W_z; R_z; b_z; W_i; …] with one bias per gate, n_θ = n + 4(np + n² + n). With
``single_bias=True`` (``bias_ih`` = b alone) θ holds exactly their numbers in another
order. By default the cells keep ``nn.LSTM``'s two biases, b = b_ih + b_hh: 4n more
entries, a direction of θ the output does not see, which is *not* harmless for a
filter — a prior s₀I on (b_ih, b_hh) is a prior 2s₀I on b, and process noise qI on
them adds 2q to b per step, so an EKF on the two-bias θ is the paper's EKF with a
doubled prior and process noise on the biases (``tests/online/test_paper_theta.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from distlstm._checks import check_finite


@dataclass(frozen=True)
class ParamSpec:
    """Where each parameter of a module lives in the flat vector θ."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def of(cls, module: nn.Module) -> ParamSpec:
        names, shapes, offsets, n = [], [], [], 0
        for name, p in module.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(n)
            n += p.numel()
        if n == 0:
            raise ValueError(f"{type(module).__name__} has no parameters to flatten")
        return cls(tuple(names), tuple(shapes), tuple(offsets), n)

    def slice(self, name: str) -> slice:
        """The slice of θ that holds parameter ``name``."""
        if name not in self.names:
            raise KeyError(f"no parameter {name!r}; parameters are {list(self.names)}")
        k = self.names.index(name)
        return slice(self.offsets[k], self.offsets[k] + math.prod(self.shapes[k]))

    def check(self, theta: Tensor, name: str = "theta") -> None:
        """Raise unless ``theta`` is (n_θ,) or (B, n_θ) floating point."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(theta).__name__}")
        if not theta.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {theta.dtype}")
        if theta.dim() not in (1, 2) or theta.shape[-1] != self.numel:
            raise ValueError(f"{name}: expected shape ({self.numel},) or (B, {self.numel}), "
                             f"got {tuple(theta.shape)}")

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """Concatenate ``params`` (name → tensor) into θ (n_θ,), in spec order."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"parameters missing from the mapping: {missing}")
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Views of θ (..., n_θ) as parameters (..., *shape), keyed by name."""
        lead = theta.shape[:-1]
        return {
            name: theta[..., off : off + math.prod(shape)].view(*lead, *shape)
            for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True)
        }


def flatten(module: nn.Module) -> Tensor:
    """θ (n_θ,): a detached copy of ``module``'s parameters."""
    spec = ParamSpec.of(module)
    return spec.flatten(dict(module.named_parameters())).detach().clone()


def assign(module: nn.Module, theta: Tensor) -> None:
    """Copy θ (n_θ,) into ``module``'s parameters in place."""
    spec = ParamSpec.of(module)
    spec.check(theta)
    if theta.dim() != 1:
        raise ValueError(f"assign takes one parameter vector (n_θ,), got shape {tuple(theta.shape)}")
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in spec.unflatten(theta).items():
            params[name].copy_(value)


class FunctionalModel:
    """A module evaluated at explicit parameter vectors.

    ``fm(theta, *args, **kwargs)`` runs ``module(*args, **kwargs)`` with parameters
    taken from ``theta``: (n_θ,) gives one output, (B, n_θ) gives B outputs stacked
    on a new leading dimension, computed in one batched call. ``args`` are shared by
    all members unless ``per_member=True``, in which case every positional argument
    carries a leading dimension B (e.g. a different sequence batch per member).
    ``kwargs`` (lengths, pooling flags…) are always shared.

    ``compile=True`` runs the population call through ``torch.compile`` (needs a C++
    compiler). It costs seconds of compilation per new input shape and then runs
    2–3× faster than plain ``vmap`` (see BENCHMARKS.md): worth it for long particle
    filter or ES runs on fixed-shape (padded) inputs.

    A module may offer its own paths, which are used when they cover the call:
    ``population_forward(params, *args, **kwargs)`` for a batch Θ with shared arguments
    (instead of ``vmap``) and ``per_sequence_grads(params, *args, **kwargs)`` for
    :meth:`value_and_grad` and :meth:`jacobian` (:class:`~distlstm.models.networks.SequenceRegressor`
    has both for plain LSTM layers). ``fast_paths=False`` ignores them: the generic
    ``vmap`` and reverse mode, a baseline to compare with.
    """

    def __init__(self, module: nn.Module, *, compile: bool = False, fast_paths: bool = True) -> None:
        self.module = module
        self.spec = ParamSpec.of(module)
        self.fast_paths = fast_paths
        # compiled, the vmapped generic loop fuses better than the module's own population path
        self._population = torch.compile(self._vmapped_call, dynamic=False) if compile else self._population_call

    @property
    def numel(self) -> int:
        return self.spec.numel

    def flatten(self) -> Tensor:
        """The module's current parameters as θ."""
        return flatten(self.module)

    def _call(self, theta: Tensor, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.module, self.spec.unflatten(theta), args, kwargs)

    def __call__(self, theta: Tensor, *args: Any, per_member: bool = False, **kwargs: Any) -> Any:
        self.spec.check(theta)
        check_finite(theta, "theta")
        if theta.dim() == 1:
            if per_member:
                raise ValueError("per_member=True needs a batch of parameter vectors (B, n_θ)")
            return self._call(theta, *args, **kwargs)
        if per_member:
            for k, a in enumerate(args):
                if not isinstance(a, Tensor) or a.shape[0] != theta.shape[0]:
                    shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
                    raise ValueError(f"per_member argument {k}: expected leading dimension {theta.shape[0]}, "
                                     f"got {shape}")
        return self._population(theta, args, per_member, kwargs)

    def _population_call(self, theta: Tensor, args: tuple[Any, ...], per_member: bool,
                         kwargs: dict[str, Any]) -> Any:
        own = getattr(self.module, "population_forward", None) if self.fast_paths and not per_member else None
        if own is not None:
            out = own(self.spec.unflatten(theta), *args, **kwargs)
            if out is not None:
                return out
        return self._vmapped_call(theta, args, per_member, kwargs)

    def _vmapped_call(self, theta: Tensor, args: tuple[Any, ...], per_member: bool, kwargs: dict[str, Any]) -> Any:
        in_dims = (0,) + ((0 if per_member else None),) * len(args)
        return vmap(lambda th, *a: self._call(th, *a, **kwargs), in_dims=in_dims)(theta, *args)

    def value_and_grad(self, theta: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Scalar output and its gradient ∂out/∂θ (n_θ,) at one θ.

        For a model with one output per call (e.g. d̂ for one sequence) this is the
        EKF's measurement Jacobian H as a row vector. The module's ``per_sequence_grads``
        when it has them (see :meth:`jacobian`), else plain reverse-mode autograd on a leaf
        θ, so the model keeps its fastest path (e.g. ATen's fused LSTM).
        """
        self.spec.check(theta)
        if theta.dim() != 1:
            raise ValueError(f"value_and_grad takes one θ (n_θ,), got shape {tuple(theta.shape)}")
        rows = self._per_sequence_rows(theta, args, kwargs)
        if rows is not None and rows[0].numel() == 1:
            return rows[0].reshape(()), rows[1][0]
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            out = self._call(leaf, *args, **kwargs)
            if not isinstance(out, Tensor) or out.numel() != 1:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"value_and_grad needs a scalar output, got shape {shape}; "
                                 "use jacobian for vector outputs")
            (grad,) = torch.autograd.grad(out.reshape(()), leaf)
        return out.detach().reshape(()), grad

    def jacobian(self, theta: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Output (m,) and its Jacobian ∂out/∂θ (m, n_θ) at one θ.

        One forward at a leaf θ, so the model keeps its fastest path (ATen's fused LSTM,
        which ``vmap`` cannot enter), then one backward batched over the m unit
        cotangents e_l (``is_grads_batched``: ``vmap`` over the backward graph), whose
        row l is e_lᵀ ∂out/∂θ. For two sequences at hidden 8 that was 1.5× quicker than
        ``jacrev`` (a vmapped forward through the LSTM's Python step loop) and 1.35×
        quicker than two forward/backward passes (the DEKF's neighbour rows).

        A module that knows its rows in one ordinary backward (``per_sequence_grads``,
        :class:`~distlstm.models.networks.SequenceRegressor` on the fused LSTM) gives them
        instead; the batched backward is the fallback, and a backward per row for a module
        with a submodule that says ``batched_backward = False`` (its backward cannot run
        under ``vmap``, e.g. the fused peephole layer's, which writes in place).
        """
        self.spec.check(theta)
        if theta.dim() != 1:
            raise ValueError(f"jacobian takes one θ (n_θ,), got shape {tuple(theta.shape)}")
        rows = self._per_sequence_rows(theta, args, kwargs)
        if rows is not None:
            return rows
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            out = self._call(leaf, *args, **kwargs).reshape(-1)
            cotangents = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)
            if all(getattr(m, "batched_backward", True) for m in self.module.modules()):
                (jac,) = torch.autograd.grad(out, leaf, cotangents, is_grads_batched=True)
            else:  # a backward that cannot run under vmap: one per row
                jac = torch.stack([torch.autograd.grad(out, leaf, e, retain_graph=True)[0] for e in cotangents])
        return out.detach(), jac

    def _per_sequence_rows(self, theta: Tensor, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
        """(out (m,), ∂out/∂θ (m, n_θ)) from the module's ``per_sequence_grads`` when it has them, else None.

        The hook returns the rows by parameter name (m, *shape), or None where it does not
        cover the call; they are laid out in θ's order here.
        """
        hook = getattr(self.module, "per_sequence_grads", None) if self.fast_paths else None
        if hook is None:
            return None
        got = hook(self.spec.unflatten(theta.detach()), *args, **kwargs)
        if got is None:
            return None
        out, rows = got
        if set(rows) != set(self.spec.names):
            return None
        m = out.shape[0]
        return out, torch.cat([rows[name].reshape(m, -1) for name in self.spec.names], 1)
