"""attnc.flex_attention / create_block_mask on the CPU (numpy, f32) against
float64 numpy implementations of the same math."""

import math
import types

import numpy as np
import pytest

import attnc

pytest.importorskip("attnc._attnc", reason="the attnc compiler module is not built")

B, H, L, S, E = 2, 2, 77, 93, 32
RNG = np.random.default_rng(0)


def qkv(b=B, hq=H, hkv=H, l=L, s=S, e=E, ev=None, dtype=np.float32):
    q = RNG.standard_normal((b, hq, l, e)).astype(dtype)
    k = RNG.standard_normal((b, hkv, s, e)).astype(dtype)
    v = RNG.standard_normal((b, hkv, s, ev or e)).astype(dtype)
    return q, k, v


def grids(b, h, l, s):
    return (np.arange(b)[:, None, None, None], np.arange(h)[None, :, None, None],
            np.arange(l)[None, None, :, None], np.arange(s)[None, None, None, :])


def reference(q, k, v, score=None, keep=None, scale=None):
    """float64 attention: score(s, b, h, m, n) modifies the scaled scores and
    keep(b, h, m, n) masks them (numpy functions on broadcast index grids)."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, hq, l, e = q.shape
    rep = hq // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    scale = 1.0 / np.sqrt(e) if scale is None else scale
    s = np.einsum("bhmd,bhnd->bhmn", q, k) * scale
    idx = grids(b, hq, l, k.shape[2])
    if score is not None:
        s = score(s, *idx)
    mask = np.broadcast_to(keep(*idx) if keep is not None else True, s.shape)
    s = np.where(mask, s, -np.inf)
    top = np.max(s, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(mask, np.exp(s - top), 0.0)
    total = p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhmn,bhne->bhme", p, v) / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + top)[..., 0]
    return out, lse


def check(got, want, tol=1e-5):
    assert got.shape == want.shape
    err = np.max(np.abs(got.astype(np.float64) - want)) / max(np.max(np.abs(want)), 1e-30)
    assert err <= tol, err


def check_lse(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.all(got[~finite] == -np.inf)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ mods under test

def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def causal_np(b, h, m, n):
    return m >= n


WINDOW = 24


def sliding(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < WINDOW)


def sliding_np(b, h, m, n):
    return (m >= n) & (m - n < WINDOW)


PREFIX = 20


def prefix(b, h, q_idx, kv_idx):
    return kv_idx < PREFIX


def prefix_lm_np(b, h, m, n):
    return (m >= n) | (n < PREFIX)


DOCS = np.repeat(np.arange(5), 20)[:S].astype(np.int64)   # 5 documents


def document(b, h, q_idx, kv_idx):
    return DOCS[q_idx] == DOCS[kv_idx]


def document_np(b, h, m, n):
    return DOCS[m] == DOCS[n]


SLOPES = np.exp2(-8.0 * np.arange(1, H + 1) / H).astype(np.float32)


def alibi(score, b, h, q_idx, kv_idx):
    return score + SLOPES[h] * (kv_idx - q_idx)


def alibi_np(s, b, h, m, n):
    return s + SLOPES.astype(np.float64)[h] * (n - m)


def softcap(score, b, h, q_idx, kv_idx):
    return 30 * attnc.tanh(score / 30)


def softcap_np(s, b, h, m, n):
    return 30 * np.tanh(s / 30)


BIAS = RNG.standard_normal(L + S - 1).astype(np.float32)


def relative_bias(score, b, h, q_idx, kv_idx):
    return score + BIAS[q_idx - kv_idx + S - 1]


def relative_bias_np(s, b, h, m, n):
    return s + BIAS.astype(np.float64)[m - n + S - 1]


CASES = {
    "causal": (None, causal, None, causal_np),
    "sliding_window": (None, sliding, None, sliding_np),
    "prefix_lm": (None, attnc.or_masks(causal, prefix), None, prefix_lm_np),
    "document_causal": (None, attnc.and_masks(document, causal), None,
                        lambda b, h, m, n: document_np(b, h, m, n) & (m >= n)),
    "alibi_causal": (alibi, causal, alibi_np, causal_np),
    "softcap_sliding": (softcap, sliding, softcap_np, sliding_np),
    "relative_bias": (relative_bias, None, relative_bias_np, None),
    "document_or_prefix_alibi": (alibi, attnc.or_masks(document, prefix), alibi_np,
                                 lambda b, h, m, n: document_np(b, h, m, n) | (n < PREFIX)),
}


def make_mask(mask_mod, l=L, s=S):
    if mask_mod is None:
        return None
    return attnc.create_block_mask(mask_mod, None, None, l, s)


@pytest.mark.parametrize("name", sorted(CASES))
def test_variant(name):
    score_mod, mask_mod, score_np, keep_np = CASES[name]
    q, k, v = qkv()
    out = attnc.flex_attention(q, k, v, score_mod=score_mod, block_mask=make_mask(mask_mod))
    assert out.dtype == np.float32
    check(out, reference(q, k, v, score_np, keep_np)[0])


def test_lse_and_fully_masked_rows():
    def late(b, h, q_idx, kv_idx):
        return (q_idx >= 10) & (kv_idx <= q_idx)   # queries 0..9 keep nothing
    q, k, v = qkv()
    out, lse = attnc.flex_attention(q, k, v, score_mod=softcap, block_mask=make_mask(late),
                                    return_lse=True)
    want, want_lse = reference(q, k, v, softcap_np, lambda b, h, m, n: (m >= 10) & (n <= m))
    check(out, want)
    check_lse(lse, want_lse)
    assert np.all(out[:, :, :10] == 0) and np.all(lse[:, :, :10] == -np.inf)


def test_document_padding_rows_masked_by_a_score_mod():
    docs = DOCS.copy()
    docs[-7:] = -1   # padding

    def same_doc(b, h, q_idx, kv_idx):
        return docs[q_idx] == docs[kv_idx]

    def pad_score(score, b, h, q_idx, kv_idx):
        return attnc.where(docs[kv_idx] >= 0, score, -float("inf"))
    q, k, v = qkv(l=S)
    out, lse = attnc.flex_attention(q, k, v, score_mod=pad_score,
                                    block_mask=make_mask(same_doc, S, S), return_lse=True)
    want, want_lse = reference(q, k, v, None,
                               lambda b, h, m, n: (docs[m] == docs[n]) & (docs[n] >= 0))
    check(out, want)
    check_lse(lse, want_lse)
    assert np.all(lse[:, :, -7:] == -np.inf)


def test_gqa():
    q, k, v = qkv(hq=4, hkv=2, l=40, s=40)
    slopes = np.arange(1, 5, dtype=np.float32) / 8

    def per_head(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx)
    out, lse = attnc.flex_attention(q, k, v, score_mod=per_head,
                                    block_mask=make_mask(causal, 40, 40),
                                    enable_gqa=True, return_lse=True)
    want, want_lse = reference(q, k, v, lambda s, b, h, m, n: s - slopes.astype(np.float64)[h] * (m - n),
                               causal_np)
    check(out, want)
    check_lse(lse, want_lse)


def test_scale_value_dim_and_batch_dependent_mask():
    q, k, v = qkv(l=33, s=50, ev=24)
    lengths = np.array([50, 31], dtype=np.int32)

    def valid(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]
    out = attnc.flex_attention(q, k, v, block_mask=attnc.create_block_mask(valid, B, None, 33, 50),
                               scale=0.25)
    assert out.shape == (B, H, 33, 24)
    check(out, reference(q, k, v, None, lambda b, h, m, n: n < lengths[b], scale=0.25)[0])


def test_sequence_lengths_reuse_the_kernel():
    from attnc import _trace
    ids = np.repeat(np.arange(8), 16).astype(np.int32)

    def doc_mask(b, h, q_idx, kv_idx):
        return (ids[q_idx] == ids[kv_idx]) & (q_idx >= kv_idx)
    for n in (128, 70, 17):
        q, k, v = qkv(b=1, l=n, s=n)
        out = attnc.flex_attention(q, k, v, block_mask=make_mask(doc_mask, n, n))
        check(out, reference(q, k, v, None, lambda b, h, m, nn: (ids[m] == ids[nn]) & (m >= nn))[0])
        if n == 128:
            traces = _trace.STATS["traces"]
    assert _trace.STATS["traces"] == traces


def test_float64_and_noop_mask():
    q, k, v = qkv(b=1, l=20, s=20, dtype=np.float64)
    out = attnc.flex_attention(q, k, v, block_mask=make_mask(attnc.noop_mask, 20, 20))
    assert out.dtype == np.float64
    check(out, reference(q, k, v)[0])


# ----------------------------------------------------------------- BlockMask

def test_block_mask():
    mask = attnc.create_block_mask(causal, None, 2, 300, 200, BLOCK_SIZE=128)
    assert mask.shape == (1, 2, 300, 200) and mask.seq_lengths == (300, 200)
    assert mask.mask_mod is causal and "causal" in repr(mask)
    dense = mask.to_dense()
    assert dense.dtype == bool and dense.shape == (1, 2, 3, 2)
    assert dense[0, 0].tolist() == [[True, False], [True, True], [True, True]]
    doc = attnc.create_block_mask(attnc.and_masks(document, causal), 1, 1, S, S, BLOCK_SIZE=20)
    assert doc.to_dense()[0, 0].tolist() == np.eye(5, dtype=bool).tolist()


# -------------------------------------------------------------------- errors

def test_argument_errors():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="query must have rank 4"):
        attnc.flex_attention(q[0], k, v)
    with pytest.raises(ValueError, match="value must have rank 4"):
        attnc.flex_attention(q, k, v[0])
    with pytest.raises(ValueError, match="head dim"):
        attnc.flex_attention(q, k[..., :16], v)
    q4, k2, v2 = qkv(hq=4, hkv=2)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        attnc.flex_attention(q4, k2, v2)
    q3, _, _ = qkv(hq=3)
    with pytest.raises(ValueError, match=r"query heads Hq \(3, query.shape\[1\]\) must be a "
                                         r"multiple of the key/value heads Hkv \(2"):
        attnc.flex_attention(q3, k2, v2, enable_gqa=True)
    with pytest.raises(ValueError, match="sequence length"):
        attnc.flex_attention(q, k, v[:, :, :10])
    with pytest.raises(ValueError, match="Q_LEN, KV_LEN"):
        attnc.flex_attention(q, k, v, block_mask=make_mask(causal, S, S))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        attnc.flex_attention(q.tolist(), k, v)


def test_trace_errors_surface():
    def branchy(score, b, h, q_idx, kv_idx):
        if q_idx > kv_idx:
            return score
        return score * 2
    q, k, v = qkv()
    with pytest.raises(attnc.TraceError, match="test_flex.py:%d" % (branchy.__code__.co_firstlineno + 1)):
        attnc.flex_attention(q, k, v, score_mod=branchy)

    def bad_mask(b, h, q_idx, kv_idx):
        return max(q_idx, kv_idx) < 4
    with pytest.raises(attnc.TraceError, match="minimum"):
        attnc.create_block_mask(bad_mask, None, None, L, S)


# --------------------------------------------------------------------- torch

def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    q, k, v = qkv()
    ids = torch.from_numpy(DOCS)

    def docs(b, h, q_idx, kv_idx):
        return ids[q_idx] == ids[kv_idx]

    def score(s, b, h, q_idx, kv_idx):
        return torch.tanh(s / 30) * 30
    out, lse = attnc.flex_attention(*(torch.from_numpy(x) for x in (q, k, v)), score_mod=score,
                                    block_mask=make_mask(docs), return_lse=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    want, want_lse = reference(q, k, v, softcap_np, document_np)
    check(out.numpy(), want)
    check_lse(lse.numpy(), want_lse)


# -------------------------------------------- settings read through objects

def check_twice(run, reference_for, setting, change):
    """Runs `run()` (flex_attention on mods that read a setting), changes the
    setting and runs again: each result must match the reference for the
    setting's value at the time (a stale trace would repeat the first)."""
    q, k, v = qkv(b=1, l=40, s=40)
    first = run(q, k, v)
    check(first, reference_for(q, k, v, setting()))
    change()
    second = run(q, k, v)
    check(second, reference_for(q, k, v, setting()))
    assert not np.allclose(first, second)


def windowed(q, k, v, window):
    return reference(q, k, v, None, lambda b, h, m, n: (m >= n) & (m - n < window))[0]


def scaled(q, k, v, factor):
    return reference(q, k, v, lambda s, b, h, m, n: s * factor)[0]


class Settings:
    pass


def test_object_attributes_and_dict_items_are_guarded():
    cfg = Settings()
    cfg.window = 4

    def attribute(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < cfg.window)
    check_twice(lambda q, k, v: attnc.flex_attention(
        q, k, v, block_mask=make_mask(attribute, 40, 40)), windowed,
        lambda: cfg.window, lambda: setattr(cfg, "window", 16))

    settings = {"w": 3}

    def item(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < settings["w"])
    check_twice(lambda q, k, v: attnc.flex_attention(
        q, k, v, block_mask=make_mask(item, 40, 40)), windowed,
        lambda: settings["w"], lambda: settings.update(w=9))

    outer = Settings()
    outer.inner = Settings()
    outer.inner.factor = 0.5

    def nested(score, b, h, q_idx, kv_idx):
        return score * outer.inner.factor
    check_twice(lambda q, k, v: attnc.flex_attention(q, k, v, score_mod=nested), scaled,
                lambda: outer.inner.factor, lambda: setattr(outer.inner, "factor", 3.0))
    replacement = Settings()
    replacement.factor = -2.0
    check_twice(lambda q, k, v: attnc.flex_attention(q, k, v, score_mod=nested), scaled,
                lambda: outer.inner.factor, lambda: setattr(outer, "inner", replacement))


def test_a_repeated_call_reuses_its_checks_and_sees_changed_reads():
    """A call like an earlier one (arguments' types, shapes, dtypes and
    devices, the mods, the block mask, scale, flags) skips the argument
    checks and the spec, but still walks the mods: a changed read takes
    effect, and another shape is checked afresh."""
    from attnc import _flex
    cfg = Settings()
    cfg.window = 4

    def attribute(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < cfg.window)
    mask = make_mask(attribute, 40, 40)
    q, k, v = qkv(l=40, s=40)
    first = attnc.flex_attention(q, k, v, block_mask=mask)
    check(first, windowed(q, k, v, 4))
    kept = len(_flex._CALLS)
    again = attnc.flex_attention(q, k, v, block_mask=mask)
    assert len(_flex._CALLS) == kept
    assert np.array_equal(first, again)
    cfg.window = 16
    check(attnc.flex_attention(q, k, v, block_mask=mask), windowed(q, k, v, 16))
    with pytest.raises(ValueError, match="block_mask was created for"):
        attnc.flex_attention(q[:, :, :30], k, v, block_mask=mask)
    with pytest.raises(ValueError, match="different dtypes"):
        attnc.flex_attention(q, k.astype(np.float64), v, block_mask=mask)


def test_module_attributes_and_bound_methods_are_guarded():
    torch = pytest.importorskip("torch")

    class Windowed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.window = 5

        def mask_mod(self, b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx < self.window)

        def make_score_mod(self):
            def score_mod(score, b, h, q_idx, kv_idx):  # a closure over self
                return score * self.window
            return score_mod
    model = Windowed()
    check_twice(lambda q, k, v: attnc.flex_attention(
        q, k, v, block_mask=make_mask(model.mask_mod, 40, 40)), windowed,
        lambda: model.window, lambda: setattr(model, "window", 12))
    score_mod = model.make_score_mod()
    check_twice(lambda q, k, v: attnc.flex_attention(q, k, v, score_mod=score_mod), scaled,
                lambda: model.window, lambda: setattr(model, "window", 2))


def test_bound_methods_partials_and_callable_objects():
    torch = pytest.importorskip("torch")
    import functools
    q, k, v = qkv(b=1, l=40, s=40)

    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("slopes", torch.tensor([0.25, -0.5]))

        def forward(self, score, b, h, q_idx, kv_idx):
            return score + self.slopes[h] * (kv_idx - q_idx)

    class Softcap:
        def __init__(self, cap):
            self.cap = cap

        def __call__(self, score, b, h, q_idx, kv_idx):
            return self.cap * torch.tanh(score / self.cap)

    def capped(score, b, h, q_idx, kv_idx, cap):
        return cap * torch.tanh(score / cap)
    slopes = np.array([0.25, -0.5])
    alibi_ref = reference(q, k, v, lambda s, b, h, m, n: s + slopes[h] * (n - m))[0]
    model = Biased()
    for mod in (model, model.forward):
        check(attnc.flex_attention(q, k, v, score_mod=mod), alibi_ref)
    softcap_ref = reference(q, k, v, lambda s, b, h, m, n: 2 * np.tanh(s / 2))[0]
    for mod in (Softcap(2.0), functools.partial(capped, cap=2.0)):
        check(attnc.flex_attention(q, k, v, score_mod=mod), softcap_ref)
    model.slopes.mul_(2)  # a captured tensor changed in place
    slopes = slopes * 2
    alibi_ref = reference(q, k, v, lambda s, b, h, m, n: s + slopes[h] * (n - m))[0]
    check(attnc.flex_attention(q, k, v, score_mod=model), alibi_ref)


def test_integer_captures_are_converted_once_per_tensor_version():
    """A captured int64 tensor (document ids) is range-checked and converted
    to int32 once; the same tensor again reuses that, an in-place write or
    another tensor converts afresh."""
    torch = pytest.importorskip("torch")
    from attnc import _flex
    q, k, v = (torch.from_numpy(x) for x in qkv(b=1, l=30, s=30))
    ids = torch.from_numpy(np.repeat(np.arange(3), 10).astype(np.int64))

    def same_document(b, h, q_idx, kv_idx):
        return ids[q_idx] == ids[kv_idx]

    def want(doc):
        return reference(*(x.numpy() for x in (q, k, v)), None,
                         lambda b, h, m, n: doc[m] == doc[n])[0]
    mask = attnc.create_block_mask(same_document, None, None, 30, 30)
    check(attnc.flex_attention(q, k, v, block_mask=mask).numpy(), want(ids.numpy()))
    converted = _flex._CONVERTED_INDICES[id(ids)][-1]
    assert converted.dtype == torch.int32
    check(attnc.flex_attention(q, k, v, block_mask=mask).numpy(), want(ids.numpy()))
    assert _flex._CONVERTED_INDICES[id(ids)][-1] is converted
    ids[15:] = 7  # in place: a new version
    check(attnc.flex_attention(q, k, v, block_mask=mask).numpy(), want(ids.numpy()))
    assert _flex._CONVERTED_INDICES[id(ids)][-1] is not converted
    ids = torch.full((30,), 2 ** 31, dtype=torch.int64)  # another tensor, out of range
    with pytest.raises(ValueError, match="outside int32"):
        attnc.flex_attention(q, k, v, block_mask=mask)


# --------------------------------------------------------- captured scalars

def test_zero_dim_captures_are_scalars():
    torch = pytest.importorskip("torch")
    q, k, v = qkv(b=1, l=24, s=24)
    want = reference(q, k, v, lambda s, b, h, m, n: s * 1.5 + 2)[0]
    for factor, offset in ((np.array(1.5, dtype=np.float32), np.array(2, dtype=np.int64)),
                           (torch.tensor(1.5), torch.tensor(2))):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score * factor + offset
        check(attnc.flex_attention(q, k, v, score_mod=score_mod), want)
        out = attnc.flex_attention(*(torch.from_numpy(x) for x in (q, k, v)),
                                   score_mod=score_mod)
        check(out.numpy(), want)


def test_numpy_functions_on_traced_values():
    q, k, v = qkv(b=1, l=24, s=24)

    def score_mod(score, b, h, q_idx, kv_idx):
        return np.where(q_idx >= kv_idx, np.tanh(score / 4) * 4, np.exp(score) - 1)
    check(attnc.flex_attention(q, k, v, score_mod=score_mod),
          reference(q, k, v, lambda s, b, h, m, n: np.where(m >= n, np.tanh(s / 4) * 4,
                                                             np.exp(s) - 1))[0])


# -------------------------------------------------------- errors in context

def test_errors_about_captured_tables_name_the_variable():
    q, k, v = qkv(b=1, l=40, s=40)
    rel_bias = np.zeros(10, dtype=np.float32)   # too short for 40 x 40

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_bias[q_idx - kv_idx + 39]
    with pytest.raises(ValueError) as info:
        attnc.flex_attention(q, k, v, score_mod=score_mod)
    message = str(info.value)
    assert "'rel_bias'" in message and "rel_bias.shape[0]" in message
    assert "test_flex.py:%d" % (score_mod.__code__.co_firstlineno + 1) in message
    assert "Cap0" not in message and "C0_0" not in message and "<string>" not in message

    table = types.SimpleNamespace(ids=np.full(40, 2 ** 40, dtype=np.int64))

    def mask_mod(b, h, q_idx, kv_idx):
        return table.ids[q_idx] == table.ids[kv_idx]
    with pytest.raises(ValueError, match=r"'table\.ids' \(read at .*test_flex\.py:\d+\) "
                                         r"holds values outside int32"):
        attnc.flex_attention(q, k, v, block_mask=make_mask(mask_mod, 40, 40))


# ------------------------------------------------------------- dtypes, sizes

def test_torch_float64_is_computed_like_numpy_float64():
    torch = pytest.importorskip("torch")
    q, k, v = qkv(b=1, l=30, s=30, dtype=np.float64)
    want, want_lse = attnc.flex_attention(q, k, v, score_mod=softcap, return_lse=True)
    assert want.dtype == np.float64 and want_lse.dtype == np.float32
    out, lse = attnc.flex_attention(*(torch.from_numpy(x) for x in (q, k, v)),
                                    score_mod=softcap, return_lse=True)
    assert out.dtype == torch.float64 and lse.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_array_equal(lse.numpy(), want_lse)
    check(want, reference(q, k, v, softcap_np)[0])


def test_no_queries_or_no_keys():
    torch = pytest.importorskip("torch")
    for l, s in ((0, 16), (16, 0), (0, 0)):
        q, k, v = qkv(b=1, l=l, s=s, ev=24)
        mask = attnc.create_block_mask(causal, None, None, l, s)
        out, lse = attnc.flex_attention(q, k, v, score_mod=softcap, block_mask=mask,
                                        return_lse=True)
        assert out.shape == (1, H, l, 24) and out.dtype == np.float32 and not out.any()
        assert lse.shape == (1, H, l) and lse.dtype == np.float32 and np.all(lse == -np.inf)
        out, lse = attnc.flex_attention(*(torch.from_numpy(x) for x in (q, k, v)),
                                        block_mask=mask, return_lse=True)
        assert out.shape == (1, H, l, 24) and out.dtype == torch.float32
        assert not out.any() and bool(torch.all(lse == -math.inf))
