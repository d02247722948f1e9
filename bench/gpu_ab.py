#!/usr/bin/env python3
"""Times two or more builds of the suite's packages against each other on the
GPU machine: the same variants and lengths, launched in interleaved rounds
(A B C A B C ...) so that clock and thermal drift fall on every build alike.

Each build is a directory laid out as make_packages.sh's output (suite/ for
the forward packages, suite-grad/ for the adjoints). Per (variant, L) and
build it prints the median over rounds of attnc-launch's own median, forward
and forward + backward (backward = the difference), and each build's speed
relative to the first (> 1: faster). No correctness check and no peers:
run bench/gpu_suite.py for those.

  python3 bench/gpu_ab.py --launch BUILD_RT/bin/attnc-launch \\
      --variants causal,full --lengths 16384 --rounds 3 DIR_A DIR_B [DIR_C ...]

A build given as DIR:one-cta-per-tile is DIR's packages with every entry's
"persistent" taken out of the manifest, so that the runtime launches one CTA
per tile (the kernel serves both): the same code, persistent or not.

Writes one JSON object per (variant, L, build) to $OUT/gpu_ab.jsonl.
"""
import argparse, json, os, re, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_suite  # noqa: E402  (the suite's variants, inputs and launcher)


ONE_CTA_PER_TILE = ":one-cta-per-tile"


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xffffffffffffffff
    return h


def without_persistence(src, dst):
    """Copies package src to dst with no entry "persistent" (the manifest
    rewritten, the checksum made again: runtime/lib/package/PackageFile.cpp)."""
    data = open(src, "rb").read()
    header = re.match(rb"attnpkg (\d+)\nmanifest (\d+)\n", data)
    start = header.end()
    end = start + int(header.group(2))
    manifest = json.loads(data[start:end])
    for entry in manifest["entries"]:
        entry.pop("persistent", None)
    text = json.dumps(manifest, indent=2).encode()
    body = (b"attnpkg %s\nmanifest %d\n" % (header.group(1), len(text)) + text +
            data[end:data.rindex(b"end ")])
    with open(dst, "wb") as out:
        out.write(body + b"end %016x\n" % fnv1a64(body))


def resolve_build(build, scratch):
    """The directory of a build argument: DIR, or for DIR:one-cta-per-tile
    a copy of DIR's packages without persistence under `scratch`."""
    if not build.endswith(ONE_CTA_PER_TILE):
        return build
    src = build[:-len(ONE_CTA_PER_TILE)]
    dst = os.path.join(scratch, str(len(os.listdir(scratch))))
    for folder in ("suite", "suite-grad"):
        if not os.path.isdir(os.path.join(src, folder)):
            continue
        os.makedirs(os.path.join(dst, folder))
        for name in os.listdir(os.path.join(src, folder)):
            if name.endswith(".attnpkg"):
                without_persistence(os.path.join(src, folder, name),
                                    os.path.join(dst, folder, name))
    return dst


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="package directories, the first the baseline")
    parser.add_argument("--launch", default="/tmp/attnc-build-rt/bin/attnc-launch")
    parser.add_argument("--variants", default="causal,full")
    parser.add_argument("--lengths", default="16384")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed launches per measurement (attnc-launch --repeat)")
    args = parser.parse_args()
    if len(args.builds) < 2:
        parser.error("give at least two package directories")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in gpu_suite.VARIANTS]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; the suite has "
                     f"{', '.join(gpu_suite.VARIANTS)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    scratch = tempfile.mkdtemp(prefix="gpu_ab.")
    folders = {build: resolve_build(build, scratch) for build in args.builds}
    kinds = (("fwd", "suite"), ("fwdbwd", "suite-grad"))
    # times[(variant, L, build, kind)] = [ms per round]
    times = {}
    for round_index in range(args.rounds):
        for v in variants:
            for L in lengths:
                for build in args.builds:
                    for kind, folder in kinds:
                        package = os.path.join(folders[build], folder, v + ".attnpkg")
                        if not os.path.exists(package):
                            continue
                        ms, _ = gpu_suite.time_ours(args, package, v, L)
                        times.setdefault((v, L, build, kind), []).append(ms)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
        # The table so far after every round: a run cut short keeps it.
        report(args, variants, lengths, kinds, times)


def report(args, variants, lengths, kinds, times):
    def median(v, L, build, kind):
        values = times.get((v, L, build, kind))
        return statistics.median(values) if values else None

    def cell(x, width=8, places=3):
        return f"{x:{width}.{places}f}" if x is not None else f"{'-':>{width}s}"

    rows = []
    print(f"\n{'variant':18s} {'L':>6s} {'build':24s} {'fwd ms':>8s} {'fwd+bwd':>8s} "
          f"{'bwd ms':>8s} {'fwd x':>6s} {'bwd x':>6s}")
    print("  (medians over rounds; x: the first build's time over this one's, "
          "> 1 faster)")
    for v in variants:
        for L in lengths:
            def measured(build):
                fwd = median(v, L, build, "fwd")
                both = median(v, L, build, "fwdbwd")
                bwd = both - fwd if fwd is not None and both is not None else None
                return fwd, both, bwd

            base_fwd, _, base_bwd = measured(args.builds[0])
            for build in args.builds:
                fwd, both, bwd = measured(build)
                row = dict(kind="ab", variant=v, L=L, build=build, fwd_ms=fwd,
                           fwdbwd_ms=both, bwd_ms=bwd,
                           fwd_speedup=base_fwd / fwd if base_fwd and fwd else None,
                           bwd_speedup=base_bwd / bwd if base_bwd and bwd else None,
                           rounds={k: times.get((v, L, build, k)) for k, _ in kinds})
                rows.append(row)
                print(f"{v:18s} {L:6d} {os.path.basename(build.rstrip('/'))[:24]:24s} "
                      f"{cell(fwd)} {cell(both)} {cell(bwd)} "
                      f"{cell(row['fwd_speedup'], 6)} {cell(row['bwd_speedup'], 6)}")
    sys.stdout.flush()
    with open(os.path.join(os.environ.get("OUT", "."), "gpu_ab.jsonl"), "w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")



if __name__ == "__main__":
    main()
