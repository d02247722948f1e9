"""The tracer: score_mod / mask_mod functions -> .attn spec text."""

import math
import re

import numpy as np
import pytest

import attnc
from attnc import _trace


def spec_of(score_mod=None, mask_mod=None, **kwargs):
    return attnc.trace(score_mod, mask_mod, **kwargs)


def statement(spec, start):
    """The one line of the spec that begins with `start` (after indentation)."""
    lines = [l.strip() for l in spec.splitlines() if l.strip().startswith(start)]
    assert len(lines) == 1, (start, spec)
    return lines[0]


def body(spec):
    """The spec without its comment header (which names the traced mods)."""
    return spec[spec.index("attention "):]


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def test_causal_mask():
    spec = spec_of(mask_mod=causal)
    assert statement(spec, "keep") == "keep S where m >= n"
    assert statement(spec, "S[") == "S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * scale"
    assert statement(spec, "P =") == "P = softmax[n](S)"
    assert statement(spec, "O[") == "O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])"
    assert "T[" not in spec and "LSE" not in spec
    assert re.search(r"^attention flex_[0-9a-f]{10} \{$", spec, re.M)
    assert "param scale: f32" in spec


def test_no_mods_is_plain_attention():
    spec = spec_of()
    assert "keep" not in spec and "T[" not in spec
    assert body(spec_of(lambda score, b, h, q, kv: score)) == body(spec)


def test_softcap_score_mod():
    def softcap(score, b, h, q_idx, kv_idx):
        return 30 * attnc.tanh(score / 30)
    spec = spec_of(softcap, causal)
    assert statement(spec, "T[") == "T[b,h,m,n] = 30 * tanh(S[b,h,m,n] / 30)"
    assert statement(spec, "keep") == "keep T where m >= n"
    assert statement(spec, "P =") == "P = softmax[n](T)"


def test_alibi_captures_slopes():
    slopes = np.exp2(-8.0 * np.arange(1, 5) / 4).astype(np.float32)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    spec = spec_of(alibi)
    assert "in    Cap0: f32[C0_0]    // slopes" in spec
    assert statement(spec, "T[") == "T[b,h,m,n] = S[b,h,m,n] + Cap0[h + 0] * (n - m)"


doc_ids = np.repeat(np.arange(4), 30)


def document(b, h, q_idx, kv_idx):
    return (doc_ids[q_idx] == doc_ids[kv_idx]) & (q_idx >= kv_idx)


def test_document_mask_reads_a_global_tensor():
    spec = spec_of(mask_mod=document)
    assert "in    Cap0: i32[C0_0]    // doc_ids" in spec
    assert statement(spec, "keep") == "keep S where Cap0[m + 0] == Cap0[n + 0] and m >= n"


def test_two_dimensional_and_shared_captures():
    doc = np.zeros((2, 50), dtype=np.int32)

    def mask(b, h, q_idx, kv_idx):
        return doc[b, q_idx] == doc[b][kv_idx]

    def score(s, b, h, q_idx, kv_idx):
        return s + doc[b, kv_idx]
    spec = spec_of(score, mask)
    assert spec.count("in    Cap") == 1  # the same tensor is one input
    assert "in    Cap0: i32[C0_0, C0_1]" in spec
    assert statement(spec, "keep") == "keep T where Cap0[b + 0, m + 0] == Cap0[b + 0, n + 0]"
    assert statement(spec, "T[") == "T[b,h,m,n] = S[b,h,m,n] + Cap0[b + 0, n + 0]"


def test_relative_bias_table_and_constants():
    L = 64
    table = np.zeros(2 * L - 1, dtype=np.float32)

    def rel(score, b, h, q_idx, kv_idx):
        return score + table[q_idx - kv_idx + L - 1]
    spec = spec_of(rel)
    assert statement(spec, "T[") == "T[b,h,m,n] = S[b,h,m,n] + Cap0[m - n + 64 - 1]"


def test_gqa_and_lse():
    spec = spec_of(mask_mod=causal, gqa=True, return_lse=True)
    assert "dims  B, H, G, M, N, D" in spec
    assert "in    K: f32[B, G, N, D]" in spec
    assert statement(spec, "let") == "let g = h / (H / G)"
    assert "K[b,g,n,d]" in spec and "V[b,g,n,e]" in spec
    assert "out   LSE: f32[B, H, M]" in spec
    assert statement(spec, "LSE =") == "LSE = logsumexp[n](S)"


def test_value_dim_and_dtype():
    spec = spec_of(dtype="bf16", value_dim=True)
    assert "dims  B, H, M, N, D, E" in spec
    assert "in    V: bf16[B, H, N, E]" in spec
    assert "out   O: bf16[B, H, M, E]" in spec


def test_arithmetic_typing():
    def mod(score, b, h, q_idx, kv_idx):
        return (score * ((q_idx // 3) % 2) + (q_idx - kv_idx) / 7 + score ** 2
                - kv_idx ** 0.5 + abs(q_idx - kv_idx) - (-score))
    rhs = statement(spec_of(mod), "T[").split(" = ", 1)[1]
    assert rhs == ("S[b,h,m,n] * (m / 3 % 2) + (m - n) * 1.0 / 7 + S[b,h,m,n] * S[b,h,m,n]"
                   " - sqrt(n) + abs(m - n) - -S[b,h,m,n]")


def test_float_floor_division_and_power():
    def mod(score, b, h, q_idx, kv_idx):
        return score // 2 + score ** 1.5
    rhs = statement(spec_of(mod), "T[").split(" = ", 1)[1]
    assert rhs == "S[b,h,m,n] / 2 - S[b,h,m,n] / 2 % 1.0 + S[b,h,m,n] ^ 1.5"


def test_boolean_operators_and_where():
    def mask(b, h, q_idx, kv_idx):
        return ~(q_idx < kv_idx) & ((kv_idx < 4) | (q_idx - kv_idx < 8)) ^ (h == 1)

    def score(s, b, h, q_idx, kv_idx):
        return attnc.where(q_idx > kv_idx, s * 2.0, attnc.minimum(s, 0.5))
    spec = spec_of(score, mask)
    assert statement(spec, "keep") == ("keep T where (not m < n and (n < 4 or m - n < 8)) != "
                                       "(h == 1)")
    assert statement(spec, "T[") == ("T[b,h,m,n] = select(m > n, S[b,h,m,n] * 2.0, "
                                     "min(S[b,h,m,n], 0.5))")


def test_minus_inf_from_where_becomes_a_mask():
    def score(s, b, h, q_idx, kv_idx):
        return attnc.where(q_idx >= kv_idx, s, -float("inf"))
    assert body(spec_of(score)) == body(spec_of(mask_mod=causal))

    def score2(s, b, h, q_idx, kv_idx):
        return attnc.where(kv_idx < 4, -math.inf, s + 1.0) * 0.5
    spec = spec_of(score2)
    assert statement(spec, "T[") == "T[b,h,m,n] = (S[b,h,m,n] + 1.0) * 0.5"
    assert statement(spec, "keep") == "keep T where not n < 4"

    def bad(s, b, h, q_idx, kv_idx):
        return s * attnc.where(kv_idx < 4, -math.inf, 1.0)
    with pytest.raises(attnc.TraceError, match="infinity"):
        spec_of(bad)


def test_and_or_noop_masks():
    prefix = 16

    def prefix_mask(b, h, q_idx, kv_idx):
        return kv_idx < prefix
    spec = spec_of(mask_mod=attnc.or_masks(causal, prefix_mask))
    assert statement(spec, "keep") == "keep S where m >= n or n < 16"
    spec = spec_of(mask_mod=attnc.and_masks(causal, attnc.noop_mask, document))
    assert statement(spec, "keep") == "keep S where m >= n and (Cap0[m + 0] == Cap0[n + 0] and m >= n)"
    assert "keep" not in spec_of(mask_mod=attnc.noop_mask)
    assert "keep" not in spec_of(mask_mod=attnc.and_masks())


def test_captured_number_constants_are_part_of_the_spec():
    def sliding(window):
        def mask(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx < window)
        return mask
    a, b = spec_of(mask_mod=sliding(256)), spec_of(mask_mod=sliding(128))
    assert "m - n < 256" in a and "m - n < 128" in b
    assert a.splitlines()[1] != b.splitlines()[1]  # the kernel names differ
    assert spec_of(mask_mod=sliding(256)) == a


def test_new_sequence_length_does_not_retrace():
    def make(ids):
        def mask(b, h, q_idx, kv_idx):
            return ids[(q_idx,) * ids.ndim] == ids[(kv_idx,) * ids.ndim]
        return mask
    first = spec_of(mask_mod=make(np.zeros(100, dtype=np.int64)))
    traces = _trace.STATS["traces"]
    again = spec_of(mask_mod=make(np.ones(4096, dtype=np.int32)))
    assert _trace.STATS["traces"] == traces and again == first
    # Another dtype class or rank is another spec.
    spec_of(mask_mod=make(np.zeros(100, dtype=np.float32)))
    assert _trace.STATS["traces"] == traces + 1
    spec_of(mask_mod=make(np.zeros((3, 100), dtype=np.int64)))
    assert _trace.STATS["traces"] == traces + 2


def test_captures_are_returned_in_input_order():
    a = np.zeros(10, dtype=np.float32)
    c = np.zeros(10, dtype=np.int32)

    def score(s, b, h, q_idx, kv_idx):
        return s + a[q_idx]

    def mask(b, h, q_idx, kv_idx):
        return c[kv_idx] > 0
    captured = []
    spec = attnc.trace(score, mask, captures=captured)
    assert captured[0] is a and captured[1] is c
    assert "Cap0: f32[C0_0]" in spec and "Cap1: i32[C1_0]" in spec


def test_bool_capture_reads_as_comparison():
    allowed = np.ones((4, 4), dtype=bool)

    def mask(b, h, q_idx, kv_idx):
        return allowed[q_idx // 16, kv_idx // 16]
    spec = spec_of(mask_mod=mask)
    assert statement(spec, "keep") == "keep S where Cap0[m / 16, n / 16] != 0"


# ------------------------------------------------------------------ errors

def lineno(fn, offset):
    return "test_trace.py:%d" % (fn.__code__.co_firstlineno + offset)


def test_if_on_a_traced_value():
    def mod(score, b, h, q_idx, kv_idx):
        if score > 0:
            return score
        return -score
    with pytest.raises(attnc.TraceError) as info:
        spec_of(mod)
    assert lineno(mod, 1) in str(info.value)
    assert "Python 'if'" in str(info.value) and "where" in str(info.value)


def test_while_on_a_traced_value():
    def mask(b, h, q_idx, kv_idx):
        while q_idx > 0:
            q_idx = q_idx - 1
        return q_idx == 0
    with pytest.raises(attnc.TraceError) as info:
        spec_of(mask_mod=mask)
    assert lineno(mask, 1) in str(info.value) and "'while'" in str(info.value)


def test_bool_and_chained_comparison():
    def mask(b, h, q_idx, kv_idx):
        return bool(q_idx)
    with pytest.raises(attnc.TraceError) as info:
        spec_of(mask_mod=mask)
    assert lineno(mask, 1) in str(info.value) and "bool()" in str(info.value)

    def chained(b, h, q_idx, kv_idx):
        return 0 <= kv_idx < q_idx
    with pytest.raises(attnc.TraceError, match="chained comparisons"):
        spec_of(mask_mod=chained)


def test_math_functions_on_a_traced_value():
    def mod(score, b, h, q_idx, kv_idx):
        return math.exp(score)
    with pytest.raises(attnc.TraceError) as info:
        spec_of(mod)
    assert lineno(mod, 1) in str(info.value) and "attnc.exp" in str(info.value)


def test_numpy_functions_on_a_traced_value():
    def mod(score, b, h, q_idx, kv_idx):
        return np.exp(score) + np.float32(2) * np.maximum(score, 0.0)
    assert statement(spec_of(mod), "T[") == (
        "T[b,h,m,n] = exp(S[b,h,m,n]) + 2.0 * max(S[b,h,m,n], 0.0)")

    def unsupported(score, b, h, q_idx, kv_idx):
        return np.sin(score)
    with pytest.raises(attnc.TraceError) as info:
        spec_of(unsupported)
    message = str(info.value)
    assert lineno(unsupported, 1) in message
    assert "numpy.sin is applied to a traced float" in message
    assert "attnc.exp" in message and "torch" in message


def test_other_untraceable_constructs():
    table = np.zeros(8, dtype=np.float32)

    def uses_len(score, b, h, q_idx, kv_idx):
        return score + len(table)
    with pytest.raises(attnc.TraceError, match="len"):
        spec_of(uses_len)

    class Holder:
        ids = np.zeros(8, dtype=np.int32)
    holder = Holder()

    def attribute(b, h, q_idx, kv_idx):
        return holder.ids[q_idx] == 0
    assert "Cap0: i32[C0_0]    // holder.ids" in spec_of(mask_mod=attribute)

    def made_here(b, h, q_idx, kv_idx):
        return np.arange(8)[q_idx] == 0
    with pytest.raises(attnc.TraceError, match="did not capture"):
        spec_of(mask_mod=made_here)

    def not_bool(b, h, q_idx, kv_idx):
        return q_idx - kv_idx
    with pytest.raises(attnc.TraceError, match="not a boolean"):
        spec_of(mask_mod=not_bool)

    def bitwise(b, h, q_idx, kv_idx):
        return (q_idx & 1) == 0
    with pytest.raises(attnc.TraceError, match="bitwise"):
        spec_of(mask_mod=bitwise)


# ------------------------------------------------------------------ torch

def test_torch_functions_route_to_the_tracer():
    torch = pytest.importorskip("torch")
    slopes = torch.ones(4)

    def score(s, b, h, q_idx, kv_idx):
        bias = torch.where(q_idx >= kv_idx, slopes[h] * (kv_idx - q_idx), -float("inf"))
        return torch.tanh(s / 20) * 20 + bias

    spec = spec_of(score)
    assert statement(spec, "T[") == "T[b,h,m,n] = tanh(S[b,h,m,n] / 20) * 20 + Cap0[h + 0] * (n - m)"
    assert statement(spec, "keep") == "keep T where m >= n"
    assert "Cap0: f32[C0_0]" in spec


# ----------------------------------------------------- the compiler accepts it

def test_generated_specs_compile():
    pytest.importorskip("attnc._attnc", reason="the attnc compiler module is not built")
    slopes = np.ones(4, dtype=np.float32)

    def mod(score, b, h, q_idx, kv_idx):
        return (attnc.where(q_idx >= kv_idx, score, score * 0.5) + slopes[h] * (q_idx // 2 % 3)
                - (q_idx - kv_idx) / 7 + attnc.sigmoid(score) ** 2)
    for kwargs in ({}, {"gqa": True, "return_lse": True}, {"value_dim": True}):
        spec = spec_of(mod, attnc.and_masks(causal, document), **kwargs)
        attnc.compile(spec, target="cpu")


# ------------------------------------------------------- reads through objects

def traces_of(fn):
    """How many traces a call of fn makes."""
    before = _trace.STATS["traces"]
    fn()
    return _trace.STATS["traces"] - before


class Config:
    LIMIT = 2

    def __init__(self):
        self.window = 4

    @property
    def doubled(self):
        return self.window * 2


def test_reads_through_objects_are_guarded():
    cfg = Config()
    cfg.inner = Config()

    def mask(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx < cfg.inner.doubled) & (kv_idx < Config.LIMIT * 10)
    assert statement(spec_of(mask_mod=mask), "keep") == "keep S where m - n < 8 and n < 20"
    assert traces_of(lambda: spec_of(mask_mod=mask)) == 0
    cfg.inner.window = 5
    assert statement(spec_of(mask_mod=mask), "keep") == "keep S where m - n < 10 and n < 20"
    Config.LIMIT = 3
    try:
        assert statement(spec_of(mask_mod=mask), "keep") == "keep S where m - n < 10 and n < 30"
    finally:
        Config.LIMIT = 2
    cfg.window = 100  # not read: the trace is reused
    assert traces_of(lambda: spec_of(mask_mod=mask)) == 0


def test_reads_of_dicts_modules_and_defaults_are_guarded():
    import functools
    import types
    settings = {"scale": 2}
    module = types.ModuleType("attnc_test_settings")
    module.OFFSET = 1

    def score(s, b, h, q_idx, kv_idx, extra=settings):
        bonus = sum(extra[key] for key in extra if key.startswith("bonus"))
        return s * settings.get("scale", 1) + module.OFFSET + bonus + len(extra)
    spec = lambda: statement(spec_of(score), "T[")
    assert spec() == "T[b,h,m,n] = S[b,h,m,n] * 2 + 1 + 0 + 1"
    settings["bonus_a"] = 10
    assert spec() == "T[b,h,m,n] = S[b,h,m,n] * 2 + 1 + 10 + 2"
    del settings["scale"]
    assert spec() == "T[b,h,m,n] = S[b,h,m,n] * 1 + 1 + 10 + 1"
    module.OFFSET = 7
    assert spec() == "T[b,h,m,n] = S[b,h,m,n] * 1 + 7 + 10 + 1"
    assert traces_of(spec) == 0

    holder = types.SimpleNamespace()

    def optional(s, b, h, q_idx, kv_idx, holder):
        return s * holder.factor if hasattr(holder, "factor") else s
    bound = functools.partial(optional, holder=holder)
    assert "T[" not in spec_of(bound)
    holder.factor = 3
    assert statement(spec_of(bound), "T[") == "T[b,h,m,n] = S[b,h,m,n] * 3"


def test_tensors_read_through_objects_are_captured():
    import types
    model = types.SimpleNamespace(slopes=np.ones(4, dtype=np.float32))

    def score(s, b, h, q_idx, kv_idx):
        return s + model.slopes[h]
    captured = []
    assert "Cap0: f32[C0_0]    // model.slopes" in spec_of(score)
    new_slopes = np.zeros(8, dtype=np.float32)
    model.slopes = new_slopes  # same dtype class and rank: same trace, new input
    assert traces_of(lambda: attnc.trace(score, captures=captured)) == 0
    assert captured[0] is new_slopes
    model.slopes = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(attnc.TraceError, match="captured tensor 'model.slopes' of rank 2"):
        spec_of(score)


def test_reads_that_cannot_be_guarded_are_traced_every_time():
    import types
    state = types.SimpleNamespace(table={})

    def score(s, b, h, q_idx, kv_idx):
        return s * state.table.setdefault("scale", 2)
    assert statement(spec_of(score), "T[") == "T[b,h,m,n] = S[b,h,m,n] * 2"
    state.table["scale"] = 5
    assert traces_of(lambda: spec_of(score)) == 1
    assert statement(spec_of(score), "T[") == "T[b,h,m,n] = S[b,h,m,n] * 5"

    cfg = Config()

    def class_attribute(s, b, h, q_idx, kv_idx):
        return s * cfg.__class__.LIMIT if isinstance(cfg, Config) else s
    assert traces_of(lambda: spec_of(class_attribute)) == 1
    assert traces_of(lambda: spec_of(class_attribute)) == 1


def test_mods_may_be_methods_partials_and_callable_objects():
    import functools

    class Softcap:
        def __init__(self, cap):
            self.cap = cap

        def __call__(self, score, b, h, q_idx, kv_idx):
            return self.cap * attnc.tanh(score / self.cap)

        def mask(self, b, h, q_idx, kv_idx):
            return q_idx - kv_idx < self.cap

    def capped(score, b, h, q_idx, kv_idx, cap):
        return cap * attnc.tanh(score / cap)
    softcap = Softcap(20)
    want = "T[b,h,m,n] = 20 * tanh(S[b,h,m,n] / 20)"
    assert statement(spec_of(softcap), "T[") == want
    assert statement(spec_of(softcap.__call__), "T[") == want
    assert statement(spec_of(functools.partial(capped, cap=20)), "T[") == want
    assert statement(spec_of(mask_mod=softcap.mask), "keep") == "keep S where m - n < 20"
    assert "Softcap.mask" in spec_of(mask_mod=softcap.mask).splitlines()[0]
    softcap.cap = 30
    assert statement(spec_of(softcap), "T[") == "T[b,h,m,n] = 30 * tanh(S[b,h,m,n] / 30)"
    with pytest.raises(attnc.TraceError, match="bound method"):
        spec_of(len)
