"""Federated text shards: held-out plays, disjoint client shards, windows that stay inside their segment."""

from __future__ import annotations

import pytest
import torch

from distlstm.data.text import CharVocab, load_text, split_ids
from distlstm.data.text_shards import Segment, TextShard, client_shards, holdout_split
from distlstm.data.words import split_works

PLAYS = ["HAMLET, PRINCE OF DENMARK", "MACBETH", "OTHELLO, THE MOOR OF VENICE", "THE TRAGEDY OF KING LEAR",
         "ROMEO AND JULIET", "JULIUS CAESAR", "THE TRAGEDY OF CORIOLANUS", "THE LIFE AND DEATH OF KING RICHARD III"]


def tiny_text() -> str:
    return "".join(f"{title}\n\nby William Shakespeare\n\n{body}\n" for title, body in
                   (("ALPHA", "aaaa " * 30), ("BETA", "bbbb " * 20), ("GAMMA", "cccc " * 25)))


def positions(shard: TextShard) -> set[int]:
    return {s.start + k for s in shard.segments for k in range(len(s.ids))}


@pytest.fixture(scope="module")
def tragedies() -> tuple[str, torch.Tensor]:
    text = load_text()
    return text, CharVocab.from_text(text).encode(text)


def test_the_play_holdout_is_the_last_play_and_the_segments_are_the_others(tragedies):
    text, ids = tragedies
    segments, val = holdout_split(text, ids, "play")
    works = split_works(text)
    assert [s.name for s in segments] == PLAYS[:-1]
    assert len(val) == len(works[-1].text) and torch.equal(val, ids[-len(val):])
    for seg, work in zip(segments, works, strict=False):  # each segment is its play's text, encoded
        assert torch.equal(seg.ids, ids[seg.start : seg.start + len(work.text)]) and len(seg.ids) == len(work.text)
    assert sum(len(s.ids) for s in segments) + len(val) == len(ids)


def test_the_tail_holdout_is_split_ids_and_clips_the_last_play(tragedies):
    text, ids = tragedies
    segments, val = holdout_split(text, ids, "tail")
    train, expected = split_ids(ids)
    assert torch.equal(val, expected)
    assert [s.name for s in segments] == PLAYS and torch.equal(torch.cat([s.ids for s in segments]), train)


@pytest.mark.parametrize("how", ["iid", "by-play"])
def test_shards_are_disjoint_and_cover_the_training_text(tragedies, how):
    text, ids = tragedies
    segments, _ = holdout_split(text, ids, "play")
    shards = client_shards(segments, 3, how, seed=0, min_length=33)
    sets = [positions(s) for s in shards]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # disjoint
    everything = {s.start + k for s in segments for k in range(len(s.ids))}
    assert set().union(*sets) == everything  # no chunk of the tragedies is shorter than a window here
    for shard in shards:  # every segment is the text at its offset
        assert all(torch.equal(s.ids, ids[s.start : s.start + len(s.ids)]) for s in shard.segments)
    if how == "by-play":  # whole plays, dealt round-robin
        assert [sh.names for sh in shards] == [PLAYS[0:7:3], PLAYS[1:7:3], PLAYS[2:7:3]]
    else:  # random chunks of every play, nearly equal sizes
        sizes, counts = [len(s) for s in shards], [len(s.segments) for s in shards]
        assert max(counts) - min(counts) <= 1 and max(sizes) < 1.05 * min(sizes)
        assert all(len(sh.names) == 7 for sh in shards)
        again = client_shards(segments, 3, how, seed=0, min_length=33)
        assert [positions(s) for s in again] == sets
        assert [positions(s) for s in client_shards(segments, 3, how, seed=1, min_length=33)] != sets


def test_windows_are_drawn_inside_one_segment_in_proportion_to_its_length():
    text = tiny_text()
    ids = CharVocab.from_text(text).encode(text)
    segments, _ = holdout_split(text, ids, "play")
    shard = TextShard(tuple(segments))
    x, y = shard.windows(400, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (400, 8) and torch.equal(x[:, 1:], y[:, :-1])
    counts = {s.name: 0 for s in segments}
    for row in torch.cat([x, y[:, -1:]], 1):  # every window is a slice of one segment
        hits = [s.name for s in segments for a in range(len(s.ids) - 8) if torch.equal(s.ids[a : a + 9], row)]
        assert hits, row
        counts[hits[0]] += 1
    valid = {s.name: len(s.ids) - 8 for s in segments}
    for name, n in counts.items():
        assert n / 400 == pytest.approx(valid[name] / sum(valid.values()), abs=0.08)


def test_bad_splits_are_refused_with_the_fix(tragedies):
    text, ids = tragedies
    segments, _ = holdout_split(text, ids, "play")
    with pytest.raises(ValueError, match="7 play\\(s\\) for 8 clients: use at most 7 clients"):
        client_shards(segments, 8, "by-play", seed=0)
    with pytest.raises(ValueError, match="unknown data split 'random'"):
        client_shards(segments, 2, "random", seed=0)
    with pytest.raises(ValueError, match="--holdout play needs a text of at least two works"):
        holdout_split("no plays here " * 10, CharVocab.from_text("no plays here").encode("no plays here " * 10), "play")
    with pytest.raises(ValueError, match="shorter --window or fewer clients"):
        TextShard((Segment("x", 0, torch.arange(5)),)).windows(2, 8, torch.Generator())
