#!/usr/bin/env python3
"""attnc.flex_attention against PyTorch FlexAttention on an NVIDIA GPU.

The same score_mod / mask_mod functions go to both: attnc traces them into
.attn specs and runs its own kernels, PyTorch compiles FlexAttention
(torch.compile) with a BlockMask from torch's create_block_mask.

Two steps, because the GPU machine has PyTorch and CUDA but no attnc compiler
(only `import attnc` from frontends/python and the runtime library built with
`cmake -S runtime`):

  1. Here, where attnc is built (no torch needed):
       PYTHONPATH=build/python python3 bench/flex_gpu_compare.py --prepare DIR
     traces every mod with numpy captures of the dtypes and ranks the GPU run
     uses (so the specs and package keys are the same) and compiles each spec
     for sm_90a, bf16, D = 128 into the package store DIR.
  2. On the GPU machine, with DIR carried there:
       ATTNC_RUNTIME_LIBRARY=.../libattnc_runtime.so PYTHONPATH=frontends/python \\
         python3 bench/flex_gpu_compare.py --run DIR --out results.json
     loads the packages (no compiling), checks attnc against torch's flex
     (max abs / relative error; a float32 eager reference for one small size)
     and times both (CUDA events, warmup then 20 reps, median), plus the
     first call of each (tracing + package load for attnc, torch.compile for
     flex). attnc's call is also timed as the raw launcher would run it (the
     runtime's plan launched from a loop, outputs made once: "raw ms") and
     captured in a CUDA graph ("graph ms"); before the table, the host time
     per call of a tiny launch (the compiled kernel, attnc.flex_attention,
     torch's flex). With --backward also forward + backward through autograd: the
     times, and dQ, dK, dV against flex's and (M = 333, N = 397) against
     float64 autograd of the eager attention.

Both steps print one line per mod with its spec key (the package file name):
they must agree. A failing mod prints its error and the run goes on.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback

import importlib.util

if importlib.util.find_spec("attnc") is None:  # the sources, without the compiler
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "frontends", "python"))

BATCH, HEADS, LENGTH, HEAD_DIM = 4, 16, 2048, 128
WINDOW, PREFIX, CAP = 256, 512, 30.0
REPS, WARMUP = 20, 3


# -------------------------------------------------------------------- the mods

def doc_ids_numpy(L, seed=1):
    """Documents of random lengths packed into L (int32 [L])."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lengths, left = [], L
    while left > 0:
        n = min(int(rng.integers(max(1, L // 16), L // 2 + 2)), left)
        lengths.append(n)
        left -= n
    return np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)


def alibi_slopes_numpy(H):
    import numpy as np
    return np.exp2(-8.0 * np.arange(1, H + 1) / H).astype(np.float32)


def bias_table_numpy(L, seed=2):
    import numpy as np
    return (np.random.default_rng(seed).standard_normal(2 * L - 1) * 0.5).astype(np.float32)


def make_case(name, L, to_tensor):
    """(score_mod, mask_mod, query heads, kv heads) of case `name` at length L.

    `to_tensor` turns the numpy captures into what the mods hold (numpy arrays
    for --prepare, CUDA tensors for --run): same dtypes and ranks, hence the
    same specs."""
    import attnc

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def window(b, h, q_idx, kv_idx):
        return q_idx - kv_idx < WINDOW

    def prefix(b, h, q_idx, kv_idx):
        return kv_idx < PREFIX

    doc = to_tensor(doc_ids_numpy(L))

    def document(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    slopes = to_tensor(alibi_slopes_numpy(HEADS))

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def softcap(score, b, h, q_idx, kv_idx):
        return CAP * attnc.tanh(score / CAP)

    table = to_tensor(bias_table_numpy(L))

    def relative_bias(score, b, h, q_idx, kv_idx):
        return score + table[q_idx - kv_idx + L - 1]

    sliding = attnc.and_masks(causal, window)
    cases = {
        "causal": (None, causal, HEADS, HEADS),
        "sliding_window256": (None, sliding, HEADS, HEADS),
        "prefix_lm512": (None, attnc.or_masks(causal, prefix), HEADS, HEADS),
        "document_causal": (None, attnc.and_masks(causal, document), HEADS, HEADS),
        "alibi_causal": (alibi, causal, HEADS, HEADS),
        "softcap30_causal": (softcap, causal, HEADS, HEADS),
        "relative_bias_causal": (relative_bias, causal, HEADS, HEADS),
        "window_or_prefix_document": (
            None, attnc.and_masks(document, attnc.or_masks(sliding, prefix)), HEADS, HEADS),
        "gqa32_8_causal": (None, causal, 32, 8),
    }
    return cases[name]


CASES = [  # (case, L)
    ("causal", LENGTH), ("sliding_window256", LENGTH), ("prefix_lm512", LENGTH),
    ("document_causal", LENGTH), ("alibi_causal", LENGTH), ("softcap30_causal", LENGTH),
    ("relative_bias_causal", LENGTH), ("window_or_prefix_document", LENGTH),
    ("gqa32_8_causal", LENGTH), ("document_causal", 2 * LENGTH),
]


def spec_key(score_mod, mask_mod, gqa):
    """The traced spec and its package file name for sm_90a, bf16, D = 128."""
    import attnc
    spec = attnc.trace(score_mod, mask_mod, gqa=gqa, dtype="bf16")
    path = attnc.package_path(spec, "sm_90a", None, {"D": HEAD_DIM})
    return spec, os.path.basename(path)


# ------------------------------------------------------------------ --prepare

def prepare(directory):
    os.environ["ATTNC_PACKAGE_DIR"] = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    import numpy as np  # noqa: F401
    import attnc
    from attnc import _flex
    failures = 0
    for name, L in CASES:
        score_mod, mask_mod, hq, hkv = make_case(name, L, lambda a: a)
        try:
            spec, key = spec_key(score_mod, mask_mod, hq != hkv)
            start = time.perf_counter()
            _, kernel = _flex.prepare(score_mod, mask_mod, dtype="bf16", target="sm_90a",
                                      head_dim=HEAD_DIM, gqa=hq != hkv)
            print("%-28s L=%-5d key %s  (%.1f s)" % (name, L, key, time.perf_counter() - start))
        except Exception as error:  # keep going: report every mod
            failures += 1
            print("%-28s L=%-5d FAILED: %s" % (name, L, error))
            continue
        try:  # the gradient package, for --backward
            kernel._prepare_gradient()
        except attnc.CompileError as error:
            print("%-28s L=%-5d no GPU backward: %s" % (name, L, str(error).splitlines()[-1]))
    # --varlen: the packed-sequence mask varlen_attention traces (causal,
    # shared offsets: it reads the per-token sequence ids alone).
    import numpy as np
    ids = np.zeros(VARLEN_TOKENS, np.int32)
    mask = attnc._varlen._PackedMask(None, True, True, ids, ids, ids[:2], ids[:2])
    _, kernel = _flex.prepare(None, mask, dtype="bf16", target="sm_90a", head_dim=HEAD_DIM,
                              grad=True)
    print("%-28s packages ready" % "varlen_causal")
    return 1 if failures else 0


# ---------------------------------------------------------------------- --run

def cuda_time(fn, reps=REPS, warmup=WARMUP):
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def first_call(fn):
    import torch
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) * 1e3


def errors(got, want):
    got, want = got.float(), want.float()
    diff = (got - want).abs()
    return float(diff.max()), float(diff.norm() / want.norm().clamp_min(1e-30))


def eager_reference(q, k, v, score_mod, mask_mod, dtype="float"):
    """float32 (or `dtype`) attention with the mods applied to index grids
    (small sizes)."""
    import torch
    q, k, v = (getattr(x, dtype)() for x in (q, k, v))
    B, Hq, L, E = q.shape
    rep = Hq // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(E)
    dev = q.device
    b = torch.arange(B, device=dev)[:, None, None, None]
    h = torch.arange(Hq, device=dev)[None, :, None, None]
    m = torch.arange(L, device=dev)[None, None, :, None]
    n = torch.arange(k.shape[2], device=dev)[None, None, None, :]
    if score_mod is not None:
        s = score_mod(s, b, h, m, n)
    keep = mask_mod(b, h, m, n).expand_as(s) if mask_mod is not None else torch.ones_like(s, dtype=torch.bool)
    s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v


def float64_reference_gradients(q, k, v, dout, score_mod, mask_mod):
    """dQ, dK, dV of eager_reference's attention in float64 (small sizes)."""
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    out = eager_reference(*leaves, score_mod, mask_mod, dtype="double")
    out.backward(dout.double())
    return [x.grad for x in leaves]


def gradients(attend, q, k, v, dout):
    """dQ, dK, dV that backward() gives through `attend(q, k, v)`."""
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    attend(*leaves).backward(dout)
    return [x.grad for x in leaves]


def run_backward(row, q, k, v, score_mod, mask_mod, gqa, torch_flex, torch_block_mask):
    """Forward + backward of both through autograd: times, the gradients
    against FlexAttention's, and on a slice whose length is no multiple of
    the tiles (and M != N) against float64 autograd of eager attention."""
    import torch
    import attnc
    L = q.shape[2]
    gen = torch.Generator(device="cuda").manual_seed(1)
    dout = torch.randn(q.shape, device="cuda", dtype=q.dtype, generator=gen)
    mask = attnc.create_block_mask(mask_mod, None, None, L, L) if mask_mod else None
    flex_mask = torch_block_mask(mask_mod, None, None, L, L, device="cuda") if mask_mod else None

    def ours(q, k, v):
        return attnc.flex_attention(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=gqa)

    def flex(q, k, v):
        return torch_flex(q, k, v, score_mod=score_mod, block_mask=flex_mask, enable_gqa=gqa)
    got = gradients(ours, q, k, v, dout)
    want = gradients(flex, q, k, v, dout)
    row["grad_rel_vs_flex"] = max(errors(g, w)[1] for g, w in zip(got, want))
    row["ours_fwd_bwd_ms"] = cuda_time(lambda: gradients(ours, q, k, v, dout))
    row["flex_fwd_bwd_ms"] = cuda_time(lambda: gradients(flex, q, k, v, dout))
    M, N = 333, 397  # no multiples of the tiles; M != N
    small = [x[:1, :, :n].contiguous() for x, n in ((q, M), (k, N), (v, N))]
    small_dout = dout[:1, :, :M].contiguous()
    small_mask = attnc.create_block_mask(mask_mod, None, None, M, N) if mask_mod else None
    reference = float64_reference_gradients(*small, small_dout, score_mod, mask_mod)
    got = gradients(lambda q, k, v: attnc.flex_attention(
        q, k, v, score_mod=score_mod, block_mask=small_mask, enable_gqa=gqa), *small, small_dout)
    row["grad_rel_f64"] = max(errors(g, w)[1] for g, w in zip(got, reference))
    flex_small_mask = (torch_block_mask(mask_mod, None, None, M, N, device="cuda")
                       if mask_mod else None)
    got = gradients(lambda q, k, v: torch_flex(
        q, k, v, score_mod=score_mod, block_mask=flex_small_mask, enable_gqa=gqa),
        *small, small_dout)
    row["flex_grad_rel_f64"] = max(errors(g, w)[1] for g, w in zip(got, reference))


def run_case(name, L, check_small, torch_flex, torch_block_mask, backward=False):
    import torch
    import attnc
    score_mod, mask_mod, hq, hkv = make_case(name, L, lambda a: torch.from_numpy(a).cuda())
    gqa = hq != hkv
    row = {"mod": name, "B": BATCH, "Hq": hq, "Hkv": hkv, "L": L, "D": HEAD_DIM}
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(BATCH, hq, L, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(BATCH, hkv, L, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(BATCH, hkv, L, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)

    # First calls: tracing + package load for attnc, torch.compile for flex
    # (both with their block mask creation).
    def ours_first():
        mask = attnc.create_block_mask(mask_mod, None, None, L, L) if mask_mod else None
        return attnc.flex_attention(q, k, v, score_mod=score_mod, block_mask=mask,
                                    enable_gqa=gqa)
    out, row["ours_first_ms"] = first_call(ours_first)
    mask = attnc.create_block_mask(mask_mod, None, None, L, L) if mask_mod else None
    ours = lambda: attnc.flex_attention(  # noqa: E731
        q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=gqa)
    row["ours_ms"] = cuda_time(ours)
    row["spec_key"] = spec_key(score_mod, mask_mod, gqa)[1]
    row["raw_ms"] = raw_launch_time(ours)
    row["graph_ms"] = graph_replay_time(ours)
    row["python_over_raw"] = row["ours_ms"] / row["raw_ms"]
    row["graph_over_raw"] = row["graph_ms"] / row["raw_ms"]

    def flex_first():
        mask = torch_block_mask(mask_mod, None, None, L, L, device="cuda") if mask_mod else None
        return torch_flex(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=gqa), mask
    (ref, flex_mask), row["flex_first_ms"] = first_call(flex_first)
    row["flex_ms"] = cuda_time(lambda: torch_flex(
        q, k, v, score_mod=score_mod, block_mask=flex_mask, enable_gqa=gqa))
    row["max_abs_err_vs_flex"], row["rel_err_vs_flex"] = errors(out, ref)

    if check_small:  # the same mods (same specs) on a slice of the inputs
        small = [x[:1, :, :512].contiguous() for x in (q, k, v)]
        want = eager_reference(*small, score_mod, mask_mod)
        mask = attnc.create_block_mask(mask_mod, None, None, 512, 512) if mask_mod else None
        got = attnc.flex_attention(*small, score_mod=score_mod, block_mask=mask, enable_gqa=gqa)
        row["max_abs_err_vs_f32"], row["rel_err_vs_f32"] = errors(got, want)
        flex_small = torch_flex(*small, score_mod=score_mod, enable_gqa=gqa, block_mask=(
            torch_block_mask(mask_mod, None, None, 512, 512, device="cuda") if mask_mod else None))
        row["flex_rel_err_vs_f32"] = errors(flex_small, want)[1]
    if backward:
        try:
            run_backward(row, q, k, v, score_mod, mask_mod, gqa, torch_flex,
                         torch_block_mask)
        except attnc.CompileError as error:  # no GPU backward for this mod
            row["backward_error"] = str(error).splitlines()[-1]
    return row


def kernel_call_of(call):
    """(kernel, args, kwargs) of the GpuKernel call that `call` makes."""
    from attnc import _runtime
    seen = {}
    original = _runtime.GpuKernel.__call__

    def spy(self, *args, **kwargs):
        seen["call"] = (self, args, kwargs)
        return original(self, *args, **kwargs)
    _runtime.GpuKernel.__call__ = spy
    try:
        call()
    finally:
        _runtime.GpuKernel.__call__ = original
    return seen["call"]


def raw_launch_time(call, timer=None):
    """The kernel `call` launches, timed (by `timer`, default cuda_time) as
    the raw launcher would run it: the runtime's plan launched from a loop
    with the outputs made once, no Python per launch but this loop's ctypes
    call."""
    import ctypes
    import torch
    from attnc import _runtime
    kernel, args, kwargs = kernel_call_of(call)
    inputs, params, _ = kernel._bind_call(args, kwargs)
    checked = kernel._plans[_runtime._plan_key(inputs, params)]
    lib = kernel._package.lib
    plan = ctypes.c_void_p()
    status = lib.attnc_plan_create(kernel._package.handle, None, checked.inputs, len(inputs),
                                   checked.params, checked.num_params, checked.outputs,
                                   len(checked.results), ctypes.byref(plan))
    if status != 0:
        raise RuntimeError(_runtime._last_error(lib))
    device = inputs[0].device
    outputs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in checked.results]
    in_data = (ctypes.c_void_p * len(inputs))(*[x.data_ptr() for x in inputs])
    out_data = (ctypes.c_void_p * len(outputs))(*[x.data_ptr() for x in outputs])
    stream = _runtime._current_stream(lib, torch, device)
    try:
        return (timer or cuda_time)(
            lambda: lib.attnc_plan_launch(plan, in_data, out_data, None, stream))
    finally:
        lib.attnc_plan_free(plan)


def graph_replay_time(call):
    """`call` captured in a CUDA graph (after warm-up launches on a side
    stream), timed as replays."""
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return cuda_time(graph.replay)


def host_time_us(fn, calls=2000):
    """Host time per call of `fn` (no synchronisation inside the loop)."""
    import torch
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def run_overhead(torch_flex, torch_block_mask):
    """Host time per call of a tiny causal launch (1 query, 64 keys): the
    compiled kernel's call, attnc.flex_attention, torch's compiled flex."""
    import torch
    import attnc
    score_mod, mask_mod, hq, hkv = make_case("causal", 64, lambda a: a)
    q = torch.randn(1, hq, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, hkv, 64, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    mask = attnc.create_block_mask(mask_mod, None, None, 1, 64)
    ours = lambda: attnc.flex_attention(q, k, v, block_mask=mask)  # noqa: E731
    kernel, args, kwargs = kernel_call_of(ours)
    flex_mask = torch_block_mask(mask_mod, None, None, 1, 64, device="cuda")
    row = {"kernel_us": host_time_us(lambda: kernel(*args, **kwargs)),
           "flex_attention_us": host_time_us(ours),
           "torch_flex_us": host_time_us(lambda: torch_flex(q, k, v, block_mask=flex_mask)),
           "torch_empty_us": host_time_us(lambda: torch.empty_like(q)),
           "plan_launch_us": raw_launch_time(ours, host_time_us)}
    row["native"] = bool(kernel._native)
    return row


VARLEN_TOKENS, VARLEN_HEADS = 16384, 16


def varlen_lengths(total, seed=3):
    """Random sequence lengths (64 .. 4096 tokens) that sum to `total`."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(int(min(rng.integers(64, 4097), total - sum(lengths))))
    return lengths


def run_varlen(torch_flex, torch_block_mask):
    """Packed causal sequences (16k tokens, H = 16, D = 128, bf16): attnc's
    varlen_attention, FlexAttention with the document-causal mask of the same
    packing, SDPA on a nested jagged tensor of the same sequences; forward and
    forward + backward times, outputs and gradients against flex."""
    import torch
    import attnc
    lengths = varlen_lengths(VARLEN_TOKENS)
    cu = torch.tensor([0] + lengths, dtype=torch.int32, device="cuda").cumsum(0).to(torch.int32)
    T, H = VARLEN_TOKENS, VARLEN_HEADS
    gen = torch.Generator(device="cuda").manual_seed(4)
    q, k, v = (torch.randn(T, H, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
               for _ in range(3))
    dout = torch.randn(T, H, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
    doc = torch.repeat_interleave(torch.arange(len(lengths), device="cuda"),
                                  torch.tensor(lengths, device="cuda"))

    def document_causal(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)
    flex_mask = torch_block_mask(document_causal, None, None, T, T, device="cuda")

    def ours(q, k, v):
        return attnc.varlen_attention(q, k, v, cu, causal=True, check=False)

    def flex(q, k, v):
        out = torch_flex(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                         v.transpose(0, 1)[None], block_mask=flex_mask)
        return out[0].transpose(0, 1)

    def nested(q, k, v):
        def jagged(x):
            return torch.nested.nested_tensor_from_jagged(
                x, offsets=cu.to(torch.int64)).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(
            jagged(q), jagged(k), jagged(v), is_causal=True)
        return out.transpose(1, 2).values()

    def fwd_bwd(attend):
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        attend(*leaves).backward(dout)
        return [x.grad for x in leaves]
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    row = {"mod": "varlen_causal", "L": T, "sequences": len(lengths)}
    out, want = ours(q, k, v), flex(q, k, v)
    row["rel_err_vs_flex"] = errors(out, want)[1]
    row["grad_rel_vs_flex"] = max(errors(g, w)[1] for g, w in zip(fwd_bwd(ours), fwd_bwd(flex)))
    for name, attend in (("ours", ours), ("flex", flex), ("nested_sdpa", nested)):
        try:
            row[name + "_ms"] = cuda_time(lambda: attend(q, k, v))
            row[name + "_fwd_bwd_ms"] = cuda_time(lambda: fwd_bwd(attend))
            row[name + "_tflops"] = 4.0 * pairs * HEAD_DIM * H / row[name + "_ms"] / 1e9
        except Exception as error:  # nested SDPA may lack a kernel for this
            row[name + "_error"] = "%s: %s" % (type(error).__name__, str(error)[:200])
    print("varlen: %d sequences, %d tokens: %s" % (
        len(lengths), T, ", ".join("%s=%s" % (key, ("%.3f" % value) if isinstance(value, float)
                                               else value) for key, value in row.items())))
    return row


def run(directory, out_path, only, backward=False, varlen=False):
    os.environ["ATTNC_PACKAGE_DIR"] = os.path.abspath(directory)
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    # Every mod and size is a recompilation of the one flex_attention: lift
    # dynamo's limit (8 by default), past which flex falls back to eager.
    for option in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                   "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, option):
            setattr(torch._dynamo.config, option, 1024)
    torch_flex = torch.compile(flex_attention, dynamic=False)
    print("device: %s, torch %s" % (torch.cuda.get_device_name(), torch.__version__))
    overhead = run_overhead(torch_flex, create_block_mask)
    print("host time per call (1 x 64 causal, %s launch path): kernel %.1f us, "
          "attnc.flex_attention %.1f us, torch flex %.1f us; of which torch.empty %.1f us, "
          "the runtime's plan launch through ctypes %.1f us" % (
              "native" if overhead["native"] else "ctypes", overhead["kernel_us"],
              overhead["flex_attention_us"], overhead["torch_flex_us"],
              overhead["torch_empty_us"], overhead["plan_launch_us"]))
    rows = []
    for i, (name, L) in enumerate(CASES):
        if only and name not in only:
            continue
        try:
            row = run_case(name, L, L == LENGTH, torch_flex, create_block_mask, backward)
        except Exception as error:  # keep going: report every mod
            traceback.print_exc()
            row = {"mod": name, "L": L, "error": "%s: %s" % (type(error).__name__, error)}
        rows.append(row)
        print_row(row)
        sys.stdout.flush()
        if out_path:  # after every mod, so that a cut-off run keeps its rows
            with open(out_path, "w") as f:
                json.dump({"overhead": overhead, "rows": rows}, f, indent=1)
    if varlen:
        try:
            rows.append(run_varlen(torch_flex, create_block_mask))
        except Exception as error:
            traceback.print_exc()
            rows.append({"mod": "varlen_causal", "L": VARLEN_TOKENS,
                         "error": "%s: %s" % (type(error).__name__, error)})
        if out_path:
            with open(out_path, "w") as f:
                json.dump({"overhead": overhead, "rows": rows}, f, indent=1)
    print()
    print_table(rows, COLUMNS)
    if backward:
        print()
        print_table(rows, BACKWARD_COLUMNS, "backward_error")
    return 1 if any("error" in r for r in rows) else 0


COLUMNS = [  # key, heading, width, format
    ("mod", "mod", 26, "%s"), ("L", "L", 5, "%d"), ("ours_ms", "ours ms", 8, "%.3f"),
    ("raw_ms", "raw ms", 8, "%.3f"), ("python_over_raw", "py/raw", 7, "%.3f"),
    ("graph_ms", "graph ms", 8, "%.3f"), ("graph_over_raw", "grf/raw", 7, "%.3f"),
    ("flex_ms", "flex ms", 8, "%.3f"), ("ours_first_ms", "ours 1st", 9, "%.0f"),
    ("flex_first_ms", "flex 1st", 9, "%.0f"), ("max_abs_err_vs_flex", "maxabs", 9, "%.2e"),
    ("rel_err_vs_flex", "rel", 9, "%.2e"), ("rel_err_vs_f32", "rel f32", 9, "%.2e"),
    ("flex_rel_err_vs_f32", "flex f32", 9, "%.2e")]

BACKWARD_COLUMNS = [  # forward + backward through autograd
    ("mod", "mod", 26, "%s"), ("L", "L", 5, "%d"),
    ("ours_fwd_bwd_ms", "ours f+b", 9, "%.3f"), ("flex_fwd_bwd_ms", "flex f+b", 9, "%.3f"),
    ("grad_rel_vs_flex", "grad rel", 9, "%.2e"), ("grad_rel_f64", "rel f64", 9, "%.2e"),
    ("flex_grad_rel_f64", "flex f64", 9, "%.2e")]


def print_row(row):
    if "error" in row:
        print("%-26s L=%-5d ERROR %s" % (row["mod"], row["L"], row["error"]))
    else:
        print("%-26s L=%-5d key %s ours %.3f ms, flex %.3f ms" % (
            row["mod"], row["L"], row["spec_key"], row["ours_ms"], row["flex_ms"]))


def print_table(rows, columns, error_key="error"):
    print(" ".join(head.ljust(width) if key == "mod" else head.rjust(width)
                   for key, head, width, _ in columns))
    for row in rows:
        cells = []
        for key, _, width, fmt in columns:
            text = fmt % row[key] if row.get(key) is not None else "-"
            cells.append(text.ljust(width) if key == "mod" else text.rjust(width))
        for key in ("error", error_key):
            if key in row:
                cells = cells[:2] + ["error: " + row[key][:100]]
                break
        print(" ".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", metavar="DIR", help="compile the packages into DIR")
    mode.add_argument("--run", metavar="DIR", help="load the packages from DIR and compare")
    parser.add_argument("--out", help="JSON results (--run)")
    parser.add_argument("--mods", help="comma-separated subset of the mods (--run)")
    parser.add_argument("--backward", action="store_true",
                        help="also forward + backward through autograd: times and "
                        "gradients against FlexAttention's and float64 (--run)")
    parser.add_argument("--varlen", action="store_true",
                        help="also packed variable-length sequences: varlen_attention "
                        "against flex's document mask and SDPA on nested tensors (--run)")
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare)
    return run(args.run, args.out, set(args.mods.split(",")) if args.mods else None,
               args.backward, args.varlen)


if __name__ == "__main__":
    sys.exit(main())
