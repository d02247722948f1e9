"""The Halide backend from Python: backend= picks it, results match the
reference, gradients run through it, a bad name is refused."""

import numpy as np
import pytest

import attnc

SPEC = """
attention windowed {
  dims  B, H, M, N, D = 16
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  out   O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where n <= m and m - n < 5 and m != 2
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
"""


def reference(Q, K, V):
    Q, K, V = (x.astype(np.float64) for x in (Q, K, V))
    S = np.einsum("bhmd,bhnd->bhmn", Q, K) / 4.0
    m = np.arange(Q.shape[2])[:, None]
    n = np.arange(K.shape[2])[None, :]
    keep = (n <= m) & (m - n < 5) & (m != 2)
    S = np.where(keep, S, -np.inf)
    top = np.max(S, axis=-1, keepdims=True)
    E = np.where(keep, np.exp(S - np.where(np.isfinite(top), top, 0)), 0)
    total = E.sum(-1, keepdims=True)
    P = np.divide(E, total, out=np.zeros_like(E), where=total > 0)
    return np.einsum("bhmn,bhnd->bhmd", P, V)


def test_halide_matches_reference_with_masked_rows():
    rng = np.random.default_rng(3)
    Q = rng.standard_normal((2, 3, 11, 16), dtype=np.float32)
    K = rng.standard_normal((2, 3, 13, 16), dtype=np.float32)
    V = rng.standard_normal((2, 3, 13, 16), dtype=np.float32)
    kernel = attnc.compile(SPEC, backend="halide")
    assert kernel.path == "halide"
    (O,) = kernel(Q, K, V) if isinstance(kernel(Q, K, V), tuple) else \
        (kernel(Q, K, V),)
    want = reference(Q, K, V)
    assert np.linalg.norm(O - want) / np.linalg.norm(want) < 1e-5
    assert np.all(O[:, :, 2] == 0)


def test_halide_gradients():
    rng = np.random.default_rng(4)
    Q = rng.standard_normal((1, 2, 9, 16), dtype=np.float32)
    K = rng.standard_normal((1, 2, 9, 16), dtype=np.float32)
    V = rng.standard_normal((1, 2, 9, 16), dtype=np.float32)
    dO = rng.standard_normal((1, 2, 9, 16), dtype=np.float32)
    halide = attnc.compile(SPEC, backend="halide")
    mlir = attnc.compile(SPEC, backend="mlir")
    got = halide.vjp(Q, K, V, grad_outputs=(dO,))
    want = mlir.vjp(Q, K, V, grad_outputs=(dO,))
    assert halide.grad_path == "halide"
    for g, w in zip(got, want):
        assert np.linalg.norm(g - w) / np.linalg.norm(w) < 1e-4


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        attnc.compile(SPEC, backend="tvm")
