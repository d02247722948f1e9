"""attnc in PyTorch autograd: flex_attention and compiled kernels called on
tensors that require grad record a node whose backward runs the kernel's
adjoint. On the CPU the gradients loss.backward() leaves are checked against
the float64 reference's (kernel.reference_vjp) and, for softmax and
softplus attention, against the same attention written in plain PyTorch
autograd (float64). The recording machinery itself (custom operators or
autograd.Function, torch.compile), for CPU kernels and for GPU kernels with
their gradient packages, is also checked on kernels written in PyTorch,
which need no compiler or GPU."""

import math
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import attnc  # noqa: E402
from attnc import _autograd  # noqa: E402
from attnc._runtime import GpuKernel, Kernel  # noqa: E402
from attnc._spec import CompileError, CpuKernel  # noqa: E402
from conftest import EXAMPLES, ROOT, requires_compiler  # noqa: E402

TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2

HAS_CUSTOM_OPS = _autograd._has_custom_ops(torch)


def relative_error(got, want):
    """||got - want|| / ||want|| in float64 (||got|| for a zero reference);
    infinite for NaN or infinity anywhere."""
    got = np.asarray(_numpy(got), dtype=np.float64).ravel()
    want = np.asarray(_numpy(want), dtype=np.float64).ravel()
    if got.shape != want.shape:
        return math.inf
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return math.inf
    norm = float(np.sum(want ** 2))
    diff = float(np.sum((got - want) ** 2))
    return math.sqrt(diff / norm) if norm > 0 else math.sqrt(diff)


def _numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return x


def leaf(shape, generator, dtype=torch.float32, scale=1.0):
    """A random N(0, scale^2) leaf tensor that requires grad."""
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
    return x.to(dtype).requires_grad_()


def float64_copy(x):
    """A float64 leaf with x's values (a peer's own copy)."""
    return x.detach().to(torch.float64).requires_grad_(x.requires_grad)


# ------------------------------------------------- the peers of attnc

def torch_attention(q, k, v, score_mod=None, mask_mod=None, scale=None,
                    normalizer="softmax"):
    """Attention in plain PyTorch autograd, as FlexAttention defines it:
    scores q . k * scale, score_mod(score, b, h, q_idx, kv_idx) and
    mask_mod(b, h, q_idx, kv_idx) evaluated on broadcast index grids, masked
    scores -inf; `normalizer` "softmax" or "softplus" (softplus(S) / its row
    sum). K and V with fewer heads are shared by groups of query heads. A
    row that keeps no key gets output 0 and LSE -inf, with zero gradients.
    Returns (out, lse)."""
    B, Hq, L, E = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if Hkv != Hq:
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    scores = torch.einsum("bhmd,bhnd->bhmn", q, k) * scale
    b = torch.arange(B).view(B, 1, 1, 1)
    h = torch.arange(Hq).view(1, Hq, 1, 1)
    m = torch.arange(L).view(1, 1, L, 1)
    n = torch.arange(S).view(1, 1, 1, S)
    if score_mod is not None:
        scores = score_mod(scores, b, h, m, n)
    keep = torch.ones(B, Hq, L, S, dtype=torch.bool)
    if mask_mod is not None:
        keep = keep & mask_mod(b, h, m, n)
    live = keep.any(dim=-1, keepdim=True)
    if normalizer == "softmax":
        masked = scores.masked_fill(~keep, -math.inf).masked_fill(~live, 0.0)
        p = torch.softmax(masked, dim=-1) * live
        lse = torch.logsumexp(masked, dim=-1).masked_fill(~live[..., 0],
                                                          -math.inf)
    else:
        weights = torch.nn.functional.softplus(scores) * keep
        total = weights.sum(dim=-1, keepdim=True)
        p = weights / torch.where(live, total, torch.ones_like(total))
        lse = None
    return torch.einsum("bhmn,bhne->bhme", p, v), lse


def flex_reference(score_mod, mask_mod, q, k, v, grad_out, grad_lse=None,
                   scale=None, gqa=False):
    """The float64 reference gradients of the kernel flex_attention compiles
    for these mods: (dq, dk, dv, one per captured tensor), float64 NumPy
    arrays (None for integer captures). q, k, v of any float dtype are taken
    at their values."""
    captures = []
    attnc.trace(score_mod, mask_mod, captures=captures)
    _, kernel = attnc._flex.prepare(score_mod, mask_mod, gqa=gqa,
                                    return_lse=grad_lse is not None)
    inputs = [x.detach().to(torch.float32).numpy() for x in (q, k, v)]
    for t in captures:
        floating = t.is_floating_point()
        inputs.append(t.detach().to(torch.float32 if floating else
                                    torch.int32).numpy())
    adjoints = [_numpy(grad_out)]
    if grad_lse is not None:
        adjoints.append(_numpy(grad_lse))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return kernel.reference_vjp(*inputs, grad_outputs=tuple(adjoints),
                                scale=scale)


# ------------------------------------------------------------ the mods

def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx <= 7)


def softcap(score, b, h, q_idx, kv_idx):
    return 2.0 * torch.tanh(score / 2.0)


def document_ids(B, S):
    """int64 [B, S]: each row packs documents of different lengths."""
    rows = []
    for b in range(B):
        lengths = [5 + 3 * b, 11, S]
        ids = []
        for doc, length in enumerate(lengths):
            ids += [doc] * length
        rows.append(ids[:S])
    return torch.tensor(rows, dtype=torch.int64)


def make_case(name, generator):
    """(score_mod, mask_mod, sizes, captured leaves that require grad, gqa)
    of one flex case; sizes (B, Hq, Hkv, L, S, E) are no tile's multiple."""
    sizes = (2, 2, 2, 37, 53, 16)
    if name == "causal":
        return None, causal, sizes, [], False
    if name == "sliding_window":
        return None, sliding_window, sizes, [], False
    if name == "softcap":
        return softcap, causal, (1, 2, 2, 21, 30, 16), [], False
    if name == "gqa":
        return None, causal, (1, 6, 2, 37, 37, 16), [], True
    if name == "document":
        doc = document_ids(2, 41)

        def document(b, h, q_idx, kv_idx):
            return (doc[b, q_idx] == doc[b, kv_idx]) & (q_idx >= kv_idx)
        return None, document, (2, 2, 2, 41, 41, 16), [], False
    if name == "alibi":
        slopes = leaf((2,), generator, scale=0.5)

        def alibi(score, b, h, q_idx, kv_idx):
            return score + slopes[h] * (kv_idx - q_idx)
        return alibi, causal, sizes, [slopes], False
    if name == "key_bias":
        bias = leaf((2, 53), generator)

        def key_bias(score, b, h, q_idx, kv_idx):
            return score + bias[h, kv_idx]
        return key_bias, None, sizes, [bias], False
    raise KeyError(name)


FLEX_CASES = ["causal", "sliding_window", "document", "alibi", "key_bias",
              "softcap", "gqa"]


@requires_compiler
@pytest.mark.parametrize("name", FLEX_CASES)
def test_flex_gradients_match_reference_and_torch(name):
    generator = torch.Generator().manual_seed(FLEX_CASES.index(name))
    score_mod, mask_mod, sizes, captured, gqa = make_case(name, generator)
    B, Hq, Hkv, L, S, E = sizes
    q = leaf((B, Hq, L, E), generator)
    k = leaf((B, Hkv, S, E), generator)
    v = leaf((B, Hkv, S, E), generator)
    grad_out = torch.randn(B, Hq, L, E, generator=generator)
    block_mask = (attnc.create_block_mask(mask_mod, None, None, L, S)
                  if mask_mod is not None else None)
    out = attnc.flex_attention(q, k, v, score_mod=score_mod,
                               block_mask=block_mask, enable_gqa=gqa)
    assert out.requires_grad and out.dtype == torch.float32
    (out * grad_out).sum().backward()
    got = [q.grad, k.grad, v.grad] + [t.grad for t in captured]
    assert all(g is not None and g.dtype == torch.float32 for g in got)

    reference = flex_reference(score_mod, mask_mod, q, k, v, grad_out,
                               gqa=gqa)
    want = list(reference[:3]) + [r for r in reference[3:] if r is not None]
    assert len(want) == len(got)
    for label, g, r in zip(["dq", "dk", "dv", "dcapture"], got, want):
        assert relative_error(g, r) <= TOLERANCE, (label, relative_error(g, r))

    # The peer: the same attention in plain PyTorch, float64, with its own
    # copies of the captured tensors the mods read.
    leaves = [float64_copy(x) for x in (q, k, v)]
    peer_score, peer_mask, peer_captured = score_mod, mask_mod, []
    if captured:
        copy = float64_copy(captured[0])
        peer_captured = [copy]
        if name == "alibi":
            def peer_score(score, b, h, q_idx, kv_idx):
                return score + copy[h] * (kv_idx - q_idx)
        else:
            def peer_score(score, b, h, q_idx, kv_idx):
                return score + copy[h, kv_idx]
    peer_out, _ = torch_attention(*leaves, peer_score, peer_mask)
    (peer_out * grad_out.double()).sum().backward()
    assert relative_error(out, peer_out) <= TOLERANCE
    peer = [x.grad for x in leaves] + [t.grad for t in peer_captured]
    for label, g, p in zip(["dq", "dk", "dv", "dcapture"], got, peer):
        assert relative_error(g, p) <= TOLERANCE, (label, relative_error(g, p))


@requires_compiler
def test_integer_captures_get_no_gradient():
    generator = torch.Generator().manual_seed(11)
    doc = document_ids(1, 12)

    def document(b, h, q_idx, kv_idx):
        return doc[b, q_idx] == doc[b, kv_idx]
    q, k, v = (leaf((1, 2, 12, 8), generator) for _ in range(3))
    mask = attnc.create_block_mask(document, None, None, 12, 12)
    attnc.flex_attention(q, k, v, block_mask=mask).sum().backward()
    assert doc.grad is None and not doc.requires_grad
    assert q.grad is not None


@requires_compiler
def test_lse_takes_a_gradient():
    # Every row keeps a key (L <= S), so that LSE is finite.
    generator = torch.Generator().manual_seed(12)
    B, H, L, S, E = 1, 2, 29, 45, 16
    q, k, v = (leaf((B, H, n, E), generator) for n in (L, S, S))
    grad_out = torch.randn(B, H, L, E, generator=generator)
    grad_lse = torch.randn(B, H, L, generator=generator)
    out, lse = attnc.flex_attention(q, k, v, return_lse=True)
    assert lse.requires_grad and lse.dtype == torch.float32
    ((out * grad_out).sum() + (lse * grad_lse).sum()).backward()
    reference = flex_reference(None, None, q, k, v, grad_out, grad_lse)
    leaves = [float64_copy(x) for x in (q, k, v)]
    peer_out, peer_lse = torch_attention(*leaves)
    ((peer_out * grad_out.double()).sum() +
     (peer_lse * grad_lse.double()).sum()).backward()
    assert relative_error(lse, peer_lse) <= TOLERANCE
    for x, r, p in zip((q, k, v), reference, leaves):
        assert relative_error(x.grad, r) <= TOLERANCE
        assert relative_error(x.grad, p.grad) <= TOLERANCE


@requires_compiler
def test_loss_on_the_lse_alone():
    # The output takes no adjoint (autograd passes None, a zero adjoint).
    generator = torch.Generator().manual_seed(13)
    q, k, v = (leaf((1, 2, 17, 8), generator) for _ in range(3))
    _, lse = attnc.flex_attention(q, k, v, return_lse=True)
    lse.sum().backward()
    reference = flex_reference(None, None, q, k, v, torch.zeros(1, 2, 17, 8),
                               torch.ones(1, 2, 17))
    for x, r in zip((q, k, v), reference):
        assert relative_error(x.grad, r) <= TOLERANCE
    # dv: the LSE does not depend on V.
    assert torch.all(v.grad == 0)


@requires_compiler
def test_fully_masked_rows_have_zero_gradients():
    # Queries 0..4 keep no key: output 0, gradient 0, no NaN anywhere.
    def late(b, h, q_idx, kv_idx):
        return kv_idx < q_idx - 4

    generator = torch.Generator().manual_seed(14)
    q, k, v = (leaf((1, 2, 23, 8), generator) for _ in range(3))
    grad_out = torch.randn(1, 2, 23, 8, generator=generator)
    mask = attnc.create_block_mask(late, None, None, 23, 23)
    out = attnc.flex_attention(q, k, v, block_mask=mask)
    (out * grad_out).sum().backward()
    assert torch.all(out[:, :, :5] == 0)
    assert torch.all(q.grad[:, :, :5] == 0)
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    reference = flex_reference(None, late, q, k, v, grad_out)
    leaves = [float64_copy(x) for x in (q, k, v)]
    peer_out, _ = torch_attention(*leaves, mask_mod=late)
    (peer_out * grad_out.double()).sum().backward()
    for x, r, p in zip((q, k, v), reference, leaves):
        assert relative_error(x.grad, r) <= TOLERANCE
        assert relative_error(x.grad, p.grad) <= TOLERANCE


@requires_compiler
def test_bf16_inputs():
    generator = torch.Generator().manual_seed(15)
    q, k, v = (leaf((1, 2, 33, 16), generator, dtype=torch.bfloat16)
               for _ in range(3))
    grad_out = torch.randn(1, 2, 33, 16, generator=generator)
    mask = attnc.create_block_mask(causal, None, None, 33, 33)
    out = attnc.flex_attention(q, k, v, block_mask=mask)
    assert out.dtype == torch.bfloat16
    (out.float() * grad_out).sum().backward()
    reference = flex_reference(None, causal, q, k, v, grad_out)
    for x, r in zip((q, k, v), reference):
        assert x.grad.dtype == torch.bfloat16
        assert relative_error(x.grad, r) <= BF16_TOLERANCE


@requires_compiler
def test_float64_inputs_against_the_float64_reference():
    # float64 is computed in float32: the gradients are float64 tensors
    # within float32 accuracy of the float64 reference.
    generator = torch.Generator().manual_seed(16)
    q, k, v = (leaf((1, 2, 9, 4), generator, dtype=torch.float64)
               for _ in range(3))
    grad_out = torch.randn(1, 2, 9, 4, generator=generator,
                           dtype=torch.float64)
    out = attnc.flex_attention(q, k, v, score_mod=softcap)
    assert out.dtype == torch.float64
    (out * grad_out).sum().backward()
    reference = flex_reference(softcap, None, q, k, v, grad_out)
    for x, r in zip((q, k, v), reference):
        assert x.grad.dtype == torch.float64
        assert relative_error(x.grad, r) <= TOLERANCE


@requires_compiler
def test_gradcheck_at_float32_accuracy():
    # gradcheck's finite differences of a float32 computation: a step of
    # 1e-3 and tolerances float32 rounding allows.
    generator = torch.Generator().manual_seed(17)
    q, k, v = (leaf((1, 1, 4, 3), generator, dtype=torch.float64)
               for _ in range(3))
    slopes = leaf((1,), generator, dtype=torch.float64)

    def attention(q, k, v, slopes):
        def alibi(score, b, h, q_idx, kv_idx):
            return score + slopes[h] * (kv_idx - q_idx)
        mask = attnc.create_block_mask(causal, None, None, 4, 4)
        return attnc.flex_attention(q, k, v, score_mod=alibi,
                                    block_mask=mask)

    assert torch.autograd.gradcheck(attention, (q, k, v, slopes), eps=1e-3,
                                    atol=2e-3, rtol=2e-3)


@requires_compiler
def test_no_keys_or_no_queries_give_zero_gradients():
    generator = torch.Generator().manual_seed(18)
    for L, S in ((5, 0), (0, 5)):
        q = leaf((1, 2, L, 8), generator)
        k, v = (leaf((1, 2, S, 8), generator) for _ in range(2))
        out, lse = attnc.flex_attention(q, k, v, return_lse=True)
        assert out.requires_grad
        out.sum().backward()
        for x in (q, k, v):
            assert x.grad is not None and torch.all(x.grad == 0)


@requires_compiler
def test_no_grad_and_detached_calls_record_nothing():
    generator = torch.Generator().manual_seed(19)
    q, k, v = (leaf((1, 2, 7, 8), generator) for _ in range(3))
    with torch.no_grad():
        out = attnc.flex_attention(q, k, v)
    assert not out.requires_grad and out.grad_fn is None
    plain = attnc.flex_attention(q.detach(), k.detach(), v.detach())
    assert plain.grad_fn is None
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


# ------------------------------------------------- compiled kernels

_KERNELS = {}


def compiled(name, dtype="f32"):
    key = (name, dtype)
    if key not in _KERNELS:
        _KERNELS[key] = attnc.compile(EXAMPLES / (name + ".attn"),
                                      dtype=dtype)
    return _KERNELS[key]


@requires_compiler
def test_compiled_kernel_float_inputs_get_gradients():
    # alibi.attn: Q, K, V and the float input Slopes.
    kernel = compiled("alibi")
    generator = torch.Generator().manual_seed(20)
    Q = leaf((1, 2, 37, 24), generator)
    K, V = (leaf((1, 2, 53, 24), generator) for _ in range(2))
    slopes = leaf((2,), generator, scale=0.3)
    out = kernel(Q, K, V, slopes)
    grad_out = torch.randn(out.shape, generator=generator)
    (out * grad_out).sum().backward()
    reference = kernel.reference_vjp(
        *[x.detach().numpy() for x in (Q, K, V, slopes)],
        grad_outputs=(grad_out.numpy(),))
    for x, r in zip((Q, K, V, slopes), reference):
        assert relative_error(x.grad, r) <= TOLERANCE
    # The adjoint kernel is compiled once and reused by later backwards.
    compile_ms = kernel.grad_compile_ms
    assert kernel.grad_path in ("fused", "unfused", "halide") and compile_ms > 0
    for x in (Q, K, V, slopes):
        x.grad = None
    (kernel(Q, K, V, slopes) * grad_out).sum().backward()
    assert kernel.grad_compile_ms == compile_ms
    assert relative_error(Q.grad, reference[0]) <= TOLERANCE


@requires_compiler
def test_compiled_kernel_two_outputs_inputs_by_name():
    kernel = compiled("lse_output")
    generator = torch.Generator().manual_seed(21)
    Q = leaf((1, 2, 19, 16), generator)
    K = leaf((1, 2, 33, 16), generator)
    V = torch.randn(1, 2, 33, 16, generator=generator)  # no gradient
    out, lse = kernel(Q=Q, K=K, V=V)
    grad_out = torch.randn(out.shape, generator=generator)
    grad_lse = torch.randn(lse.shape, generator=generator)
    ((out * grad_out).sum() + (lse * grad_lse).sum()).backward()
    reference = kernel.reference_vjp(
        *[x.detach().numpy() for x in (Q, K, V)],
        grad_outputs=(grad_out.numpy(), grad_lse.numpy()))
    assert relative_error(Q.grad, reference[0]) <= TOLERANCE
    assert relative_error(K.grad, reference[1]) <= TOLERANCE
    assert V.grad is None


@requires_compiler
def test_compiled_softplus_against_torch():
    # softplus.attn: P = normalize[n](softplus(S)), causal aligned to the
    # end of the keys.
    kernel = compiled("softplus")
    generator = torch.Generator().manual_seed(22)
    M, N = 29, 37
    Q = leaf((1, 2, M, 16), generator)
    K, V = (leaf((1, 2, N, 16), generator) for _ in range(2))
    out = kernel(Q, K, V)
    grad_out = torch.randn(out.shape, generator=generator)
    (out * grad_out).sum().backward()

    def aligned_causal(b, h, m, n):
        return n <= m + (N - M)
    leaves = [float64_copy(x) for x in (Q, K, V)]
    peer_out, _ = torch_attention(*leaves, mask_mod=aligned_causal,
                                  normalizer="softplus")
    (peer_out * grad_out.double()).sum().backward()
    assert relative_error(out, peer_out) <= TOLERANCE
    for x, p in zip((Q, K, V), leaves):
        assert relative_error(x.grad, p.grad) <= TOLERANCE


@requires_compiler
def test_param_that_requires_grad_is_an_error():
    kernel = compiled("softcap")
    generator = torch.Generator().manual_seed(23)
    Q, K, V = (leaf((1, 1, 5, 8), generator) for _ in range(3))
    cap = torch.tensor(2.0, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"'cap' of kernel 'softcap' "
                       r"requires grad, but params .* get no gradient"):
        kernel(Q, K, V, cap=cap)
    # A detached tensor or a number is a constant.
    kernel(Q, K, V, cap=cap.detach())
    scale = torch.tensor(0.3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"flex_attention: scale requires "
                       r"grad, but it is a constant that gets no gradient"):
        attnc.flex_attention(Q, K, V, scale=scale)
    attnc.flex_attention(Q, K, V, scale=scale.detach())


# --------------------------- the recording machinery, without a compiler

class TorchKernel(CpuKernel):
    """A CPU kernel written in PyTorch with the signature

        in Q: f32[B, H, M, D], K: f32[B, H, N, D], V: f32[B, H, N, D],
        in Bias: f32[H], Ids: i32[B, N]; param scale: f32 = 0.5
        out O: f32[B, H, M, D], LSE: f32[B, H, M]

    (softmax of q . k * scale + Bias[h], keys with Ids[b, n] < 0 masked),
    and a vjp from PyTorch's float64 autograd: it stands for a compiled
    kernel where the recording of calls is what is checked."""

    def __init__(self, fail_to_differentiate=False):
        Kernel.__init__(
            self, "torch_kernel", "cpu",
            [(name, None) for name in "BHMND"],
            [("Q", "f32", ["B", "H", "M", "D"]),
             ("K", "f32", ["B", "H", "N", "D"]),
             ("V", "f32", ["B", "H", "N", "D"]),
             ("Bias", "f32", ["H"]), ("Ids", "i32", ["B", "N"])],
            [("scale", "f32", 0.5)],
            [("O", "f32", ["B", "H", "M", "D"]),
             ("LSE", "f32", ["B", "H", "M"])])
        self.fail_to_differentiate = fail_to_differentiate
        self.runs = 0
        self.vjps = 0
        _autograd.register(self)

    @staticmethod
    def compute(q, k, v, bias, ids, scale):
        s = torch.einsum("bhmd,bhnd->bhmn", q, k) * scale
        s = s + bias.view(1, -1, 1, 1)
        s = s.masked_fill((ids < 0)[:, None, None, :], -math.inf)
        return (torch.einsum("bhmn,bhnd->bhmd", torch.softmax(s, -1), v),
                torch.logsumexp(s, -1))

    def _run(self, args, kwargs):
        inputs, params, _ = self._bind_call(list(args), dict(kwargs))
        self.runs += 1
        for x, (name, dtype, _) in zip(inputs, self._input_specs):
            self._check_dtype(name, attnc._runtime.dtype_of(x), dtype)
        inputs = [x.detach() for x in inputs]
        return tuple(o.contiguous() for o in self.compute(*inputs, params[0]))

    def _prepare_gradient(self, needed=None):
        if self.fail_to_differentiate:
            raise CompileError("<string>:3:5: error: attn-grad: no "
                               "derivative rule for 'math.erf'")
        return (0, 1, 2, 3)

    def vjp(self, *args, grad_outputs=None, **params):
        inputs, values, _ = self._bind_call(list(args), dict(params))
        self.vjps += 1
        q, k, v, bias = [x.detach().double() for x in inputs[:4]]
        scale = values[0]
        adjoints = [torch.zeros(()) if a is None else
                    torch.as_tensor(a).double() for a in grad_outputs]
        s = torch.einsum("bhmd,bhnd->bhmn", q, k) * scale
        s = s + bias.view(1, -1, 1, 1)
        s = s.masked_fill((inputs[4] < 0)[:, None, None, :], -math.inf)
        p = torch.softmax(s, -1)
        grad_out, grad_lse = adjoints
        grad_out = grad_out.expand(q.shape[:3] + v.shape[3:])
        grad_p = torch.einsum("bhme,bhne->bhmn", grad_out, v)
        grad_s = p * (grad_p - (grad_p * p).sum(-1, keepdim=True) +
                      grad_lse.expand(q.shape[:3])[..., None])
        grads = (torch.einsum("bhmn,bhnd->bhmd", grad_s, k) * scale,
                 torch.einsum("bhmn,bhmd->bhnd", grad_s, q) * scale,
                 torch.einsum("bhmn,bhme->bhne", p, grad_out),
                 grad_s.sum(dim=(0, 2, 3)))
        return tuple(g.float() for g in grads) + (None,)


def torch_kernel_inputs(seed=30):
    generator = torch.Generator().manual_seed(seed)
    q = leaf((2, 3, 5, 4), generator)
    k, v = (leaf((2, 3, 6, 4), generator) for _ in range(2))
    bias = leaf((3,), generator)
    ids = torch.tensor([[0, 1, 2, 3, 4, 5], [0, -1, 2, -1, 4, 5]],
                       dtype=torch.int32)
    return q, k, v, bias, ids


def expected_gradients(inputs, scale, grad_out, grad_lse):
    leaves = [x.detach().double().requires_grad_() for x in inputs[:4]]
    out, lse = TorchKernel.compute(*leaves, inputs[4], scale)
    ((out * grad_out.double()).sum() + (lse * grad_lse.double()).sum()
     ).backward()
    return [x.grad for x in leaves]


@pytest.fixture(params=["function", "custom_op"])
def recording(request, monkeypatch):
    """Each way of recording a call: the autograd.Function always, the
    custom operators where this PyTorch has them."""
    if request.param == "custom_op" and not HAS_CUSTOM_OPS:
        pytest.skip("this PyTorch has no torch.library.custom_op")
    monkeypatch.setattr(_autograd, "USE_CUSTOM_OPS",
                        request.param == "custom_op")
    return request.param


def check_recorded_gradients(kernel, recording, seed):
    """A call of `kernel` (TorchKernel's signature) on tensors that require
    grad, and the gradients backward() leaves against PyTorch's own."""
    q, k, v, bias, ids = torch_kernel_inputs(seed)
    out, lse = kernel(q, k, v, bias, ids, scale=0.3)
    assert out.grad_fn is not None and lse.grad_fn is not None
    if recording == "custom_op":
        assert "attnc_kernel" in out.grad_fn.name()
    grad_out = torch.randn(out.shape)
    grad_lse = torch.randn(lse.shape)
    ((out * grad_out).sum() + (lse * grad_lse).sum()).backward()
    want = expected_gradients((q, k, v, bias, ids), 0.3, grad_out, grad_lse)
    for x, w in zip((q, k, v, bias), want):
        assert x.grad is not None and x.grad.dtype == torch.float32
        assert relative_error(x.grad, w) <= 1e-5
    assert ids.grad is None


def test_recorded_call_gives_every_float_input_its_gradient(recording):
    kernel = TorchKernel()
    check_recorded_gradients(kernel, recording, seed=30)
    assert kernel.vjps == 1


def test_unused_output_takes_a_zero_adjoint(recording):
    kernel = TorchKernel()
    q, k, v, bias, ids = torch_kernel_inputs(31)
    out, _ = kernel(q, k, v, bias, ids)
    grad_out = torch.randn(out.shape)
    (out * grad_out).sum().backward()
    want = expected_gradients((q, k, v, bias, ids), 0.5, grad_out,
                              torch.zeros(out.shape[:3]))
    for x, w in zip((q, k, v), want):
        assert relative_error(x.grad, w) <= 1e-5
    # A per-head bias shifts every score of a row alike: the softmax, and
    # so the output, does not depend on it.
    assert float(bias.grad.abs().max()) <= 1e-6


def test_only_inputs_that_require_grad_get_one(recording):
    kernel = TorchKernel()
    q, k, v, bias, ids = torch_kernel_inputs(32)
    k, bias = k.detach(), bias.detach()
    out, lse = kernel(q, k, v, bias, ids)
    (out.sum() + lse.sum()).backward()
    assert q.grad is not None and v.grad is not None
    assert k.grad is None and bias.grad is None


def test_nothing_requires_grad_runs_the_kernel_alone(recording):
    kernel = TorchKernel()
    inputs = [x.detach() for x in torch_kernel_inputs(33)]
    out, lse = kernel(*inputs)
    assert out.grad_fn is None and lse.grad_fn is None
    with torch.no_grad():
        out, _ = kernel(*[x.requires_grad_(x.is_floating_point())
                          for x in inputs])
    assert out.grad_fn is None


def test_kernel_that_cannot_be_differentiated_fails_at_the_call(recording):
    kernel = TorchKernel(fail_to_differentiate=True)
    q, k, v, bias, ids = torch_kernel_inputs(34)
    with pytest.raises(CompileError, match=r"attnc cannot differentiate "
                       r"kernel 'torch_kernel' \(inputs that require grad: "
                       r"'Q', 'K', 'V', 'Bias'\): <string>:3:5: error: "
                       r"attn-grad: no derivative rule"):
        kernel(q, k, v, bias, ids)
    assert kernel.runs == 0
    # Without gradients it runs.
    kernel(*[x.detach() for x in (q, k, v, bias, ids)])


def test_double_backward_is_refused(recording):
    kernel = TorchKernel()
    q, k, v, bias, ids = torch_kernel_inputs(35)
    out, _ = kernel(q, k, v, bias, ids)
    (grad_q,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_q.sum().backward()


@pytest.mark.skipif(not HAS_CUSTOM_OPS,
                    reason="this PyTorch has no torch.library.custom_op")
def test_custom_operator_under_torch_compile_fullgraph():
    kernel = TorchKernel()
    q, k, v, bias, ids = torch_kernel_inputs(36)
    grad_out = torch.randn(2, 3, 5, 4)

    def loss(q, k, v, bias, ids):
        out, lse = kernel(q, k, v, bias, ids, scale=0.3)
        return (out * grad_out).sum() + lse.sum()

    compiled_loss = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled_loss(q, k, v, bias, ids)
    value.backward()
    want = expected_gradients((q, k, v, bias, ids), 0.3, grad_out,
                              torch.ones(2, 3, 5))
    assert relative_error(value, loss(*[x.detach() for x in
                                        (q, k, v, bias, ids)])) <= 1e-6
    for x, w in zip((q, k, v, bias), want):
        assert relative_error(x.grad, w) <= 1e-5
    torch.library.opcheck(torch.ops.attnc.cpu_kernel.default,
                          (kernel._autograd_key, "scale",
                           [x.detach() for x in (q, k, v, bias, ids)],
                           [0.3]))


# ------------------------------- GPU kernels: through the gradient package

class TorchGpuKernel(GpuKernel):
    """A GPU kernel whose launches (GpuKernel._launch, the one place that
    reaches the device) compute TorchKernel's function and its float64
    gradients in PyTorch on the CPU: `gradient` stands for the package of
    the adjoint kernel, what a GPU kernel's vjp and its recorded calls
    launch."""

    def __init__(self, gradient=None, is_gradient=False,
                 fail_to_load_gradient=False):
        torch_kernel = TorchKernel()
        if not is_gradient:
            inputs = torch_kernel._input_specs
            outputs = torch_kernel._output_specs
            name = "torch_kernel"
        else:
            inputs = (torch_kernel._input_specs +
                      [("d" + name, dtype, axes) for name, dtype, axes
                       in torch_kernel._output_specs])
            outputs = [("d" + name, "f32", axes) for name, dtype, axes
                       in torch_kernel._input_specs[:4]]
            name = "torch_kernel_grad"
        Kernel.__init__(self, name, "sm_90a", torch_kernel._dims, inputs,
                        torch_kernel._param_specs, outputs)
        self._gradient_source = self._gradient_path = None
        self._gradients = {}
        self._optional_gradients = ()
        self.gradient = gradient
        self.fail_to_load_gradient = fail_to_load_gradient
        self.launches = 0
        _autograd.register(self)

    def _gradient_kernel(self, constants=()):
        if self.fail_to_load_gradient:
            return GpuKernel._gradient_kernel(self, constants)
        self._check_gradient_signature(self.gradient, constants)
        return self.gradient

    def _launch(self, inputs, params, given):
        self.launches += 1
        for x, (name, dtype, _) in zip(inputs, self._input_specs):
            self._check_dtype(name, attnc._runtime.dtype_of(x), dtype)
        inputs = [x.detach() for x in inputs]
        if not self.name.endswith("_grad"):
            return tuple(o.contiguous()
                         for o in TorchKernel.compute(*inputs, params[0]))
        grads = TorchKernel().vjp(*inputs[:5], grad_outputs=inputs[5:],
                                  scale=params[0])
        return tuple(grads[:4])


def torch_gpu_kernel():
    return TorchGpuKernel(gradient=TorchGpuKernel(is_gradient=True))


def test_gpu_kernel_call_records_its_gradient_package(recording):
    kernel = torch_gpu_kernel()
    check_recorded_gradients(kernel, recording, seed=40)
    assert kernel.launches == 1 and kernel.gradient.launches == 1


def test_gpu_vjp_takes_a_zero_adjoint_for_none():
    kernel = torch_gpu_kernel()
    q, k, v, bias, ids = [x.detach() for x in torch_kernel_inputs(41)]
    grad_out = torch.randn(q.shape)
    gradients = kernel.vjp(q, k, v, bias, ids, grad_outputs=(grad_out, None))
    want = expected_gradients((q, k, v, bias, ids), 0.5, grad_out,
                              torch.zeros(q.shape[:3]))
    for got, w in zip(gradients[:3], want):
        assert relative_error(got, w) <= 1e-5
    # Without an LSE adjoint the per-head bias has no effect (see above).
    assert float(gradients[3].abs().max()) <= 1e-6
    assert gradients[4] is None
    with pytest.raises(ValueError, match=r"grad_outputs needs one adjoint "
                       r"per output \(O, LSE\), got 1"):
        kernel.vjp(q, k, v, bias, ids, grad_outputs=grad_out)


def test_gpu_gradient_package_must_match_the_kernel():
    kernel = TorchGpuKernel(gradient=TorchGpuKernel())
    kernel.gradient.package_path = "forward.attnpkg"
    q, k, v, bias, ids = torch_kernel_inputs(42)
    with pytest.raises(ValueError, match=r"package 'forward.attnpkg' is not "
                       r"the gradient of kernel 'torch_kernel': it takes "
                       r"\(Q, K, V, Bias, Ids\) and gives \(O, LSE\), "
                       r"expected \(Q, K, V, Bias, Ids, dO, dLSE\) and "
                       r"\(dQ, dK, dV, dBias\)"):
        kernel.vjp(q, k, v, bias, ids, grad_outputs=(None, None))


def test_gpu_kernel_without_a_gradient_package_fails_at_the_call(recording):
    kernel = TorchGpuKernel(fail_to_load_gradient=True)
    q, k, v, bias, ids = torch_kernel_inputs(43)
    with pytest.raises(CompileError, match=r"attnc cannot differentiate "
                       r"kernel 'torch_kernel' \(inputs that require grad: "
                       r"'Q', 'K', 'V', 'Bias'\): kernel 'torch_kernel' was "
                       r"loaded from a package without its gradient package"):
        kernel(q, k, v, bias, ids)
    assert kernel.launches == 0
    with torch.no_grad():
        kernel(q, k, v, bias, ids)
    assert kernel.launches == 1


@requires_compiler
def test_gpu_gradient_package_from_the_spec():
    shapes = {"D": 64}
    kernel = attnc.compile(EXAMPLES / "gqa.attn", target="sm_90a",
                           dtype="bf16", shapes=shapes, grad=True)
    gradient = kernel._gradients[()]
    assert gradient.name == "gqa_grad"
    assert gradient.inputs == ["Q", "K", "V", "dO"]
    assert gradient.outputs == ["dQ", "dK", "dV"]
    path = attnc.package_path(EXAMPLES / "gqa.attn", "sm_90a", dtype="bf16",
                              shapes=shapes, grad=True)
    assert gradient.package_path == path
    assert path != kernel.package_path
    # A machine with the runtime alone loads the pair from the store.
    loaded = attnc.load(kernel.package_path, grad=path)
    assert loaded._prepare_gradient() == (0, 1, 2)
    # A forward package given as its own gradient is refused.
    with pytest.raises(ValueError, match=r"is not the gradient of kernel "
                       r"'gqa'"):
        attnc.load(kernel.package_path,
                   grad=kernel.package_path)._prepare_gradient()


@requires_compiler
def test_gpu_deterministic_gradient_package():
    # On sm_90a the backward adds each key block's share of dQ with
    # atomics; deterministic=True keeps dQ in a kernel of its own, in a
    # package of its own.
    shapes = {"D": 64}
    fast = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                         dtype="bf16", shapes=shapes, grad=True)
    exact = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                          dtype="bf16", shapes=shapes, grad=True,
                          deterministic=True)
    fast_path = fast._gradients[()].package_path
    exact_path = exact._gradients[()].package_path
    assert exact_path == attnc.package_path(
        EXAMPLES / "causal.attn", "sm_90a", dtype="bf16", shapes=shapes,
        grad=True, deterministic=True)
    assert fast_path != exact_path
    assert b'"attn_bwd_dq"' not in pathlib.Path(fast_path).read_bytes()
    assert b'"attn_bwd_dq"' in pathlib.Path(exact_path).read_bytes()
    # The forward's package is the same.
    assert fast.package_path == exact.package_path


@requires_compiler
def test_gpu_backward_holds_optional_inputs_constant():
    kernel = attnc.compile(EXAMPLES / "alibi.attn", target="sm_90a",
                           dtype="bf16", shapes={"D": 64})
    # Every float input differentiated: the slopes' gradient is summed per
    # row by the dQ kernel, then per head.
    assert kernel._prepare_gradient() == (0, 1, 2, 3)
    assert kernel._gradients[()].outputs == ["dQ", "dK", "dV", "dSlopes"]
    # Slopes held constant where the call does not need its gradient (as
    # flex_attention does for captured tensors): a package without it.
    kernel._optional_gradients = (3,)
    assert kernel._prepare_gradient(needed=[0, 1, 2]) == (0, 1, 2)
    gradient = kernel._gradients[("Slopes",)]
    assert gradient.outputs == ["dQ", "dK", "dV"]
    assert gradient.package_path == attnc.package_path(
        EXAMPLES / "alibi.attn", "sm_90a", dtype="bf16", shapes={"D": 64},
        grad=True, grad_constants=["Slopes"])
    assert kernel._prepare_gradient(needed=[0, 3]) == (0, 1, 2, 3)


@requires_compiler
def test_gpu_backward_of_key_dependent_capture_is_refused():
    # A table read at key-dependent positions: its gradient is a cascade,
    # which the GPU backend does not compile.
    kernel = attnc.compile(ROOT / "test" / "tools" / "Inputs" /
                           "relative-bias.attn", target="sm_90a",
                           dtype="bf16", shapes={"D": 64})
    with pytest.raises(CompileError, match=r"not raised"):
        kernel._prepare_gradient()


@requires_compiler
def test_flex_gpu_kernel_follows_torch_determinism():
    # torch.use_deterministic_algorithms(True) picks the GPU backward whose
    # gradients repeat their bits (dQ from a kernel of its own).
    torch = pytest.importorskip("torch")

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def gradient_package(deterministic):
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            _, kernel = attnc._flex.prepare(mask_mod=causal, dtype="bf16",
                                            target="sm_90a", head_dim=64,
                                            grad=True)
        finally:
            torch.use_deterministic_algorithms(previous)
        return pathlib.Path(kernel._gradients[()].package_path).read_bytes()

    assert b'"attn_bwd_dq"' not in gradient_package(False)
    assert b'"attn_bwd_dq"' in gradient_package(True)


@requires_compiler
def test_flex_gpu_kernel_holds_captures_without_grad_constant():
    slopes = np.linspace(0.1, 1.0, 4).astype(np.float32)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    _, kernel = attnc._flex.prepare(alibi, dtype="bf16", target="sm_90a",
                                    head_dim=64, grad=True)
    assert kernel._optional_gradients == (3,)
    assert list(kernel._gradients) == [("Cap0",)]
