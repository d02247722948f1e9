"""Integer division by values read from tables: a table that holds 0 where
the kernel divides by it refuses the launch, naming the table and the
entry; the kernels themselves never trap (a SIGFPE would end the
interpreter)."""

import numpy as np
import pytest

import attnc
from conftest import requires_compiler

pytestmark = requires_compiler

BLOCKS = """
attention blocks_per_batch {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  in    W: i32[B]
  out   O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where (m + (N - M)) / W[b] == n / W[b]
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}"""


def inputs(B=3, M=9, N=11):
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((B, 2, M, 8), dtype=np.float32)
    K = rng.standard_normal((B, 2, N, 8), dtype=np.float32)
    V = rng.standard_normal((B, 2, N, 8), dtype=np.float32)
    return Q, K, V


@pytest.mark.parametrize("fused", [True, False])
def test_a_zero_in_a_table_of_divisors_refuses_the_launch(fused):
    k = attnc.compile(BLOCKS) if fused else attnc.compile(
        BLOCKS.replace("softmax[n](S)", "softmax[n](S * 1.0)"))
    Q, K, V = inputs()
    with pytest.raises(ValueError, match=r"integer division by zero: the "
                       r"divisor is read from 'W', which holds 0 at \[1\]"):
        k(Q, K, V, np.array([2, 0, 3], np.int32))
    W = np.array([2, 5, 3], np.int32)
    O = k(Q, K, V, W)
    expected = k.reference(Q, K, V, W)
    assert np.linalg.norm(O - expected) <= 1e-5 * np.linalg.norm(expected)


def test_a_zero_the_kernel_does_not_read_is_no_error():
    k = attnc.compile(BLOCKS.replace("W: i32[B]", "W: i32[2]")
                      .replace("W[b]", "W[0]"))
    Q, K, V = inputs()
    # W[1] is never read.
    k(Q, K, V, np.array([2, 0], np.int32))


@pytest.mark.parametrize("fused", [True, False])
def test_a_zero_divisor_computed_from_a_table_refuses_the_launch(fused):
    # W[b] - 1 is 0 for W[b] = 1: the launch evaluates the divisor at every
    # b and refuses, as the reference would report it.
    spec = BLOCKS.replace("/ W[b]", "/ (W[b] - 1)")
    k = attnc.compile(spec if fused else spec.replace("softmax[n](S)",
                                                      "softmax[n](S * 1.0)"))
    Q, K, V = inputs()
    W = np.array([2, 1, 3], np.int32)
    with pytest.raises(ValueError, match=r"integer division by zero: the "
                       r"divisor is 0 at b=1 \(computed from 'W'\)"):
        k(Q, K, V, W)
    with pytest.raises(ValueError, match="division by zero"):
        k.reference(Q, K, V, W)
    W = np.array([2, 4, 0], np.int32)
    O = k(Q, K, V, W)
    expected = k.reference(Q, K, V, W)
    assert np.linalg.norm(O - expected) <= 1e-5 * np.linalg.norm(expected)


def test_a_divisor_of_indices_and_tables_is_checked_at_every_point():
    # n - W[b] is 0 only at n = W[b]: found wherever it is.
    k = attnc.compile(BLOCKS.replace("(m + (N - M)) / W[b] == n / W[b]",
                                     "m % (n - W[b]) >= 0"))
    Q, K, V = inputs(N=11)
    with pytest.raises(ValueError, match=r"the divisor is 0 at b=0, n=10 "
                       r"\(computed from 'W'\)"):
        k(Q, K, V, np.array([10, 20, 30], np.int32))
    k(Q, K, V, np.array([11, -1, 12], np.int32))
