"""A linear-Gaussian model h(θ; X) = θᵀ x_last, where the exact Kalman filter is the reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distlstm.models.functional import FunctionalModel
from distlstm.online.base import Observation

D = torch.float64


class LinearLast(nn.Module):
    """d̂ = θᵀ x_T: linear in θ, so the EKF is exact."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(p, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, -1] @ self.w


def linear_streams(num_nodes: int, steps: int, p: int, sigma: float, seed: int,
                   theta_star: Tensor | None = None) -> tuple[list[list[Observation]], Tensor]:
    gen = torch.Generator().manual_seed(seed)
    theta_star = torch.randn(p, generator=gen, dtype=D) if theta_star is None else theta_star
    streams = []
    for _ in range(num_nodes):
        stream = []
        for _ in range(steps):
            x = torch.randn(2, p, generator=gen, dtype=D)
            d = float(x[-1] @ theta_star + sigma * torch.randn((), generator=gen, dtype=D))
            stream.append(Observation(x, d))
        streams.append(stream)
    return streams, theta_star


def kalman_reference(data: list[list[Observation]], p: int, s0: float, q: float, sigma2: float):
    """Textbook Kalman filter, full-matrix form, processing every step's observations in order.

    ``data[t]`` lists the observations available at step t; one time update per step.
    """
    theta = torch.zeros(p, dtype=D)
    P = s0 * torch.eye(p, dtype=D)
    for obs in data:
        P = P + q * torch.eye(p, dtype=D)
        for ob in obs:
            H = ob.x[-1].reshape(1, p)
            S = H @ P @ H.T + sigma2
            K = P @ H.T @ torch.linalg.inv(S)
            theta = theta + (K @ (torch.tensor([[ob.d]], dtype=D) - H @ theta[:, None])).reshape(p)
            P = (torch.eye(p, dtype=D) - K @ H) @ P
    return theta, P


@pytest.fixture
def linear_fm() -> FunctionalModel:
    return FunctionalModel(LinearLast(3))
