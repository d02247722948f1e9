"""Imports the installed attnc, prints where its parts come from, and runs a
spec on the CPU (fused, then through the Halide backend) against the float64
reference."""
import sys

import numpy as np

import attnc

facts = attnc.info()
print("package:", facts["package"])
print("compiler: %s (LLVM %s)" % (facts["compiler"]["path"],
                                  facts["compiler"]["llvm"]))
print("runtime:", facts["runtime"]["path"])
print("halide backend:", facts["compiler"]["halide"].get("path"))
rng = np.random.default_rng(0)
q = rng.standard_normal((1, 2, 37, 16), dtype=np.float32)
k = rng.standard_normal((1, 2, 53, 16), dtype=np.float32)
v = rng.standard_normal((1, 2, 53, 16), dtype=np.float32)
# The fused path, then the Halide backend's plugin from the package.
for backend in ("auto", "halide"):
    kernel = attnc.compile(sys.argv[1], dtype="f32", backend=backend)
    out = kernel(q, k, v)
    want = kernel.reference(q, k, v)
    error = float(np.linalg.norm(out - want) / np.linalg.norm(want))
    print("%s: path=%s max_rel_err=%.2e %s" % (
        kernel.name, kernel.path, error, "ok" if error <= 1e-5 else "FAIL"))
print("halide backend loaded:", attnc.info()["compiler"]["halide"]["loaded"])
