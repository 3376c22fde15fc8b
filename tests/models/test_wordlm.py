"""The word language model: perplexity by hand, learning a tiny grammar, greedy decoding, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from distlstm.models.networks import CharLM, WordLM, stream_nats


def test_stream_perplexity_is_exp_of_the_mean_nll_computed_by_hand() -> None:
    # A bigram "model" over 3 ids with fixed next-id probabilities: P[prev, next].
    P = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)

    def forward(x, state):
        return P[x].log(), state

    ids = torch.tensor([0, 1, 1, 2, 2, 0, 2])
    # 6 predictions in 2 streams of 3 ([0,1,1]→[1,1,2], [2,2,0]→[2,0,2]); every prediction counted once.
    by_hand = -(math.log(0.25) + math.log(0.8) + math.log(0.1) + math.log(0.6) + math.log(0.2) + math.log(0.25)) / 6
    assert stream_nats(forward, ids, streams=2, window=2) == pytest.approx(by_hand)
    assert math.exp(stream_nats(forward, ids, streams=1, window=4)) == pytest.approx(math.exp(by_hand))
    with pytest.raises(ValueError, match="at least 2 ids"):
        stream_nats(forward, ids[:1])


def grammar_stream(n: int, gen: torch.Generator) -> torch.Tensor:
    """Sentences 'a b c' or 'd e f' (ids 1-3, 4-6) then the end id 0: each next id is certain but the first."""
    out = []
    for first in torch.randint(0, 2, (n,), generator=gen).tolist():
        out += [1, 2, 3, 0] if first == 0 else [4, 5, 6, 0]
    return torch.tensor(out)


@pytest.mark.parametrize("cell, options", [("lstmp", {}), ("flstm", {"rank": 8}), ("glstm", {"groups": 2}),
                                           ("glstm", {"groups": (2, 4)})])
def test_word_lm_learns_a_tiny_grammar_with_the_sampled_softmax(cell, options) -> None:
    torch.manual_seed(0)
    V = 40  # 7 used ids, the rest never seen: the uniform level is log 40
    model = WordLM(V, 16, 64, cell=cell, num_sampled=16, single_bias=True, **options)
    gen = torch.Generator().manual_seed(0)
    stream = grammar_stream(400, gen)
    x, y = stream[: 8 * 199].view(8, 199), stream[1 : 8 * 199 + 1].view(8, 199)  # 8 streams
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(120):
        part = slice((step * 10) % 190, (step * 10) % 190 + 10)
        loss, _ = model(x[:, part], None, y[:, part], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    nats = stream_nats(model, grammar_stream(100, gen), streams=4, window=16)
    # Unigram level: P(0) = 1/4, P(1..6) = 1/8 → e^H ≈ 6.7; uniform: 40; the source: 2^(1/4) ≈ 1.19.
    unigram = math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.125)))
    assert math.exp(nats) < unigram / 2


@pytest.mark.parametrize("cell, options", [("lstmp", {}), ("flstm", {"rank": 4}), ("glstm", {"groups": (2, 4)})])
def test_one_bias_per_gate_with_forget_bias_one_and_full_loss_outside_training(cell, options) -> None:
    torch.manual_seed(0)
    model = WordLM(30, 8, 32, cell=cell, num_sampled=5, single_bias=True, **options)
    for layer in model.rnn.cells:
        assert layer.bias_hh is None  # one bias per gate, as the paper counts
        gates = layer.bias_ih.unflatten(-1, (4, -1))  # (..., gate, units) in i, f, g, o order
        assert torch.all(gates[..., 1, :] == 1.0)
        assert not torch.all(gates[..., 0, :] == 1.0)
    ids = torch.randint(0, 30, (2, 6))
    model.eval()  # evaluation scores with the full softmax
    loss, _ = model(ids[:, :-1], None, ids[:, 1:])
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    assert loss.item() == pytest.approx(float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())))


def test_greedy_decoding_is_deterministic_and_equals_argmax() -> None:
    torch.manual_seed(0)
    for model in (WordLM(25, 8, 32, single_bias=True).eval(), CharLM(25, 16).eval()):
        prompt = torch.tensor([3, 1, 4])
        a = model.generate(prompt, 6, temperature=0.0, generator=torch.Generator().manual_seed(1))
        b = model.generate(prompt, 6, temperature=0.0, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        ids = prompt.clone()
        for k in range(6):  # argmax of the next-id distribution, recomputed from scratch
            logits, _ = model(ids.unsqueeze(0))
            assert int(a[k]) == int(logits[0, -1].argmax())
            ids = torch.cat([ids, a[k : k + 1]])
        with pytest.raises(ValueError, match="temperature must be positive, or 0"):
            model.generate(prompt, 2, temperature=-1.0)


def test_bad_word_lm_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"num_sampled=50.*vocabulary of 20"):
        WordLM(20, 8, 32, num_sampled=50)
    with pytest.raises(ValueError, match="dropout"):
        WordLM(20, 8, 32, dropout=1.0)
    model = WordLM(20, 8, 32, num_sampled=5)
    with pytest.raises(ValueError, match="generator"):
        model(torch.zeros(1, 3, dtype=torch.long), None, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 20\)"):
        model(torch.full((1, 3), 20))
