"""attnc.compile for the CPU: every example against the float64 reference,
specs as text and paths, and the errors a call can meet."""

import math
import threading

import numpy as np
import pytest

import attnc
from conftest import EXAMPLES, ROOT, requires_compiler

pytestmark = requires_compiler

# Sizes that are not multiples of 16, M != N, and params that leave rows
# fully masked, as in test/integration/cpu/*.test.
CASES = [
    ("alibi", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("alibi", dict(B=1, H=2, M=40, N=23, D=24), {}),
    ("bidirectional", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("block_sparse", dict(B=1, H=2, M=150, N=77, D=24, MB=3, NB=2), {}),
    ("causal", dict(B=1, H=2, M=45, N=29, D=8), {}),
    ("cross_attention", dict(B=1, H=2, M=37, N=53, D=24, E=40), {}),
    ("document_mask", dict(B=2, H=2, M=61, N=61, D=24), dict(pad=0)),
    ("duo_attention", dict(B=1, H=4, G=4, M=21, N=45, D=8),
     dict(window=0, sinks=0)),
    ("gqa", dict(B=1, H=6, G=2, M=37, N=53, D=24), {}),
    ("label_mask", dict(B=2, H=2, M=45, N=2, D=8), {}),
    ("lse_output", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("mqa", dict(B=1, H=4, M=37, N=53, D=24), {}),
    # N sizes no input (n < N): it is passed by name.
    ("paged_kv", dict(B=2, H=4, G=2, M=3, N=37, D=24, P=9, NP=3),
     dict(N=37)),
    ("prefix_lm", dict(B=1, H=2, M=37, N=53, D=24), dict(prefix=10)),
    ("sigmoid", dict(B=1, H=2, M=21, N=99, D=8), dict(bias=-3.5)),
    ("sink_logit", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("sink_reweight", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("sinks_fixed", dict(B=1, H=2, M=23, N=23, D=8), dict(window=0)),
    ("sliding_window", dict(B=1, H=2, M=37, N=53, D=24), dict(window=7)),
    ("softcap", dict(B=1, H=2, M=21, N=70, D=40), dict(cap=2.0)),
    ("softplus", dict(B=1, H=2, M=37, N=53, D=24), {}),
    ("streaming_llm", dict(B=1, H=2, G=1, M=23, N=41), dict(window=0)),
]


def relative_error(out, ref):
    """||out - ref|| / ||ref|| as attnc run --check computes it: equal
    infinities (LSE = -inf of a fully masked row) agree, any other NaN or
    infinity is an infinite error, and a zero reference gives ||out||."""
    out = np.asarray(out, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if out.shape != ref.shape:
        return math.inf
    same_inf = np.isinf(ref) & (out == ref)
    out, ref = out[~same_inf], ref[~same_inf]
    if not (np.isfinite(out).all() and np.isfinite(ref).all()):
        return math.inf
    diff = float(np.sum((out - ref) ** 2))
    norm = float(np.sum(ref ** 2))
    return math.sqrt(diff / norm) if norm > 0 else math.sqrt(diff)


def as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("example,shapes,params", CASES,
                         ids=[case[0] + "-" + str(i)
                              for i, case in enumerate(CASES)])
def test_example_matches_reference(example, shapes, params):
    k = attnc.compile(EXAMPLES / (example + ".attn"), dtype="f32")
    assert k.name == example and k.target == "cpu"
    assert k.path in ("fused", "unfused", "halide")
    inputs = k.random_inputs(shapes, seed=3)
    assert len(inputs) == len(k.inputs)
    outputs = as_tuple(k(*inputs, **params))
    # Every input was contiguous with the declared dtype: none was copied.
    assert k.last_copied == ()
    expected = as_tuple(k.reference(*inputs, **params))
    assert len(outputs) == len(expected) == len(k.outputs)
    for name, out, ref in zip(k.outputs, outputs, expected):
        assert out.shape == ref.shape, name
        assert ref.dtype == np.float64
        error = relative_error(out, ref)
        assert error <= 1e-5, "%s of %s: relative error %g" % (
            name, example, error)


@pytest.fixture(scope="module")
def causal():
    return attnc.compile(str(EXAMPLES / "causal.attn"), dtype="f32")


@pytest.fixture(scope="module")
def causal_inputs(causal):
    return causal.random_inputs(dict(B=1, H=2, M=37, N=53, D=24), seed=1)


def test_signature(causal):
    assert causal.inputs == ["Q", "K", "V"]
    assert causal.params == []
    assert causal.outputs == ["O"]
    assert causal.spec.startswith("//") or "attention causal" in causal.spec
    assert causal.compile_ms > 0
    assert attnc.__version__


def test_spec_from_text_and_path(causal, causal_inputs):
    text = (EXAMPLES / "causal.attn").read_text()
    from_text = attnc.compile(text, dtype="f32")
    assert from_text.spec == text
    # The same kernel: the second compile hits the object cache.
    assert from_text.cache_hit
    np.testing.assert_array_equal(from_text(*causal_inputs),
                                  causal(*causal_inputs))
    named = attnc.compile(text, dtype="f32", name="mine")
    assert named.name == "mine"


def test_inputs_by_keyword(causal, causal_inputs):
    Q, K, V = causal_inputs
    np.testing.assert_array_equal(causal(Q, V=V, K=K), causal(Q, K, V))


def test_compile_error_from_text():
    spec = ("attention broken {\n"
            "  dims B, M, D\n"
            "  in   Q: f99[B, M, D]\n"
            "  out  O: f32[B, M, D]\n"
            "  O[b, m, d] = Q[b, m, d]\n"
            "}\n")
    with pytest.raises(attnc.CompileError) as info:
        attnc.compile(spec)
    message = str(info.value)
    assert "<string>:3:" in message and "error:" in message
    # The source line and a caret.
    assert "in   Q: f99[B, M, D]" in message and "^~~" in message


def test_compile_error_from_path(tmp_path):
    path = tmp_path / "bad.attn"
    path.write_text("attention bad {\n  dims B\n  in Q f32[B]\n}\n")
    with pytest.raises(attnc.CompileError) as info:
        attnc.compile(path)
    assert str(path) + ":3:" in str(info.value)
    with pytest.raises(attnc.CompileError, match="cannot open"):
        attnc.compile(str(tmp_path / "missing.attn"))


def test_bad_options():
    with pytest.raises(ValueError, match="dtype"):
        attnc.compile(EXAMPLES / "causal.attn", dtype="f8")
    with pytest.raises(ValueError, match="target"):
        attnc.compile(EXAMPLES / "causal.attn", target="tpu")
    with pytest.raises(attnc.CompileError, match="no dim 'X'"):
        attnc.compile(EXAMPLES / "causal.attn", shapes={"X": 3})


def test_fixed_dims(causal_inputs):
    k = attnc.compile(EXAMPLES / "causal.attn", dtype="f32",
                      shapes={"D": 24})
    np.testing.assert_allclose(k(*causal_inputs),
                               k.reference(*causal_inputs), rtol=0,
                               atol=1e-5)
    Q, K, V = (x[..., :16] for x in causal_inputs)
    with pytest.raises(ValueError, match=r"input 'Q': got shape "
                       r"\(1, 2, 37, 16\), expected \[B, H, M, D\] = "
                       r"\(\?, \?, \?, 24\)"):
        k(np.ascontiguousarray(Q), K, V)


def test_wrong_shape_names_the_argument(causal, causal_inputs):
    Q, K, V = causal_inputs
    bad = np.zeros((1, 4, 53, 24), np.float32)
    with pytest.raises(ValueError) as info:
        causal(Q, bad, V)
    assert str(info.value) == (
        "input 'K': got shape (1, 4, 53, 24), expected [B, H, N, D] = "
        "(1, 2, ?, 24)")
    with pytest.raises(ValueError, match="input 'V'"):
        causal(Q, K, V[:, :, :50])
    with pytest.raises(ValueError, match="input 'Q'"):
        causal(Q[0], K, V)


def test_wrong_dtype_names_the_argument(causal, causal_inputs):
    Q, K, V = causal_inputs
    with pytest.raises(TypeError,
                       match="input 'K': got dtype f64, expected f32"):
        causal(Q, K.astype(np.float64), V)


def test_missing_and_unknown_arguments(causal, causal_inputs):
    Q, K, V = causal_inputs
    with pytest.raises(TypeError, match="missing input 'V'"):
        causal(Q, K)
    with pytest.raises(TypeError, match="takes 3 inputs"):
        causal(Q, K, V, V)
    with pytest.raises(TypeError, match="no input or param 'window'"):
        causal(Q, K, V, window=3)
    with pytest.raises(TypeError, match="'K' given twice"):
        causal(Q, K, V, K=K)


def test_params_defaults_and_types():
    k = attnc.compile(EXAMPLES / "sliding_window.attn", dtype="f32")
    assert k.params == ["window"]
    inputs = k.random_inputs(dict(B=1, H=2, M=37, N=53, D=24))
    default = k(*inputs)
    np.testing.assert_array_equal(default, k(*inputs, window=k._param_specs[0][2]))
    narrow = k(*inputs, window=3)
    assert relative_error(narrow, k.reference(*inputs, window=3)) <= 1e-5
    assert not np.array_equal(default, narrow)
    with pytest.raises(TypeError, match="param 'window' is i32"):
        k(*inputs, window=2.5)


def test_non_contiguous_input_is_copied(causal, causal_inputs):
    Q, K, V = causal_inputs
    # K stored as [B, H, D, N] and viewed as [B, H, N, D].
    K_t = np.ascontiguousarray(K.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not K_t.flags.c_contiguous
    out = causal(Q, K_t, V)
    assert causal.last_copied == ("K",)
    np.testing.assert_array_equal(out, causal(Q, K, V))
    assert causal.last_copied == ()


def test_lists_are_converted(causal, causal_inputs):
    Q, K, V = causal_inputs
    out = causal(Q.tolist(), K, V)
    np.testing.assert_array_equal(out, causal(Q, K, V))


def test_outputs_are_fresh_arrays(causal, causal_inputs):
    first = causal(*causal_inputs)
    second = causal(*causal_inputs)
    assert isinstance(first, np.ndarray) and first.dtype == np.float32
    assert first.shape == (1, 2, 37, 24) and first.flags.c_contiguous
    assert not np.shares_memory(first, second)
    for array in causal_inputs:
        assert not np.shares_memory(first, array)


def test_several_outputs_are_a_tuple():
    k = attnc.compile(EXAMPLES / "lse_output.attn", dtype="f32")
    inputs = k.random_inputs(dict(B=1, H=2, M=5, N=7, D=8))
    outputs = k(*inputs)
    assert isinstance(outputs, tuple) and len(outputs) == len(k.outputs) == 2


def test_launch_refused_is_a_value_error():
    k = attnc.compile(EXAMPLES / "gqa.attn", dtype="f32")
    # H / G = 1, so kv head g = h reaches 5 >= G = 4.
    inputs = k.random_inputs(dict(B=1, H=6, G=4, M=5, N=7, D=8))
    with pytest.raises(ValueError, match="launch refused: .*gqa.attn:"):
        k(*inputs)
    with pytest.raises(ValueError, match="launch refused"):
        k.reference(*inputs)


def test_gather_out_of_range_is_refused():
    k = attnc.compile(EXAMPLES / "paged_kv.attn", dtype="f32")
    Q, Kc, Vc, Pages = k.random_inputs(
        dict(B=2, H=4, G=2, M=3, N=37, D=24, P=9, NP=3))
    Pages = Pages.copy()
    with pytest.raises(ValueError, match="dim 'N' is not the size of any "
                       "input axis; pass it by name"):
        k(Q, Kc, Vc, Pages)
    Pages[1, 2] = 9
    with pytest.raises(ValueError, match="launch refused"):
        k(Q, Kc, Vc, Pages, N=37)


def test_random_inputs_of_declared_bf16():
    k = attnc.compile(EXAMPLES / "causal.attn")
    Q, K, V = k.random_inputs(dict(B=1, H=1, M=5, N=6, D=8))
    # NumPy has no bfloat16: bf16 inputs come back as float32 ...
    assert Q.dtype == np.float32
    # ... and a bf16 kernel says how to call it.
    with pytest.raises(TypeError, match="NumPy has no bfloat16"):
        k(Q, K, V)


def test_bind_dims(causal):
    dims = causal.bind_dims({"M": 5})
    assert dims["M"] == 5 and set(dims) == {"B", "H", "M", "N", "D"}


def test_gil_is_released_while_running():
    import time
    k = attnc.compile(EXAMPLES / "bidirectional.attn", dtype="f32")
    inputs = k.random_inputs(dict(B=2, H=8, M=1000, N=1000, D=64))
    start = time.perf_counter()
    k(*inputs)
    duration = time.perf_counter() - start
    if duration < 0.05:
        pytest.skip("the kernel is too fast to observe")
    # While another thread is inside the kernel, this one keeps running:
    # the gaps between its steps stay far below the kernel's run time.
    thread = threading.Thread(target=lambda: [k(*inputs) for _ in range(3)])
    thread.start()
    gaps, last = [], time.perf_counter()
    while thread.is_alive():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    thread.join()
    assert max(gaps) < duration / 2


def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    k = attnc.compile(EXAMPLES / "causal.attn")  # bf16 as declared
    Q, K, V = (torch.from_numpy(x).to(torch.bfloat16)
               for x in k.random_inputs(dict(B=1, H=2, M=37, N=53, D=24)))
    out = k(Q, K, V)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert k.last_copied == ()
    ref = k.reference(Q, K, V)
    assert relative_error(out.float().numpy(), ref) <= 1e-2
    out_t = k(Q, K.transpose(2, 3).contiguous().transpose(2, 3), V)
    assert k.last_copied == ("K",)
    assert torch.equal(out, out_t)


@requires_compiler
def test_zero_divisor_refuses_the_launch():
    # The block width is a param: 0 would make the kernel divide by zero.
    k = attnc.compile(ROOT / "test" / "tools" / "Inputs" /
                      "divide-by-width.attn")
    Q, K, V = k.random_inputs(dict(B=1, H=2, M=9, N=11, D=8), seed=2)
    with pytest.raises(ValueError, match="integer division by zero"):
        k(Q, K, V, width=0)
    O = as_tuple(k(Q, K, V, width=3))[0]
    expected = as_tuple(k.reference(Q, K, V, width=3))[0]
    assert np.linalg.norm(O - expected) <= 1e-5 * np.linalg.norm(expected)


@requires_compiler
def test_integer_params_stay_in_their_range():
    k = attnc.compile(EXAMPLES / "sliding_window.attn", dtype="f32")
    Q, K, V = k.random_inputs(dict(B=1, H=2, M=9, N=11, D=8), seed=2)
    with pytest.raises(ValueError, match=r"param 'window' is i32: "
                       r"1099511627776 is out of its range"):
        k(Q, K, V, window=2 ** 40)
    with pytest.raises(ValueError, match=r"out of its range"):
        k.reference(Q, K, V, window=-2 ** 31 - 1)
    k(Q, K, V, window=2 ** 31 - 1)


@requires_compiler
def test_zero_divisor_read_from_a_table_refuses_the_launch():
    k = attnc.compile("""
attention blocks_of_width {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  in    W: i32[1]
  out   O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where m / W[0] == n / W[0]
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}""")
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((1, 2, 5, 8), dtype=np.float32)
    K = rng.standard_normal((1, 2, 7, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="integer division by zero"):
        k(Q, K, K, np.array([0], np.int32))
    k(Q, K, K, np.array([2], np.int32))


@requires_compiler
def test_launches_too_large_for_memory_are_refused(causal):
    # Random inputs, the reference and an unfused kernel's intermediates
    # are estimated before anything is allocated; what cannot be allocated
    # is a MemoryError naming the tensors, never the end of the process.
    with pytest.raises(MemoryError, match=r"this launch needs .* \(Q .*\) "
                       r"but .* is available"):
        causal.random_inputs(dict(B=100000, H=1000, M=100000))
    Q = np.zeros((1, 1, 100000, 1), np.float32)
    with pytest.raises(MemoryError, match=r"the reference's \[B, H, M, N\] "
                       r"tensors"):
        causal.reference(Q, Q, Q)
    max_pool = """
attention max_pool {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  out   O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d])
  O[b,h,m,e] = max[n](S[b,h,m,n] * V[b,h,n,e])
}"""
    # Both unfused paths allocate the cascade's intermediate tensors.
    for backend, path in (("mlir", "unfused"), ("auto", "halide")):
        unfused = attnc.compile(max_pool, backend=backend)
        assert unfused.path == path
        with pytest.raises(MemoryError, match=r"the unfused kernel's "
                           r"\[B, H, M, N\] tensors"):
            unfused(Q, Q, Q)
    # Counts that overflow 64 bits, and sizes outside the range of a dim,
    # are refused for what they are.
    with pytest.raises(ValueError, match=r"Q has 2147483648 x 2147483648 x "
                       r"77 x 32 elements, more than a 64-bit count holds"):
        causal.random_inputs(dict(B=2 ** 31, H=2 ** 31))
    with pytest.raises(ValueError, match=r"size of 'B' is 4294967297, outside "
                       r"the range of a dim \[0, 4294967296\]"):
        causal.random_inputs(dict(B=2 ** 32 + 1))


@requires_compiler
def test_gqa_heads_not_a_multiple_of_kv_heads_say_so():
    k = attnc.compile(EXAMPLES / "gqa.attn", dtype="f32")
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((1, 3, 5, 8), dtype=np.float32)
    K = rng.standard_normal((1, 2, 7, 8), dtype=np.float32)
    message = (r"launch refused: .*gqa.attn:13:16: H \(3\) must be a "
               r"multiple of G \(2\): 'K' and 'V' are indexed through H / G")
    with pytest.raises(ValueError, match=message):
        k(Q, K, K)
    with pytest.raises(ValueError, match=message):
        k.reference(Q, K, K)


@requires_compiler
def test_zero_size_dims_give_empty_outputs_or_rows_without_keys():
    k = attnc.compile(EXAMPLES / "lse_output.attn", dtype="f32")
    rng = np.random.default_rng(0)

    def launch(B, H, M, N, D=8):
        Q = rng.standard_normal((B, H, M, D), dtype=np.float32)
        K = rng.standard_normal((B, H, N, D), dtype=np.float32)
        return k(Q, K, K), k.reference(Q, K, K)

    # No keys: every row is O = 0 and LSE = -inf, like FlexAttention.
    for (O, LSE) in launch(1, 2, 5, 0):
        assert O.shape == (1, 2, 5, 8) and LSE.shape == (1, 2, 5)
        assert not O.any()
        assert np.all(LSE == -np.inf)
    # No queries, batches or heads: empty outputs.
    for shape in [(1, 2, 0, 7), (0, 2, 5, 7), (1, 0, 5, 7), (1, 2, 0, 0)]:
        (O, LSE), (refO, refLSE) = launch(*shape)
        assert O.size == 0 and LSE.size == 0
        assert O.shape == refO.shape and LSE.shape == refLSE.shape


def test_a_cache_hit_reports_the_compile_remarks_again():
    # The divisor keeps the mask from being decided per tile: a remark that
    # the first compile reports and the hit reports again, on its own text.
    text = """
attention remarks_on_hit {
  dims  B, H, M, N, D = 16
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  out   O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * 0.25
  keep S where n % (m + 1) == 0
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}"""
    first = attnc.compile(text)
    again = attnc.compile("\n\n" + text)
    assert again.cache_hit
    assert ":8:16: remark: every tile is partial" in first.diagnostics
    assert ":10:16: remark: every tile is partial" in again.diagnostics
