#!/usr/bin/env python3
"""attnc in PyTorch on a CUDA device: autograd through the GPU backward,
streams, threads, torch.compile, CUDA graphs and the host cost of a call.

Two steps, as for the other GPU checks (the GPU machine has PyTorch and the
runtime, not the compiler):

  1. Here:  PYTHONPATH=build/python python3 test/integration/gpu/check_torch.py \\
                --prepare DIR
     compiles the packages the checks load (forward and gradient, sm_90a,
     bf16) into the package store DIR.
  2. There: ATTNC_RUNTIME_LIBRARY=.../libattnc_runtime.so \\
                PYTHONPATH=frontends/python python3 \\
                test/integration/gpu/check_torch.py --run DIR [--json FILE]
     prints one line per check (PASS / FAIL with the numbers) and the host
     time of a call; exits 1 if a check fails.

Checks:
  * autograd: loss.backward() through attnc.compile'd kernels and
    attnc.flex_attention on bf16 CUDA tensors that require grad (causal,
    GQA, a document mask, ALiBi with constant captured slopes, softcap) at
    M = 333, N = 397 (no multiples of the tiles; M != N): dQ, dK, dV against
    float64 autograd of the same attention written in PyTorch (rel. error
    <= 2e-2), and FlexAttention's own error for scale;
  * streams: inputs written on a side stream and the call made under
    ``torch.cuda.stream`` of it give the default stream's results;
  * threads: 4 Python threads launching on their own streams at once;
  * torch.compile(fullgraph=True) of a function that calls a compiled
    kernel, forward and backward;
  * CUDA graphs: a call captured in ``torch.cuda.graph`` and replayed on
    new inputs;
  * host time per call of a tiny launch (1 query, 1 head, D = 64): the
    kernel call, flex_attention, the raw runtime launch through ctypes.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parents[3]
try:
    import attnc  # noqa: F401
except ImportError:  # the sources, without the compiler
    sys.path.insert(0, str(ROOT / "frontends" / "python"))

HEAD_DIM = 64
TOLERANCE = 2e-2
M, N = 333, 397
EXAMPLES = ROOT / "examples"


# ------------------------------------------------------------------ the mods

def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def doc_ids_numpy(length):
    import numpy as np
    lengths = [61, 5, 130, 1, 77, 200]
    ids = np.repeat(np.arange(len(lengths)), lengths)
    return np.resize(ids, length).astype(np.int32)


def slopes_numpy(heads):
    import numpy as np
    return np.exp2(-8.0 * np.arange(1, heads + 1) / heads).astype(np.float32)


def make_mods(to_tensor, heads):
    """name -> (score_mod, mask_mod, query heads, key/value heads); the
    captures made by `to_tensor` from numpy arrays (the same dtypes and
    ranks in both steps, hence the same specs)."""
    import attnc
    doc = to_tensor(doc_ids_numpy(max(M, N)))

    def document(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    slopes = to_tensor(slopes_numpy(heads))

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def softcap(score, b, h, q_idx, kv_idx):
        return 20.0 * attnc.tanh(score / 20.0)

    return {
        "causal": (None, causal, heads, heads),
        "gqa_causal": (None, causal, heads, heads // 2),
        "document_causal": (None, document, heads, heads),
        "alibi_causal": (alibi, causal, heads, heads),
        "softcap_causal": (softcap, causal, heads, heads),
    }


HEADS = 4


def learnable_alibi(slopes):
    """ALiBi reading `slopes` (a tensor the check makes require grad; the
    same source lines when prepared, hence the same spec)."""
    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return alibi


# ------------------------------------------------------------------ --prepare

def prepare(directory):
    os.environ["ATTNC_PACKAGE_DIR"] = os.path.abspath(directory)
    import attnc
    from attnc import _flex
    for name, (score_mod, mask_mod, hq, hkv) in make_mods(
            lambda a: a, HEADS).items():
        _flex.prepare(score_mod, mask_mod, dtype="bf16", target="sm_90a",
                      head_dim=HEAD_DIM, gqa=hq != hkv, grad=True)
        print("%s: flex packages ready" % name)
    # ALiBi with learnt slopes: the gradient package that differentiates them.
    _flex.prepare(learnable_alibi(slopes_numpy(HEADS)), causal, dtype="bf16",
                  target="sm_90a", head_dim=HEAD_DIM, grad=True,
                  grad_captures=True)
    print("alibi, slopes learnt: flex packages ready")
    for example in ("causal",):
        attnc.compile(EXAMPLES / (example + ".attn"), target="sm_90a",
                      dtype="bf16", shapes={"D": HEAD_DIM}, grad=True)
        print("%s: example packages ready" % example)
    return 0


# ---------------------------------------------------------------------- --run

def relative_error(got, want):
    got, want = got.double(), want.double()
    if not bool(got.isfinite().all()):
        return math.inf
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def eager_attention(q, k, v, score_mod, mask_mod):
    """The same attention in plain PyTorch, in q's float type."""
    sys.path.insert(0, str(ROOT / "bench"))
    from flex_gpu_compare import eager_reference
    return eager_reference(q, k, v, score_mod, mask_mod, dtype="double")


def leaves(shapes, seed, dtype):
    import torch
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(shape, device="cuda", generator=gen).to(dtype)
            .requires_grad_() for shape in shapes]


def gradients_of(attend, inputs, dout):
    inputs = [x.detach().requires_grad_() for x in inputs]
    out = attend(*inputs)
    out.backward(dout)
    return out.detach(), [x.grad for x in inputs]


class Report:
    def __init__(self):
        self.rows = []

    def add(self, name, ok, **numbers):
        row = dict(check=name, ok=bool(ok), **numbers)
        self.rows.append(row)
        text = ", ".join("%s=%s" % (k, ("%.2e" % v) if isinstance(v, float)
                                    else v) for k, v in numbers.items())
        print("%s %-34s %s" % ("PASS" if ok else "FAIL", name, text))
        sys.stdout.flush()


def check_autograd(report, torch_flex, torch_block_mask):
    import torch
    import attnc
    mods = make_mods(lambda a: torch.from_numpy(a).cuda(), HEADS)
    for name, (score_mod, mask_mod, hq, hkv) in mods.items():
        q, k, v = leaves([(2, hq, M, HEAD_DIM), (2, hkv, N, HEAD_DIM),
                          (2, hkv, N, HEAD_DIM)], 7, torch.bfloat16)
        dout = torch.randn(q.shape, device="cuda").to(torch.bfloat16)
        gqa = hq != hkv
        mask = attnc.create_block_mask(mask_mod, None, None, M, N)
        out, ours = gradients_of(lambda q, k, v: attnc.flex_attention(
            q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=gqa),
            (q, k, v), dout)
        want_out, want = gradients_of(
            lambda q, k, v: eager_attention(q, k, v, score_mod, mask_mod),
            [x.double() for x in (q, k, v)], dout.double())
        errors = [relative_error(g, w) for g, w in zip(ours, want)]
        flex_mask = torch_block_mask(mask_mod, None, None, M, N,
                                     device="cuda")
        _, theirs = gradients_of(lambda q, k, v: torch_flex(
            q, k, v, score_mod=score_mod, block_mask=flex_mask,
            enable_gqa=gqa), (q, k, v), dout)
        flex_errors = [relative_error(g, w) for g, w in zip(theirs, want)]
        dtypes_ok = all(g.dtype == torch.bfloat16 for g in ours)
        report.add("autograd flex_attention " + name,
                   max(errors) <= TOLERANCE and dtypes_ok,
                   out=relative_error(out, want_out), dQ=errors[0],
                   dK=errors[1], dV=errors[2], flex_max=max(flex_errors))
    # Learnable ALiBi slopes: their gradient (summed per row in the dQ
    # kernel, then per head) against float64 autograd, and FlexAttention's.
    slopes = torch.from_numpy(slopes_numpy(HEADS)).cuda()
    q, k, v = leaves([(2, HEADS, M, HEAD_DIM), (2, HEADS, N, HEAD_DIM),
                      (2, HEADS, N, HEAD_DIM)], 11, torch.bfloat16)
    dout = torch.randn(q.shape, device="cuda").to(torch.bfloat16)
    mask = attnc.create_block_mask(causal, None, None, M, N)
    _, ours = gradients_of(lambda q, k, v, s: attnc.flex_attention(
        q, k, v, score_mod=learnable_alibi(s), block_mask=mask),
        (q, k, v, slopes), dout)
    _, want = gradients_of(lambda q, k, v, s: eager_attention(
        q, k, v, learnable_alibi(s), causal),
        [x.double() for x in (q, k, v, slopes)], dout.double())
    errors = [relative_error(g, w) for g, w in zip(ours, want)]
    flex_mask = torch_block_mask(causal, None, None, M, N, device="cuda")
    _, theirs = gradients_of(lambda q, k, v, s: torch_flex(
        q, k, v, score_mod=learnable_alibi(s), block_mask=flex_mask),
        (q, k, v, slopes), dout)
    flex_errors = [relative_error(g, w) for g, w in zip(theirs, want)]
    report.add("autograd flex_attention alibi, slopes learnt",
               max(errors) <= TOLERANCE, dQ=errors[0], dK=errors[1],
               dV=errors[2], dSlopes=errors[3], flex_dSlopes=flex_errors[3])

    # A compiled kernel (examples/gqa.attn: its own G axis for the group).
    kernel = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                           dtype="bf16", shapes={"D": HEAD_DIM})
    q, k, v = leaves([(2, 3, M, HEAD_DIM), (2, 3, N, HEAD_DIM),
                      (2, 3, N, HEAD_DIM)], 8, torch.bfloat16)
    dout = torch.randn(q.shape, device="cuda").to(torch.bfloat16)
    _, ours = gradients_of(kernel, (q, k, v), dout)
    offset = N - M  # causal.attn keeps n <= m + (N - M)
    _, want = gradients_of(lambda q, k, v: eager_attention(
        q, k, v, None, lambda b, h, m, n: n <= m + offset),
        [x.double() for x in (q, k, v)], dout.double())
    errors = [relative_error(g, w) for g, w in zip(ours, want)]
    report.add("autograd compiled causal.attn", max(errors) <= TOLERANCE,
               dQ=errors[0], dK=errors[1], dV=errors[2])
    return kernel


def check_streams_and_threads(report, kernel):
    import torch
    q, k, v = [x.detach() for x in leaves(
        [(4, 8, 1000, HEAD_DIM), (4, 8, 1100, HEAD_DIM),
         (4, 8, 1100, HEAD_DIM)], 9, torch.bfloat16)]
    want = kernel(q, k, v)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # Written on the side stream: the call must be ordered after it.
        q2 = q * 1.0
        got = kernel(q2, k, v)
    side.synchronize()
    report.add("stream: call on the current stream", torch.equal(got, want),
               max_abs=float((got.float() - want.float()).abs().max()))

    results, errors = [None] * 4, []

    def worker(i):
        try:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                outs = [kernel(q, k, v) for _ in range(20)]
            stream.synchronize()
            results[i] = all(torch.equal(o, want) for o in outs)
        except Exception as error:  # reported below
            errors.append(repr(error))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.add("threads: 4 x 20 calls on own streams",
               not errors and all(results), errors=len(errors))


def check_layouts(report, kernel):
    """Views the kernels read through their strides (sm_90a: through the
    tensor maps the runtime builds from them) give the bits of their dense
    copies: [B, L, H, D] storage seen as [B, H, L, D], every other head of a
    wider tensor, and the middle columns of wider rows."""
    import torch
    q, k, v = [x.detach() for x in leaves(
        [(2, 4, 700, HEAD_DIM), (2, 4, 900, HEAD_DIM),
         (2, 4, 900, HEAD_DIM)], 11, torch.bfloat16)]
    want = kernel(q, k, v)
    views = {
        "[B, L, H, D] storage": lambda x: x.transpose(1, 2).contiguous().transpose(1, 2),
        "every other head": lambda x: torch.stack(
            [x, torch.zeros_like(x)], 2).flatten(1, 2)[:, ::2],
        "middle columns": lambda x: torch.cat(
            [torch.zeros_like(x[..., :8]), x, torch.zeros_like(x[..., :8])], -1)[..., 8:-8],
    }
    for name, view in views.items():
        args = [view(x) for x in (q, k, v)]
        same_values = all(torch.equal(a, x) for a, x in zip(args, (q, k, v)))
        got = kernel(*args)
        report.add("layout: %s" % name, same_values and torch.equal(got, want),
                   strides=str(args[0].stride()),
                   max_abs=float((got.float() - want.float()).abs().max()))


def check_compile(report, kernel):
    import torch
    q, k, v = leaves([(1, 3, M, HEAD_DIM), (1, 3, N, HEAD_DIM),
                      (1, 3, N, HEAD_DIM)], 10, torch.bfloat16)

    def loss_of(q, k, v):
        return (kernel(q, k, v).float() ** 2).sum()
    try:
        compiled = torch.compile(loss_of, fullgraph=True)
        loss = compiled(q, k, v)
        loss.backward()
        got = [x.grad.clone() for x in (q, k, v)]
        for x in (q, k, v):
            x.grad = None
        loss_of(q, k, v).backward()
        want = [x.grad for x in (q, k, v)]
        error = max(relative_error(g, w) for g, w in zip(got, want))
        report.add("torch.compile(fullgraph) fwd+bwd", error <= 1e-6,
                   grad_vs_eager=error)
    except Exception as error:
        report.add("torch.compile(fullgraph) fwd+bwd", False,
                   error=repr(error)[:300])


def check_cuda_graph(report, kernel):
    # A prefill launch, and a decode launch (one query, many keys: the
    # split-key kernel and its merge, whose workspaces come from PyTorch's
    # allocator, hence from the graph's pool).
    for what, m, n in (("", 700, 900), (" (decode, workspaces)", 1, 8192)):
        check_cuda_graph_of(report, kernel, what, m, n)


def check_cuda_graph_of(report, kernel, what, m, n):
    import torch
    shapes = [(2, 4, m, HEAD_DIM), (2, 4, n, HEAD_DIM), (2, 4, n, HEAD_DIM)]
    q, k, v = [x.detach() for x in leaves(shapes, 11, torch.bfloat16)]
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up: modules, workspaces, allocator
                kernel(q, k, v)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = kernel(q, k, v)
        fresh = [x.detach() for x in leaves(shapes, 12, torch.bfloat16)]
        for x, y in zip((q, k, v), fresh):
            x.copy_(y)
        graph.replay()
        want = kernel(q, k, v)
        torch.cuda.synchronize()
        report.add("CUDA graph capture + replay" + what,
                   torch.equal(out, want),
                   max_abs=float((out.float() - want.float()).abs().max()))
    except Exception as error:
        report.add("CUDA graph capture + replay" + what, False,
                   error=repr(error)[:300])


def check_overhead(report, kernel, torch_flex):
    import torch
    import attnc
    sys.path.insert(0, str(ROOT / "bench"))
    from flex_gpu_compare import host_time_us
    q, k, v = [x.detach() for x in leaves(
        [(1, 1, 1, HEAD_DIM), (1, 1, 64, HEAD_DIM), (1, 1, 64, HEAD_DIM)],
        13, torch.bfloat16)]
    mask = attnc.create_block_mask(causal, None, None, 1, 64)
    times = {
        "kernel_us": host_time_us(lambda: kernel(q, k, v)),
        "flex_attention_us": host_time_us(lambda: attnc.flex_attention(
            q, k, v, block_mask=mask)),
        "torch_flex_us": host_time_us(lambda: torch_flex(q, k, v)),
        "empty_like_us": host_time_us(lambda: torch.empty_like(q)),
    }
    report.add("host time per call (tiny launch)", True, **times)


def run(directory, json_path):
    os.environ["ATTNC_PACKAGE_DIR"] = os.path.abspath(directory)
    import torch
    from torch.nn.attention.flex_attention import (create_block_mask,
                                                   flex_attention)
    for option in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, option):
            setattr(torch._dynamo.config, option, 1024)
    torch_flex = torch.compile(flex_attention, dynamic=False)
    print("device: %s, torch %s" % (torch.cuda.get_device_name(),
                                    torch.__version__))
    report = Report()
    kernel = check_autograd(report, torch_flex, create_block_mask)
    for check in (check_layouts, check_streams_and_threads, check_compile,
                  check_cuda_graph):
        check(report, kernel)
    check_overhead(report, kernel, torch_flex)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report.rows, f, indent=1)
    return 0 if all(row["ok"] for row in report.rows) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", metavar="DIR")
    mode.add_argument("--run", metavar="DIR")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare)
    return run(args.run, args.json)


if __name__ == "__main__":
    sys.exit(main())
