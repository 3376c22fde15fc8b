"""distlstm.LSTM as a drop-in for torch.nn.LSTM: PyTorch's own sample inputs, bidirectional,
packed sequences, attributes, parameter names, compile/export/trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.testing._internal.common_modules import module_db

import distlstm
from distlstm.models import CELLS, CharLM, make_cell, run_layer

D = torch.float64
OPTIONS = {"lstmp": {"proj_size": 2}, "flstm": {"rank": 3}, "glstm": {"groups": 2}}

LSTM_INFO = next(m for m in module_db if m.module_cls is nn.LSTM)
SAMPLES = LSTM_INFO.module_inputs_func(LSTM_INFO, device="cpu", dtype=D, requires_grad=True, training=True)


def tensors_of(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, PackedSequence):
        return [tree.data]
    return [t for part in tree for t in tensors_of(part)]


def outputs_and_grads(model: nn.Module, args: tuple, seed: int):
    """Forward, then the gradient of a random projection of every output w.r.t. inputs and parameters."""
    out = tensors_of(model(*args))
    weights = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=weights)).sum() for o in out)
    inputs = [t for t in tensors_of(args) if t.requires_grad]
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, inputs + list(params.values()))
    return out, grads[: len(inputs)], dict(zip(params, grads[len(inputs) :], strict=True))


def test_pytorch_has_lstm_samples_covering_every_constructor_option():
    kwargs = [s.constructor_input.kwargs for s in SAMPLES]
    assert len(SAMPLES) >= 16
    for option in ("batch_first", "bias", "bidirectional"):
        assert {k[option] for k in kwargs} == {False, True}
    assert {k["proj_size"] > 0 for k in kwargs} == {False, True}
    assert any(len(s.forward_input.args) == 2 for s in SAMPLES)  # given initial states


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
@pytest.mark.parametrize("k", range(len(SAMPLES)), ids=[f"sample{k}" for k in range(len(SAMPLES))])
def test_pytorch_module_samples_match_nn_lstm(k, fused):
    sample = SAMPLES[k]
    kwargs = sample.constructor_input.kwargs
    torch.manual_seed(k)
    ref = nn.LSTM(*sample.constructor_input.args, **kwargs).to(D)
    ours = distlstm.LSTM(*sample.constructor_input.args, **kwargs, fused=fused, dtype=D)
    ours.load_state_dict(ref.state_dict())
    args = sample.forward_input.args
    out_ref, in_grads_ref, grads_ref = outputs_and_grads(ref, args, seed=k)
    out, in_grads, grads = outputs_and_grads(ours, args, seed=k)
    for a, b in zip(out, out_ref, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(in_grads, in_grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    assert set(grads) == set(grads_ref)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, msg=name)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_in_and_out_equal_nn_lstm(bidirectional, fused, enforce_sorted):
    torch.manual_seed(1)
    ref = nn.LSTM(3, 4, 2, bidirectional=bidirectional, proj_size=2).to(D)
    ours = distlstm.LSTM(3, 4, 2, bidirectional=bidirectional, proj_size=2, fused=fused, dtype=D)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 4, 3, dtype=D)
    lengths = torch.tensor([6, 5, 3, 1]) if enforce_sorted else torch.tensor([2, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    h0 = torch.randn(2 * (1 + bidirectional), 4, 2, dtype=D)
    c0 = torch.randn(2 * (1 + bidirectional), 4, 4, dtype=D)
    out, (h, c) = ours(packed, (h0, c0))
    out_ref, (h_ref, c_ref) = ref(packed, (h0, c0))
    assert isinstance(out, PackedSequence)
    torch.testing.assert_close(out.data, out_ref.data)
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    for a, b in ((out.sorted_indices, out_ref.sorted_indices), (out.unsorted_indices, out_ref.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    y, _ = pad_packed_sequence(out)
    torch.testing.assert_close(y, pad_packed_sequence(out_ref)[0])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_bidirectional_reverse_direction_reads_each_sequence_backwards(name):
    """Direction 1 of a one-layer model is its reverse cell run on the flipped valid part."""
    torch.manual_seed(2)
    model = distlstm.LSTM(4, 6, bidirectional=True, batch_first=True, cell=name, dtype=D, **OPTIONS.get(name, {}))
    out = model.cells[0].output_size
    assert model.output_size == 2 * out
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 4, dtype=D)
    y, state = model(x, lengths=lengths)
    assert y.shape == (3, 5, 2 * out) and state[0].shape == (2, 3, out)
    fwd, rev = model.cells
    for b, m in enumerate(lengths.tolist()):
        seq = x[b : b + 1, :m]
        y_f, s_f = run_layer(fwd, seq, fwd.init_state(1))
        y_r, s_r = run_layer(rev, seq.flip(1), rev.init_state(1))
        torch.testing.assert_close(y[b, :m], torch.cat([y_f, y_r.flip(1)], -1)[0])
        assert torch.all(y[b, m:] == 0)
        for k in range(len(state)):
            torch.testing.assert_close(state[k][:, b], torch.stack([s_f[k][0], s_r[k][0]]))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_bidirectional_padded_batch_equals_each_sequence_alone(name):
    torch.manual_seed(3)
    model = distlstm.LSTM(4, 6, 2, bidirectional=True, batch_first=True, cell=name, dtype=D,
                          **OPTIONS.get(name, {}))
    lengths = torch.tensor([5, 1, 3])
    x = torch.randn(3, 5, 4, dtype=D)
    x[1, 1:] = 1e3  # garbage in the padding must not leak, in either direction
    y, state = model(x, lengths=lengths)
    for b, m in enumerate(lengths.tolist()):
        y_b, state_b = model(x[b : b + 1, :m])
        torch.testing.assert_close(y[b, :m], y_b[0])
        for s, s_b in zip(state, state_b, strict=True):
            torch.testing.assert_close(s[:, b], s_b[:, 0])


def test_bidirectional_state_dict_and_attributes_are_nn_lstms():
    ref = nn.LSTM(3, 6, 2, bidirectional=True, proj_size=2)
    ours = distlstm.LSTM(3, 6, 2, bidirectional=True, proj_size=2)
    assert list(ours.state_dict()) == [n for n, _ in ours.named_parameters()]
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert ours.bidirectional and ours.bias and ours.num_layers == 2 and ours.proj_size == 2
    assert ours.weight_ih_l1_reverse.shape == ref.weight_ih_l1_reverse.shape
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    assert ours._all_weights == ref._all_weights
    assert set(ours._flat_weights_names) == set(ref._flat_weights_names)
    assert {id(w) for w in ours._flat_weights} == {id(p) for p in ours.parameters()}
    ours.flatten_parameters()


def test_constructor_arguments_keep_nn_lstms_positions():
    ours = distlstm.LSTM(3, 4, 2, False, True, 0.25, True, 2)
    ref = nn.LSTM(3, 4, 2, False, True, 0.25, True, 2)
    for attr in ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    distlstm.LSTM(8, 32, num_layers=2, batch_first=True, bidirectional=False, dropout=0.1)  # the call


@pytest.mark.parametrize(("name", "layers", "bidirectional"),
                         [("lstmp", 2, False), ("peephole", 2, True), ("flstm", 1, False), ("rnn", 2, True)])
def test_parameter_order_is_each_cells_own_order(name, layers, bidirectional):
    """Flat θ (ES and online checkpoints) keeps the order it had: cell by cell, each cell's own order."""
    model = distlstm.LSTM(4, 6, layers, bidirectional=bidirectional, cell=name, **OPTIONS.get(name, {}))
    expected = []
    for k, c in enumerate(model.cells):
        layer, direction = divmod(k, 1 + bidirectional)
        size_in = 4 if layer == 0 else (1 + bidirectional) * c.output_size
        own = make_cell(name, size_in, 6, **OPTIONS.get(name, {}))
        expected += [f"{n}_l{layer}" + ("_reverse" if direction else "") for n, _ in own.named_parameters()]
    assert [n for n, _ in model.named_parameters()] == expected


def test_nested_parameter_names_equal_state_dict_keys():
    lm = CharLM(10, 8, 2, embedding_dim=4)
    assert [n for n, _ in lm.named_parameters()] == list(lm.state_dict())
    assert "rnn.weight_hh_l1" in lm.state_dict()


def test_torch_jit_script_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match=r"torch.jit.script .* use torch.jit.trace, torch.compile or torch.export"):
        torch.jit.script(distlstm.LSTM(3, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
@pytest.mark.parametrize("name", ["lstm", "glstm"])
def test_torch_jit_trace_and_export_match_eager(name):
    torch.manual_seed(4)
    model = distlstm.LSTM(4, 6, 2, batch_first=True, bidirectional=True, cell=name, **OPTIONS.get(name, {}))
    x = torch.randn(3, 5, 4)
    y, (h, _c) = model(x)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(model, (x,), check_trace=False)
    torch.testing.assert_close(traced(x)[0], y)
    exported = torch.export.export(model, (x,))
    assert set(exported.state_dict) == set(model.state_dict())
    y_e, (h_e, _) = exported.module()(x)
    torch.testing.assert_close(y_e, y)
    torch.testing.assert_close(h_e, h)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(5)
    model = distlstm.LSTM(4, 4, 2, batch_first=True, cell="glstm", groups=2, proj_size=2)
    x = torch.randn(2, 3, 4)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x)[0], model(x)[0])


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
def test_parametrizations_apply_as_on_nn_lstm(fused):
    """torch.nn.utils.parametrize moves a parameter out of the module's dict; the cells follow it."""
    from torch.nn.utils import parametrize

    torch.manual_seed(6)
    ref = nn.LSTM(3, 4, 2).to(D)
    ours = distlstm.LSTM(3, 4, 2, fused=fused, dtype=D)
    ours.load_state_dict(ref.state_dict())
    for model in (ref, ours):
        parametrize.register_parametrization(model, "weight_hh_l1", _Double())
    x = torch.randn(5, 2, 3, dtype=D)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
