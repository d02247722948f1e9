"""Launches with a zero-size dim through attnc.compile: M = 0 gives an empty
output, N = 0 rows that keep no key (O = 0, LSE = -inf), as FlexAttention
does; sizes fixed at compile time stay positive."""

import numpy as np
import pytest

import attnc
from conftest import EXAMPLES, requires_compiler

pytestmark = requires_compiler


@pytest.mark.parametrize("zero", ["M", "N", "B"])
def test_zero_size_launches_match_the_reference(zero):
    k = attnc.compile(EXAMPLES / "lse_output.attn", dtype="f32")
    shapes = dict(B=2, H=2, M=5, N=7, D=8)
    shapes[zero] = 0
    inputs = k.random_inputs(shapes, seed=1)
    O, lse = k(*inputs)
    O_ref, lse_ref = k.reference(*inputs)
    assert O.shape == O_ref.shape and lse.shape == lse_ref.shape
    assert O.shape[0] == shapes["B"] and O.shape[2] == shapes["M"]
    assert not np.abs(O).any()
    assert np.all(np.isneginf(lse))


def test_compile_time_sizes_stay_positive():
    with pytest.raises(ValueError, match="must be a positive integer"):
        attnc.compile(EXAMPLES / "causal.attn", dtype="f32", shapes={"D": 0})
