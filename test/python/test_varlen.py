"""attnc.varlen_attention: packed variable-length sequences (cu_seqlens) on
the document-mask path, against each sequence computed on its own in
float64 PyTorch: outputs, LSE and gradients, empty sequences, sequences
without keys, user mods on sequence-relative positions, GQA, and no new
trace or kernel when the lengths change."""

import math

import pytest

torch = pytest.importorskip("torch")

import attnc  # noqa: E402
from attnc import _trace  # noqa: E402
from conftest import requires_compiler  # noqa: E402

pytestmark = requires_compiler


def relative_error(got, want):
    got, want = got.detach().double(), want.detach().double()
    if not bool(torch.isfinite(got).all()):
        return math.inf
    norm = float(want.norm())
    return float((got - want).norm()) / (norm if norm > 0 else 1.0)


def reference(q, k, v, cu_q, cu_k, causal, score_mod=None, mask_mod=None,
              scale=None):
    """Each sequence on its own, float64: (out [Tq, Hq, Ev], lse [Hq, Tq])."""
    total_q, heads, dim = q.shape
    group = heads // k.shape[1]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    out = torch.zeros(total_q, heads, v.shape[2], dtype=torch.float64)
    lse = torch.full((heads, total_q), -math.inf, dtype=torch.float64)
    outs, lses = [], []
    for i in range(len(cu_q) - 1):
        a, b = int(cu_q[i]), int(cu_q[i + 1])
        c, d = int(cu_k[i]), int(cu_k[i + 1])
        if a == b:
            continue
        qs = q[a:b].double().transpose(0, 1)
        ks = k[c:d].double().transpose(0, 1).repeat_interleave(group, 0)
        vs = v[c:d].double().transpose(0, 1).repeat_interleave(group, 0)
        s = qs @ ks.transpose(-1, -2) * scale
        h = torch.arange(heads)[:, None, None]
        m = torch.arange(b - a)[None, :, None]
        n = torch.arange(d - c)[None, None, :]
        if score_mod is not None:
            s = score_mod(s, torch.tensor(i), h, m, n)
        keep = torch.ones_like(s, dtype=torch.bool)
        if causal:
            keep = keep & (n - (d - c) <= m - (b - a))
        if mask_mod is not None:
            keep = keep & mask_mod(torch.tensor(i), h, m, n)
        s = s.masked_fill(~keep, -math.inf)
        row_lse = torch.logsumexp(s, -1)
        p = torch.exp(s - row_lse[..., None]).nan_to_num(0.0)
        outs.append(((a, b), (p @ vs).transpose(0, 1), row_lse))
    for (a, b), o, row_lse in outs:
        out[a:b] = o
        lse[:, a:b] = row_lse
    return out, lse


def packed(lengths_q, lengths_k, heads, kv_heads, dim, seed, grad=False):
    generator = torch.Generator().manual_seed(seed)
    cu_q = torch.tensor([0] + list(lengths_q), dtype=torch.int32).cumsum(0)
    cu_k = torch.tensor([0] + list(lengths_k), dtype=torch.int32).cumsum(0)
    tensors = [torch.randn(int(cu[-1]), h, dim, generator=generator)
               .requires_grad_(grad)
               for cu, h in ((cu_q, heads), (cu_k, kv_heads),
                             (cu_k, kv_heads))]
    return tensors, cu_q.to(torch.int32), cu_k.to(torch.int32)


@pytest.mark.parametrize("causal", [False, True])
def test_shared_offsets_with_an_empty_sequence(causal):
    (q, k, v), cu, _ = packed([5, 0, 65, 1, 79], [5, 0, 65, 1, 79], 2, 2,
                              16, 1)
    out, lse = attnc.varlen_attention(q, k, v, cu, causal=causal,
                                      return_lse=True)
    want_out, want_lse = reference(q, k, v, cu, cu, causal)
    assert out.shape == (150, 2, 16) and lse.shape == (2, 150)
    assert relative_error(out, want_out) <= 1e-5
    assert relative_error(lse, want_lse) <= 1e-5


def test_separate_key_offsets_and_sequences_without_keys():
    # Sequence 2 has queries but no keys: zeros and LSE -inf; sequence 1
    # has more keys than queries (causal aligns the ends).
    (q, k, v), cu_q, cu_k = packed([3, 9, 7, 0, 20], [7, 30, 0, 4, 11], 4,
                                   2, 8, 2)
    out, lse = attnc.varlen_attention(q, k, v, cu_q, cu_k, causal=True,
                                      enable_gqa=True, return_lse=True)
    want_out, want_lse = reference(q, k, v, cu_q, cu_k, True)
    assert relative_error(out, want_out) <= 1e-5
    assert bool((out[12:19] == 0).all())
    assert bool(torch.isinf(lse[:, 12:19]).all())
    finite = torch.isfinite(want_lse)
    assert relative_error(lse[finite], want_lse[finite]) <= 1e-5


def test_mods_see_sequence_relative_positions():
    bias = torch.randn(4)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[b] - 0.1 * (q_idx - kv_idx)

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx < 4) & (kv_idx >= 1)
    (q, k, v), cu_q, cu_k = packed([6, 40, 1, 17], [9, 40, 2, 17], 2, 2,
                                   24, 3)
    out = attnc.varlen_attention(q, k, v, cu_q, cu_k, score_mod=score_mod,
                                 mask_mod=mask_mod, causal=True)
    want, _ = reference(q, k, v, cu_q, cu_k, True, score_mod, mask_mod)
    assert relative_error(out, want) <= 1e-5


def test_gradients_match_each_sequence_on_its_own():
    (q, k, v), cu_q, cu_k = packed([7, 0, 33, 12], [9, 5, 33, 1], 2, 1, 16,
                                   4, grad=True)
    out = attnc.varlen_attention(q, k, v, cu_q, cu_k, causal=True,
                                 enable_gqa=True)
    adjoint = torch.randn(out.shape, generator=torch.Generator()
                          .manual_seed(5))
    (out * adjoint).sum().backward()
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    want, _ = reference(*leaves, cu_q, cu_k, True)
    (want * adjoint.double()).sum().backward()
    for got, expected in zip((q, k, v), leaves):
        assert relative_error(got.grad, expected.grad) <= 1e-4


def test_new_lengths_reuse_the_trace_and_the_kernel():
    (q, k, v), cu, _ = packed([10, 20, 30], [10, 20, 30], 2, 2, 16, 6)
    attnc.varlen_attention(q, k, v, cu, causal=True)
    traces = _trace.STATS["traces"]
    kernels = len(attnc._flex._KERNELS)
    for lengths in ([60], [1, 1, 58], [25, 0, 35, 0]):
        (q, k, v), cu, _ = packed(lengths, lengths, 2, 2, 16, 7)
        out = attnc.varlen_attention(q, k, v, cu, causal=True)
        want, _ = reference(q, k, v, cu, cu, True)
        assert relative_error(out, want) <= 1e-5
    assert _trace.STATS["traces"] == traces
    assert len(attnc._flex._KERNELS) == kernels


def test_numpy_inputs():
    (q, k, v), cu, _ = packed([4, 11], [4, 11], 2, 2, 8, 8)
    out = attnc.varlen_attention(q.numpy(), k.numpy(), v.numpy(),
                                 cu.numpy(), causal=True)
    want, _ = reference(q, k, v, cu, cu, True)
    assert out.shape == (15, 2, 8)
    assert relative_error(torch.from_numpy(out.copy()), want) <= 1e-5


@pytest.mark.parametrize("cu, message", [
    ([1, 5, 15], r"cu_seqlens_q must run from 0 to the number of packed "
                 r"tokens \(15\), got 1 \.\. 15"),
    ([0, 5, 14], r"got 0 \.\. 14"),
    ([0, 9, 5, 15], r"cu_seqlens_q must be non-decreasing"),
    ([0], r"cu_seqlens_q must be 1-D with at least 2 entries"),
])
def test_bad_offsets_are_clear_errors(cu, message):
    (q, k, v), _, _ = packed([15], [15], 1, 1, 8, 9)
    with pytest.raises(ValueError, match=message):
        attnc.varlen_attention(q, k, v, torch.tensor(cu, dtype=torch.int32))


def test_bad_shapes_are_clear_errors():
    (q, k, v), cu, _ = packed([15], [15], 1, 1, 8, 10)
    with pytest.raises(ValueError, match=r"query must have rank 3 "
                       r"\[total_q, Hq, E\], got shape \(1, 15, 1, 8\)"):
        attnc.varlen_attention(q[None], k, v, cu)
    with pytest.raises(TypeError, match=r"cu_seqlens_q must hold integers"):
        attnc.varlen_attention(q, k, v, cu.float())
    with pytest.raises(ValueError, match=r"query has 15 tokens and key 14"):
        attnc.varlen_attention(q, k[:14], v[:14], cu)
    with pytest.raises(ValueError, match=r"cu_seqlens_q has 1 sequences, "
                       r"cu_seqlens_k 2"):
        attnc.varlen_attention(q, k, v, cu, torch.tensor([0, 5, 15]))
