"""Pooling over valid steps, the regression head and the sequence loss."""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.models import CharLM, pool, sequence_cross_entropy


def test_pooling_over_valid_steps_by_hand():
    y = torch.arange(24.0).view(2, 4, 3)
    lengths = torch.tensor([2, 4])
    torch.testing.assert_close(pool(y, lengths, "mean"), torch.stack([y[0, :2].mean(0), y[1].mean(0)]))
    torch.testing.assert_close(pool(y, lengths, "last"), torch.stack([y[0, 1], y[1, 3]]))
    y[0, 3] = 1e6  # padding must not win the max
    torch.testing.assert_close(pool(y, lengths, "max"), torch.stack([y[0, 1], y[1, 3]]))
    torch.testing.assert_close(pool(y, None, "mean"), y.mean(1))


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        pool(torch.zeros(1, 2, 3), None, "median")


def test_sequence_cross_entropy_ignores_padding_and_matches_uniform():
    logits = torch.zeros(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    assert math.isclose(float(sequence_cross_entropy(logits, targets)), math.log(5), rel_tol=1e-6)
    logits[1, 2] = torch.tensor([100.0, -100, -100, -100, -100])
    targets[1, 2] = 4
    loss = sequence_cross_entropy(logits, targets, torch.tensor([3, 2]))
    assert math.isclose(float(loss), math.log(5), rel_tol=1e-6)


def test_char_lm_shapes_and_embedding_option():
    for emb in (0, 4):
        model = CharLM(11, 6, embedding_dim=emb)
        logits, (h, _c) = model(torch.randint(0, 11, (3, 7)))
        assert logits.shape == (3, 7, 11) and h.shape == (1, 3, 6)
    with pytest.raises(TypeError, match="integer"):
        CharLM(5, 3)(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        CharLM(5, 3)(torch.tensor([[1, 5]]))


@pytest.mark.parametrize("window", [1, 3, 7, 40, 256])
def test_sequence_nats_across_windows_equals_one_pass(window):
    """State carried across windows: any window size gives the cross-entropy of one pass over the whole sequence."""
    import torch.nn.functional as F

    from distlstm.models.networks import CharLM, sequence_nats

    torch.manual_seed(0)
    model = CharLM(6, 5).double()
    ids = torch.randint(0, 6, (41,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0))
    expected = float(F.cross_entropy(logits[0], ids[1:]))
    assert sequence_nats(model, ids, window) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="need at least 2 ids"):
        sequence_nats(model, ids[:1], window)
