"""Stream shards and minibatch rows: W workers together hold exactly what one process holds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from distlstm.data.partition import epoch_batches, partition_stream


@settings(max_examples=40, deadline=None)
@given(length=st.integers(40, 400), world=st.integers(1, 4), streams=st.integers(1, 4), window=st.integers(1, 6))
def test_worker_shards_are_the_single_process_streams(length, world, streams, window):
    assume(length >= world * streams * window)
    ids = torch.arange(length)
    single = partition_stream(ids, ids + 1, rank=0, world_size=1, streams=world * streams, window=window)
    shards = [partition_stream(ids, ids + 1, rank=r, world_size=world, streams=streams, window=window)
              for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for j in range(len(single)):
        x, y = single.window_at(j)
        parts = [s.window_at(j) for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    # each stream is contiguous, consecutive windows continue it, and a worker's streams are one contiguous shard
    n = length // (world * streams)
    for r, shard in enumerate(shards):
        whole = torch.cat([shard.window_at(j)[0] for j in range(len(shard))], dim=1)
        start = r * streams * n
        expected = torch.arange(start, start + streams * n).view(streams, n)[:, : whole.shape[1]]
        assert torch.equal(whole, expected)


def test_stream_errors_name_the_sizes():
    ids = torch.arange(100)
    with pytest.raises(ValueError, match=r"shorter than the TBPTT window of 64.*2 × 4 × 64 = 512"):
        partition_stream(ids, ids, rank=0, world_size=2, streams=4, window=64)
    with pytest.raises(ValueError, match="align them"):
        partition_stream(ids, ids[1:], rank=0, world_size=1, streams=1, window=4)
    with pytest.raises(ValueError, match="outside world size"):
        partition_stream(ids, ids, rank=2, world_size=2, streams=1, window=4)
    with pytest.raises(IndexError, match="outside the 25 windows"):
        partition_stream(ids, ids, rank=0, world_size=1, streams=1, window=4).window_at(25)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_minibatch_rows_split_the_global_batch(world):
    single = epoch_batches(50, 4 * world, rank=0, world_size=1, seed=3, epoch=2)
    parts = [epoch_batches(50, 4, rank=r, world_size=world, seed=3, epoch=2) for r in range(world)]
    for b, rows in enumerate(single):
        assert torch.equal(torch.cat([p[b] for p in parts]), rows)
    seen = torch.cat(single)
    assert len(seen.unique()) == len(seen)  # no row twice in an epoch
    other_epoch = epoch_batches(50, 4 * world, rank=0, world_size=1, seed=3, epoch=3)
    assert not torch.equal(torch.cat(other_epoch), seen)


def test_minibatch_larger_than_the_data_is_an_error():
    with pytest.raises(ValueError, match=r"10 sequences are fewer than one global batch of 2 worker\(s\) × 8 = 16"):
        epoch_batches(10, 8, rank=0, world_size=2, seed=0, epoch=0)
