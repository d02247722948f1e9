"""kernel.vjp (the adjoint kernel attn-grad builds, compiled for the CPU)
against kernel.reference_vjp (the float64 reverse mode of the cascade), the
reference against central finite differences, and the errors a gradient call
can meet."""

import math

import numpy as np
import pytest

import attnc
from conftest import EXAMPLES, requires_compiler

pytestmark = requires_compiler

# Sizes that are not multiples of any tile, M != N, and M > N where the
# first M - N query rows keep no key (their gradients must be 0, not NaN).
CASES = [
    ("causal", dict(B=1, H=2, M=45, N=29, D=8), {}),
    ("alibi", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("alibi", dict(B=1, H=2, M=40, N=23, D=24), {}),
    ("sink_logit", dict(B=1, H=2, M=40, N=23, D=16), {}),
    ("softplus", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("softcap", dict(B=1, H=2, M=21, N=70, D=40), dict(cap=2.0)),
    ("document_mask", dict(B=2, H=2, M=29, N=45, D=8), dict(pad=0)),
    ("lse_output", dict(B=1, H=2, M=40, N=23, D=16), {}),
    ("gqa", dict(B=1, H=6, G=2, M=37, N=53, D=24), {}),
    ("sliding_window", dict(B=1, H=2, M=37, N=53, D=24), dict(window=7)),
]

TOLERANCE = 1e-4

_KERNELS = {}


def kernel(name):
    """The f32 kernel of example `name`, compiled once per session."""
    if name not in _KERNELS:
        _KERNELS[name] = attnc.compile(EXAMPLES / (name + ".attn"),
                                       dtype="f32")
    return _KERNELS[name]


def relative_error(out, ref):
    """||out - ref|| / ||ref|| as attnc run --check computes it; a zero
    reference gives ||out||, any NaN or infinity an infinite error."""
    out = np.asarray(out, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if out.shape != ref.shape:
        return math.inf
    if not (np.isfinite(out).all() and np.isfinite(ref).all()):
        return math.inf
    diff = float(np.sum((out - ref) ** 2))
    norm = float(np.sum(ref ** 2))
    return math.sqrt(diff / norm) if norm > 0 else math.sqrt(diff)


def random_adjoints(k, inputs, params, seed=7):
    """One N(0, 1) float32 adjoint per output, of the output's shape."""
    outputs = k(*inputs, **params)
    if not isinstance(outputs, tuple):
        outputs = (outputs,)
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(o.shape).astype(np.float32)
                 for o in outputs)


@pytest.mark.parametrize("name,shapes,params", CASES,
                         ids=["%s-M%d-N%d" % (c[0], c[1]["M"], c[1]["N"])
                              for c in CASES])
def test_vjp_matches_reference(name, shapes, params):
    k = kernel(name)
    inputs = k.random_inputs(shapes, seed=1)
    grad_outputs = random_adjoints(k, inputs, params)
    grads = k.vjp(*inputs, grad_outputs=grad_outputs, **params)
    refs = k.reference_vjp(*inputs, grad_outputs=grad_outputs, **params)
    assert isinstance(grads, tuple) and len(grads) == len(k.inputs)
    assert isinstance(refs, tuple) and len(refs) == len(k.inputs)
    assert k.grad_path in ("fused", "unfused", "halide")
    for input_name, x, g, r in zip(k.inputs, inputs, grads, refs):
        if not np.issubdtype(x.dtype, np.floating):
            assert g is None and r is None, input_name
            continue
        assert g.dtype == np.float32 and g.shape == x.shape, input_name
        assert r.dtype == np.float64 and r.shape == x.shape, input_name
        error = relative_error(g, r)
        assert error <= TOLERANCE, "d%s: rel_err=%g" % (input_name, error)


def test_fully_masked_rows_have_zero_gradients():
    # Causal with M > N: query rows m < M - N keep no key.
    k = kernel("causal")
    shapes = dict(B=1, H=2, M=45, N=29, D=8)
    inputs = k.random_inputs(shapes, seed=2)
    grad_outputs = random_adjoints(k, inputs, {})
    dQ, dK, dV = k.vjp(*inputs, grad_outputs=grad_outputs)
    rQ, _, _ = k.reference_vjp(*inputs, grad_outputs=grad_outputs)
    empty = shapes["M"] - shapes["N"]
    assert np.all(dQ[:, :, :empty] == 0)
    assert np.all(rQ[:, :, :empty] == 0)
    assert np.isfinite(dK).all() and np.isfinite(dV).all()
    assert np.abs(dQ[:, :, empty:]).max() > 0


def test_integer_inputs_get_none():
    k = kernel("document_mask")
    inputs = k.random_inputs(dict(B=2, H=2, M=29, N=45, D=8), seed=3)
    grad_outputs = random_adjoints(k, inputs, {})
    grads = k.vjp(*inputs, grad_outputs=grad_outputs)
    refs = k.reference_vjp(*inputs, grad_outputs=grad_outputs)
    assert k.inputs[3] == "Doc"
    assert grads[3] is None and refs[3] is None
    assert all(g is not None for g in grads[:3])


def test_none_grad_output_is_a_zero_adjoint():
    # The gradient is linear in the adjoints: dO and dLSE separately add up
    # to both together, and None is the same as an adjoint of zeros.
    k = kernel("lse_output")
    inputs = k.random_inputs(dict(B=1, H=2, M=19, N=33, D=16), seed=4)
    dO, dLSE = random_adjoints(k, inputs, {})
    both = k.vjp(*inputs, grad_outputs=(dO, dLSE))
    only_o = k.vjp(*inputs, grad_outputs=(dO, None))
    only_lse = k.vjp(*inputs, grad_outputs=[None, dLSE])
    zeros = k.vjp(*inputs, grad_outputs=(dO, np.zeros_like(dLSE)))
    for total, a, b, z in zip(both, only_o, only_lse, zeros):
        assert relative_error(a + b, total) <= TOLERANCE
        np.testing.assert_array_equal(a, z)
    refs = k.reference_vjp(*inputs, grad_outputs=(dO, None))
    for g, r in zip(only_o, refs):
        assert relative_error(g, r) <= TOLERANCE
    nothing = k.vjp(*inputs, grad_outputs=(None, None))
    assert all(np.all(g == 0) for g in nothing)


def test_one_output_takes_its_adjoint_alone():
    k = kernel("causal")
    inputs = k.random_inputs(dict(B=1, H=1, M=5, N=9, D=4), seed=5)
    (dO,) = random_adjoints(k, inputs, {})
    alone = k.vjp(*inputs, grad_outputs=dO)
    in_tuple = k.vjp(*inputs, grad_outputs=(dO,))
    for a, b in zip(alone, in_tuple):
        np.testing.assert_array_equal(a, b)
    # Inputs by name, as for a call.
    by_name = k.vjp(Q=inputs[0], K=inputs[1], V=inputs[2],
                    grad_outputs=(dO,))
    for a, b in zip(by_name, in_tuple):
        np.testing.assert_array_equal(a, b)


def test_bad_grad_output_shape_names_argument_and_shape():
    k = kernel("lse_output")
    inputs = k.random_inputs(dict(B=1, H=2, M=7, N=11, D=4), seed=6)
    dO = np.zeros((1, 2, 7, 4), np.float32)
    with pytest.raises(ValueError, match=r"vjp: grad_outputs\[1\] \(the "
                       r"adjoint of output 'LSE'\) must have shape "
                       r"\(1, 2, 7\) \(\[B, H, M\] for the bound dims\), "
                       r"got \(1, 2, 8\)"):
        k.vjp(*inputs, grad_outputs=(dO, np.zeros((1, 2, 8), np.float32)))
    with pytest.raises(ValueError, match=r"reference_vjp: grad_outputs\[0\] "
                       r"\(the adjoint of output 'O'\) must have shape "
                       r"\(1, 2, 7, 4\)"):
        k.reference_vjp(*inputs, grad_outputs=(dO[:, :, :, :3], None))


def test_bad_grad_outputs_count_and_missing():
    k = kernel("lse_output")
    inputs = k.random_inputs(dict(B=1, H=2, M=7, N=11, D=4), seed=6)
    dO = np.zeros((1, 2, 7, 4), np.float32)
    with pytest.raises(TypeError, match=r"grad_outputs has 1 entries but "
                       r"kernel 'lse_output' has 2 outputs \(O, LSE\)"):
        k.vjp(*inputs, grad_outputs=(dO,))
    with pytest.raises(TypeError, match=r"grad_outputs must be a tuple of 2"):
        k.vjp(*inputs, grad_outputs=dO)
    with pytest.raises(TypeError, match=r"vjp: grad_outputs is required"):
        k.vjp(*inputs)
    with pytest.raises(TypeError, match=r"reference_vjp: grad_outputs is "
                       r"required"):
        k.reference_vjp(*inputs)


def test_bad_inputs_are_refused_as_for_a_call():
    k = kernel("gqa")
    inputs = k.random_inputs(dict(B=1, H=4, G=2, M=5, N=6, D=4), seed=8)
    dO = np.zeros((1, 4, 5, 4), np.float32)
    # K binds N = 3, which V contradicts.
    with pytest.raises(ValueError, match=r"input 'V': got shape "
                       r"\(1, 2, 6, 4\), expected \[B, G, N, D\]"):
        k.vjp(inputs[0], inputs[1][:, :, :3], inputs[2], grad_outputs=(dO,))
    with pytest.raises(TypeError, match=r"missing input 'V'"):
        k.vjp(inputs[0], inputs[1], grad_outputs=(dO,))
    # H not a multiple of G: the launch is refused before the kernel runs.
    bad = k.random_inputs(dict(B=1, H=3, G=2, M=5, N=6, D=4), seed=8)
    dO3 = np.zeros((1, 3, 5, 4), np.float32)
    with pytest.raises(ValueError, match=r"H \(3\) must be a multiple of "
                       r"G \(2\)"):
        k.vjp(*bad, grad_outputs=(dO3,))
    with pytest.raises(ValueError, match=r"H \(3\) must be a multiple of "
                       r"G \(2\)"):
        k.reference_vjp(*bad, grad_outputs=(dO3,))


def test_adjoint_kernel_is_compiled_once_and_cached():
    k = attnc.compile(EXAMPLES / "sink_logit.attn", dtype="f32")
    assert k.grad_path is None and k.grad_cache_hit is None
    inputs = k.random_inputs(dict(B=1, H=2, M=9, N=6, D=8), seed=9)
    grad_outputs = random_adjoints(k, inputs, {})
    first = k.vjp(*inputs, grad_outputs=grad_outputs)
    compile_ms = k.grad_compile_ms
    assert k.grad_path in ("fused", "unfused", "halide") and compile_ms > 0
    second = k.vjp(*inputs, grad_outputs=grad_outputs)
    assert k.grad_compile_ms == compile_ms
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # Another kernel of the same spec finds the adjoint in the artifact
    # cache.
    again = attnc.compile(EXAMPLES / "sink_logit.attn", dtype="f32")
    again.vjp(*inputs, grad_outputs=grad_outputs)
    assert again.grad_cache_hit is True


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    k = kernel("alibi")
    inputs = [torch.from_numpy(x) for x in
              k.random_inputs(dict(B=1, H=2, M=13, N=17, D=8), seed=10)]
    dO = torch.randn(1, 2, 13, 8)
    grads = k.vjp(*inputs, grad_outputs=(dO,))
    refs = k.reference_vjp(*inputs, grad_outputs=(dO,))
    for g, r, x in zip(grads, refs, inputs):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float32
        assert tuple(g.shape) == tuple(x.shape)
        assert relative_error(g.numpy(), r) <= TOLERANCE


def test_bf16_kernel_through_torch():
    torch = pytest.importorskip("torch")
    k = attnc.compile(EXAMPLES / "causal.attn")
    shapes = dict(B=1, H=2, M=21, N=17, D=8)
    inputs = [torch.from_numpy(x).to(torch.bfloat16)
              for x in kernel("causal").random_inputs(shapes, seed=11)]
    dO = torch.randn(1, 2, 21, 8)
    grads = k.vjp(*inputs, grad_outputs=(dO,))
    refs = k.reference_vjp(*inputs, grad_outputs=(dO,))
    for g, r in zip(grads, refs):
        assert g.dtype == torch.float32
        assert relative_error(g.numpy(), r) <= 2e-2


def test_flex_mods_have_a_vjp():
    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    _, k = attnc._flex.prepare(mask_mod=causal)
    rng = np.random.default_rng(12)
    q = rng.standard_normal((1, 2, 11, 8)).astype(np.float32)
    kk = rng.standard_normal((1, 2, 11, 8)).astype(np.float32)
    v = rng.standard_normal((1, 2, 11, 8)).astype(np.float32)
    dO = rng.standard_normal((1, 2, 11, 8)).astype(np.float32)
    grads = k.vjp(q, kk, v, grad_outputs=(dO,), scale=0.25)
    refs = k.reference_vjp(q, kk, v, grad_outputs=(dO,), scale=0.25)
    for g, r in zip(grads, refs):
        assert relative_error(g, r) <= TOLERANCE


# A small cascade with a sink logit, a softcap and an LSE output: the
# reference's reverse mode against central finite differences of the
# reference itself.
TINY = """
attention tiny {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  in    Sinks: f32[H]
  param cap: f32 = 3.0
  out   O: f32[B, H, M, D]
  out   LSE: f32[B, H, M]

  S[b,h,m,n] = cap * tanh(sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D) / cap)
  keep S where n <= m + (N - M)
  P = softmax[n](S, sink = Sinks[h])
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
  LSE = logsumexp[n](S)
}
"""


@pytest.mark.parametrize("spec", [TINY, EXAMPLES / "alibi.attn",
                                  EXAMPLES / "softplus.attn"],
                         ids=["tiny", "alibi", "softplus"])
def test_reference_vjp_matches_finite_differences(spec):
    k = attnc.compile(spec, dtype="f32")
    # M <= N: every row keeps a key, so that L stays finite (a fully masked
    # row has LSE = -inf).
    inputs = [np.array(x) for x in
              k.random_inputs(dict(B=1, H=2, M=3, N=4, D=2), seed=13)]
    rng = np.random.default_rng(14)
    outputs = k.reference(*inputs)
    if not isinstance(outputs, tuple):
        outputs = (outputs,)
    adjoints = tuple(rng.standard_normal(o.shape) for o in outputs)

    def loss(args):
        values = k.reference(*args)
        if not isinstance(values, tuple):
            values = (values,)
        return sum(float(np.sum(a * v)) for a, v in zip(adjoints, values))

    grads = k.reference_vjp(*inputs, grad_outputs=adjoints)
    step = 1e-3
    for i, x in enumerate(inputs):
        estimate = np.zeros(x.shape)
        for e in range(x.size):
            plus = [a.copy() for a in inputs]
            minus = [a.copy() for a in inputs]
            plus[i].flat[e] += step
            minus[i].flat[e] -= step
            # The inputs are float32: divide by the step they really took.
            taken = float(plus[i].flat[e]) - float(minus[i].flat[e])
            estimate.flat[e] = (loss(plus) - loss(minus)) / taken
        error = relative_error(grads[i], estimate)
        assert error <= 1e-4, "d%s: rel_err=%g" % (k.inputs[i], error)


# A bias added to whole softmax rows: the terms of its gradient cancel.
ROW_BIAS = """
attention row_bias {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  in    RowBias: f32[B, H, M]
  out   O: f32[B, H, M, D]

  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D) + RowBias[b,h,m]
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
"""


def test_reference_vjp_returns_the_scale_of_the_terms():
    k = attnc.compile(ROW_BIAS, dtype="f32")
    inputs = k.random_inputs(dict(B=1, H=2, M=9, N=13, D=8), seed=15)
    dO = np.random.default_rng(16).standard_normal((1, 2, 9, 8))
    grads = k.reference_vjp(*inputs, grad_outputs=(dO,))
    pair = k.reference_vjp(*inputs, grad_outputs=(dO,), return_scales=True)
    assert len(pair) == 2
    with_scales, scales = pair
    assert len(scales) == len(grads) == len(with_scales)
    for g, same, s, x in zip(grads, with_scales, scales, inputs):
        np.testing.assert_array_equal(g, same)
        assert s.dtype == np.float64 and s.shape == x.shape
        assert (s >= 0).all()
    # dRowBias[b, h, m] sums dS over the row's keys, which cancel exactly;
    # its scale is that of dS, not of the float64 rounding left over.
    d_bias, bias_scale = grads[3], scales[3]
    assert np.linalg.norm(bias_scale) > 1e-2
    assert np.linalg.norm(d_bias) < 1e-12 * np.linalg.norm(bias_scale)
    # dQ's terms do not cancel: the two norms are of the same order.
    ratio = np.linalg.norm(grads[0]) / np.linalg.norm(scales[0])
    assert 0.3 < ratio < 3
