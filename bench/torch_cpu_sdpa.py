#!/usr/bin/env python3
"""PyTorch CPU scaled_dot_product_attention, for the Xeon comparison.

    python3 bench/torch_cpu_sdpa.py [--lengths 2048] [--threads all]
        [--dtypes f32] [--variants full,causal] [--repeat 10] [--out FILE]

Runs F.scaled_dot_product_attention on the CPU (B = 1, H = 16, D = 128 by
default), full and causal, and prints one JSON line per case:
impl, variant, dtype, B, H, L, D, threads, ms (median of --repeat after
--warmup calls), gflops, kept_pairs, plus the torch version and CPU
capability. GFLOP/s counts 4 * D FLOPs per kept (query, key) pair per head,
the same count as bench/cpu_suite.py and bench/aot_runner.cpp (causal keeps
L (L + 1) / 2 pairs, 0.05 % more than the L^2 / 2 of BASELINE.md at L = 2048).

The attnc side of the comparison is bench/aot_runner.cpp with a kernel from
`attnc compile --cpu NAME -o kernel.o` (see bench/README.md).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def kept_pairs(variant, L):
    return L * L if variant == "full" else L * (L + 1) // 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="2048")
    ap.add_argument("--threads", default="all",
                    help="comma list; 'all' = torch's default (every core)")
    ap.add_argument("--dtypes", default="f32", help="f32,bf16")
    ap.add_argument("--variants", default="full,causal")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None, help="also append the JSON lines here")
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16}
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    out = open(args.out, "a") if args.out else None
    B, H, D = args.batch, args.heads, args.head_dim
    torch.manual_seed(0)
    for t in args.threads.split(","):
        threads = default_threads if t == "all" else int(t)
        torch.set_num_threads(threads)
        for L in [int(x) for x in args.lengths.split(",")]:
            for dname in args.dtypes.split(","):
                dt = dtypes[dname]
                q, k, v = (torch.randn(B, H, L, D, dtype=dt) for _ in range(3))
                for variant in args.variants.split(","):
                    causal = variant == "causal"
                    with torch.inference_mode():
                        for _ in range(args.warmup):
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        times = []
                        for _ in range(args.repeat):
                            start = time.perf_counter()
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                            times.append((time.perf_counter() - start) * 1e3)
                    ms = statistics.median(times)
                    kept = kept_pairs(variant, L)
                    flops = 4.0 * D * B * H * kept
                    row = dict(impl="torch-sdpa-cpu", variant=variant, dtype=dname,
                               B=B, H=H, L=L, D=D, threads=threads, ms=round(ms, 4),
                               ms_min=round(min(times), 4), repeat=args.repeat,
                               kept_pairs=kept, flops=flops,
                               gflops=round(flops / (ms * 1e6), 2),
                               torch=torch.__version__, cpu_capability=capability,
                               cpu=platform.processor() or platform.machine(),
                               cpus=os.cpu_count())
                    line = json.dumps(row)
                    print(line, flush=True)
                    if out:
                        out.write(line + "\n")
                        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
