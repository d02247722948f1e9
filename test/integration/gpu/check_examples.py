#!/usr/bin/env python3
"""Every example package (and the GPU checks' own specs, Inputs/*.attn) on the
GPU against the float64 reference evaluator.

The GPU machine has no compiler and the build machine has no GPU, so the check
runs in two halves:

  1. On the GPU machine (numpy, the runtime's attnc-launch; no attnc needed):
       python3 test/integration/gpu/check_examples.py launch \\
           --launch BUILD_RT/bin/attnc-launch --packages build/gpu-packages/examples \\
           --out RESULTS
     launches each package at small sizes that are not multiples of the tiles
     (M < N, and M > N where the spec allows it, which leaves rows fully
     masked), the last four with few query rows per key/value head, which
     run the split-key decode kernel and its merge (one or three 16-row tiles,
     and M > N), with seeded random inputs, and saves the outputs as .npy
     (RESULTS/NAME.I/) with the command in launch.log. The inputs are not
     kept (they would not fit the way back): attnc-launch's generator gives
     the same bytes for the same seed on every machine.
  2. Here (PYTHONPATH=build/python):
       python3 test/integration/gpu/check_examples.py check --results RESULTS \
           --launch build/bin/attnc-launch
     regenerates the inputs by rerunning each launch.log command with the
     local attnc-launch (it writes the inputs, then stops for want of a GPU),
     recomputes each output with the reference evaluator from them (bf16
     read as float32) and prints the relative error per output (Frobenius,
     bf16 tolerance 1e-2); exits 1 on any failure.
"""
import argparse, os, subprocess, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# Launches per example: sizes and params (window, sinks, caps small enough
# that the masks matter at these sizes). The last four are decode launches
# (M H / G <= 64; G = 1 stands for the key/value heads of MQA-like specs).
SIZES = ["B=1,H=4,G=2,M=100,N=201,MB=2,NB=4,E=128",
         "B=1,H=4,G=2,M=150,N=90,MB=3,NB=2,E=128",
         "B=2,H=4,G=2,M=3,N=600,MB=1,NB=10,E=128",
         "B=1,H=4,G=1,M=10,N=520,MB=1,NB=9,E=128",
         "B=1,H=2,G=2,M=40,N=333,MB=1,NB=6,E=128",
         "B=1,H=4,G=2,M=7,N=5,MB=1,NB=1,E=128"]
PARAMS = {
    "sliding_window": "window=40", "sinks_fixed": "window=40",
    "streaming_llm": "window=40,sinks=4", "softcap": "cap=5",
    "prefix_lm": "prefix=24", "duo_attention": "window=40,sinks=4",
}
# Queries are the last M keys, and their document ids are read at key
# positions: M > N is out of range (the reference refuses the launch).
KEYS_AFTER_QUERIES = {"document_mask"}


def symbolic_dims(launcher, package):
    """The dims a package leaves to the launch (`attnc-launch --info`)."""
    info = subprocess.run([launcher, package, "--info"], capture_output=True,
                          text=True).stdout
    return {line.split()[1] for line in info.splitlines()
            if line.split()[:1] == ["dim"] and "=" not in line}


def launch(args):
    failed = 0
    for package in sorted(os.listdir(args.packages)):
        name = package[:-len(".attnpkg")]
        wanted = symbolic_dims(args.launch, os.path.join(args.packages, package))
        for index, sizes in enumerate(SIZES):
            size_of = dict(item.split("=") for item in sizes.split(","))
            if name in KEYS_AFTER_QUERIES and int(size_of["M"]) > int(size_of["N"]):
                continue
            dims = ",".join(item for item in sizes.split(",")
                            if item.split("=")[0] in wanted)
            out = os.path.join(args.out, f"{name}.{index}")
            os.makedirs(out, exist_ok=True)
            command = [args.launch, os.path.join(args.packages, package),
                       "--dim", dims, "--seed", str(index + 1),
                       "--int-range", "0,3", "--out-dir", out]
            for param in filter(None, PARAMS.get(name, "").split(",")):
                command += ["--param", param]
            run = subprocess.run(command, capture_output=True, text=True)
            with open(os.path.join(out, "launch.log"), "w") as log:
                log.write(" ".join(command) + "\n" + run.stdout + run.stderr)
            status = "ok" if run.returncode == 0 else "FAILED"
            if run.returncode != 0:
                failed += 1
            print(f"{status:8} {name} {dims}" +
                  ("" if run.returncode == 0 else
                   f": {(run.stderr.strip().splitlines() or ['?'])[-1]}"))
    return 1 if failed else 0


def as_float(array):
    """bf16 arrays come as '<u2' bits."""
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def regenerate_inputs(launcher, directory):
    """Reruns the launch.log command here with --save-inputs: attnc-launch
    writes the inputs before it needs a GPU."""
    command = open(os.path.join(directory, "launch.log")).readline().split()
    command[0] = launcher
    command[command.index("--out-dir") + 1] = directory
    # The package path is relative to the repository root, as on the GPU.
    subprocess.run(command + ["--save-inputs"], capture_output=True, text=True,
                   cwd=ROOT)


def check(args):
    import attnc
    failed = 0
    for entry in sorted(os.listdir(args.results)):
        name, _, index = entry.rpartition(".")
        directory = os.path.join(args.results, entry)
        if not os.path.isdir(directory) or not index.isdigit():
            continue
        spec = os.path.join(ROOT, "examples", name + ".attn")
        if not os.path.exists(spec):
            spec = os.path.join(HERE, "Inputs", name + ".attn")
        kernel = attnc.compile(spec, dtype="f32",
                               shapes={"D": 128, "E": 128} if name == "cross_attention"
                               else {"D": 128} if "D = 128" not in open(spec).read() else None)
        if not os.path.exists(os.path.join(directory, kernel.outputs[0] + ".npy")):
            print(f"skipped  {entry}: not launched")
            continue
        if not os.path.exists(os.path.join(directory, kernel.inputs[0] + ".npy")):
            regenerate_inputs(args.launch, directory)
        inputs = [as_float(np.load(os.path.join(directory, n + ".npy")))
                  for n in kernel.inputs]
        inputs = [x.astype(np.float32) if x.dtype.kind == "f" else x for x in inputs]
        params = {}
        for item in filter(None, PARAMS.get(name, "").split(",")):
            key, value = item.split("=")
            params[key] = float(value)
        try:
            reference = kernel.reference(*inputs, **params)
        except ValueError as error:  # the reference's launch checks
            failed += 1
            print(f"FAIL  {entry:22} refused by the reference: {error}")
            continue
        if not isinstance(reference, tuple):
            reference = (reference,)
        for output, ref in zip(kernel.outputs, reference):
            got = as_float(np.load(os.path.join(directory, output + ".npy")))
            got = got.astype(np.float64)
            finite = np.isfinite(ref)
            same_inf = np.array_equal(np.isneginf(ref), np.isneginf(got))
            norm = np.linalg.norm(ref[finite])
            diff = got[finite] - ref[finite]
            error = np.linalg.norm(diff) / norm if norm else \
                float(np.abs(got[finite]).max(initial=0))
            ok = same_inf and np.isfinite(got[finite]).all() and error <= 1e-2
            empty = int((~finite).sum()) if output.startswith("LSE") else \
                int((np.abs(ref).reshape(-1, ref.shape[-1]).max(axis=1) == 0).sum())
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL':5} {entry:22} {output:4} shape {got.shape} "
                  f"rel_err={error:.2e} empty_rows={empty}")
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    on_gpu = sub.add_parser("launch")
    on_gpu.add_argument("--launch", required=True)
    on_gpu.add_argument("--packages", required=True)
    on_gpu.add_argument("--out", required=True)
    here = sub.add_parser("check")
    here.add_argument("--results", required=True)
    here.add_argument("--launch", default=os.path.join(ROOT, "build", "bin", "attnc-launch"))
    args = parser.parse_args()
    sys.exit(launch(args) if args.mode == "launch" else check(args))


if __name__ == "__main__":
    main()
