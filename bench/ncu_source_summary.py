#!/usr/bin/env python3
"""Summarises Nsight Compute's per-instruction page of one kernel: where its
instructions and its warps' stall samples go, by SASS opcode, and the
instructions that hold the most samples with their main stall reasons.

Input: the CSV that `ncu -i REPORT --page source --csv --print-source sass`
prints (plain or gzipped), from a report taken with source counters (e.g.
`ncu --set full`; bench/profile_gpu.sh with SOURCE=1 writes them). Several
files are summarised side by side, the first the baseline of the ratios:

  python3 bench/ncu_source_summary.py document.csv.gz causal.csv.gz

Per file: warp instructions executed, stall samples, then per opcode (the
mnemonic before the first '.') its instructions and samples, and the
instructions per exponential (MUFU), a proxy for the instructions per score
of attention kernels.
"""
import argparse, collections, csv, gzip, re, sys

OPCODE = re.compile(r"\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def read_rows(path):
    """The header and the instruction rows of one source-page CSV."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    # The first line names the kernel; the header follows.
    start = next(i for i, r in enumerate(rows) if "Source" in r)
    return rows[start], rows[start + 1:]


def number(text):
    try:
        return int(text)
    except ValueError:
        return 0


class Summary:
    def __init__(self, path):
        header, rows = read_rows(path)
        source = header.index("Source")
        executed = header.index("Instructions Executed")
        samples = header.index("Warp Stall Sampling (All Samples)")
        stalls = [(i, h) for i, h in enumerate(header)
                  if h.startswith("stall_") and "(Not Issued)" not in h]
        self.path = path
        self.instructions = collections.Counter()
        self.samples = collections.Counter()
        self.top = []
        for row in rows:
            if len(row) <= max(source, executed, samples):
                continue
            match = OPCODE.match(row[source])
            opcode = match.group(1) if match else "?"
            self.instructions[opcode] += number(row[executed])
            self.samples[opcode] += number(row[samples])
            reasons = sorted(((number(row[i]), h[len("stall_"):])
                              for i, h in stalls), reverse=True)[:3]
            self.top.append((number(row[samples]), row[source].strip(),
                             [f"{name} {count}" for count, name in reasons
                              if count]))
        self.top.sort(key=lambda t: -t[0])

    def total(self, counter):
        return sum(counter.values())


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="source-page CSVs (.csv or .csv.gz)")
    parser.add_argument("--opcodes", type=int, default=20,
                        help="opcodes listed (by instructions of the first file)")
    parser.add_argument("--top", type=int, default=12,
                        help="most sampled instructions listed per file")
    args = parser.parse_args()
    summaries = [Summary(path) for path in args.csv]

    for s in summaries:
        exps = s.instructions["MUFU"]
        per_exp = f"{s.total(s.instructions) / exps:.1f}" if exps else "-"
        print(f"{s.path}: {s.total(s.instructions) / 1e6:.2f} M warp instructions, "
              f"{s.total(s.samples)} stall samples, {per_exp} instructions per MUFU")
    print()
    first = summaries[0]
    width = max(len(s.path) for s in summaries)
    print("opcode     " + "  ".join(f"{'M instr':>8} {'samples':>7}" for _ in summaries)
          + "   (per file, in the order given)")
    for opcode, _ in first.instructions.most_common(args.opcodes):
        cells = []
        for s in summaries:
            samples = s.samples[opcode] / max(1, s.total(s.samples))
            cells.append(f"{s.instructions[opcode] / 1e6:8.2f} {100 * samples:6.1f}%")
        print(f"{opcode:10s} " + "  ".join(cells))
    for s in summaries:
        print(f"\nmost sampled instructions of {s.path:{width}s}")
        total = max(1, s.total(s.samples))
        for count, text, reasons in s.top[:args.top]:
            print(f"  {100 * count / total:5.1f}%  {text[:64]:64s} {', '.join(reasons)}")


if __name__ == "__main__":
    sys.exit(main())
