#!/usr/bin/env python3
"""Checks and times attnc GPU kernel packages on the GPU machine.

Run ON the GPU machine (PyTorch + Triton, CUDA driver; no LLVM/MLIR), from the
repository root, after test/integration/gpu/build_on_device.sh built
attnc-launch (see test/integration/gpu/README.md for the exact command):

  python3 bench/gpu_suite.py --launch /tmp/attnc-build-rt/bin/attnc-launch \
      --packages build/gpu-packages [--quick]

(a) correctness: each suite package on small random sizes (M != N, not
    multiples of 64; a fully masked row where the variant has one) computed by
    attnc-launch on inputs written here as .npy, against a float64 PyTorch
    reference of the same math; rel. error (Frobenius) <= 1e-2 for bf16.
(b) benchmark: L in {1k, 4k, 16k}, H = 16 (GQA: 32 q / 8 kv), D = 128, 16k
    tokens per batch; ours = median of CUDA-event-timed launches inside
    attnc-launch; peers = SDPA flash / cuDNN (where the variant is expressible)
    and compiled FlexAttention with a BlockMask, timed with do_bench as in
    bench/peers_torch.py. TFLOP/s count kept (query, key) pairs.
(c) decode: 1 query against a 32k KV cache, batch 8, GQA 32/8, D = 128 (the
    gqa package: its decode entries), against SDPA flash / cuDNN and
    FlexAttention on the same tensors shapes; TB/s of K and V read.
Prints a table and writes JSON lines to $OUT/gpu_suite.jsonl.

With --backward (packages of make_packages.sh's suite-grad/, the adjoint
kernels VARIANT_grad of `attnc compile --grad`), instead:
(a) correctness: each suite-grad package on the small sizes of (a) with a
    random dO (bf16 values), dQ, dK, dV (and dSlopes where the package has
    it) against float64 PyTorch autograd of the reference above; rel. error
    (Frobenius) <= 2e-2. Also compiled FlexAttention's bf16 gradients for the
    same mods (not gated): their error against the reference and their
    difference from ours.
(b) timing: L in {4k, 16k} (--lengths), sizes as (b); ours: the grad package
    (forward recomputed, then the backward) and the forward package, each the
    median of attnc-launch's timing; ours bwd = the difference. Peers: SDPA
    flash / cuDNN (where expressible) and compiled FlexAttention, forward and
    out.backward(dO, retain_graph=True) timed with do_bench as in
    peers_bwd.py. Backward TFLOP/s = 2.5x the forward's kept-pair FLOPs;
    fraction of the H200's 989 TFLOP/s dense bf16 peak.
Prints a table and writes JSON lines to $OUT/gpu_bwd_suite.jsonl.
"""
import argparse, json, math, os, re, subprocess, sys, tempfile, time
import numpy as np
import torch

D = 128
TOK = 16384
W = 1024
SINKS = 4
CAP = 30.0

# ---------------------------------------------------------------- variants
# Each mask is written with the spec's alignment: query m sits at key
# position m + (N - M) (examples/*.attn). Tensors of shape [M, N] (bool).

def pos(M, N, dev):
    m = torch.arange(M, device=dev)[:, None] + (N - M)
    n = torch.arange(N, device=dev)[None, :]
    return m, n

def doc_ids(L, seed=1):
    """Documents of random lengths packed into L, as peers_torch.py does."""
    g = torch.Generator().manual_seed(seed)
    lens, rem = [], L
    while rem > 0:
        n = int(torch.randint(max(1, L // 16), L // 2 + 2, (1,), generator=g))
        n = min(n, rem); lens.append(n); rem -= n
    return torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).to(torch.int32)

def alibi_slopes(H):
    return torch.exp2(-8.0 * (torch.arange(H, dtype=torch.float64) + 1) / H)

VARIANTS = {
    # name: mask(M, N, extra, dev) -> bool [M, N] (None: keep all), causal
    # flag for SDPA, params for attnc-launch.
    "full": dict(mask=None, sdpa="full", params={}),
    "causal": dict(mask=lambda m, n, x: n <= m, sdpa="causal", params={}),
    "window1024": dict(mask=lambda m, n, x: (n <= m) & (m - n < x["window"]),
                       params={"window": W}),
    "sink4+window1024": dict(
        mask=lambda m, n, x: (n <= m) & ((m - n < x["window"]) | (n < SINKS)),
        params={"window": W}),
    "alibi-causal": dict(mask=lambda m, n, x: n <= m, params={}, alibi=True),
    "softcap30-causal": dict(mask=lambda m, n, x: n <= m, params={"cap": CAP},
                             softcap=CAP),
    "document-causal": dict(
        mask=lambda m, n, x: (n <= m) & (x["doc_n"] == x["doc_m"]) & (x["doc_n"] != -1),
        params={}, doc=True),
    "gqa32-8-causal": dict(mask=lambda m, n, x: n <= m, sdpa="causal", params={},
                           gqa=(32, 8)),
}

def reference(v, q, k, vv, extra, M, N):
    """float64 attention of variant v; q [B,H,M,D], k/v [B,G,N,D]."""
    spec = VARIANTS[v]
    q, k, vv = q.double(), k.double(), vv.double()
    H, G = q.shape[1], k.shape[1]
    if G != H:
        k = k.repeat_interleave(H // G, dim=1); vv = vv.repeat_interleave(H // G, dim=1)
    s = torch.einsum("bhmd,bhnd->bhmn", q, k) / math.sqrt(D)
    m, n = pos(M, N, q.device)
    if spec.get("alibi"):
        s = s + extra["slopes"].double()[None, :, None, None] * (n - m)
    if spec.get("softcap"):
        c = spec["softcap"]; s = c * torch.tanh(s / c)
    if spec["mask"] is not None:
        x = dict(extra)
        if spec.get("doc"):
            doc = extra["doc"].long()  # [B, N]
            x["doc_n"] = doc[:, None, None, :]
            x["doc_m"] = doc[:, m.clamp(0, N - 1)[:, 0]][:, None, :, None]
        keep = spec["mask"](m, n, x)
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)  # fully masked rows: O = 0
    return torch.einsum("bhmn,bhne->bhme", p, vv)

# ---------------------------------------------------------------- packages

def read_manifest(path):
    with open(path, "rb") as f:
        data = f.read()
    m = re.match(rb"attnpkg 1\nmanifest (\d+)\n", data)
    start = m.end(); n = int(m.group(1))
    return json.loads(data[start:start + n])

def save_bf16(path, t):
    np.save(path, t.to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16))

def load_bf16(path):
    a = np.load(path)
    if a.dtype == np.uint16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(a).float()

def launch_arguments(dims, params, inputs):
    """attnc-launch's --dim, --param and --input arguments."""
    cmd = ["--dim", ",".join(f"{k}={v}" for k, v in dims.items())]
    for k, v in params.items():
        cmd += ["--param", f"{k}={v}"]
    for k, v in inputs.items():
        cmd += ["--input", f"{k}={v}"]
    return cmd

def launch(args, pkg, dims, params, inputs, out_dir, timing=None, extra_args=()):
    return run_launch(args, pkg, launch_arguments(dims, params, inputs) + list(extra_args),
                      out_dir, timing)

def run_launch(args, pkg, arguments, out_dir, timing=None):
    cmd = [args.launch, pkg] + arguments
    if out_dir is not None:
        cmd += ["--out-dir", out_dir]
    if timing:
        cmd += ["--warmup", str(timing[0]), "--repeat", str(timing[1]), "--no-poison"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"attnc-launch failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout

def make_inputs(v, man, B, H, G, M, N, tmp, gen):
    """Writes the package's inputs as .npy; returns (paths, tensors, extra)."""
    spec = VARIANTS[v]
    q = torch.randn(B, H, M, D, generator=gen).to(torch.bfloat16)
    k = torch.randn(B, G, N, D, generator=gen).to(torch.bfloat16)
    vv = torch.randn(B, G, N, D, generator=gen).to(torch.bfloat16)
    extra = dict(spec["params"])
    paths = {}
    for a in man["args"]:
        if a["kind"] != "input":
            continue
        name, p = a["name"], os.path.join(tmp, a["name"] + ".npy")
        if name in ("Q", "K", "V"):
            save_bf16(p, {"Q": q, "K": k, "V": vv}[name])
        elif name == "Slopes":
            extra["slopes"] = alibi_slopes(H)
            np.save(p, extra["slopes"].float().numpy())
        elif name == "Doc":
            doc = torch.stack([doc_ids(N, seed=1 + b) for b in range(B)])
            extra["doc"] = doc
            np.save(p, doc.numpy().astype(np.int32))
        else:
            raise RuntimeError(f"{v}: no generator for input {name}")
        paths[name] = p
    return paths, (q, k, vv), extra

def dims_for(man, B, H, G, M, N):
    names = {d["name"] for d in man["dims"] if "size" not in d}
    vals = {"B": B, "H": H, "G": G, "M": M, "N": N}
    return {n: vals[n] for n in names}

def check_cases(v):
    """(B, M, N) of the correctness launches."""
    # M > N gives the first M - N rows no key (causal family); the document
    # mask indexes Doc at m + N - M, so it keeps M <= N.
    cases = [(2, 77, 200), (1, 300, 157)] if not VARIANTS[v].get("doc") else [(2, 77, 200), (1, 150, 301)]
    if VARIANTS[v]["mask"] is None:
        cases = [(2, 77, 200), (1, 300, 157)]
    # More tiles than SMs: the persistent Hopper kernel's CTAs take several
    # each, (head, batch) pairs past a whole section of 16.
    cases += [(5, 2000, 2100)] if VARIANTS[v].get("doc") else [(5, 2100, 2000)]
    # Decode launches (M H / G <= 64 runs the split-key kernel and its merge).
    cases += [(2, 3, 1000), (1, 1, 5000)]
    return cases

def check(args, v, pkg, rows):
    man = read_manifest(pkg)
    gen = torch.Generator().manual_seed(0)
    H, G = VARIANTS[v].get("gqa", (4, 4))
    cases = check_cases(v)
    ok = True
    for case, (B, M, N) in enumerate(cases):
        with tempfile.TemporaryDirectory() as tmp:
            paths, (q, k, vv), extra = make_inputs(v, man, B, H, G, M, N, tmp, gen)
            ref = reference(v, q.float(), k.float(), vv.float(), extra, M, N)
            empty = int((ref.abs().sum(-1) == 0).sum())
            # Three launches, each output poisoned before it: the last must
            # be whole too (a tile counter left at 0 for the next launch).
            # The first case again with O one element past its allocation's
            # start (no two adjacent columns are aligned to a pair: the kernel
            # stores them one by one), and two (pairs aligned, rows not to 16
            # bytes: one store per pair).
            offsets = (0, 2, 4) if case == 0 else (0,)
            for offset in offsets:
                out = os.path.join(tmp, f"out{offset}")
                launch(args, pkg, dims_for(man, B, H, G, M, N), VARIANTS[v]["params"], paths,
                       out, extra_args=("--launches", "3", "--output-offset", str(offset)))
                o = load_bf16(os.path.join(out, "O.npy")).double()
                err = ((o - ref).norm() / ref.norm().clamp_min(1e-30)).item()
                good = math.isfinite(err) and err <= 1e-2 and torch.isfinite(o).all().item()
                ok &= good
                r = dict(kind="check", variant=v, B=B, H=H, G=G, M=M, N=N, rel_err=err,
                         empty_rows=empty, output_offset=offset, ok=good)
                rows.append(r)
                print(f"{'PASS' if good else 'FAIL'} {v:18s} B={B} H={H} G={G} M={M} N={N} "
                      f"rel_err={err:.2e} empty_rows={empty}"
                      + (f" (O at a {offset}-byte offset)" if offset else ""), flush=True)
    return ok

# ---------------------------------------------------------------- benchmark

def kept_fraction(v, L, extra, dev):
    spec = VARIANTS[v]
    if spec["mask"] is None:
        return 1.0
    m, n = pos(L, L, dev)
    x = dict(extra)
    if spec.get("doc"):
        doc = extra["doc"][0].to(dev).long()
        x["doc_n"] = doc[None, :]; x["doc_m"] = doc[:, None]
    return spec["mask"](m, n, x).float().mean().item()

def tflops(B, H, L, ms, frac):
    return 4 * B * H * L * L * D * frac / (ms * 1e-3) / 1e12

def bench_peers(v, B, H, G, L, extra, flex, do_bench):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.attention.flex_attention import create_block_mask
    import torch.nn.functional as F
    dev, dt = "cuda", torch.bfloat16
    spec = VARIANTS[v]
    q = torch.randn(B, H, L, D, device=dev, dtype=dt)
    k, vv = (torch.randn(B, G, L, D, device=dev, dtype=dt) for _ in range(2))
    res = {}
    gqa = G != H
    if "sdpa" in spec:
        for be, name in [(SDPBackend.FLASH_ATTENTION, "flash"), (SDPBackend.CUDNN_ATTENTION, "cudnn")]:
            try:
                with sdpa_kernel([be]):
                    fn = lambda: F.scaled_dot_product_attention(q, k, vv, is_causal=spec["sdpa"] == "causal", enable_gqa=gqa)
                    fn(); torch.cuda.synchronize()
                    res[name] = do_bench(fn, warmup=25, rep=100, return_mode="median")
            except Exception as e:
                print("ERR", v, name, repr(e)[:160], flush=True)
    x = dict(spec["params"])
    if spec.get("doc"):
        doc = extra["doc"][0].to(dev)
        mm = lambda b, h, qi, ki: (qi >= ki) & (doc[qi] == doc[ki])
    elif spec["mask"] is not None:
        f = spec["mask"]
        mm = lambda b, h, qi, ki: f(qi, ki, x)
    else:
        mm = None
    bm = create_block_mask(mm, None, None, L, L, device=dev) if mm else None
    score_mod = None
    if spec.get("alibi"):
        slopes = alibi_slopes(H).to(dev).float()
        score_mod = lambda s, b, h, qi, ki: s + slopes[h] * (ki - qi)
    if spec.get("softcap"):
        c = spec["softcap"]
        score_mod = lambda s, b, h, qi, ki: c * torch.tanh(s / c)
    fn = lambda: flex(q, k, vv, score_mod=score_mod, block_mask=bm, enable_gqa=gqa)
    t0 = time.time(); fn(); torch.cuda.synchronize(); res["flex_compile_s"] = time.time() - t0
    res["flex"] = do_bench(fn, warmup=25, rep=100, return_mode="median")
    del q, k, vv
    return res

DECODE = dict(B=8, H=32, G=8, M=1, N=32768)

def bench_decode(args, pkg, flex, do_bench):
    """(c): ms and TB/s of K and V read, ours and the peers'."""
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel, SDPBackend
    B, H, G, M, N = (DECODE[x] for x in "BHGMN")
    man = read_manifest(pkg)
    row = dict(kind="decode", variant="gqa32-8-decode", **DECODE, D=D)
    kv_bytes = 2 * B * G * N * D * 2
    with tempfile.TemporaryDirectory() as tmp:
        txt = launch(args, pkg, dims_for(man, B, H, G, M, N), {}, {}, tmp,
                     timing=(10, max(args.repeat, 50)))
    row["ours_ms"] = float(re.search(r"time: median ([0-9.]+) ms", txt).group(1))
    if flex is not None:
        dev, dt = "cuda", torch.bfloat16
        q = torch.randn(B, H, M, D, device=dev, dtype=dt)
        k, v = (torch.randn(B, G, N, D, device=dev, dtype=dt) for _ in range(2))
        for be, name in [(SDPBackend.FLASH_ATTENTION, "flash"), (SDPBackend.CUDNN_ATTENTION, "cudnn")]:
            try:
                with sdpa_kernel([be]):
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                    fn(); torch.cuda.synchronize()
                    row[name + "_ms"] = do_bench(fn, warmup=25, rep=100, return_mode="median")
            except Exception as e:
                print("ERR decode", name, repr(e)[:160], flush=True)
        try:
            fn = lambda: flex(q, k, v, enable_gqa=True)
            fn(); torch.cuda.synchronize()
            row["flex_ms"] = do_bench(fn, warmup=25, rep=100, return_mode="median")
        except Exception as e:
            print("ERR decode flex", repr(e)[:160], flush=True)
        del q, k, v
    for key in ("ours", "flex", "cudnn", "flash"):
        if key + "_ms" in row:
            row[key + "_tbs"] = kv_bytes / (row[key + "_ms"] * 1e-3) / 1e12
    return row

# ---------------------------------------------------------------- backward

PEAK_TFLOPS = 989.0  # H200 SXM dense bf16
BWD_TOL = 2e-2
BWD_LENGTHS = "4096,16384"

def reference_grads(v, q, k, vv, extra, M, N, do):
    """float64 PyTorch autograd of reference(): {"dQ", "dK", "dV"[, "dSlopes"]:
    gradient of <dO, O>}. Fully masked rows get zero gradients (their NaN
    softmax only reaches masked, zeroed entries)."""
    leaves = {"dQ": q.detach().double().requires_grad_(),
              "dK": k.detach().double().requires_grad_(),
              "dV": vv.detach().double().requires_grad_()}
    x = dict(extra)
    if "slopes" in extra:
        x["slopes"] = extra["slopes"].detach().double().requires_grad_()
        leaves["dSlopes"] = x["slopes"]
    out = reference(v, leaves["dQ"], leaves["dK"], leaves["dV"], x, M, N)
    out.backward(do.double())
    return {name: t.grad.detach() for name, t in leaves.items()}

def rel_err(got, ref):
    got, ref = got.double().cpu(), ref.double().cpu()
    if got.shape != ref.shape:
        return math.inf
    err = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    return err if torch.isfinite(got).all().item() else math.inf

def flex_mods(v, H, M, N, extra, dev):
    """(mask_mod or None, score_mod or None, mask per batch) of variant v for
    FlexAttention with M queries at key positions m + (N - M), as in
    reference(); document ids per batch row from extra["doc"] [B, N]."""
    spec = VARIANTS[v]
    off = N - M
    x = dict(spec["params"])
    if spec.get("doc"):
        doc = extra["doc"].to(dev).long()
        def mm(b, h, qi, ki):
            p = qi + off
            return (ki <= p) & (doc[b, p.clamp(0, N - 1)] == doc[b, ki])
    elif spec["mask"] is not None:
        f = spec["mask"]
        mm = lambda b, h, qi, ki: f(qi + off, ki, x)
    else:
        mm = None
    score_mod = None
    if spec.get("alibi"):
        slopes = extra["slopes"].to(dev).float() if "slopes" in extra else \
            alibi_slopes(H).to(dev).float()
        score_mod = lambda s, b, h, qi, ki: s + slopes[h] * (ki - (qi + off))
    if spec.get("softcap"):
        c = spec["softcap"]
        score_mod = lambda s, b, h, qi, ki: c * torch.tanh(s / c)
    return mm, score_mod, bool(spec.get("doc"))

def flex_grads(v, q, k, vv, extra, M, N, do, flex):
    """Compiled FlexAttention's bf16 gradients of <dO, O> on the GPU."""
    from torch.nn.attention.flex_attention import create_block_mask
    dev = "cuda"
    B, H, G = q.shape[0], q.shape[1], k.shape[1]
    mm, score_mod, per_batch = flex_mods(v, H, M, N, extra, dev)
    bm = create_block_mask(mm, B if per_batch else None, None, M, N, device=dev) if mm else None
    qc, kc, vc = (t.detach().to(dev, torch.bfloat16).requires_grad_() for t in (q, k, vv))
    out = flex(qc, kc, vc, score_mod=score_mod, block_mask=bm, enable_gqa=G != H)
    out.backward(do.to(dev, torch.bfloat16))
    return {"dQ": qc.grad.cpu(), "dK": kc.grad.cpu(), "dV": vc.grad.cpu()}

ADJOINT = re.compile(r"^d[A-Z]")  # dO, dLSE: not Doc

def gradient_errors(got, ref, outputs):
    """Relative error of each output against its reference (inf without one)."""
    return {name: rel_err(got[name], ref[name]) if name in ref else math.inf
            for name in outputs}

def check_backward(args, v, pkg, rows, flex):
    """(a) of --backward: one line per size; True if every gradient passed."""
    man = read_manifest(pkg)
    fwd_man = dict(man, args=[a for a in man["args"]
                              if not (a["kind"] == "input" and ADJOINT.match(a["name"]))])
    adjoints = [a for a in man["args"] if a["kind"] == "input" and ADJOINT.match(a["name"])]
    # Gradients (dQ, dK, dV, dSlopes); any other output (an O or LSE the
    # package might expose) is not checked.
    outputs = [a["name"] for a in man["args"] if a["kind"] == "output" and ADJOINT.match(a["name"])]
    others = [a["name"] for a in man["args"] if a["kind"] == "output" and not ADJOINT.match(a["name"])]
    if [a["name"] for a in adjoints] != ["dO"]:
        raise RuntimeError(f"{v}: expected one adjoint input dO after the forward's inputs, "
                           f"got {[a['name'] for a in adjoints]}")
    missing = [g for g in ("dQ", "dK", "dV") if g not in outputs]
    if missing:
        raise RuntimeError(f"{v}: the package has no output {', '.join(missing)} (outputs: {outputs})")
    gen = torch.Generator().manual_seed(0)
    H, G = VARIANTS[v].get("gqa", (4, 4))
    ok = True
    for case, (B, M, N) in enumerate(check_cases(v)):
        with tempfile.TemporaryDirectory() as tmp:
            paths, (q, k, vv), extra = make_inputs(v, fwd_man, B, H, G, M, N, tmp, gen)
            # bf16 values, so FlexAttention (bf16 dO) sees the same adjoint.
            do = torch.randn(B, H, M, D, generator=gen).to(torch.bfloat16).float()
            paths["dO"] = os.path.join(tmp, "dO.npy")
            if adjoints[0]["dtype"] == "bf16":
                save_bf16(paths["dO"], do)
            else:
                np.save(paths["dO"], do.numpy().astype(np.float32))
            launch(args, pkg, dims_for(man, B, H, G, M, N), VARIANTS[v]["params"], paths, tmp)
            got = {name: load_bf16(os.path.join(tmp, name + ".npy")) for name in outputs}
            # The first case again with the gradients 4 bytes past 16-byte
            # alignment: no tensor map can describe dQ, and the kernels add
            # into it another way (atomics).
            shifted = None
            if case == 0:
                out = os.path.join(tmp, "shifted")
                launch(args, pkg, dims_for(man, B, H, G, M, N), VARIANTS[v]["params"], paths,
                       out, extra_args=("--output-offset", "4"))
                shifted = {name: load_bf16(os.path.join(out, name + ".npy")) for name in outputs}
        ref = reference_grads(v, q.float(), k.float(), vv.float(), extra, M, N, do)
        if shifted is not None:
            errs = gradient_errors(shifted, ref, outputs)
            good = all(math.isfinite(e) and e <= BWD_TOL for e in errs.values())
            ok &= good
            rows.append(dict(kind="check_bwd", variant=v, B=B, H=H, G=G, M=M, N=N,
                             output_offset=4, rel_err=errs, ok=good))
            print(f"{'PASS' if good else 'FAIL'} {v:18s} B={B} H={H} G={G} M={M} N={N} "
                  + " ".join(f"{n}={e:.2e}" for n, e in errs.items())
                  + " (gradients at a 4-byte offset)", flush=True)
        errs = gradient_errors(got, ref, outputs)
        notes = [f"no reference for output {name}" for name in outputs if name not in ref]
        if "dSlopes" in ref and "dSlopes" not in outputs:
            notes.append("no dSlopes output")
        if others:
            notes.append(f"outputs {', '.join(others)} not checked")
        good = all(math.isfinite(e) and e <= BWD_TOL for e in errs.values())
        ok &= good
        empty = int((ref["dQ"].abs().sum(-1) == 0).sum())
        r = dict(kind="check_bwd", variant=v, B=B, H=H, G=G, M=M, N=N, rel_err=errs,
                 zero_dq_rows=empty, ok=good)
        line = " ".join(f"{n}={e:.2e}" for n, e in errs.items())
        # FlexAttention's bf16 gradients, for scale (not gated); not for
        # decode-sized M.
        if flex is not None and M >= 16:
            try:
                fg = flex_grads(v, q, k, vv, extra, M, N, do, flex)
                r["flex_rel_err"] = {n: rel_err(fg[n], ref[n]) for n in fg}
                r["ours_vs_flex"] = {n: rel_err(got[n], fg[n]) for n in fg if n in got}
                line += " | flex vs ref " + " ".join(
                    f"{n}={e:.2e}" for n, e in r["flex_rel_err"].items())
                line += " | ours vs flex " + " ".join(
                    f"{n}={e:.2e}" for n, e in r["ours_vs_flex"].items())
            except Exception as e:
                r["flex_error"] = repr(e)[:300]
                line += f" | flex ERR {repr(e)[:120]}"
        if notes:
            r["notes"] = notes
            line += " (" + "; ".join(notes) + ")"
        rows.append(r)
        print(f"{'PASS' if good else 'FAIL'} {v:18s} B={B} H={H} G={G} M={M} N={N} {line} "
              f"zero_dQ_rows={empty}", flush=True)
    return ok

def side_inputs(man, v, B, H, L, tmp):
    """Slopes and document ids of the timing launches, as the forward bench
    writes them (Q, K, V, dO: attnc-launch's own N(0, 1) data)."""
    paths, extra = {}, dict(VARIANTS[v]["params"])
    for a in man["args"]:
        if a["kind"] == "input" and a["name"] == "Slopes":
            paths["Slopes"] = os.path.join(tmp, "Slopes.npy")
            np.save(paths["Slopes"], alibi_slopes(H).float().numpy())
        elif a["kind"] == "input" and a["name"] == "Doc":
            doc = doc_ids(L).repeat(B, 1)
            extra["doc"] = doc
            paths["Doc"] = os.path.join(tmp, "Doc.npy")
            np.save(paths["Doc"], doc.numpy().astype(np.int32))
    return paths, extra

def timing_launch(pkg, v, L, tmp):
    """The suite's timing launch of variant v's package pkg at length L (B·L =
    TOK; L = "decode": the decode shape, DECODE): attnc-launch's arguments,
    its side inputs written under tmp, and the extra inputs used."""
    man = read_manifest(pkg)
    if L == "decode":
        B, H, G, M, N = (DECODE[x] for x in "BHGMN")
        return launch_arguments(dims_for(man, B, H, G, M, N), {}, {}), {}
    H, G = VARIANTS[v].get("gqa", (16, 16))
    B = max(1, TOK // L)
    paths, extra = side_inputs(man, v, B, H, L, tmp)
    return launch_arguments(dims_for(man, B, H, G, L, L), VARIANTS[v]["params"],
                            paths), extra

def time_ours(args, pkg, v, L):
    """Median ms of attnc-launch's timed launches of pkg at L; the extra
    inputs used."""
    with tempfile.TemporaryDirectory() as tmp:
        arguments, extra = timing_launch(pkg, v, L, tmp)
        txt = run_launch(args, pkg, arguments, None, timing=(5, args.repeat))
    return float(re.search(r"time: median ([0-9.]+) ms", txt).group(1)), extra

def bench_peers_bwd(v, B, H, G, L, extra, flex, do_bench):
    """Forward and backward ms of SDPA flash / cuDNN (where expressible) and
    compiled FlexAttention, timed as the peers' backward baseline does:
    do_bench medians of fwd(q, k, v) and of out.backward(dO, retain_graph=True)."""
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.attention.flex_attention import create_block_mask
    import torch.nn.functional as F
    dev, dt = "cuda", torch.bfloat16
    spec = VARIANTS[v]
    q = torch.randn(B, H, L, D, device=dev, dtype=dt, requires_grad=True)
    k, vv = (torch.randn(B, G, L, D, device=dev, dtype=dt, requires_grad=True) for _ in range(2))
    do = torch.randn(B, H, L, D, device=dev, dtype=dt)
    gqa = G != H
    res = {}

    def med(fn):
        fn(); torch.cuda.synchronize()
        return do_bench(fn, warmup=10, rep=60, return_mode="median")

    def run(name, fwd):
        t0 = time.time()
        out = fwd()
        out.backward(do)
        torch.cuda.synchronize()
        res[name + "_first_s"] = time.time() - t0
        res[name + "_fwd_ms"] = med(fwd)
        out = fwd()
        res[name + "_bwd_ms"] = med(lambda: out.backward(do, retain_graph=True))
        del out
        q.grad = k.grad = vv.grad = None

    if "sdpa" in spec:
        for be, name in [(SDPBackend.FLASH_ATTENTION, "flash"), (SDPBackend.CUDNN_ATTENTION, "cudnn")]:
            def fwd(be=be):
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(
                        q, k, vv, is_causal=spec["sdpa"] == "causal", enable_gqa=gqa)
            try:
                run(name, fwd)
            except Exception as e:
                print("ERR", v, name, repr(e)[:160], flush=True)
    try:
        mm, score_mod, per_batch = flex_mods(v, H, L, L, extra, dev)
        bm = create_block_mask(mm, B if per_batch else None, None, L, L, device=dev) if mm else None
        run("flex", lambda: flex(q, k, vv, score_mod=score_mod, block_mask=bm, enable_gqa=gqa))
    except Exception as e:
        print("ERR", v, "flex", repr(e)[:160], flush=True)
    del q, k, vv, do
    return res

def print_bwd_table(table):
    f = lambda x, w=8, p=3: f"{x:{w}.{p}f}" if isinstance(x, (int, float)) and x is not None \
        and math.isfinite(x) else f"{'-':>{w}s}"
    print(f"\n{'variant':18s} {'L':>6s} {'fwd ms':>8s} {'fwd+bwd':>8s} {'bwd ms':>8s} "
          f"{'flex bwd':>8s} {'cudnn bwd':>9s} {'flash bwd':>9s} {'bwd TF/s':>8s} "
          f"{'ours/flex':>9s} {'ours/cudnn':>10s} {'% peak':>6s}")
    print("  (ours: attnc-launch medians; bwd = fwd+bwd - fwd; ratios are speed, "
          ">1: ours faster; TFLOP/s = 2.5x kept-pair FLOPs; peak 989)")
    for r in table:
        ours = r.get("ours_bwd_ms")
        fl, cu = r.get("flex_bwd_ms"), r.get("cudnn_bwd_ms")
        print(f"{r['variant']:18s} {r['L']:6d} {f(r.get('ours_fwd_ms'))} "
              f"{f(r.get('ours_fwdbwd_ms'))} {f(ours)} {f(fl)} {f(cu, 9)} "
              f"{f(r.get('flash_bwd_ms'), 9)} {f(r.get('ours_bwd_tflops'), 8, 1)} "
              f"{f(fl / ours if ours and fl else None, 9, 2)} "
              f"{f(cu / ours if ours and cu else None, 10, 2)} "
              f"{f(100 * r['peak_frac'] if r.get('peak_frac') is not None else None, 6, 1)}")

def main_backward(args):
    out = os.environ.get("OUT", ".")
    lengths = [int(x) for x in (args.lengths or BWD_LENGTHS).split(",")]
    variants = [v for v in args.variants.split(",") if v]
    rows, table = [], []
    flex = do_bench = None
    if not args.no_peers:
        # (`import torch._dynamo` here would make torch a local name.)
        import torch._dynamo as dynamo
        from torch.nn.attention.flex_attention import flex_attention
        from triton.testing import do_bench
        dynamo.config.recompile_limit = 10000
        dynamo.config.cache_size_limit = 10000
        try:
            import torch._functorch.config as functorch_config
            functorch_config.donated_buffer = False  # lets the backward be timed repeatedly
        except Exception:
            pass
        flex = torch.compile(flex_attention, dynamic=False)
    all_ok = True
    print("== backward correctness (suite-grad vs float64 autograd; flex: bf16, not gated)",
          flush=True)
    for v in variants:
        pkg = os.path.join(args.packages, "suite-grad", v + ".attnpkg")
        if not os.path.exists(pkg):
            print(f"SKIP {v}: no {pkg}", flush=True)
            continue
        try:
            all_ok &= check_backward(args, v, pkg, rows, flex)
        except Exception as e:
            all_ok = False
            print(f"FAIL {v}: {e}", flush=True)
            rows.append(dict(kind="check_bwd", variant=v, ok=False, error=str(e)[:500]))
    if not args.no_bench:
        print("== backward benchmark", flush=True)
        for v in variants:
            gpkg = os.path.join(args.packages, "suite-grad", v + ".attnpkg")
            fpkg = os.path.join(args.packages, "suite", v + ".attnpkg")
            if not os.path.exists(gpkg):
                continue
            H, G = VARIANTS[v].get("gqa", (16, 16))
            for L in lengths:
                B = max(1, TOK // L)
                row = dict(kind="bench_bwd", variant=v, B=B, H=H, G=G, L=L, D=D)
                try:
                    fb_ms, extra = time_ours(args, gpkg, v, L)
                    row["ours_fwdbwd_ms"] = fb_ms
                    if os.path.exists(fpkg):
                        row["ours_fwd_ms"], _ = time_ours(args, fpkg, v, L)
                        row["ours_bwd_ms"] = fb_ms - row["ours_fwd_ms"]
                    frac = kept_fraction(v, L, extra, "cuda")
                    flops = 4 * B * H * L * L * D * frac
                    row["frac"] = frac
                    row["ours_fwdbwd_tflops"] = 3.5 * flops / fb_ms / 1e9
                    if row.get("ours_bwd_ms", 0) > 0:
                        row["ours_bwd_tflops"] = 2.5 * flops / row["ours_bwd_ms"] / 1e9
                        row["peak_frac"] = row["ours_bwd_tflops"] / PEAK_TFLOPS
                    if flex is not None:
                        peers = bench_peers_bwd(v, B, H, G, L, extra, flex, do_bench)
                        row.update(peers)
                        for key in ("flex", "cudnn", "flash"):
                            if key + "_bwd_ms" in peers:
                                row[key + "_bwd_tflops"] = 2.5 * flops / peers[key + "_bwd_ms"] / 1e9
                                if row.get("ours_bwd_ms", 0) > 0:
                                    row["ours_over_" + key] = peers[key + "_bwd_ms"] / row["ours_bwd_ms"]
                except Exception as e:
                    row["error"] = str(e)[:500]
                    print("ERR", v, L, str(e)[:300], flush=True)
                rows.append(row)
                table.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
    with open(os.path.join(out, "gpu_bwd_suite.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if table:
        print_bwd_table(table)
    print("\nALL BACKWARD CHECKS PASSED" if all_ok else "\nSOME BACKWARD CHECKS FAILED", flush=True)
    return 0 if all_ok else 1

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--launch", default="/tmp/attnc-build-rt/bin/attnc-launch")
    ap.add_argument("--packages", default="build/gpu-packages")
    ap.add_argument("--lengths", default=None,
                    help="default 1024,4096,16384; with --backward 4096,16384")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--backward", action="store_true",
                    help="check and time the suite-grad packages instead (see above)")
    ap.add_argument("--launch-args", nargs=4, metavar=("VARIANT", "L", "PACKAGE", "DIR"),
                    help="print, one per line, attnc-launch's arguments for the suite's "
                         "timing launch of PACKAGE (variant VARIANT) at length L, or at "
                         "the decode shape for L = decode, its side inputs written to DIR "
                         "(what bench/profile_gpu.sh launches), and exit")
    args = ap.parse_args()
    if args.launch_args:
        v, L, pkg, folder = args.launch_args
        os.makedirs(folder, exist_ok=True)
        arguments, _ = timing_launch(pkg, v, L if L == "decode" else int(L), folder)
        print("\n".join(arguments))
        return
    if args.backward:
        sys.exit(main_backward(args))
    if args.lengths is None:
        args.lengths = "1024,4096,16384"
    out = os.environ.get("OUT", ".")
    rows = []
    variants = [v for v in args.variants.split(",") if v]
    all_ok = True
    print("== correctness", flush=True)
    for v in variants:
        pkg = os.path.join(args.packages, "suite", v + ".attnpkg")
        if not os.path.exists(pkg):
            print(f"SKIP {v}: no {pkg}", flush=True); continue
        try:
            all_ok &= check(args, v, pkg, rows)
        except Exception as e:
            all_ok = False
            print(f"FAIL {v}: {e}", flush=True)
            rows.append(dict(kind="check", variant=v, ok=False, error=str(e)[:500]))
    table = []
    if not args.no_bench:
        print("== benchmark", flush=True)
        flex = do_bench = None
        if not args.no_peers:
            # An `import torch._dynamo` here would make torch a local name.
            import torch._dynamo as dynamo
            from torch.nn.attention.flex_attention import flex_attention
            from triton.testing import do_bench
            dynamo.config.recompile_limit = 10000
            dynamo.config.cache_size_limit = 10000
            flex = torch.compile(flex_attention, dynamic=False)
        for v in variants:
            pkg = os.path.join(args.packages, "suite", v + ".attnpkg")
            if not os.path.exists(pkg):
                continue
            man = read_manifest(pkg)
            H, G = VARIANTS[v].get("gqa", (16, 16))
            for L in [int(x) for x in args.lengths.split(",")]:
                B = max(1, TOK // L)
                row = dict(kind="bench", variant=v, B=B, H=H, G=G, L=L, D=D)
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        # Q, K, V: attnc-launch's own N(0, 1) data; side
                        # inputs (slopes, document ids) written here.
                        paths, extra = side_inputs(man, v, B, H, L, tmp)
                        txt = launch(args, pkg, dims_for(man, B, H, G, L, L), VARIANTS[v]["params"],
                                     paths, tmp, timing=(5, args.repeat))
                        ms = float(re.search(r"time: median ([0-9.]+) ms", txt).group(1))
                    frac = kept_fraction(v, L, extra, "cuda")
                    row.update(ours_ms=ms, frac=frac, ours=tflops(B, H, L, ms, frac))
                    if flex is not None:
                        peers = bench_peers(v, B, H, G, L, extra, flex, do_bench)
                        for k2 in ("flex", "cudnn", "flash"):
                            if k2 in peers:
                                row[k2 + "_ms"] = peers[k2]
                                row[k2] = tflops(B, H, L, peers[k2], frac)
                        row["flex_compile_s"] = peers.get("flex_compile_s")
                except Exception as e:
                    row["error"] = str(e)[:500]
                    print("ERR", v, L, str(e)[:300], flush=True)
                rows.append(row)
                table.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
        decode_pkg = os.path.join(args.packages, "suite", "gqa32-8-causal.attnpkg")
        if not args.no_decode and os.path.exists(decode_pkg):
            try:
                row = bench_decode(args, decode_pkg, flex, do_bench)
                rows.append(row)
                print(json.dumps(row), flush=True)
                print(f"\ndecode B={DECODE['B']} H/G={DECODE['H']}/{DECODE['G']} M={DECODE['M']} "
                      f"N={DECODE['N']}: TB/s of K+V read (ms)")
                for key in ("ours", "flex", "cudnn", "flash"):
                    if key + "_ms" in row:
                        print(f"  {key:6s} {row[key + '_tbs']:6.2f} ({row[key + '_ms']:.3f} ms)")
            except Exception as e:
                print("ERR decode", str(e)[:300], flush=True)
    with open(os.path.join(out, "gpu_suite.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if table:
        fmt = lambda x: f"{x:7.1f}" if isinstance(x, float) else f"{'-':>7s}"
        print(f"\n{'variant':18s} {'L':>6s} {'ours':>7s} {'flex':>7s} {'cudnn':>7s} {'flash':>7s} "
              f"{'ours/flex':>9s} {'ours/cudnn':>10s}   (TFLOP/s of kept pairs)")
        for r in table:
            ours, fl, cu = r.get("ours"), r.get("flex"), r.get("cudnn")
            print(f"{r['variant']:18s} {r['L']:6d} {fmt(ours)} {fmt(fl)} {fmt(cu)} {fmt(r.get('flash'))} "
                  f"{(f'{ours / fl:9.2f}' if ours and fl else '        -')} "
                  f"{(f'{ours / cu:10.2f}' if ours and cu else '         -')}")
    print("\nALL CHECKS PASSED" if all_ok else "\nSOME CHECKS FAILED", flush=True)
    sys.exit(0 if all_ok else 1)

if __name__ == "__main__":
    main()
