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

Adjoint packages (make_packages.sh's examples-grad/NAME.attnpkg, the kernel
NAME_grad of `attnc compile --grad`) go through the same two halves:
`launch --packages build/gpu-packages/examples-grad --out RESULTS` gives them
random N(0, 1) output adjoints (dO, dLSE) like any float input, and `check`
recognises their results (launch.log says "launched NAME_grad"), takes the
gradients of the float64 reference's reverse mode (kernel.reference_vjp of the
forward spec, with the launch's inputs and adjoints) and compares every
gradient output (dQ, dK, dV, dSlopes, dSinks, ...: one per float input of the
forward) with tolerance 2e-2.

  3. Here, without a GPU:
       python3 test/integration/gpu/check_examples.py self-test
     writes results as the GPU would (forward outputs from the CPU kernel
     rounded to bf16, gradients from the CPU adjoint kernel kernel.vjp) for a
     few examples, some deliberately wrong, and checks that `check` passes and
     fails exactly those.

A gradient's error is measured, as `attnc run --grad --check` measures it,
against the larger of its float64 reference and the scale of the terms the
reference sums (kernel.reference_vjp(..., return_scales=True)): where the
terms cancel (a bias added to a whole softmax row, Inputs/row_bias.attn, whose
reference is float64 rounding), the kernel's rounding of the terms is what it
is off by, and the line says "against its terms' scale".
"""
import argparse, os, re, shutil, subprocess, sys, tempfile
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
    names = set(filter(None, (args.names or "").split(",")))
    for package in sorted(os.listdir(args.packages)):
        if not package.endswith(".attnpkg"):
            continue
        name = package[:-len(".attnpkg")]
        if names and name not in names:
            continue
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
                       "--int-range", "0,3", "--out-dir", out,
                       # What the kernels leave in their workspaces must
                       # serve the next launch: the second one is checked.
                       "--launches", "2"]
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
        if args.pack:
            # One archive per example: the results of all of them are more
            # than one call to the GPU machine brings back.
            os.makedirs(args.pack, exist_ok=True)
            parent, base = os.path.split(os.path.abspath(args.out))
            members = sorted(d for d in os.listdir(args.out)
                             if d.rsplit(".", 1)[0] == name)
            subprocess.run(["tar", "cJf", os.path.join(args.pack, name + ".txz"),
                            "-C", parent] + [os.path.join(base, d) for d in members],
                           check=True)
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


GRAD_TOLERANCE = 2e-2
FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")


def reference_kernel(attnc, name):
    """The f32 CPU kernel of example `name` (examples/ or Inputs/), whose
    reference and reference_vjp give the expected results."""
    spec = os.path.join(ROOT, "examples", name + ".attn")
    if not os.path.exists(spec):
        spec = os.path.join(HERE, "Inputs", name + ".attn")
    # The head dims the packages were built with (make_packages.sh): 128
    # unless the spec fixes them.
    dims = re.search(r"^\s*dims\s+(.*)$", open(spec).read(), re.M).group(1)
    fixed = set(re.findall(r"\b([A-Z]\w*)\s*=", dims))
    shapes = {d: 128 for d in ("D", "E")
              if re.search(rf"\b{d}\b", dims) and d not in fixed}
    return attnc.compile(spec, dtype="f32", shapes=shapes or None)


def params_of(name):
    params = {}
    for item in filter(None, PARAMS.get(name, "").split(",")):
        key, value = item.split("=")
        params[key] = float(value)
    return params


def is_grad_result(directory):
    """Whether `directory` holds the launch of an adjoint package: the
    kernel attnc-launch reports is NAME_grad, or (launch failed before it
    said) the package came from an examples-grad folder."""
    try:
        log = open(os.path.join(directory, "launch.log")).read()
    except OSError:
        return False
    launched = re.search(r"^launched (\S+) on device", log, re.M)
    if launched:
        return launched.group(1).endswith("_grad")
    command = log.split("\n", 1)[0].split()
    return len(command) > 1 and \
        os.path.basename(os.path.dirname(command[1])).endswith("-grad")


def relative_error(got, ref):
    """(Frobenius relative error over the finite reference entries, whether
    the non-finite ones agree): a zero reference gives max |got|."""
    finite = np.isfinite(ref)
    same_inf = np.array_equal(np.isneginf(ref), np.isneginf(got))
    norm = np.linalg.norm(ref[finite])
    diff = got[finite] - ref[finite]
    error = np.linalg.norm(diff) / norm if norm else \
        float(np.abs(got[finite]).max(initial=0))
    ok = same_inf and bool(np.isfinite(got[finite]).all())
    return error, ok


# As the driver's gradient check (driver/include/attn/Driver/Gradient.h,
# kCancellingReferenceRatio): a reference below this fraction of its terms'
# scale is reported as cancelling (the error is measured the same either way).
CANCELLING_REFERENCE_RATIO = 0.1


def gradient_error(got, ref, scale):
    """(error, finite, cancels): |got - ref| / max(|ref|, |scale|), norms over
    the finite reference entries, as getGradientError in the driver. A float
    gradient is off by the rounding of the terms it sums, not of its value:
    with terms of one sign |ref| decides (the relative error), where they
    cancel (a bias added to a whole softmax row) only |scale| says which
    error is rounding. A wrong gradient still fails: one of n terms dropped
    is an error of about 1/sqrt(n) of the scale. Non-finite entries must
    agree with the reference's, as in relative_error."""
    finite = np.isfinite(ref)
    same_inf = np.array_equal(np.isneginf(ref), np.isneginf(got)) and \
        np.array_equal(np.isposinf(ref), np.isposinf(got))
    ok = same_inf and bool(np.isfinite(got[finite]).all())
    scale = np.where(np.isfinite(scale), scale, 0.0)
    ref_norm = np.linalg.norm(ref[finite])
    scale_norm = np.linalg.norm(scale[finite])
    diff = np.linalg.norm(got[finite] - ref[finite]) if ok else np.inf
    denominator = max(ref_norm, scale_norm)
    error = float(diff / denominator if denominator else diff)
    return error, ok, bool(ref_norm < CANCELLING_REFERENCE_RATIO * scale_norm)


def check_grad(args, entry, name, kernel, directory):
    """The gradients a NAME_grad package wrote to `directory` against the
    float64 reverse mode of the forward spec; one line per gradient. The
    package's inputs are the forward's, then one adjoint per float output
    (dO, dLSE: saved by --save-inputs as dO.npy, ...); its outputs one
    gradient per float input (dQ, dK, dV, dSlopes, ...). Returns the number
    of failures."""
    float_inputs = [n for n, dtype, _ in kernel._input_specs if dtype in FLOAT_DTYPES]
    float_outputs = [n for n, dtype, _ in kernel._output_specs if dtype in FLOAT_DTYPES]
    if not os.path.exists(os.path.join(directory, "d" + float_inputs[0] + ".npy")):
        print(f"skipped  {entry}: not launched")
        return 0
    if not all(os.path.exists(os.path.join(directory, n + ".npy")) for n in kernel.inputs) \
            or not any(os.path.exists(os.path.join(directory, "d" + o + ".npy"))
                       for o in float_outputs):
        regenerate_inputs(args.launch, directory)
    missing = [n for n in kernel.inputs
               if not os.path.exists(os.path.join(directory, n + ".npy"))]
    adjoints, absent = [], []
    for output in kernel.outputs:
        path = os.path.join(directory, "d" + output + ".npy")
        if output in float_outputs and os.path.exists(path):
            adjoints.append(as_float(np.load(path)).astype(np.float64))
        else:
            adjoints.append(None)
            if output in float_outputs:
                absent.append("d" + output)
    if missing or len(absent) == len(float_outputs):
        print(f"FAIL  {entry:22} inputs not regenerated (missing: "
              f"{', '.join(missing + absent)}); check --launch and the package path "
              f"in launch.log")
        return 1
    if absent:
        print(f"note  {entry:22} no {', '.join(absent)} input: zero adjoint")
    inputs = [as_float(np.load(os.path.join(directory, n + ".npy")))
              for n in kernel.inputs]
    inputs = [x.astype(np.float32) if x.dtype.kind == "f" else x for x in inputs]
    try:
        references, scales = kernel.reference_vjp(
            *inputs, grad_outputs=tuple(adjoints), return_scales=True,
            **params_of(name))
    except ValueError as error:  # the reference's launch checks
        print(f"FAIL  {entry:22} refused by the reference: {error}")
        return 1
    failed = 0
    for input_name, ref, scale in zip(kernel.inputs, references, scales):
        if ref is None:  # integer input: no gradient
            continue
        output = "d" + input_name
        path = os.path.join(directory, output + ".npy")
        if not os.path.exists(path):
            failed += 1
            print(f"FAIL  {entry:22} {output:7} not written (the package has no "
                  f"gradient for float input {input_name})")
            continue
        got = as_float(np.load(path)).astype(np.float64)
        if got.shape != ref.shape:
            failed += 1
            print(f"FAIL  {entry:22} {output:7} shape {got.shape}, expected {ref.shape}")
            continue
        error, finite, cancels = gradient_error(got, ref, scale)
        ok = finite and error <= GRAD_TOLERANCE
        zero = int((np.abs(ref).reshape(-1, ref.shape[-1]).max(axis=1) == 0).sum()) \
            if ref.ndim >= 2 else 0
        failed += not ok
        note = " (against its terms' scale: the reference cancels)" if cancels else ""
        print(f"{'PASS' if ok else 'FAIL':5} {entry:22} {output:7} shape {got.shape} "
              f"rel_err={error:.2e} zero_rows={zero}{note}")
    return failed


def check_entry(args, attnc, entry):
    """Checks the launch in args.results/entry; the number of failures."""
    name, _, index = entry.rpartition(".")
    directory = os.path.join(args.results, entry)
    if not os.path.isdir(directory) or not index.isdigit():
        return 0
    kernel = reference_kernel(attnc, name)
    if is_grad_result(directory):
        return check_grad(args, entry, name, kernel, directory)
    if not os.path.exists(os.path.join(directory, kernel.outputs[0] + ".npy")):
        print(f"skipped  {entry}: not launched")
        return 0
    if not os.path.exists(os.path.join(directory, kernel.inputs[0] + ".npy")):
        regenerate_inputs(args.launch, directory)
    inputs = [as_float(np.load(os.path.join(directory, n + ".npy")))
              for n in kernel.inputs]
    inputs = [x.astype(np.float32) if x.dtype.kind == "f" else x for x in inputs]
    params = params_of(name)
    try:
        reference = kernel.reference(*inputs, **params)
    except ValueError as error:  # the reference's launch checks
        print(f"FAIL  {entry:22} refused by the reference: {error}")
        return 1
    if not isinstance(reference, tuple):
        reference = (reference,)
    failed = 0
    for output, ref in zip(kernel.outputs, reference):
        got = as_float(np.load(os.path.join(directory, output + ".npy")))
        got = got.astype(np.float64)
        error, finite = relative_error(got, ref)
        ok = finite and error <= 1e-2
        empty = int((~np.isfinite(ref)).sum()) if output.startswith("LSE") else \
            int((np.abs(ref).reshape(-1, ref.shape[-1]).max(axis=1) == 0).sum())
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL':5} {entry:22} {output:4} shape {got.shape} "
              f"rel_err={error:.2e} empty_rows={empty}")
    return failed


def check(args):
    import attnc
    failed = 0
    for entry in sorted(os.listdir(args.results)):
        failed += check_entry(args, attnc, entry)
    return 1 if failed else 0


# ------------------------------------------------------------------ self-test
# Examples covering every kind of gradient: plain (causal), a per-head f32
# input (alibi: dSlopes; sink_logit: dSinks), a second output with its own
# adjoint (lse_output: dLSE), an integer input without gradient
# (document_mask), GQA, params.
SELF_TEST = ["causal", "alibi", "sink_logit", "lse_output", "document_mask",
             "gqa", "sliding_window", "softcap", "row_bias"]


def bf16_bits(array):
    """float32 -> bf16 bit patterns (round to nearest even), as '<u2'."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def fake_launch(attnc, kernel, name, index, grad, directory, corrupt=None,
                shift=None):
    """Writes what `launch` would leave in `directory` for SIZES[index]
    (with the inputs, as after regenerate_inputs), computed on the CPU:
    forward outputs from the kernel rounded to bf16 (LSE f32), gradients
    from its adjoint kernel (kernel.vjp) as f32. `corrupt` names an output
    to scale by 1.05 (an error above either tolerance), `shift` a gradient to
    add 5% of the root mean square of its terms' scale to (an error of 5% of
    what the check measures it against, which a gradient whose reference
    cancels must fail too)."""
    os.makedirs(directory, exist_ok=True)
    size_of = {k: int(v) for k, v in (item.split("=") for item in SIZES[index].split(","))}
    symbolic = [n for n, size in kernel._dims if size is None]
    shapes = {n: size_of[n] for n in symbolic if n in size_of}
    inputs = kernel.random_inputs(shapes, seed=index + 1)
    saved = []
    for (input_name, dtype, axes), x in zip(kernel._input_specs, inputs):
        if dtype in FLOAT_DTYPES and len(axes) == 4:  # Q, K, V: bf16 on the GPU
            bits = bf16_bits(x)
            np.save(os.path.join(directory, input_name + ".npy"), bits)
            x = as_float(bits)
        else:
            np.save(os.path.join(directory, input_name + ".npy"), x)
        saved.append(x)
    params = params_of(name)
    results = {}
    if grad:
        outputs = kernel(*saved, **params)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        rng = np.random.default_rng(index)
        adjoints = []
        for (output, dtype, _), o in zip(kernel._output_specs, outputs):
            if dtype not in FLOAT_DTYPES:
                adjoints.append(None)
                continue
            adjoint = rng.standard_normal(o.shape).astype(np.float32)
            np.save(os.path.join(directory, "d" + output + ".npy"), adjoint)
            adjoints.append(adjoint)
        gradients = kernel.vjp(*saved, grad_outputs=tuple(adjoints), **params)
        for input_name, g in zip(kernel.inputs, gradients):
            if g is not None:
                results["d" + input_name] = np.asarray(g, np.float32)
        if shift:
            _, scales = kernel.reference_vjp(*saved, grad_outputs=tuple(adjoints),
                                             return_scales=True, **params)
            scale = scales[kernel.inputs.index(shift[1:])]
            shift_by = np.float32(0.05 * np.sqrt(np.mean(np.square(scale))))
    else:
        outputs = kernel(*saved, **params)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for (output, dtype, _), o in zip(kernel._output_specs, outputs):
            results[output] = (np.asarray(o, np.float32), dtype == "bf16" or output == "O")
    for output, value in results.items():
        value, as_bf16 = value if isinstance(value, tuple) else (value, False)
        if output == corrupt:
            value = value * np.float32(1.05)
        if output == shift:
            value = value + shift_by
        np.save(os.path.join(directory, output + ".npy"),
                bf16_bits(value) if as_bf16 else value)
    dims = ",".join(f"{n}={v}" for n, v in shapes.items())
    package = f"build/gpu-packages/examples{'-grad' if grad else ''}/{name}.attnpkg"
    with open(os.path.join(directory, "launch.log"), "w") as log:
        log.write(f"attnc-launch {package} --dim {dims} --seed {index + 1} "
                  f"--int-range 0,3 --out-dir {directory}\n"
                  f"launched {kernel.name}{'_grad' if grad else ''} on device 0: ok\n")


def self_test(args):
    """`check` on results written here by the CPU kernels (see fake_launch):
    every clean entry must pass, every corrupted one fail."""
    import attnc
    names = [n for n in args.names.split(",") if n]
    root = args.out or tempfile.mkdtemp(prefix="check_examples_self_test.")
    wrong = []
    for grad in (False, True):
        results = os.path.join(root, "grad" if grad else "forward")
        shutil.rmtree(results, ignore_errors=True)
        os.makedirs(results)
        expected = {}
        for name in names:
            kernel = reference_kernel(attnc, name)
            # M < N and M > N (rows with no key), as `launch` does.
            for index in (0, 1):
                if name in KEYS_AFTER_QUERIES and index == 1:
                    continue
                fake_launch(attnc, kernel, name, index, grad,
                            os.path.join(results, f"{name}.{index}"))
                expected[f"{name}.{index}"] = 0
            # One wrong output per example: the entry must fail.
            corrupt = "dK" if grad else "O"
            fake_launch(attnc, kernel, name, 0, grad,
                        os.path.join(results, f"{name}.9"), corrupt=corrupt)
            expected[f"{name}.9"] = 1
            # The last gradient off by 5% of its terms' scale everywhere: dV,
            # dSlopes or one whose reference cancels (row_bias's dRowBias)
            # must fail as well.
            if grad:
                last = [n for n, dtype, _ in kernel._input_specs
                        if dtype in FLOAT_DTYPES][-1]
                fake_launch(attnc, kernel, name, 0, grad,
                            os.path.join(results, f"{name}.8"),
                            shift="d" + last)
                expected[f"{name}.8"] = 1
        print(f"== self-test: {'adjoint' if grad else 'forward'} results in {results}")
        check_args = argparse.Namespace(results=results, launch=args.launch)
        for entry in sorted(expected):
            failures = check_entry(check_args, attnc, entry)
            if (failures > 0) != (expected[entry] > 0):
                wrong.append(entry + (" (grad)" if grad else ""))
    if wrong:
        print("self-test FAILED: unexpected verdict for " + ", ".join(wrong))
        return 1
    print("self-test passed: clean entries pass, corrupted ones (.8, .9) fail")
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    on_gpu = sub.add_parser("launch")
    on_gpu.add_argument("--launch", required=True)
    on_gpu.add_argument("--packages", required=True)
    on_gpu.add_argument("--out", required=True)
    on_gpu.add_argument("--names", help="comma-separated examples (default: every "
                        "package in --packages)")
    on_gpu.add_argument("--pack", metavar="DIR", help="also write each example's "
                        "results as DIR/NAME.txz (of OUT's folder), to bring back in parts")
    here = sub.add_parser("check")
    here.add_argument("--results", required=True)
    here.add_argument("--launch", default=os.path.join(ROOT, "build", "bin", "attnc-launch"))
    test = sub.add_parser("self-test")
    test.add_argument("--names", default=",".join(SELF_TEST),
                      help="examples to fake launches of (default: %(default)s)")
    test.add_argument("--out", help="keep the fake results here")
    test.add_argument("--launch", default=os.path.join(ROOT, "build", "bin", "attnc-launch"))
    args = parser.parse_args()
    sys.exit(launch(args) if args.mode == "launch" else
             check(args) if args.mode == "check" else self_test(args))


if __name__ == "__main__":
    main()
