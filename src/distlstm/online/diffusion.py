"""The diffusion (combine) step shared by diffusion SGD and DEKF.

With Metropolis weights c_kl over the neighbourhood N_k (see
:meth:`distlstm.network.graphs.Topology.metropolis_weights`)::

    θ_k = Σ_{l ∈ N_k} c_kl ψ_l

Each node sends its intermediate estimate ψ_k to every neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from distlstm.network.transport import Transport


def diffusion_combine(psi: Mapping[int, Tensor], transport: Transport) -> dict[int, Tensor]:
    """Exchange ψ with the neighbours and return θ_k = Σ_{l ∈ N_k} c_kl ψ_l for every local node."""
    received = transport.neighbour_exchange(psi)
    c = transport.topology.metropolis_weights().to(next(iter(psi.values())).dtype)
    out = {}
    for k in transport.local_nodes:
        theta = c[k, k] * psi[k]
        for nb, value in received[k].items():
            theta = theta + c[k, nb] * value
        out[k] = theta
    return out
