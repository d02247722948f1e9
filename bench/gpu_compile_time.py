#!/usr/bin/env python3
"""Cold compile times of GPU packages: every example through `attnc compile
--target CHIP --no-cache`, forward and adjoint (--grad), each `--repeat` times;
prints a table (median and minimum ms per example) and the medians over the
examples. The issue's target is under 500 ms per package.

Usage: python3 bench/gpu_compile_time.py [--attnc build/bin/attnc]
           [--chip sm_90a] [--repeat 5] [--names causal,alibi] [--no-grad]

Shapes and types as test/integration/gpu/make_packages.sh gives them: D (and
E) = 128 unless the spec fixes them, bf16 unless Q is declared 16-bit.
Examples the GPU backend rejects are listed as such. Times are wall-clock
times of the whole `attnc compile` process (start-up, front end, kernel
building, LLVM to PTX, package write): what a user waits for.
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def compile_options(spec):
    text = open(spec).read()
    shape = [] if re.search(r"^\s*dims .*\bD *= *\d", text, re.M) else \
        ["--shape", "D=128,E=128" if re.search(r"^\s*dims .*\bE\b", text, re.M)
         else "D=128"]
    dtype = [] if re.search(r"^\s*in\s+Q:\s*b?f16", text, re.M) else ["--dtype", "bf16"]
    return shape + dtype


def time_compile(args, spec, extra, out):
    """Wall ms of each of args.repeat cold compiles, or the first error line."""
    command = [args.attnc, "compile", spec, "--target", args.chip, "--no-cache",
               "-o", out] + compile_options(spec) + extra
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = (time.perf_counter() - start) * 1e3
        if done.returncode != 0:
            lines = done.stderr.splitlines()
            return next((l for l in lines if "error" in l), lines[0] if lines else "?")
        times.append(elapsed)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attnc", default=os.path.join(ROOT, "build", "bin", "attnc"))
    ap.add_argument("--chip", default="sm_90a")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--names", help="comma-separated examples (default: all)")
    ap.add_argument("--no-grad", action="store_true", help="forward packages only")
    args = ap.parse_args()
    examples = os.path.join(ROOT, "examples")
    names = args.names.split(",") if args.names else sorted(
        f[:-len(".attn")] for f in os.listdir(examples) if f.endswith(".attn"))
    kinds = [("forward", [])] + ([] if args.no_grad else [("grad", ["--grad"])])
    print(f"attnc compile --target {args.chip} --no-cache, {args.repeat} runs, "
          f"{os.cpu_count()} CPUs (ms: median / min)")
    print(f"{'example':18s}" + "".join(f"{kind:>20s}" for kind, _ in kinds))
    medians = {kind: [] for kind, _ in kinds}
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            spec = os.path.join(examples, name + ".attn")
            cells = []
            for kind, extra in kinds:
                result = time_compile(args, spec, extra,
                                      os.path.join(work, f"{name}.{kind}.attnpkg"))
                if isinstance(result, str):
                    cells.append(f"{'unsupported':>20s}")
                    continue
                median = statistics.median(result)
                medians[kind].append(median)
                cells.append(f"{median:11.0f} / {min(result):6.0f}")
            print(f"{name:18s}" + "".join(cells), flush=True)
    print(f"{'median':18s}" + "".join(
        f"{statistics.median(medians[kind]):11.0f}{'':9s}" if medians[kind]
        else f"{'-':>20s}" for kind, _ in kinds))
    print(f"{'slowest':18s}" + "".join(
        f"{max(medians[kind]):11.0f}{'':9s}" if medians[kind]
        else f"{'-':>20s}" for kind, _ in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
