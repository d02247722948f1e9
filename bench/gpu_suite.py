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

def launch(args, pkg, dims, params, inputs, out_dir, timing=None):
    cmd = [args.launch, pkg, "--dim", ",".join(f"{k}={v}" for k, v in dims.items()),
           "--out-dir", out_dir]
    for k, v in params.items():
        cmd += ["--param", f"{k}={v}"]
    for k, v in inputs.items():
        cmd += ["--input", f"{k}={v}"]
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

def check(args, v, pkg, rows):
    man = read_manifest(pkg)
    gen = torch.Generator().manual_seed(0)
    H, G = VARIANTS[v].get("gqa", (4, 4))
    # M > N gives the first M - N rows no key (causal family); the document
    # mask indexes Doc at m + N - M, so it keeps M <= N.
    cases = [(2, 77, 200), (1, 300, 157)] if not VARIANTS[v].get("doc") else [(2, 77, 200), (1, 150, 301)]
    if VARIANTS[v]["mask"] is None:
        cases = [(2, 77, 200), (1, 300, 157)]
    # Decode launches (M H / G <= 64 runs the split-key kernel and its merge).
    cases += [(2, 3, 1000), (1, 1, 5000)]
    ok = True
    for B, M, N in cases:
        with tempfile.TemporaryDirectory() as tmp:
            paths, (q, k, vv), extra = make_inputs(v, man, B, H, G, M, N, tmp, gen)
            launch(args, pkg, dims_for(man, B, H, G, M, N), VARIANTS[v]["params"], paths, tmp)
            o = load_bf16(os.path.join(tmp, "O.npy")).double()
            ref = reference(v, q.float(), k.float(), vv.float(), extra, M, N)
            err = ((o - ref).norm() / ref.norm().clamp_min(1e-30)).item()
            empty = int((ref.abs().sum(-1) == 0).sum())
            good = math.isfinite(err) and err <= 1e-2 and torch.isfinite(o).all().item()
            ok &= good
            r = dict(kind="check", variant=v, B=B, H=H, G=G, M=M, N=N, rel_err=err,
                     empty_rows=empty, ok=good)
            rows.append(r)
            print(f"{'PASS' if good else 'FAIL'} {v:18s} B={B} H={H} G={G} M={M} N={N} "
                  f"rel_err={err:.2e} empty_rows={empty}", flush=True)
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

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--launch", default="/tmp/attnc-build-rt/bin/attnc-launch")
    ap.add_argument("--packages", default="build/gpu-packages")
    ap.add_argument("--lengths", default="1024,4096,16384")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
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
            import torch._dynamo
            from torch.nn.attention.flex_attention import flex_attention
            from triton.testing import do_bench
            torch._dynamo.config.recompile_limit = 10000
            torch._dynamo.config.cache_size_limit = 10000
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
                        paths = {}
                        extra = dict(VARIANTS[v]["params"])
                        for a in man["args"]:
                            if a["kind"] == "input" and a["name"] == "Slopes":
                                paths["Slopes"] = os.path.join(tmp, "Slopes.npy")
                                np.save(paths["Slopes"], alibi_slopes(H).float().numpy())
                            elif a["kind"] == "input" and a["name"] == "Doc":
                                doc = doc_ids(L).repeat(B, 1)
                                extra["doc"] = doc
                                paths["Doc"] = os.path.join(tmp, "Doc.npy")
                                np.save(paths["Doc"], doc.numpy().astype(np.int32))
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
