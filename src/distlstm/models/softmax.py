"""Sampled softmax with a log-uniform (Zipfian) candidate sampler, as TensorFlow's.

A softmax over V words costs V·p per predicted word; the paper (after Jozefowicz et
al. 2016) trains with S ≪ V sampled classes instead. For a hidden output h, true class
y and candidates s_1 … s_S drawn from Q (Jean et al. 2015; TF's ``sampled_softmax_loss``)::

    logit_c = w_cᵀ h + b_c − log E[count_c]       (c = y or a candidate)
    loss    = −log softmax([logit_y, logit_{s_1}, …, logit_{s_S}])[0]

with candidates equal to y ("accidental hits") removed. Subtracting the log expected
count makes the sum over candidates an importance-sampling estimate of the partition
function, so the gradient approaches the full softmax's as S grows.

Q is TF's ``log_uniform_candidate_sampler``: ids are ranks by decreasing frequency and

    Q(k) = (log(k + 2) − log(k + 1)) / log(V + 1),   k = 0 … V − 1.

With ``unique=True`` (TF's default) S distinct candidates are kept, in the order of
i.i.d. draws from Q; this equals sequential sampling without replacement, so the
candidates come from ``torch.multinomial(..., replacement=False)`` and the number of
i.i.d. tries T it would have taken is drawn exactly (a sum of geometric waiting times).
As in TF, the expected count of class c is then 1 − (1 − Q(c))^T; without ``unique``
it is S·Q(c).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from distlstm._checks import check_positive_int


class Candidates(NamedTuple):
    ids: Tensor  # (S,) int64 sampled classes
    tries: float  # i.i.d. draws it took (unique) or S (with replacement)
    unique: bool


class LogUniformSampler:
    """Zipfian candidates over ``range_max`` classes ranked by decreasing frequency."""

    def __init__(self, range_max: int) -> None:
        self.range_max = check_positive_int(range_max, "range_max")
        k = torch.arange(range_max, dtype=torch.float64)
        self.probs = (torch.log(k + 2) - torch.log(k + 1)) / math.log(range_max + 1)  # (V,), sums to 1

    def sample(self, num_sampled: int, generator: torch.Generator, unique: bool = True) -> Candidates:
        """``num_sampled`` candidates drawn with ``generator``; distinct ones when ``unique``."""
        check_positive_int(num_sampled, "num_sampled")
        if unique and num_sampled > self.range_max:
            raise ValueError(f"num_sampled={num_sampled} distinct candidates are more than the vocabulary of "
                             f"{self.range_max} classes; sample at most {self.range_max}")
        ids = torch.multinomial(self.probs, num_sampled, replacement=not unique, generator=generator)
        if not unique:
            return Candidates(ids, float(num_sampled), False)
        # Waiting time for the j-th new class ~ Geometric(1 − mass of the j classes already drawn).
        seen = torch.cat([self.probs.new_zeros(1), torch.cumsum(self.probs[ids], 0)[:-1]])
        success = (1.0 - seen).clamp_min(1e-12)
        u = torch.rand(num_sampled, generator=generator, dtype=torch.float64)
        waits = torch.floor(torch.log1p(-u) / torch.log1p(-success).clamp_max(-1e-300)) + 1.0
        waits = torch.where(success >= 1.0, torch.ones_like(waits), waits)
        return Candidates(ids, float(waits.sum()), True)

    def log_expected_count(self, ids: Tensor, candidates: Candidates) -> Tensor:
        """log E[count] of classes ``ids`` under the draw that produced ``candidates`` (TF's formula)."""
        q = self.probs.to(ids.device)[ids]
        if candidates.unique:
            return torch.log(-torch.expm1(candidates.tries * torch.log1p(-q)))
        return torch.log(candidates.tries * q)


def sampled_softmax_loss(weight: Tensor, bias: Tensor, inputs: Tensor, labels: Tensor, candidates: Candidates,
                         sampler: LogUniformSampler, remove_accidental_hits: bool = True) -> Tensor:
    """Mean sampled-softmax loss of ``inputs`` (N, p) with true ``labels`` (N,) against ``candidates``.

    ``weight`` (V, p) and ``bias`` (V,) are the output layer (logits = inputs·weightᵀ + bias).
    """
    if inputs.dim() != 2 or labels.shape != inputs.shape[:1]:
        raise ValueError(f"inputs must be (N, p) and labels (N,), got {tuple(inputs.shape)} and "
                         f"{tuple(labels.shape)}")
    dtype = inputs.dtype
    true_logits = (inputs * weight[labels]).sum(-1) + bias[labels]
    true_logits = true_logits - sampler.log_expected_count(labels, candidates).to(dtype)
    ids = candidates.ids.to(labels.device)
    sampled_logits = inputs @ weight[ids].t() + bias[ids]
    sampled_logits = sampled_logits - sampler.log_expected_count(ids, candidates).to(dtype)
    if remove_accidental_hits:
        sampled_logits = sampled_logits.masked_fill(labels[:, None] == ids[None, :], float("-inf"))
    logits = torch.cat([true_logits[:, None], sampled_logits], 1)
    return (torch.logsumexp(logits, 1) - true_logits).mean()
