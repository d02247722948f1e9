#!/usr/bin/env python3
"""The attnc CPU benchmark: ten attention variants through `attnc run`.

    python3 bench/cpu_suite.py [--attnc build/bin/attnc] [--out results.jsonl]
        [--threads 1,all] [--lengths 1024,4096] [--dtypes f32,bf16]
        [--variants full,causal,...] [--repeat 5] [--quick] [--grad]
        [--backends [--backend-length 512] [--halide-schedulers A,B]]

Prints a table and writes one JSON object per line to --out: first the
machine's measured fp32 FMA peak ("what": "fma_peak", one line per thread
count), then one line per measurement ("what": "attention") with at least
variant, dtype, L, threads, ms, gflops, peak_frac, compile_ms,
compile_cached_ms, path.

GFLOP/s counts only the (query, key) pairs the variant's mask keeps, 4 * D
FLOPs per kept pair per query head (2 * D for Q.K^T, 2 * D for P.V); the
count is exact for every affine mask (closed forms, checked by brute force
with --selftest) and the expectation for the document mask, whose ids are the
driver's random ones (see bench/README.md). Exponentials, the softmax and
masking are not counted, as FlashAttention and FlexAttention count.

Python 3 standard library only. Written to work with attnc builds that do not
have --threads / --no-cache / the compiled-kernel cache yet: those columns are
then empty and the thread count is set through OMP_NUM_THREADS only.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(ROOT, "examples")

# --------------------------------------------------------------------------
# Kept (query, key) pairs per (batch, head), M = N = L so query m sits at key
# position q = m. Each variant has the predicate (for --selftest) and a
# closed form or O(L) sum.


def kept_full(L, p):
    return L * L


def kept_causal(L, p):
    return L * (L + 1) // 2


def kept_window(L, p):
    W = p["window"]
    return sum(min(q + 1, W) for q in range(L))


def kept_sinks_window(L, p):
    W, S = p["window"], p["sinks"]
    # The window's keys, plus the sinks that lie before the window.
    return sum(min(q + 1, W) + max(0, min(S, q - W + 1)) for q in range(L))


def kept_document(L, p):
    # Doc ids are i.i.d. uniform over `ids` values (the driver's random
    # integers: 0..3): the diagonal always, every other causal pair with
    # probability 1 / ids. Expectation; the realised count differs by a
    # standard deviation of sqrt(L(L-1)/2 * (1/ids)(1 - 1/ids)) ~ 0.3 L pairs.
    ids = p.get("_ids", 4)
    return L + (L * (L - 1) // 2) / ids


PRED = {
    "full": lambda q, n, p: True,
    "causal": lambda q, n, p: n <= q,
    "window": lambda q, n, p: n <= q and q - n < p["window"],
    "sinks_window": lambda q, n, p: n <= q and (q - n < p["window"] or n < p["sinks"]),
}

# variant -> spec file, params, extra dims, kept-pair function, predicate key,
# and a footnote mark for the table.
VARIANTS = {
    "full": dict(spec="bidirectional.attn", params={}, kept=kept_full, pred="full"),
    "causal": dict(spec="causal.attn", params={}, kept=kept_causal, pred="causal"),
    "window1024": dict(spec="sliding_window.attn", params={"window": 1024},
                       kept=kept_window, pred="window"),
    "sinks4+window1024": dict(spec="streaming_llm.attn",
                              params={"window": 1024, "sinks": 4},
                              G=lambda H: H, kept=kept_sinks_window,
                              pred="sinks_window"),
    "alibi": dict(spec="alibi.attn", params={}, kept=kept_causal, pred="causal"),
    "softcap30": dict(spec="softcap.attn", params={"cap": 30.0},
                      kept=kept_causal, pred="causal"),
    "document": dict(spec="document_mask.attn", params={}, kept=kept_document,
                     pred=None, expected=True),
    "gqa4:1": dict(spec="gqa.attn", params={}, G=lambda H: H // 4,
                   kept=kept_causal, pred="causal"),
    "softplus": dict(spec="softplus.attn", params={}, kept=kept_causal,
                     pred="causal"),
    "sigmoid": dict(spec="sigmoid.attn", params={}, kept=kept_causal,
                    pred="causal"),
}


def selftest():
    """Closed forms against brute force over the predicates, small L."""
    bad = 0
    for L in (1, 2, 7, 64, 300):
        for W, S in ((1, 0), (5, 4), (64, 4), (1024, 4), (3, 10)):
            p = {"window": W, "sinks": S}
            for name, v in VARIANTS.items():
                if not v["pred"]:
                    continue
                brute = sum(1 for q in range(L) for n in range(L)
                            if PRED[v["pred"]](q, n, p))
                closed = v["kept"](L, p)
                if brute != closed:
                    bad += 1
                    print(f"selftest: {name} L={L} W={W} S={S}: "
                          f"closed form {closed} != brute force {brute}")
    # The document mask's expectation, against exact averages over ids.
    import random
    rng = random.Random(0)
    L, trials, total = 200, 200, 0
    for _ in range(trials):
        doc = [rng.randrange(4) for _ in range(L)]
        total += sum(1 for q in range(L) for n in range(q + 1) if doc[n] == doc[q])
    mean, expect = total / trials, kept_document(L, {})
    if abs(mean - expect) > 0.02 * expect:
        bad += 1
        print(f"selftest: document expectation {expect} vs sampled mean {mean}")
    print("selftest:", "ok" if not bad else f"{bad} FAILED")
    return 0 if not bad else 1


# --------------------------------------------------------------------------
# The machine's peak.


def find_or_build_fma_peak(attnc, given):
    if given:
        return given
    near = os.path.join(os.path.dirname(os.path.abspath(attnc)), "attn-fma-peak")
    if os.access(near, os.X_OK):
        return near
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") \
        or shutil.which("clang++")
    if not cxx:
        return None
    out = os.path.join(tempfile.mkdtemp(prefix="attn-bench-"), "attn-fma-peak")
    cmd = [cxx, "-std=c++17", "-O2", "-pthread",
           os.path.join(HERE, "fma_peak.cpp"), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("warning: building fma_peak.cpp failed:\n" + r.stderr[-2000:],
              file=sys.stderr)
        return None
    return out


def measure_peak(exe, thread_counts, seconds):
    peaks = {}
    if not exe:
        return peaks, []
    lines = []
    r = subprocess.run([exe, "--json", "--seconds", str(seconds), "--threads",
                        ",".join(str(t) for t in thread_counts)],
                       capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            peaks[obj["threads"]] = obj["gflops"]
            lines.append(obj)
    return peaks, lines


# --------------------------------------------------------------------------
# attnc.


def attnc_features(attnc):
    r = subprocess.run([attnc, "run", "--help"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    return {"threads": "--threads" in text, "no_cache": "--no-cache" in text}


def run_attnc(attnc, spec, shape, dtype, params, repeat, threads, features,
              timeout, no_cache=False, env_extra=None, grad=False,
              extra_args=()):
    cmd = [attnc, "run", os.path.join(EXAMPLES, spec), "--shape",
           ",".join(f"{k}={v}" for k, v in shape.items()),
           "--dtype", dtype, "--json", "--repeat", str(repeat)]
    cmd += list(extra_args)
    if grad:
        cmd += ["--grad"]
    if params:
        cmd += ["--param", ",".join(f"{k}={v}" for k, v in params.items())]
    if threads and features["threads"]:
        cmd += ["--threads", str(threads)]
    if no_cache and features["no_cache"]:
        cmd += ["--no-cache"]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(env_extra or {})
    start = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout} s", time.monotonic() - start
    wall = time.monotonic() - start
    obj = None
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    if r.returncode != 0 or obj is None:
        msg = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        return obj, f"rc={r.returncode}: {msg[:300]}", wall
    return obj, None, wall


# --------------------------------------------------------------------------
# Backends side by side (--backends): the specs attn-raise does not fuse,
# through the unfused MLIR pipeline (convert-attn-to-linalg), the Halide
# backend and, where one exists, the fused path; then fused examples forced
# through Halide, to show how far a general scheduler gets on attention.

SPECS = os.path.join(HERE, "specs")

# name -> (spec path, shape for a sequence length L, whether the raise fuses
# it)
BACKEND_SPECS = {
    "paged_kv": (os.path.join(EXAMPLES, "paged_kv.attn"),
                 lambda L: dict(B=1, H=8, G=2, M=L, N=L, D=64,
                                P=L // 16 + 1, NP=L // 16 + 1), False),
    "sink_reweight": (os.path.join(EXAMPLES, "sink_reweight.attn"),
                      lambda L: dict(B=1, H=8, M=L, N=L, D=64), False),
    "differential": (os.path.join(SPECS, "differential.attn"),
                     lambda L: dict(B=1, H=8, M=L, N=L), False),
    "channel_attention": (os.path.join(SPECS, "channel_attention.attn"),
                          lambda L: dict(B=1, C=L // 4, T=4 * L), False),
    "causal": (os.path.join(EXAMPLES, "causal.attn"),
               lambda L: dict(B=1, H=8, M=L, N=L, D=64), True),
    "sliding_window": (os.path.join(EXAMPLES, "sliding_window.attn"),
                       lambda L: dict(B=1, H=8, M=L, N=L, D=64), True),
}

# column -> attnc run options
BACKEND_COLUMNS = {
    "linalg": ["--backend", "mlir", "--fuse=false"],
    "halide": ["--backend", "halide"],
    "fused": ["--backend", "mlir"],
}


def cold_cache(directory):
    """Empties the artifact cache under `directory` but for the Halide
    runtime, which is compiled once per machine: a compile then measures
    the kernel alone."""
    entries = os.path.join(directory, "attnc")
    if os.path.isdir(entries):
        for entry in os.listdir(entries):
            if not entry.endswith(".halide-runtime.o"):
                os.remove(os.path.join(entries, entry))
    return {"XDG_CACHE_HOME": directory}


def compare_backends(args, threads, features, out):
    """One run of every column of every BACKEND_SPECS entry; medians of
    --repeat runs, cold compile times with an empty cache (the Halide
    runtime, compiled once per machine, aside)."""
    L = 256 if args.quick else args.backend_length
    cold = tempfile.mkdtemp(prefix="attnc-cold-")
    spec, shape_of, _ = BACKEND_SPECS["causal"]
    obj, err, _ = run_attnc(args.attnc, spec, shape_of(64), "f32", {}, 1, 1,
                            features, args.timeout,
                            env_extra=cold_cache(cold),
                            extra_args=BACKEND_COLUMNS["halide"])
    if obj and not err:
        print(f"Halide runtime, compiled once per machine: "
              f"{obj.get('load_ms', 0):.0f} ms", file=sys.stderr)
        out.write(json.dumps(dict(what="halide_runtime",
                                  compile_ms=obj.get("load_ms"))) + "\n")
    columns = dict(BACKEND_COLUMNS)
    # Other schedules of the Halide pipelines, to compare with the default.
    for scheduler in parse_list(args.halide_schedulers):
        columns["halide:" + scheduler] = BACKEND_COLUMNS["halide"] + [
            "--halide-scheduler", scheduler]
    rows = []
    for name, (spec, shape_of, fuses) in BACKEND_SPECS.items():
        shape = shape_of(L)
        for t in threads:
            row = dict(what="backends", spec=name, L=L, threads=t,
                       dtype="f32", fuses=fuses)
            for column, options in columns.items():
                if column == "fused" and not fuses:
                    continue
                obj, err, _ = run_attnc(args.attnc, spec, shape, "f32", {},
                                        1, t, features, args.timeout,
                                        env_extra=cold_cache(cold),
                                        extra_args=options)
                if obj and not err:
                    row[column + "_cold_compile_ms"] = obj.get("compile_ms")
                obj, err, _ = run_attnc(args.attnc, spec, shape, "f32", {},
                                        args.repeat, t, features,
                                        args.timeout, extra_args=options)
                if err or not obj:
                    row[column + "_error"] = err
                    continue
                row[column + "_ms"] = obj.get("run_ms")
                row[column + "_path"] = obj.get("path")
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
    shutil.rmtree(cold, ignore_errors=True)
    print(f"\nBackends side by side (f32, L={L}, run medians in ms; cold "
          "compile in ms)")
    header = (f"{'spec':<18} {'thr':>3} {'linalg':>10} {'halide':>10} "
              f"{'fused':>10} {'halide/linalg':>14} {'halide/fused':>13} "
              f"{'halide cold':>12}")
    others = [c for c in columns if c.startswith("halide:")]
    if others:
        header += "".join(f" {c[7:]:>14}" for c in others)
    print(header)
    for r in rows:
        lin, hal, fus = r.get("linalg_ms"), r.get("halide_ms"), \
            r.get("fused_ms")
        speedup = lin / hal if lin and hal else None
        ratio = hal / fus if hal and fus else None
        line = (f"{r['spec']:<18} {r['threads']:>3} {fmt(lin, '.2f', 10)} "
                f"{fmt(hal, '.2f', 10)} {fmt(fus, '.2f', 10)} "
                f"{fmt(speedup, '.1f', 13)}x {fmt(ratio, '.2f', 12)}x "
                f"{fmt(r.get('halide_cold_compile_ms'), '.0f', 12)}")
        line += "".join(f" {fmt(r.get(c + '_ms'), '.2f', 14)}" for c in others)
        print(line)
    return rows


# --------------------------------------------------------------------------


def parse_list(text, conv=str):
    return [conv(x) for x in text.split(",") if x.strip()]


def fmt(x, spec, width):
    if x is None:
        return "—".rjust(width)
    return format(x, spec).rjust(width)


def print_table(rows, peaks, args, out=sys.stdout):
    head = (f"{'variant':<18} {'dtype':<5} {'L':>5} {'thr':>3} {'ms':>10} "
            f"{'GFLOP/s':>8} {'%peak':>6} {'path':<8} {'compile cold/cached ms':>22}")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        name = r["variant"] + ("*" if VARIANTS[r["variant"]].get("expected") else "")
        if r.get("error"):
            print(f"{name:<18} {r['dtype']:<5} {r['L']:>5} {r['threads']:>3} "
                  f"  error: {r['error'][:80]}", file=out)
            continue
        comp = f"{fmt(r['compile_ms'], '.0f', 0)}/{fmt(r['compile_cached_ms'], '.1f', 0)}"
        pf = r.get("peak_frac")
        print(f"{name:<18} {r['dtype']:<5} {r['L']:>5} {r['threads']:>3} "
              f"{fmt(r['ms'], '.2f', 10)} {fmt(r['gflops'], '.2f', 8)} "
              f"{fmt(None if pf is None else 100 * pf, '.1f', 6)} "
              f"{(r.get('path') or '?'):<8} {comp:>22}", file=out)
    print(file=out)
    pk = ", ".join(f"{t} thread{'s' if t > 1 else ''}: {g:.1f} GFLOP/s"
                   for t, g in sorted(peaks.items())) or "not measured"
    print(f"fp32 FMA peak, measured in this run (attn-fma-peak): {pk}.", file=out)
    print("GFLOP/s = 4*D*H*B*(kept (query,key) pairs) / time; %peak is against the "
          "fp32 FMA peak of the same thread count (also for bf16: the kernels "
          "accumulate in fp32).", file=out)
    print("ms = median of --repeat runs as reported by `attnc run`; compile cold = "
          "--no-cache (frontend + lowering + LLVM), cached = the same kernel from "
          "the kernel cache (— where this attnc has no cache).", file=out)
    if any(VARIANTS[r["variant"]].get("expected") for r in rows):
        print("* document: ids are the driver's random i.i.d. ids in [0,4); kept "
              "pairs = L + L(L-1)/8 (the expectation: diagonal + 1/4 of the other "
              "causal pairs; the realised count is within ~0.3·L pairs, <0.3% at "
              "L >= 1024). Random ids leave no tile empty: this row measures the "
              "partial-tile path.", file=out)
    if any(r["variant"] == "gqa4:1" for r in rows):
        print(f"gqa4:1: H = {rows[0]['H']} query heads, G = H/4 KV heads; FLOPs "
              "count query heads. sinks4+window1024 uses G = H (streaming_llm.attn, "
              "D = 128 fixed).", file=out)
    if args.quick:
        print("--quick: L = 256, H = 4, window = 64 (the window1024 and "
              "sinks4+window1024 rows), --repeat 1.", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attnc", default=os.path.join(ROOT, "build", "bin", "attnc"))
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--threads", default="1,all",
                    help="comma list of thread counts; 'all' = every CPU this "
                    "process may run on")
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list of: " + ", ".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: L=256, H=4, window 64, --repeat 1")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds per attnc invocation (a row past it is "
                    "recorded as an error)")
    ap.add_argument("--fma-peak", default=None,
                    help="attn-fma-peak binary (default: next to attnc, else "
                    "built from bench/fma_peak.cpp with c++ -O2)")
    ap.add_argument("--peak-seconds", type=float, default=0.3)
    ap.add_argument("--no-compile-cold", action="store_true",
                    help="skip the --no-cache compile measurement")
    ap.add_argument("--selftest", action="store_true",
                    help="check the kept-pair counts by brute force and exit")
    ap.add_argument("--grad", action="store_true",
                    help="time the adjoint kernels (attnc run --grad: the "
                    "forward recomputed, then the backward) instead; FLOPs "
                    "3.5x the forward's (1 forward + 2.5 backward)")
    ap.add_argument("--backends", action="store_true",
                    help="compare the backends instead: the unfused specs "
                    "through linalg, Halide and the fused path where one "
                    "exists, and fused examples forced through Halide")
    ap.add_argument("--backend-length", type=int, default=512,
                    help="sequence length of --backends")
    ap.add_argument("--halide-schedulers", default="",
                    help="with --backends, also time the Halide pipelines "
                    "with these schedulers (e.g. Derived,Li2018)")
    args = ap.parse_args()

    if args.selftest:
        return selftest()

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    threads = sorted(set(ncpu if t == "all" else int(t)
                         for t in parse_list(args.threads)))
    lengths = parse_list(args.lengths, int)
    dtypes = parse_list(args.dtypes)
    variants = parse_list(args.variants)
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant '{v}' (known: {', '.join(VARIANTS)})")
    H, D, B, repeat = args.heads, args.head_dim, args.batch, args.repeat
    window_override = None
    if args.quick:
        lengths, H, repeat, window_override = [256], 4, 1, 64
    if not os.access(args.attnc, os.X_OK):
        ap.error(f"no attnc at {args.attnc} (pass --attnc PATH)")

    features = attnc_features(args.attnc)
    peak_exe = find_or_build_fma_peak(args.attnc, args.fma_peak)
    peaks, peak_lines = measure_peak(peak_exe, threads, args.peak_seconds)
    for t, g in sorted(peaks.items()):
        print(f"fma peak: {t} thread(s) {g:.1f} GFLOP/s", file=sys.stderr)

    host = dict(cpus=ncpu, loadavg=os.getloadavg(), attnc=args.attnc,
                attnc_features=features, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out = open(args.out, "w")
    for obj in peak_lines:
        obj.update(host=host)
        out.write(json.dumps(obj) + "\n")
    out.flush()

    if args.backends:
        compare_backends(args, threads, features, out)
        out.close()
        return 0

    rows = []
    for vname in variants:
        v = VARIANTS[vname]
        params = dict(v["params"])
        if window_override and "window" in params:
            params["window"] = window_override
        G = v["G"](H) if "G" in v else None
        for dtype in dtypes:
            # Compile time, cold: a tiny launch with --no-cache (dims are
            # runtime values, so the kernel is the one every L uses). Then the
            # same launch with the cache, so the timed runs below hit it.
            cold_ms = None
            if features["no_cache"] and not args.no_compile_cold:
                tiny = dict(B=1, H=H, M=64, N=64, D=D)
                if G:
                    tiny["G"] = G
                obj, err, _ = run_attnc(args.attnc, v["spec"], tiny, dtype, params,
                                        1, 1, features, args.timeout, no_cache=True)
                if obj and not err:
                    cold_ms = obj.get("compile_ms")
                run_attnc(args.attnc, v["spec"], tiny, dtype, params, 1, 1,
                          features, args.timeout)
            for L in lengths:
                shape = dict(B=B, H=H, M=L, N=L, D=D)
                if G:
                    shape["G"] = G
                kept = v["kept"](L, params)
                flops = 4.0 * D * H * B * kept * (3.5 if args.grad else 1.0)
                for t in threads:
                    load0 = os.getloadavg()[0]
                    obj, err, wall = run_attnc(args.attnc, v["spec"], shape, dtype,
                                               params, repeat, t, features,
                                               args.timeout, grad=args.grad)
                    obj = obj or {}
                    ms = obj.get("run_ms") if not err else None
                    gflops = flops / (ms * 1e6) if ms else None
                    peak = peaks.get(t)
                    cache_hit = obj.get("cache_hit")
                    compile_ms = obj.get("compile_ms")
                    row = dict(
                        what="attention_grad" if args.grad else "attention",
                        variant=vname, dtype=dtype, L=L,
                        threads=t, ms=ms, gflops=gflops,
                        peak_frac=(gflops / peak) if gflops and peak else None,
                        compile_ms=cold_ms if cold_ms is not None else
                        (compile_ms if cache_hit is not True else None),
                        compile_cached_ms=compile_ms if cache_hit else None,
                        path=obj.get("path"),
                        spec=v["spec"], B=B, H=H, G=G, M=L, N=L, D=D,
                        params=obj.get("params", params), kept_pairs=kept,
                        kept_frac=kept / (L * L),
                        kept_pairs_counting="expectation" if v.get("expected")
                        else "exact",
                        flops=flops, peak_gflops=peak, repeat=repeat,
                        cache_hit=cache_hit,
                        threads_flag=features["threads"],
                        attnc_threads=obj.get("threads"),
                        attnc_gflops_cascade=obj.get("gflops"),
                        wall_s=round(wall, 2),
                        loadavg_1min=[round(load0, 2),
                                      round(os.getloadavg()[0], 2)],
                        error=err)
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    status = err or (f"{ms:.2f} ms {gflops:.2f} GFLOP/s "
                                     f"path={row['path']}")
                    print(f"[{len(rows)}] {vname} {dtype} L={L} threads={t}: "
                          f"{status}", file=sys.stderr, flush=True)
    out.close()
    print()
    print_table(rows, peaks, args)
    print(f"\nwrote {args.out} ({len(rows)} rows; load average at start "
          f"{host['loadavg'][0]:.1f} on {ncpu} CPUs)")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
