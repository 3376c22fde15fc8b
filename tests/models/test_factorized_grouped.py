"""F-LSTM and G-LSTM (Kuchaiev & Ginsburg 2017) against their definitions and Table 1's counts."""

from __future__ import annotations

import pytest
import torch

import distlstm
from distlstm.models import FLSTMCell, GLSTMCell, LSTMCell, run_layer

D = torch.float64

# Table 1: p = 1024 (projection and embedding), n = 8192 cells, 2 layers, single bias per gate.
P, N, LAYERS = 1024, 8192, 2


def lstmp_count(inp: int, p: int, n: int) -> int:
    """LSTMP layer: W (4n × (inp + p)), b (4n), projection P (p × n)."""
    return 4 * n * (inp + p) + 4 * n + p * n


def flstm_count(inp: int, p: int, n: int, r: int) -> int:
    """F-LSTM layer: W1 (r × (inp + p)), W2 (4n × r), b (4n), P (p × n)."""
    return r * (inp + p) + 4 * n * r + 4 * n + p * n


def glstm_count(inp: int, p: int, n: int, k: int) -> int:
    """G-LSTM layer: k transforms T_j of (4n/k) × ((inp + p)/k), b (4n), one full P (p × n)."""
    return k * (4 * n // k) * ((inp + p) // k) + 4 * n + p * n


TABLE_1 = [  # (model, cell, options, count from the definitions, the table's literal)
    ("BIGLSTM", "lstmp", {}, LAYERS * lstmp_count(P, P, N), 151_060_480),
    ("F512", "flstm", {"rank": 512}, LAYERS * flstm_count(P, P, N, 512), 52_494_336),
    ("G-2", "glstm", {"groups": 2}, LAYERS * glstm_count(P, P, N, 2), 83_951_616),
    ("G-4", "glstm", {"groups": 4}, LAYERS * glstm_count(P, P, N, 4), 50_397_184),
    ("G-8", "glstm", {"groups": 8}, LAYERS * glstm_count(P, P, N, 8), 33_619_968),
]


@pytest.mark.parametrize(("model", "cell", "options", "formula", "literal"), TABLE_1, ids=[r[0] for r in TABLE_1])
def test_table_1_rnn_parameter_counts(model, cell, options, formula, literal):
    assert formula == literal, f"{model}: the paper's definitions give {formula}, the table says {literal}"
    rnn = distlstm.LSTM(P, N, LAYERS, proj_size=P, cell=cell, single_bias=True, device="meta", **options)
    assert sum(p.numel() for p in rnn.parameters()) == literal


def test_hierarchical_g4_g8_count():
    rnn = distlstm.LSTM(P, N, LAYERS, proj_size=P, cell="glstm", groups=(4, 8), single_bias=True, device="meta")
    assert [c.groups for c in rnn.cells] == [4, 8]
    expected = glstm_count(P, P, N, 4) + glstm_count(P, P, N, 8)
    assert expected == 50_397_184 // 2 + 33_619_968 // 2  # half of G-4 plus half of G-8
    assert sum(p.numel() for p in rnn.parameters()) == expected


def test_glstm_projection_is_one_full_matrix():
    cell = GLSTMCell(8, 12, groups=4, proj_size=4)
    assert cell.weight_hr is not None and cell.weight_hr.shape == (4, 12)


def block_diagonal_lstmp(gl: GLSTMCell) -> LSTMCell:
    """The LSTMP whose W_ih, W_hh, b are block-diagonal in the groups: what G-LSTM computes."""
    k, n, m = gl.groups, gl.hidden_size, gl.hidden_size // gl.groups
    ref = LSTMCell(gl.input_size, n, proj_size=gl.proj_size, single_bias=True, dtype=D)

    def block_diagonal(w: torch.Tensor) -> torch.Tensor:  # (k, 4m, a) → (4n, k·a), rows in gate order
        a = w.shape[-1]
        full = torch.zeros(4, k, m, k, a, dtype=w.dtype)
        for j in range(k):
            full[:, j, :, j, :] = w[j].view(4, m, a)
        return full.reshape(4 * n, k * a)

    with torch.no_grad():
        ref.weight_ih.copy_(block_diagonal(gl.weight_ih))
        ref.weight_hh.copy_(block_diagonal(gl.weight_hh))
        b = gl.combined_bias()
        assert b is not None and ref.bias_ih is not None
        ref.bias_ih.copy_(b.view(k, 4, m).transpose(0, 1).reshape(4 * n))
        if gl.weight_hr is not None:
            assert ref.weight_hr is not None
            ref.weight_hr.copy_(gl.weight_hr)
    return ref


@pytest.mark.parametrize("single_bias", [False, True])
@pytest.mark.parametrize(("k", "proj"), [(1, 0), (1, 3), (3, 0), (3, 3)])
def test_glstm_equals_lstmp_with_block_diagonal_gate_matrix(k, proj, single_bias):
    torch.manual_seed(0)
    gl = GLSTMCell(6, 9, groups=k, proj_size=proj, single_bias=single_bias, dtype=D)
    ref = block_diagonal_lstmp(gl)
    x = torch.randn(2, 5, 6, dtype=D)
    state = (torch.randn(2, proj or 9, dtype=D), torch.randn(2, 9, dtype=D))
    y, (_, c) = run_layer(gl, x, gl.make_state(list(state)))
    y_ref, (_, c_ref) = run_layer(ref, x, ref.make_state(list(state)))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(c, c_ref)


def test_glstm_without_projection_is_k_separate_lstms():
    torch.manual_seed(1)
    k, i, n = 3, 6, 9
    gl = GLSTMCell(i, n, groups=k, dtype=D)
    x = torch.randn(2, 5, i, dtype=D)
    parts = []
    for j in range(k):
        sub = LSTMCell(i // k, n // k, dtype=D)
        sub.load_state_dict({name: v[j] for name, v in gl.state_dict().items()})
        parts.append(run_layer(sub, x[..., j * 2 : (j + 1) * 2], sub.init_state(2))[0])
    torch.testing.assert_close(run_layer(gl, x, gl.init_state(2))[0], torch.cat(parts, -1))


@pytest.mark.parametrize("j", [0, 2, 3])
def test_changing_one_groups_input_leaves_other_groups_preactivations(j):
    torch.manual_seed(2)
    k, i, n, p = 4, 8, 12, 4
    gl = GLSTMCell(i, n, groups=k, proj_size=p, dtype=D)
    x, h, c = torch.randn(3, i, dtype=D), torch.randn(3, p, dtype=D), torch.randn(3, n, dtype=D)
    x2, h2 = x.clone(), h.clone()
    x2[:, j * (i // k) : (j + 1) * (i // k)] += 1.0
    h2[:, j * (p // k) : (j + 1) * (p // k)] -= 1.0
    a, a2 = gl.gate_preactivations(x, h), gl.gate_preactivations(x2, h2)
    assert a.shape == (3, k, 4 * n // k)
    others = [g for g in range(k) if g != j]
    assert torch.equal(a[:, others], a2[:, others])
    assert not torch.allclose(a[:, j], a2[:, j])
    # the same seen from outside: only group j's memory c^j changes
    _, (_, c_new) = gl(x, (h, c))
    _, (_, c_new2) = gl(x2, (h2, c))
    changed = (c_new != c_new2).view(3, k, n // k).any(-1).any(0)
    assert changed.tolist() == [g == j for g in range(k)]


@pytest.mark.parametrize("single_bias", [False, True])
@pytest.mark.parametrize("proj", [0, 3])
def test_flstm_with_full_rank_represents_any_lstmp(proj, single_bias):
    """Factor W = [W_ih | W_hh] exactly as W2·W1 (QR), copy b and P: the F-LSTM is that LSTMP."""
    torch.manual_seed(3)
    i, n = 4, 6
    out = proj or n
    lstm = LSTMCell(i, n, proj_size=proj, single_bias=single_bias, dtype=D)
    fl = FLSTMCell(i, n, rank=i + out, proj_size=proj, single_bias=single_bias, dtype=D)
    w2, w1 = torch.linalg.qr(torch.cat([lstm.weight_ih, lstm.weight_hh], 1))
    fl.load_state_dict({**lstm.state_dict(), "weight_1": w1, "weight_2": w2}, strict=False)
    assert set(fl.state_dict()) == set(lstm.state_dict()) - {"weight_ih", "weight_hh"} | {"weight_1", "weight_2"}
    x = torch.randn(3, 5, i, dtype=D)
    state = [torch.randn(3, out, dtype=D), torch.randn(3, n, dtype=D)]
    y_f, s_f = run_layer(fl, x, fl.make_state(state))
    y_l, s_l = run_layer(lstm, x, lstm.make_state(state))
    torch.testing.assert_close(y_f, y_l)
    torch.testing.assert_close(s_f.c, s_l.c)


def test_flstm_loads_the_old_single_bias_key():
    """State dicts from before the common bias rule held one ``bias``: it loads as b."""
    torch.manual_seed(4)
    old = FLSTMCell(3, 4, rank=2, dtype=D)
    sd = {k: v for k, v in old.state_dict().items() if not k.startswith("bias_")}
    b = torch.randn(16, dtype=D)
    new = FLSTMCell(3, 4, rank=2, dtype=D)
    new.load_state_dict({**sd, "bias": b})
    torch.testing.assert_close(new.combined_bias(), b)
    rnn = distlstm.LSTM(3, 4, cell="flstm", rank=2, single_bias=True, dtype=D)
    rnn.load_state_dict({f"{k}_l0": v for k, v in {**sd, "bias": b}.items()})
    torch.testing.assert_close(rnn.cells[0].bias_ih, b)
