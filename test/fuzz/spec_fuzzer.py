#!/usr/bin/env python3
"""Differential fuzzer for the whole compiler.

Generates random valid `.attn` specs (head structures, dtypes, score mods,
masks, normalizers, statistic outputs, params, awkward sizes) and checks that
`attnc run --check` agrees with the float64 reference on the CPU paths (the
default, the unfused MLIR pipeline and the Halide backend) and that the
adjoint kernel's gradients (`--grad`) agree with its reverse mode; where
ptxas is available it also compiles each spec and its adjoint for sm_90a and
sm_80, assembles every PTX module of the packages and has the runtime's
attnc-launch check the CPU run's launch against each package (which it does
before it needs a GPU). A GPU compile may refuse a spec its backend does not
support (a clean error); a crash, a ptxas error or a launch the package
refuses is a failure.

Usage:
  spec_fuzzer.py --attnc PATH [--ptxas PATH] [--seconds 120] [--seed N]
                 [--out DIR] [--replay FILE.attn ...]
                 [--keep-going] [--jobs N] [--allow-known-bugs]

The run is deterministic given the seed (the number of specs depends on the
time budget). A failing spec is reduced by dropping features while it keeps
failing the same way, and written with its command lines and output to --out;
--replay checks such files again (their `// fuzz-run:` and `// fuzz-gpu:`
lines hold the launch).
"""
import argparse
import collections
import concurrent.futures
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Known compiler bugs the generator steers around by default, so that a run
# keeps finding new ones; --allow-known-bugs generates them anyway.
KNOWN_BUGS = {}

# A crash, whether the process died or attnc caught it and said so.
CRASH_MARKERS = ("PLEASE submit a bug report", "LLVM ERROR", "Assertion",
                 "Stack dump", "UNREACHABLE", "Segmentation fault",
                 "AddressSanitizer", "terminate called",
                 "the compiler crashed", "LLVM reported a fatal error")
# GPU compile errors that mean the backend broke rather than refused.
INTERNAL_GPU_ERRORS = ("lowering to PTX failed", "no gpu.binary",
                       "does not hold PTX", "failed to legalize",
                       "' op ")
COMMAND_TIMEOUT = 300


# ===------------------------------------------------------------------=== #
# The case: a structured description of one spec and its launch
# ===------------------------------------------------------------------=== #
#
# A case is a plain dict, so that the reducer can simplify it feature by
# feature and render it again; `render` turns it into text and command-line
# arguments deterministically.

MASK_ATOMS = ("causal", "causal", "causal", "anticausal", "window",
              "window", "band", "sinks", "sinks", "prefix",
              "chunk", "stride", "dilate", "doc", "docpad", "len", "qlen",
              "label", "block", "perhead", "headpar", "keyflag", "arith",
              "arith", "hflag")
MODS = ("softcap", "alibi", "relbias", "bucket", "keybias", "headscale",
        "temp", "qbias", "shift")
NORMS = ("softmax", "sink", "normalize", "none", "explicit_softmax",
         "explicit_normalize", "reweight")
STATS = ("lse", "max", "psum")
SPECIAL_LENGTHS = (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)


def pick_length(rng):
    """A sequence length in 1..150, biased towards tile edges and tiny."""
    r = rng.random()
    if r < 0.3:
        return rng.choice(SPECIAL_LENGTHS)
    if r < 0.5:
        return rng.randint(1, 12)
    return rng.randint(1, 150)


def gen_atom(rng, case):
    """One mask predicate with its own parameters."""
    kind = rng.choice(MASK_ATOMS) if rng.random() > 0.01 else "content"
    atom = {"kind": kind}
    n_len = case["shape"]["N"]
    # Runtime values at the ends of the param's type probe overflow in the
    # bounds the mask analysis derives; literals stay small.
    wide = case.get("int_param_type") == "i64"
    # (Params travel as doubles: i64 params are limited to +-2^53.)
    ends = [2**53 - 1, -2**53, 2**40, -2**40] if wide \
        else [2**31 - 1, -2**31]
    extreme = rng.choice([-1, -7] + ends) if rng.random() < 0.1 else None
    if kind in ("window", "band"):
        atom["literal"] = rng.random() < 0.3
        # Edge values (0 empties every row) now and then, not mostly.
        atom["value"] = rng.choice([0, 1, 2] + [rng.randint(0, n_len + 4)] * 5)
    elif kind == "sinks":
        atom["literal"] = rng.random() < 0.5
        atom["value"] = rng.choice([0, 1, 4, 4] + [rng.randint(0, 9)] * 3)
        atom["annotate"] = rng.random() < 0.5
    elif kind == "prefix":
        atom["value"] = rng.choice([0] + [rng.randint(0, n_len + 4)] * 4)
    elif kind in ("chunk", "stride", "dilate"):
        atom["literal"] = rng.random() < 0.4
        atom["value"] = rng.choice([1, 2, 3, rng.randint(1, 40),
                                    -rng.randint(1, 9)])
    elif kind == "doc":
        # Cross-length specs read the query's id at its key position, which
        # needs M <= N; the separate-ids form has no constraint.
        atom["form"] = rng.choice(["shared", "split"])
    elif kind == "docpad":
        atom["value"] = rng.choice([-1, 0, 1])
    elif kind in ("len", "qlen"):
        atom["form"] = rng.choice(["plain", "scaled", "from_end"])
        atom["factor"] = rng.randint(2, 60)
    elif kind == "block":
        atom["bm"] = rng.choice([1, 3, 16, 32, 64, 128])
        atom["bn"] = rng.choice([1, 5, 16, 32, 64, 128])
        atom["extra"] = rng.choice([0, 0, 1])
        atom["annotate"] = rng.random() < 0.6
    elif kind == "perhead":
        atom["annotate"] = rng.random() < 0.6
    elif kind == "headpar":
        atom["mod"] = rng.choice([2, 3])
    elif kind == "arith":
        atom["form"] = rng.randrange(len(ARITH_FORMS))
        atom["a"] = rng.choice([1, 2, 3, 5, 16])
        atom["c"] = rng.choice([1, 2, 3])
        atom["k"] = rng.choice([-3, 0, 1, 5, rng.randint(-40, 200),
                                100000, -100000])
    elif kind == "content":
        atom["threshold"] = rng.choice([-0.5, 0.0, 0.3])
    if extreme is not None and "value" in atom and not atom.get("literal"):
        atom["value"] = extreme if kind not in ("chunk", "stride", "dilate") \
            else rng.choice(ends)
    return atom


# Affine and non-affine index predicates, written in the forms users write
# (mirrored comparisons, slopes, parities, min/max, select of predicates):
# the mask analysis must classify each tile right whatever the form.
ARITH_FORMS = (
    "{a} * n <= {c} * ({q}) + {k}",
    "n * {a} < m * {c} + {k}",
    "{q} - n >= {k}",
    "{k} > n - ({q})",
    "m % {a} == n % {a}",
    "max(n, m) < {k}",
    "min(n - m, {a}) == {a}",
    "n / {a} <= ({q}) / {a}",
    "(n - m) / {a} == 0",
    "select(h % 2 == 0, n <= {q}, n >= m)",
    "-n > -{k}",
    "n < m * m + {k}",
    "abs(n - ({q})) * {a} <= {k}",
)


def gen_mask(rng, case, depth=0):
    """A random and/or/not tree of mask atoms."""
    r = rng.random()
    if depth >= 2 or r < 0.45:
        return ["atom", gen_atom(rng, case)]
    if r < 0.52:
        return ["not", gen_mask(rng, case, depth + 1)]
    op = "and" if rng.random() < 0.6 else "or"
    return [op, gen_mask(rng, case, depth + 1), gen_mask(rng, case, depth + 1)]


def gen_mod(rng):
    """One score mod (applied to the scores in the order drawn)."""
    kind = rng.choice(MODS)
    mod = {"kind": kind}
    if kind == "bucket":
        mod["abs"] = rng.random() < 0.3
    if kind == "softcap":
        mod["literal"] = rng.random() < 0.4
        mod["value"] = rng.choice([1.0, 5.0, 20.0, 50.0])
    elif kind == "alibi":
        mod["coef"] = rng.choice([1.0, 0.25, 0.05])
    elif kind == "relbias":
        mod["extra"] = rng.choice([0, 0, 3])
    elif kind == "temp":
        mod["value"] = rng.choice([0.5, 1.0, 2.5])
    elif kind == "shift":
        # Rows whose weights all underflow (or overflow) in f32 unless the
        # normalizer keeps a running max: softmax and normalize must not care.
        mod["value"] = rng.choice([-105.0, -40.0, 92.0])
    return mod


def gen_norm(rng):
    """The weights: a normalizer, elementwise weights or a written-out
    cascade; the usual ones more often."""
    kind = rng.choice(NORMS + ("softmax", "sink", "normalize"))
    norm = {"kind": kind}
    if kind == "sink":
        norm["sink"] = rng.choice(["table", "table", "param", "literal",
                                   "per_query"])
    elif kind in ("normalize", "explicit_normalize"):
        norm["map"] = rng.choice(["softplus", "softplus", "sigmoid", "exp",
                                  "relu", "square"])
    elif kind == "none":
        norm["map"] = rng.choice(["sigmoid", "sigmoid", "identity", "relu",
                                  "tanh", "exp"])
    elif kind == "softmax":
        norm["operand"] = rng.choice(["S", "S", "S", "half", "double"])
    if rng.random() < 0.03:
        norm = {"kind": "softmax_m"}  # over the queries (slot attention)
    return norm


def gen_case(rng, avoid):
    """A random case; `avoid` names the known bugs to steer around."""
    case = {}
    case["lengths"] = "self" if rng.random() < 0.2 else "cross"
    case["heads"] = rng.choice(["mha", "mha", "mha", "gqa_let", "gqa_let",
                                "gqa_inline", "gqa_fixed", "mqa", "mqa"])
    case["layout"] = "bnhd" if rng.random() < 0.07 else "bhnd"
    case["value_dim"] = "E" if rng.random() < 0.2 else "D"
    case["fixed_d"] = rng.choice([None] * 6 + [64, 32, 128, 96, 16, 24])
    case["decl_dtype"] = rng.choice(["f32", "bf16", "bf16", "f16"])
    case["run_dtype"] = rng.choice(["f32", "f32", "f32", "bf16", "bf16",
                                    "f16", "declared"])
    case["scale"] = rng.choice(["rsqrt", "rsqrt", "div_sqrt", "const",
                                "param", "none", "inside", "prescaled"])
    # Element types of the side inputs and params: mostly the usual ones.
    case["side_dtype"] = rng.choice(["f32"] * 7 + ["bf16", "f16", "f64"])
    case["int_dtype"] = rng.choice(["i32"] * 6 + ["i8", "i64"])
    case["int_param_type"] = rng.choice(["i32"] * 3 + ["i64"])
    # Shape first: some atoms draw their values from it.
    shape = {"B": rng.choice([1, 1, 2, 3])}
    if case["heads"] in ("gqa_let", "gqa_inline"):
        shape["G"] = rng.choice([1, 2, 3])
        shape["H"] = shape["G"] * rng.choice([1, 2, 3])
    elif case["heads"] == "gqa_fixed":
        shape["G"] = rng.choice([1, 2])
        shape["H"] = 2 * shape["G"]
    else:
        shape["H"] = rng.choice([1, 2, 3, 4])
    shape["M"] = pick_length(rng)
    shape["N"] = shape["M"] if case["lengths"] == "self" else pick_length(rng)
    if case["lengths"] == "cross" and rng.random() < 0.15:
        shape["M"] = shape["N"] + rng.randint(1, 20)  # empty leading rows
    if case["lengths"] == "cross" and rng.random() < 0.08:
        # Decoding against a long cache: many key tiles, few queries.
        shape["M"] = rng.choice([1, 1, 2, 5])
        shape["N"] = rng.randint(200, 1500)
        shape["B"] = 1
    if rng.random() < 0.04:
        # Empty launches: nothing to compute, O = 0 and LSE = -inf.
        shape[rng.choice(["B", "M", "N"])] = 0
        if case["lengths"] == "self":
            shape["N"] = shape["M"] = min(shape["M"], shape["N"])
    shape["D"] = case["fixed_d"] or rng.choice(
        [1, 3, 8, 13, 16, 24, 31, 33, 47, 64, 80, 131, 256])
    if case["value_dim"] == "E":
        shape["E"] = rng.choice([1, 5, 16, 24, 40, 64])
    case["shape"] = shape
    case["gpu_d"] = rng.choice([32, 64, 64, 96, 128])
    case["gpu_e"] = rng.choice([16, 32, 64, 128])
    case["gpu_dtype"] = rng.choice(["bf16", "bf16", "f16"])

    case["mods"] = [gen_mod(rng) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    case["mask"] = None if rng.random() < 0.12 else gen_mask(rng, case)
    if case["mask"] and rng.random() < 0.3:
        # Most masks in use are causal and something else.
        case["mask"] = ["and", ["atom", {"kind": "causal"}], case["mask"]]
    case["norm"] = gen_norm(rng)
    case["stats"] = [s for s in STATS
                     if rng.random() < (0.25 if s == "lse" else 0.07)]
    case["oscale"] = rng.random() < 0.04
    case["staged"] = rng.choice([None] * 6 + ["mask_raw", "mask_scaled"])
    case["split"] = rng.random() < 0.15
    case["post_keep"] = gen_atom(rng, case) if rng.random() < 0.06 else None
    if rng.random() < 0.07 and case["heads"] != "gqa_fixed":
        case["paged"] = {"page": rng.choice([16, 16, 4, 5]),
                         "pool": rng.randint(1, 12),
                         "extra": rng.choice([0, 0, 2])}
    case["threads"] = rng.choice([None, None, None, 1, 3])
    # Params: pass a value on the command line or keep the default.
    case["pass_params"] = rng.random() < 0.6
    case["seed"] = rng.randint(0, 2**31)
    if rng.random() < 0.5:
        raisable(case, rng)
    sanitize(case, rng, avoid)
    return case


def raisable(case, rng):
    """Restricts a case to what the raise fuses (and the GPU backend takes),
    so that half the cases reach the fused CPU kernel and the GPU kernels
    with all their masks and score mods."""
    case["profile"] = "raisable"
    if case["heads"] == "gqa_fixed":
        case["heads"] = "gqa_let"
        case["shape"]["H"] = case["shape"]["G"] * rng.choice([1, 2, 3])
    case["layout"] = "bhnd"
    case["side_dtype"] = "f32"
    case["paged"] = None
    case["oscale"] = False
    case["post_keep"] = None
    if case["fixed_d"] in (16, 24):
        case["fixed_d"] = case["shape"]["D"] = 64
    if case["norm"]["kind"] in ("explicit_softmax", "explicit_normalize",
                                "reweight", "softmax_m"):
        case["norm"] = {"kind": rng.choice(["softmax", "sink"]),
                        "operand": "S", "sink": "table"}
    lse_ok = case["norm"]["kind"] == "sink" or (
        case["norm"]["kind"] == "softmax" and
        case["norm"].get("operand", "S") == "S")
    case["stats"] = ["lse"] if lse_ok and "lse" in case["stats"] else []


def walk_atoms(mask):
    if mask is None:
        return
    if mask[0] == "atom":
        yield mask[1]
    else:
        for child in mask[1:]:
            yield from walk_atoms(child)


def all_atoms(case):
    yield from walk_atoms(case["mask"])
    if case.get("post_keep"):
        yield case["post_keep"]


def sanitize(case, rng, avoid):
    """Makes a case satisfy the launch constraints and keeps score
    magnitudes where fp32 can still meet the tolerance."""
    shape = case["shape"]
    # Keep the float64 reference (plain loops) to about a second.
    while (shape["B"] * shape["H"] * shape["M"] * shape["N"] *
           (shape["D"] + shape.get("E", shape["D"])) > 4e7 and
           (shape["B"] > 1 or (shape["H"] > shape.get("G", 1) and
                               case["heads"] != "gqa_fixed"))):
        if shape["B"] > 1:
            shape["B"] = 1
        else:
            shape["H"] = shape.get("G", 1)
    for atom in all_atoms(case):
        if (atom["kind"] == "doc" and atom["form"] == "shared" and
                case["lengths"] == "cross" and shape["M"] > shape["N"]):
            atom["form"] = "split"
    norm = case["norm"]
    # A shift is invisible to softmax and normalize only; with a sink logit
    # the output itself would underflow, and elsewhere the spec's own f32
    # arithmetic would.
    shifts = [m for m in case["mods"] if m["kind"] == "shift"][:1]
    case["mods"] = [m for m in case["mods"] if m["kind"] != "shift"]
    if norm["kind"] in ("softmax", "normalize", "reweight"):
        # Last, so that no other mod scales it; and the scores stay within
        # a few tens of it, where f32 still meets the tolerance.
        case["mods"] += shifts
        if shifts and case["scale"] == "none":
            case["scale"] = "rsqrt"
    bounded_map = norm.get("map") == "exp" and norm["kind"] in (
        "explicit_normalize", "none")
    # exp without a running max overflows fp32 on large scores: keep those
    # scores scaled and free of unbounded additive biases.
    if bounded_map:
        case["scale"] = rng.choice(["rsqrt", "const"])
        case["mods"] = [m for m in case["mods"]
                        if m["kind"] in ("softcap", "keybias", "qbias",
                                         "bucket", "relbias")]
    for mod in case["mods"]:
        if mod["kind"] == "alibi":
            # fp32 scores of magnitude |S| carry a relative error ~|S| eps
            # into exp; keep the bias a few tens at most.
            longest = max(shape["M"], shape["N"])
            limit = 20 if any(m["kind"] == "shift" for m in case["mods"]) \
                else 60
            while mod["coef"] * 3 * longest > limit and mod["coef"] > 0.05:
                mod["coef"] = {1.0: 0.25, 0.25: 0.05}[mod["coef"]]


# ===------------------------------------------------------------------=== #
# Rendering
# ===------------------------------------------------------------------=== #

class Ctx:
    """What the renderer collects while writing one spec."""

    def __init__(self, case):
        self.case = case
        self.self_len = case["lengths"] == "self"
        self.Mn = "L" if self.self_len else "M"
        self.Nn = "L" if self.self_len else "N"
        self.q = "m" if self.self_len else "m + (N - M)"
        self.inputs = []   # (name, text)
        self.params = []   # (name, type, default, passed value)
        self.extra_dims = []  # (name, size)
        self.annotations = []
        self.names = collections.Counter()

    def input(self, name, text):
        if all(n != name for n, _ in self.inputs):
            self.inputs.append((name, text))
        return name

    def param(self, base, ty, default, value):
        if ty == "i32":
            ty = self.case.get("int_param_type", "i32")
        self.names[base] += 1
        name = base if self.names[base] == 1 else f"{base}{self.names[base]}"
        self.params.append((name, ty, default, value))
        return name

    def dim(self, name, size):
        if all(n != name for n, _ in self.extra_dims):
            self.extra_dims.append((name, size))
        return name


def fmt_float(x):
    return repr(float(x))


def render_atom(atom, ctx, path=()):
    k, q, Mn, Nn = atom["kind"], ctx.q, ctx.Mn, ctx.Nn
    shape = ctx.case["shape"]
    if k == "causal":
        return f"n <= {q}"
    if k == "anticausal":
        return f"n >= {q}"
    if k in ("window", "band"):
        w = str(atom["value"]) if atom["literal"] else ctx.param(
            "window", "i32", 8, atom["value"])
        if k == "window":
            return f"{q} - n < {w}"
        return f"abs({q} - n) < {w}"
    if k == "sinks":
        if atom["literal"]:
            # @sinks(K) names keys that are kept (where causally visible):
            # only where the atom is a positive alternative of an 'or'.
            if (atom["annotate"] and path and path[-1] == "or" and
                    "not" not in path and not any(
                        a.startswith("@sinks") for a in ctx.annotations)):
                ctx.annotations.append(f"@sinks({atom['value']})")
            return f"n < {atom['value']}"
        return f"n < {ctx.param('sinks', 'i32', 4, atom['value'])}"
    if k == "prefix":
        return f"n < {ctx.param('prefix', 'i32', 16, atom['value'])}"
    if k in ("chunk", "stride", "dilate"):
        c = str(atom["value"]) if atom["literal"] else ctx.param(
            k, "i32", 7, atom["value"])
        if k == "chunk":
            return f"n / {c} == ({q}) / {c}"
        if k == "stride":
            return f"({q} - n) % {c} == 0"
        return f"n % {c} == 0"
    if k == "doc":
        if atom["form"] == "split" and not ctx.self_len:
            ctx.input("QDoc", f"i32[B, {Mn}]")
            ctx.input("KDoc", f"i32[B, {Nn}]")
            return "QDoc[b, m] == KDoc[b, n]"
        ctx.input("Doc", f"i32[B, {Nn}]")
        return f"Doc[b, {q}] == Doc[b, n]"
    if k == "docpad":
        ctx.input("KDoc", f"i32[B, {Nn}]")
        pad = ctx.param("pad", "i32", -1, atom["value"])
        return f"KDoc[b, n] != {pad}"
    if k in ("len", "qlen"):
        name, idx, axis = ("Len", "n", Nn) if k == "len" else ("QLen", "m", Mn)
        ctx.input(name, "i32[B]")
        if atom["form"] == "plain":
            return f"{idx} < {name}[b]"
        if atom["form"] == "scaled":
            return f"{idx} < {name}[b] * {atom['factor']}"
        return f"{idx} < {axis} - {name}[b] * {atom['factor']}"
    if k == "label":
        ctx.input("QLabel", f"i32[B, {Mn}]")
        ctx.input("KLabel", f"i32[B, {Nn}]")
        return "QLabel[b, m] == KLabel[b, n]"
    if k == "block":
        bm, bn = atom["bm"], atom["bn"]
        name = f"Blocks{bm}x{bn}"
        mb, nb = f"MB{bm}", f"NB{bn}"
        ctx.dim(mb, -(-shape["M"] // bm) + atom["extra"])
        ctx.dim(nb, -(-shape["N"] // bn) + atom["extra"])
        ctx.input(name, f"i1[B, H, {mb}, {nb}]")
        # @block declares that nothing outside the kept blocks is kept:
        # true where the atom is reached through 'and' alone.
        if (atom["annotate"] and all(op == "and" for op in path) and
                not any(a.startswith("@block") for a in ctx.annotations)):
            ctx.annotations.append(f"@block({bm}, {bn})")
        return f"{name}[b, h, m / {bm}, n / {bn}]"
    if k == "perhead":
        ctx.input("Streaming", "i1[H]")
        if atom["annotate"] and "@per_head" not in ctx.annotations:
            ctx.annotations.append("@per_head")
        return "Streaming[h]"
    if k == "headpar":
        return f"h % {atom['mod']} == 0"
    if k == "keyflag":
        ctx.input("KeyMask", f"i1[B, {Nn}]")
        return "KeyMask[b, n]"
    if k == "arith":
        k_text = str(atom["k"]) if atom["k"] >= 0 else f"({atom['k']})"
        return ARITH_FORMS[atom["form"]].format(
            a=atom["a"], c=atom["c"], k=k_text, q=q)
    if k == "content":
        # Dynamic sparsity: the predicate reads the tensor it masks.
        return f"{ctx.keep_target}[b,h,m,n] > {fmt_float(atom['threshold'])}"
    if k == "hflag":
        ctx.input("HFlag", "f32[H]")
        return "HFlag[h] > 0.0"
    raise ValueError(k)


def render_mask(mask, ctx, path=()):
    """The predicate text; `path` holds the operators above `mask`."""
    if mask[0] == "atom":
        return render_atom(mask[1], ctx, path)
    inner = path + (mask[0],)
    if mask[0] == "not":
        return f"not ({render_mask(mask[1], ctx, inner)})"
    a = render_mask(mask[1], ctx, inner)
    b = render_mask(mask[2], ctx, inner)
    text = f"{a} {mask[0]} {b}"
    return f"({text})" if path else text


def render_keeps(target, mask, ctx, split):
    """`keep` statements for `mask`; a top-level 'and' may be split into
    one keep per operand (the same support)."""
    parts = [mask]
    while split and any(p[0] == "and" for p in parts):
        i = next(i for i, p in enumerate(parts) if p[0] == "and")
        parts[i:i + 1] = [parts[i][1], parts[i][2]]
    lines = []
    ctx.keep_target = target
    for part in parts:
        ctx.annotations = []
        pred = render_mask(part, ctx)
        ann = " ".join(ctx.annotations)
        lines.append(f"{ann + ' ' if ann else ''}keep {target} where {pred}")
    return lines


def render_mod(mod, x, ctx):
    k, q, Mn = mod["kind"], ctx.q, ctx.Mn
    shape = ctx.case["shape"]
    if k == "softcap":
        cap = fmt_float(mod["value"]) if mod["literal"] else ctx.param(
            "cap", "f32", 30.0, mod["value"])
        return f"{cap} * tanh(({x}) / {cap})"
    if k == "alibi":
        ctx.input("Slopes", "f32[H]")
        coef = "" if mod["coef"] == 1.0 else f"{fmt_float(mod['coef'])} * "
        return f"{x} + Slopes[h] * {coef}(n - ({q}))"
    if k == "relbias":
        r = ctx.dim("R", max(1, shape["M"] + shape["N"] - 1 + mod["extra"]))
        ctx.input("Rel", f"f32[H, {r}]")
        return f"{x} + Rel[h, n - m + ({Mn} - 1)]"
    if k == "bucket":
        # T5-style buckets: clamped signed distance, or absolute distance.
        ctx.input("Bucket", "f32[H, 32]")
        if mod.get("abs"):
            return f"{x} + Bucket[h, min(abs(n - m), 31)]"
        return f"{x} + Bucket[h, min(max(n - m + 16, 0), 31)]"
    if k == "keybias":
        ctx.input("KBias", f"f32[B, {ctx.Nn}]")
        return f"{x} + KBias[b, n]"
    if k == "qbias":
        ctx.input("QBias", f"f32[B, H, {Mn}]")
        return f"{x} + QBias[b, h, m]"
    if k == "headscale":
        ctx.input("HScale", "f32[H]")
        return f"({x}) * HScale[h]"
    if k == "temp":
        return f"({x}) / {ctx.param('temp', 'f32', 1.5, mod['value'])}"
    if k == "shift":
        sign = "-" if mod["value"] < 0 else "+"
        return f"{x} {sign} {fmt_float(abs(mod['value']))}"
    raise ValueError(k)


def head_index(case):
    return {"mha": "h", "gqa_let": "g", "gqa_inline": "h / (H / G)",
            "gqa_fixed": "h / 2", "mqa": None}[case["heads"]]


def axes(case, batch, head, seq, last):
    """The axes of Q/K/V in the case's layout (reads with index names,
    declarations with dims); `head` None drops the head axis (MQA)."""
    if head is None:
        return f"[{batch}, {seq}, {last}]"
    if case["layout"] == "bnhd":
        return f"[{batch}, {seq}, {head}, {last}]"
    return f"[{batch}, {head}, {seq}, {last}]"


def access(name, case, head, seq, last):
    return name + axes(case, "b", head, seq, last)


def decl(case, head, seq, last, dtype):
    return dtype + axes(case, "B", head, seq, last)


def norm_map(kind, x):
    return {"softplus": f"softplus({x})", "sigmoid": f"sigmoid({x})",
            "exp": f"exp({x})", "relu": f"relu({x}) + 0.25",
            "square": f"{x} * {x} + 0.5", "identity": x,
            "tanh": f"tanh({x})"}[kind]


def render(case, name="fuzz"):
    """The spec text of `case` with its launches (a Rendered)."""
    ctx = Ctx(case)
    shape = case["shape"]
    Mn, Nn = ctx.Mn, ctx.Nn
    dt = case["decl_dtype"]
    kv_heads = {"mha": "H", "mqa": None}.get(case["heads"], "G")
    ev = "E" if case["value_dim"] == "E" else "D"
    body = []
    if case["heads"] == "gqa_let":
        body.append("let g = h / (H / G)")
    khead = head_index(case)
    q_read = access("Q", case, "h", "m", "d")
    k_read = access("K", case, khead, "n", "d")
    v_read = access("V", case, khead, "n", "e")
    paged = case.get("paged")
    if paged:
        # K and V gathered from a page pool through a page table.
        ps = paged["page"]
        ctx.dim("NPool", paged["pool"])
        ctx.dim("NP", -(-shape["N"] // ps) + paged["extra"])
        ctx.input("Pages", "i32[B, NP]")
        slot = f"Pages[b, n / {ps}], n % {ps}"
        k_read = f"Kc[{slot}, {khead + ', ' if khead else ''}d]"
        v_read = f"Vc[{slot}, {khead + ', ' if khead else ''}e]"
    if case["scale"] == "prescaled":
        # Q scaled by its own statement, as a model's projection might be.
        body.append(f"Qs[b,h,m,d] = {q_read} * rsqrt(D)")
        q_read = "Qs[b,h,m,d]"
    inside = " * 0.125" if case["scale"] == "inside" else ""
    raw = f"sum[d]({q_read} * {k_read}{inside})"
    staged = case.get("staged")
    if staged:
        body.append(f"T[b,h,m,n{' < ' + Nn if paged else ''}] = {raw}")
        raw = "T[b,h,m,n]"
        if staged == "mask_raw" and case["mask"] is not None:
            body += render_keeps("T", case["mask"], ctx, case.get("split"))
    score = {"rsqrt": f"{raw} * rsqrt(D)", "div_sqrt": f"{raw} / sqrt(D)",
             "const": f"{raw} * 0.125", "none": raw, "inside": raw,
             "prescaled": raw, "param": None}[case["scale"]] or \
        f"{raw} * {ctx.param('scale', 'f32', 0.2, 0.3)}"
    for mod in case["mods"]:
        score = render_mod(mod, score, ctx)
    body.append(f"S[b,h,m,n{' < ' + Nn if paged and not staged else ''}] = "
                f"{score}")
    if case["mask"] is not None and staged != "mask_raw":
        body += render_keeps("S", case["mask"], ctx, case.get("split"))
    norm = case["norm"]
    k = norm["kind"]
    if k == "softmax_m":
        body.append("P = softmax[m](S)")
    elif k == "softmax":
        operand = {"S": "S", "half": "S * 0.5", "double": "S * 2.0"}[
            norm.get("operand", "S")]
        body.append(f"P = softmax[n]({operand})")
    elif k == "sink":
        src = norm["sink"]
        if src == "table":
            sink = ctx.input("Sk", "f32[H]") + "[h]"
        elif src == "per_query":
            sink = ctx.input("SkQ", f"f32[B, H, {Mn}]") + "[b, h, m]"
        elif src == "param":
            sink = ctx.param("sinkv", "f32", 0.5, -1.25)
        else:
            sink = "0.0"
        body.append(f"P = softmax[n](S, sink = {sink})")
    elif k == "normalize":
        body.append(f"P = normalize[n]({norm_map(norm['map'], 'S')})")
    elif k == "none":
        if norm["map"] == "sigmoid":
            bias = ctx.param("bias", "f32", -1.0, -2.5)
            body.append(f"P = sigmoid(S + {bias})")
        elif norm["map"] == "exp":
            body.append("P = exp(S - 2.0)")
        else:
            body.append(f"P = {norm_map(norm['map'], 'S')}")
    elif k == "explicit_softmax":
        body += ["Mx[b,h,m] = max[n](S[b,h,m,n])",
                 "Ex[b,h,m,n] = exp(S[b,h,m,n] - Mx[b,h,m])",
                 "Zs[b,h,m] = sum[n](Ex[b,h,m,n])",
                 "P[b,h,m,n] = Ex[b,h,m,n] / Zs[b,h,m]"]
    elif k == "explicit_normalize":
        body += [f"Ex = {norm_map(norm['map'], 'S')}",
                 "Zs[b,h,m] = sum[n](Ex[b,h,m,n])",
                 "P[b,h,m,n] = Ex[b,h,m,n] / Zs[b,h,m]"]
    elif k == "reweight":
        ctx.input("Gamma", "f32[H]")
        body += ["W = softmax[n](S)",
                 "Wr[b,h,m,n] = W[b,h,m,n] * select(n == 0, abs(Gamma[h]), 1.0)",
                 "P = normalize[n](Wr)"]
    if case.get("post_keep"):
        body += render_keeps("P", ["atom", case["post_keep"]], ctx, False)
    out = f"sum[n](P[b,h,m,n] * {v_read})"
    if case["oscale"]:
        ctx.input("OScale", "f32[H]")
        out = f"{out} * OScale[h]"
    body.append(f"O[b,h,m,e] = {out}")
    outs = [("O", f"{dt}[B, H, {Mn}, {ev}]")]
    for stat in case["stats"]:
        if stat == "lse":
            outs.append(("LSE", f"f32[B, H, {Mn}]"))
            body.append("LSE = logsumexp[n](S)")
        elif stat == "max":
            outs.append(("RowMax", f"f32[B, H, {Mn}]"))
            body.append("RowMax = max[n](S)")
        else:
            outs.append(("RowSum", f"f32[B, H, {Mn}]"))
            body.append("RowSum = sum[n](P)")

    dims = ["B", "H"] + (["G"] if kv_heads == "G" else []) + \
        (["L"] if ctx.self_len else ["M", "N"])
    dims.append(f"D = {case['fixed_d']}" if case["fixed_d"] else "D")
    if ev == "E":
        dims.append("E")
    dims += [n for n, _ in ctx.extra_dims]
    lines = [f"attention {name} {{", f"  dims  {', '.join(dims)}",
             f"  in    Q: {decl(case, 'H', Mn, 'D', dt)}"]
    if paged:
        heads = f"{kv_heads}, " if kv_heads else ""
        lines += [f"  in    Kc: {dt}[NPool, {paged['page']}, {heads}D]",
                  f"  in    Vc: {dt}[NPool, {paged['page']}, {heads}{ev}]"]
    else:
        lines += [f"  in    K: {decl(case, kv_heads, Nn, 'D', dt)}",
                  f"  in    V: {decl(case, kv_heads, Nn, ev, dt)}"]
    def retype(t):
        """Side inputs are written f32 / i32 and declared in the case's
        element types."""
        if t.startswith("f32["):
            return case.get("side_dtype", "f32") + t[3:]
        if t.startswith("i32["):
            return case.get("int_dtype", "i32") + t[3:]
        return t

    lines += [f"  in    {n}: {retype(t)}" for n, t in ctx.inputs]
    for pname, ty, default, _ in ctx.params:
        d = fmt_float(default) if ty == "f32" else str(default)
        lines.append(f"  param {pname}: {ty} = {d}")
    lines += [f"  out   {n}: {t}" for n, t in outs]
    lines.append("")
    lines += [f"  {s}" for s in body]
    lines.append("}")
    text = "\n".join(lines) + "\n"

    sizes = {"B": shape["B"], "H": shape["H"]}
    if kv_heads == "G":
        sizes["G"] = shape["G"]
    if ctx.self_len:
        sizes["L"] = shape["M"]
    else:
        sizes["M"], sizes["N"] = shape["M"], shape["N"]
    if not case["fixed_d"]:
        sizes["D"] = shape["D"]
    if ev == "E":
        sizes["E"] = shape["E"]
    sizes.update(dict(ctx.extra_dims))
    run_args = ["--shape", ",".join(f"{k}={v}" for k, v in sizes.items())]
    passed = [(n, v) for n, ty, _, v in ctx.params]
    if case["pass_params"] and passed:
        run_args += ["--param", ",".join(
            f"{n}={fmt_float(v) if isinstance(v, float) else v}"
            for n, v in passed)]
    run_args += ["--seed", str(case["seed"])]
    if case.get("threads"):
        run_args += ["--threads", str(case["threads"])]
    if case["run_dtype"] != "f32":
        run_args += ["--dtype", case["run_dtype"]]

    gpu_sizes = []
    if not case["fixed_d"]:
        gpu_sizes.append(f"D={case['gpu_d']}")
    if ev == "E":
        gpu_sizes.append(f"E={case['gpu_e']}")
    gpu_args = ["--shape", ",".join(gpu_sizes)] if gpu_sizes else []
    gpu_text = text
    if dt not in ("bf16", "f16"):
        # The GPU kernels take bf16/f16 Q, K, V: compile the same spec
        # declared so, which keeps side inputs and the LSE in f32 (a
        # --dtype override would turn those too).
        gpu_case = dict(case, decl_dtype=case["gpu_dtype"])
        gpu_text = render(gpu_case, name).text
    return Rendered(text, run_args, gpu_text, gpu_args, tags(case),
                    launch_check=not case.get("skip_launch_check"))


class Rendered:
    """A spec as text with its launch: the CPU run's arguments, the text
    and arguments of the GPU compiles, and feature tags."""

    def __init__(self, text, run_args, gpu_text, gpu_args, case_tags=(),
                 launch_check=True):
        self.text, self.run_args = text, run_args
        self.gpu_text, self.gpu_args = gpu_text, gpu_args
        self.tags = list(case_tags)
        # False where a known bug makes the package refuse the launch.
        self.launch_check = launch_check


def tags(case):
    """Feature labels of a case, for the per-category counts."""
    out = [f"heads:{case['heads'].split('_')[0]}",
           f"lengths:{case['lengths']}", f"dtype:{case['decl_dtype']}",
           f"run-dtype:{case['run_dtype']}",
           f"d:{'fixed' if case['fixed_d'] else 'symbolic'}",
           f"norm:{case['norm']['kind']}"]
    if case["norm"].get("map"):
        out.append(f"norm-map:{case['norm']['kind']}/{case['norm']['map']}")
    if case["layout"] == "bnhd":
        out.append("layout:bnhd")
    out.append(f"profile:{case.get('profile', 'any')}")
    for key in ("staged", "paged", "threads"):
        if case.get(key):
            out.append(f"{key}:{case[key] if key != 'paged' else 'yes'}")
    if case.get("split") and case["mask"] and case["mask"][0] == "and":
        out.append("keep:split")
    if case.get("post_keep"):
        out.append("keep:post-normalizer")
    if case["value_dim"] == "E":
        out.append("value-dim:E")
    out += sorted({f"mod:{m['kind']}" for m in case["mods"]})
    atoms = list(walk_atoms(case["mask"]))
    out += sorted({f"mask:{a['kind']}" for a in atoms})
    if case["mask"] is None:
        out.append("mask:none")
    elif len(atoms) > 1:
        out.append("mask:combined")
    out += [f"stat:{s}" for s in case["stats"]]
    shape = case["shape"]
    if shape["M"] != shape["N"]:
        out.append("M!=N")
    if 0 in (shape["B"], shape["M"], shape["N"]):
        out.append("empty-launch")
    if shape["M"] > shape["N"]:
        out.append("M>N")
    return out


# ===------------------------------------------------------------------=== #
# Running
# ===------------------------------------------------------------------=== #

class Outcome:
    """The result of one check of one spec: `fail` is None or a short kind
    (the reducer keeps a simplification only if the kind stays the same)."""

    def __init__(self, stage, argv, proc, fail=None, note=None, info=None):
        self.stage, self.argv, self.fail = stage, argv, fail
        self.note, self.info = note, info or {}
        self.output = "" if proc is None else (
            f"exit status: {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"--- stderr\n{proc.stderr}")


STAGE_SECONDS = collections.Counter()


# glibc fills fresh heap blocks with this byte's complement, so that a read
# of memory the compiler never initialised goes wrong every time instead of
# passing where fresh pages happen to be zero.
MALLOC_PERTURB = "165"


def run_command(argv, env=None):
    start = time.monotonic()
    extra = dict(env or {})
    if not argv[0].endswith("ptxas"):
        extra["MALLOC_PERTURB_"] = MALLOC_PERTURB
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, errors="replace",
                              env=dict(os.environ, **extra))
    except OSError as e:
        # Not a finding about the spec: the tool itself cannot be started.
        sys.exit(f"spec_fuzzer: cannot run {argv[0]}: {e}")
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(
            argv, -signal.SIGKILL, e.stdout or "", (e.stderr or "") +
            f"\n(timed out after {COMMAND_TIMEOUT}s)")
    finally:
        tool = os.path.basename(argv[0])
        STAGE_SECONDS[f"{tool} {argv[1]}" if tool.startswith("attnc") and
                      not tool.startswith("attnc-") else tool] += \
            time.monotonic() - start


def crashed(proc):
    text = proc.stdout + proc.stderr
    return proc.returncode < 0 or proc.returncode >= 128 or any(
        marker in text for marker in CRASH_MARKERS)


def first_error(text):
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    return text.strip().splitlines()[-1] if text.strip() else "?"


def normalize_reason(line):
    """An error line without the spec's name, positions and numbers, so
    that equal refusals count together."""
    line = re.sub(r"^.*?error:\s*", "", line)
    line = re.sub(r"kernel '[^']*'", "kernel", line)
    line = re.sub(r"\d+", "#", line)
    return line[:110]


# attnc run options of each CPU stage: the default (fused where the raise
# fuses, else Halide), the unfused MLIR pipeline, and Halide forced.
CPU_STAGES = {
    "cpu-fused": [],
    "cpu-unfused": ["--fuse=false"],
    "cpu-halide": ["--backend", "halide"],
    # The adjoint kernel (attn-grad): every gradient against the float64
    # reverse mode.
    "cpu-grad": ["--grad"],
}


def check_cpu(attnc, spec, run_args, stage):
    fuse = stage == "cpu-fused"
    argv = [attnc, "run", spec, "--check", "--json", "--no-cache"] + \
        run_args + CPU_STAGES[stage]
    proc = run_command(argv)
    if crashed(proc):
        return Outcome(stage, argv, proc, f"{stage}:crash")
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
    if result is None or "error" in result:
        err = first_error(proc.stderr)
        if re.match(r"\S+\.attn:\d+:\d+: error:", err):
            return Outcome(stage, argv, proc, f"{stage}:rejected",
                           note="the front end rejected the generated spec "
                                "(a generator bug unless the spec is valid)")
        if "launch refused" in err:
            return Outcome(stage, argv, proc, f"{stage}:refused",
                           note="the launch was refused")
        return Outcome(stage, argv, proc, f"{stage}:error",
                       note=normalize_reason(err))
    if not result.get("ok"):
        return Outcome(stage, argv, proc, f"{stage}:mismatch",
                       note=f"max_rel_err={result.get('max_rel_err')} "
                            f"tol={result.get('tol')}", info=result)
    remark = re.search(r"remark: not raised: (.*)", proc.stderr)
    info = dict(result)
    info["not_raised"] = normalize_reason(remark.group(1)) if remark else None
    # DESIGN.md: when a fast path does not apply, attnc says which and why.
    if fuse and result.get("path") in ("unfused", "halide") and not remark:
        return Outcome(stage, argv, proc, f"{stage}:silent",
                       note="the fused run took the unfused path without a "
                            "'not raised' remark")
    return Outcome(stage, argv, proc, info=info)


def package_modules(path):
    """(name, text) of every PTX module of an .attnpkg (runtime/README.md)."""
    with open(path, "rb") as f:
        data = f.read()
    header = re.match(rb"attnpkg 1\nmanifest (\d+)\n", data)
    if not header:
        raise ValueError("not an attnpkg file")
    at = header.end() + int(header.group(1)) + 1
    section = re.compile(rb"module (\S+) (ptx|cubin) (\d+)\n")
    while True:
        match = section.match(data, at)
        if not match:
            return
        size = int(match.group(3))
        if match.group(2) == b"ptx":
            yield (match.group(1).decode(),
                   data[match.end():match.end() + size].decode())
        at = match.end() + size + 1


def launch_args(r):
    """attnc-launch options for the CPU run's sizes, params and seed, less
    the dims the GPU compile fixed."""
    def items(flag, args):
        if flag not in args:
            return []
        return args[args.index(flag) + 1].split(",")
    fixed = {item.split("=")[0] for item in items("--shape", r.gpu_args)}
    dims = [item for item in items("--shape", r.run_args)
            if item.split("=")[0] not in fixed]
    argv = ["--dim", ",".join(dims)] if dims else []
    for item in items("--param", r.run_args):
        argv += ["--param", item]
    return argv + ["--int-range", "0,4"]


# The GPU kernels compute indices in 32 bits: a package declares an i64
# param that becomes an index as i32 (GpuPackage.cpp), and the runtime
# refuses a value beyond it with this error rather than truncate it.
WIDE_INDEX_PARAM = re.compile(
    r"param '(\w+)': expected an integer that fits i32, got (-?\d+)")


def refuses_wide_index_param(r, stderr):
    """Whether a launch check failed only because a param given a value
    beyond 32 bits was refused, as the GPU contract says (the CPU run took
    it; the value must really be beyond i32)."""
    match = WIDE_INDEX_PARAM.search(stderr)
    if not match:
        return False
    value = int(match.group(2))
    given = [item for item in launch_args(r) if item.startswith(
        match.group(1) + "=")]
    return (not -2**31 <= value < 2**31 and
            given == ["%s=%d" % (match.group(1), value)])


def check_gpu(tools, spec, r, chip, work, grad=False):
    """The package of the spec's kernel (with `grad`, of its adjoint) for
    `chip`: compiled, assembled, and taking the CPU run's launch."""
    attnc, ptxas, gpu_args = tools.attnc, tools.ptxas, r.gpu_args
    stage = f"gpu-{chip}" + ("-grad" if grad else "")
    package = os.path.join(work, f"{chip}.attnpkg")
    if os.path.exists(package):
        os.remove(package)
    argv = [attnc, "compile", spec, "--target", chip, "-o", package,
            "--no-cache"] + gpu_args + (["--grad"] if grad else [])
    proc = run_command(argv)
    if crashed(proc):
        return Outcome(stage, argv, proc, f"{stage}:crash")
    if proc.returncode != 0:
        err = first_error(proc.stderr)
        if "error:" not in err:
            return Outcome(stage, argv, proc, f"{stage}:error",
                           note="failed without an error message")
        # The backend accepted the spec but produced IR that does not lower:
        # that is a bug, not a refusal of an unsupported feature.
        if any(marker in proc.stderr for marker in INTERNAL_GPU_ERRORS):
            return Outcome(stage, argv, proc, f"{stage}:internal",
                           note=normalize_reason(err))
        return Outcome(stage, argv, proc,
                       info={"unsupported": normalize_reason(err)})
    try:
        modules = list(package_modules(package))
    except (OSError, ValueError) as e:
        return Outcome(stage, argv, proc, f"{stage}:package",
                       note=f"unreadable package: {e}")
    if not modules:
        return Outcome(stage, argv, proc, f"{stage}:package",
                       note="the package has no PTX module")
    for module, text in modules:
        ptx = os.path.join(work, f"{chip}.{module}.ptx")
        with open(ptx, "w") as f:
            f.write(text)
        pargv = [ptxas, f"-arch={chip}", ptx, "-o", os.devnull]
        assembled = run_command(pargv)
        if assembled.returncode != 0:
            out = Outcome(stage, argv + ["&&"] + pargv, assembled,
                          f"{stage}:ptxas", note=first_error(assembled.stderr))
            out.output = f"(attnc compile succeeded)\n{out.output}"
            return out
    # The runtime checks a launch (sizes, constraints, params) before it
    # needs a device: the package must take every launch the CPU run took.
    if tools.launch and r.launch_check:
        largv = [tools.launch, package] + launch_args(r)
        # No device even where there is one: the checks are what counts.
        launched = run_command(largv, env={
            "ATTNC_LIBCUDA": "/nonexistent/libcuda.so.1"})
        if launched.returncode != 0 and \
                "ATTNC_ERROR_NO_DEVICE" not in launched.stderr and \
                not refuses_wide_index_param(r, launched.stderr):
            out = Outcome(stage, argv + ["&&"] + largv, launched,
                          f"{stage}:launch-check",
                          note=normalize_reason(first_error(launched.stderr)))
            out.output = f"(attnc compile and ptxas succeeded)\n{out.output}"
            return out
    return Outcome(stage, argv, proc, info={"modules": len(modules)})


def check_spec(r, tools, work):
    """Every check of one rendered spec; stops at the first failure."""
    spec = os.path.join(work, "fuzz.attn")
    with open(spec, "w") as f:
        f.write(r.text)
    outcomes = []
    for stage in CPU_STAGES:
        outcomes.append(check_cpu(tools.attnc, spec, r.run_args, stage))
        if outcomes[-1].fail:
            return outcomes
    if tools.ptxas:
        with open(spec, "w") as f:
            f.write(r.gpu_text)
        for chip in ("sm_90a", "sm_80"):
            for grad in (False, True):
                outcomes.append(check_gpu(tools, spec, r, chip, work, grad))
                if outcomes[-1].fail:
                    return outcomes
    return outcomes


def failure_of(outcomes):
    return next((o for o in outcomes if o.fail), None)


# ===------------------------------------------------------------------=== #
# Reduction
# ===------------------------------------------------------------------=== #

def simplifications(case):
    """Candidate cases, each one feature simpler than `case`."""
    def with_(**kw):
        c = json.loads(json.dumps(case))
        c.update(kw)
        return c

    mask = case["mask"]
    if mask is not None:
        yield with_(mask=None)
        # Replace any inner node by one of its children.
        def subtrees(node, path):
            yield node, path
            if node[0] != "atom":
                for i, child in enumerate(node[1:], 1):
                    yield from subtrees(child, path + [i])
        for node, path in list(subtrees(mask, [])):
            if node[0] == "atom":
                continue
            for child in node[1:]:
                c = json.loads(json.dumps(case))
                if not path:
                    c["mask"] = child
                else:
                    parent = c["mask"]
                    for i in path[:-1]:
                        parent = parent[i]
                    parent[path[-1]] = child
                yield c
    for i in range(len(case["mods"])):
        yield with_(mods=case["mods"][:i] + case["mods"][i + 1:])
    for i in range(len(case["stats"])):
        yield with_(stats=case["stats"][:i] + case["stats"][i + 1:])
    if case["norm"]["kind"] != "softmax" or case["norm"].get("operand", "S") != "S":
        yield with_(norm={"kind": "softmax", "operand": "S"})
    for key, dim in (("heads", "G"), ("value_dim", "E")):
        simple = {"heads": "mha", "value_dim": "D"}[key]
        if case[key] != simple:
            shape = dict(case["shape"])
            shape.pop(dim, None)
            yield with_(**{key: simple, "shape": shape})
    # Every other feature has one simplest value.
    simplest = {"oscale": False, "staged": None, "split": None,
                "post_keep": None, "paged": None, "threads": None,
                "layout": "bhnd", "scale": "rsqrt", "run_dtype": "f32",
                "decl_dtype": "f32", "lengths": "cross", "pass_params": False,
                "side_dtype": "f32", "int_dtype": "i32",
                "int_param_type": "i32"}
    for key, simple in simplest.items():
        if case.get(key) != simple:
            yield with_(**{key: simple})
    shape = case["shape"]
    for key in ("B", "H", "M", "N", "D", "E"):
        if key not in shape or shape[key] <= 1:
            continue
        if key == "D" and case["fixed_d"]:
            continue
        for smaller in sorted({1, shape[key] // 2, shape[key] - 1}):
            if smaller >= shape[key] or smaller < 1:
                continue
            s = dict(shape)
            s[key] = smaller
            if case["lengths"] == "self" and key in ("M", "N"):
                s["M"] = s["N"] = smaller
            if key == "H" and "G" in s:
                s["G"] = min(s["G"], smaller)
                if case["heads"] == "gqa_fixed":
                    if smaller % 2:
                        continue
                    s["G"] = smaller // 2
                elif smaller % s["G"]:
                    continue
            yield with_(shape=s)


def valid(case):
    shape = case["shape"]
    bits = 32 if case.get("int_param_type", "i32") == "i32" else 54
    if any(not -2**(bits - 1) <= atom.get("value", 0) < 2**(bits - 1)
           for atom in all_atoms(case)):
        return False
    if case["heads"] in ("gqa_let", "gqa_inline") and shape["H"] % shape["G"]:
        return False
    if case["heads"] == "gqa_fixed" and shape["H"] != 2 * shape["G"]:
        return False
    for atom in all_atoms(case):
        if (atom["kind"] == "doc" and atom["form"] == "shared" and
                case["lengths"] == "cross" and shape["M"] > shape["N"]):
            return False
    return True


def reduce_case(case, kind, tools, work, budget):
    """Greedily simplifies `case` while it still fails with `kind`."""
    os.makedirs(work, exist_ok=True)
    deadline = time.monotonic() + budget
    tries = 0
    progress = True
    while progress and time.monotonic() < deadline:
        progress = False
        for candidate in simplifications(case):
            if time.monotonic() >= deadline:
                break
            if not valid(candidate):
                continue
            tries += 1
            outcome = failure_of(check_spec(render(candidate), tools, work))
            if outcome and outcome.fail == kind:
                case = candidate
                progress = True
                break
    return case, tries


# ===------------------------------------------------------------------=== #
# Reporting and the driver
# ===------------------------------------------------------------------=== #

def command_line(argv):
    return " ".join(shlex.quote(a) for a in argv)


def write_failure(out_dir, label, r, outcome):
    """Writes the failing spec (with its launch as a comment, for --replay)
    and a report; returns the report's text."""
    os.makedirs(out_dir, exist_ok=True)
    spec = os.path.join(out_dir, f"{label}.attn")
    text = r.gpu_text if outcome.stage.startswith("gpu-") else r.text
    with open(spec, "w") as f:
        f.write(f"// fuzz-run: {command_line(r.run_args)}\n")
        f.write(f"// fuzz-gpu: {command_line(r.gpu_args)}\n")
        f.write(text)
    argv = [spec if a.endswith("fuzz.attn") else
            os.path.join(out_dir, f"{label}.{os.path.basename(a)}")
            if a.startswith(tempfile.gettempdir() + os.sep + "spec-fuzz-")
            else a for a in outcome.argv]
    report = (f"FAILURE {outcome.fail}" +
              (f" ({outcome.note})" if outcome.note else "") +
              f"\nspec: {spec}\ncommand: {command_line(argv)}\n"
              f"--- spec\n{text}--- output\n{outcome.output}")
    with open(os.path.join(out_dir, f"{label}.txt"), "w") as f:
        f.write(report)
    return report


class Stats:
    def __init__(self):
        self.tried = self.passed = 0
        self.tags = collections.Counter()
        self.fused_tags = collections.Counter()
        self.failures = []
        self.not_raised = collections.Counter()
        self.paths = collections.Counter()
        self.gpu = {chip: collections.Counter()
                    for chip in ("sm_90a", "sm_90a-grad", "sm_80",
                                 "sm_80-grad")}
        self.gradients = 0
        self.gpu_reasons = collections.Counter()

    def record(self, case_tags, outcomes):
        self.tried += 1
        for o in outcomes:
            if o.fail:
                continue
            if o.stage == "cpu-grad":
                self.gradients += len(o.info.get("gradients", []))
            elif o.stage == "cpu-fused":
                self.paths[o.info.get("path", "?")] += 1
                if o.info.get("not_raised"):
                    self.not_raised[o.info["not_raised"]] += 1
            elif o.stage.startswith("gpu-"):
                chip = o.stage[4:]
                if "unsupported" in o.info:
                    self.gpu[chip]["refused"] += 1
                    self.gpu_reasons[o.info["unsupported"]] += 1
                else:
                    self.gpu[chip]["assembled"] += 1
                    self.gpu[chip]["modules"] += o.info.get("modules", 0)
        if not failure_of(outcomes):
            self.passed += 1
            self.tags.update(case_tags)
            if outcomes[0].info.get("path") == "fused":
                self.fused_tags.update(case_tags)

    def print(self, elapsed):
        rate = self.tried / elapsed * 60 if elapsed > 0 else 0
        print(f"tried {self.tried} specs in {elapsed:.0f}s "
              f"({rate:.1f} specs/min): {self.passed} passed, "
              f"{len(self.failures)} failed")
        print("fused CPU run took the path: " + ", ".join(
            f"{k} {v}" for k, v in sorted(self.paths.items())))
        for reason, count in self.not_raised.most_common(8):
            print(f"  not raised ({count}): {reason}")
        print(f"adjoint kernels: {self.gradients} gradients checked")
        for chip, counter in self.gpu.items():
            if counter:
                print(f"{chip}: {counter['assembled']} assembled "
                      f"({counter['modules']} PTX modules), "
                      f"{counter['refused']} refused by the GPU backend")
        for reason, count in self.gpu_reasons.most_common(8):
            print(f"  GPU refusal ({count}): {reason}")
        print("time spent: " + ", ".join(
            f"{k} {v:.0f}s" for k, v in STAGE_SECONDS.most_common()))
        groups = collections.defaultdict(list)
        for tag, count in sorted(self.tags.items()):
            group, _, value = tag.partition(":")
            groups[group if value else "shape"].append(
                f"{value or group} {count}/{self.fused_tags[tag]}")
        print("passed specs by category (all/fused on the CPU):")
        for group, items in groups.items():
            print(f"  {group}: {', '.join(items)}")


class Tools:
    def __init__(self, attnc, ptxas, launch):
        self.attnc, self.ptxas, self.launch = attnc, ptxas, launch


def find_ptxas(given):
    if given:
        return given if given != "none" else None
    found = shutil.which("ptxas")
    if found:
        return found
    fallback = "/usr/local/cuda/bin/ptxas"
    return fallback if os.access(fallback, os.X_OK) else None


def replay(files, tools, out_dir, work):
    """Checks spec files; a `// fuzz-run:` / `// fuzz-gpu:` comment gives
    the launch arguments (defaults otherwise)."""
    failed = 0
    for path in files:
        text = open(path).read()
        run = re.search(r"^// fuzz-run: (.*)$", text, re.M)
        gpu = re.search(r"^// fuzz-gpu: (.*)$", text, re.M)
        run_args = shlex.split(run.group(1)) if run else []
        r = Rendered(text, run_args, text,
                     shlex.split(gpu.group(1)) if gpu else [])
        outcomes = check_spec(r, tools, work)
        bad = failure_of(outcomes)
        label = os.path.splitext(os.path.basename(path))[0]
        if bad:
            failed += 1
            print(write_failure(out_dir, f"replay-{label}", r, bad))
        else:
            print(f"{path}: ok ({', '.join(o.stage for o in outcomes)})")
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attnc", required=True, help="the attnc binary")
    parser.add_argument("--ptxas", help="ptxas (default: PATH or the CUDA "
                        "toolkit; 'none' skips the GPU checks)")
    parser.add_argument("--attnc-launch", help="the runtime's launcher, to "
                        "check GPU launches without a GPU (default: next to "
                        "attnc)")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", default="spec-fuzz-failures",
                        help="where failing specs and reports go")
    parser.add_argument("--replay", nargs="+", metavar="FILE.attn")
    parser.add_argument("--max-specs", type=int, default=0,
                        help="stop after this many specs (0: time only)")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on after a failure until the time is up")
    parser.add_argument("--reduce-seconds", type=float, default=60,
                        help="time to reduce a failing spec (0: none)")
    parser.add_argument("--allow-known-bugs", action="store_true",
                        help="also generate the patterns of KNOWN_BUGS")
    parser.add_argument("--jobs", type=int, default=1,
                        help="specs checked at once (default 1)")
    parser.add_argument("--print-specs", action="store_true")
    args = parser.parse_args()

    launch = args.attnc_launch or os.path.join(
        os.path.dirname(os.path.abspath(args.attnc)), "attnc-launch")
    tools = Tools(os.path.abspath(args.attnc), find_ptxas(args.ptxas),
                  launch if os.access(launch, os.X_OK) else None)
    work = tempfile.mkdtemp(prefix="spec-fuzz-")
    # Keep any cache the compiler still touches out of the user's.
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")
    try:
        if args.replay:
            return replay(args.replay, tools, args.out, work)
        seed = args.seed if args.seed is not None else \
            int(time.time() * 1000) % 2**31
        print(f"spec_fuzzer: seed {seed}", flush=True)
        print(f"attnc: {tools.attnc}; ptxas: {tools.ptxas or 'not found'} "
              f"(GPU checks {'on' if tools.ptxas else 'off'}); attnc-launch: "
              f"{tools.launch or 'not found'}", flush=True)
        avoid = set() if args.allow_known_bugs else set(KNOWN_BUGS)
        if avoid:
            print("avoiding known bugs: " + ", ".join(sorted(avoid)))
        master = random.Random(seed)
        stats = Stats()
        start = time.monotonic()
        seen_kinds = set()

        def cases():
            """(index, case seed, case, rendered), in seed order."""
            index = 0
            while time.monotonic() - start < args.seconds and (
                    not args.max_specs or index < args.max_specs):
                case_seed = master.getrandbits(32)
                case = gen_case(random.Random(case_seed), avoid)
                yield index, case_seed, case, render(case)
                index += 1

        def check(job, item):
            job_work = os.path.join(work, f"job{job}")
            os.makedirs(job_work, exist_ok=True)
            return check_spec(item[3], tools, job_work)

        # With --jobs N, N specs are checked at once; results are taken in
        # generation order, so the report reads the same as with one job.
        pool = concurrent.futures.ThreadPoolExecutor(max(1, args.jobs))
        pending = collections.deque()
        source = cases()
        try:
            while True:
                while len(pending) < max(1, args.jobs):
                    item = next(source, None)
                    if item is None:
                        break
                    pending.append((item, pool.submit(
                        check, item[0] % max(1, args.jobs), item)))
                if not pending:
                    break
                (index, case_seed, case, r), future = pending.popleft()
                outcomes = future.result()
                if args.print_specs:
                    print(f"--- spec {index} ({case_seed})\n{r.text}"
                          f"{command_line(r.run_args)}", flush=True)
                stats.record(r.tags, outcomes)
                bad = failure_of(outcomes)
                if not bad:
                    continue
                label = f"seed{seed}-spec{index}-{bad.fail.replace(':', '-')}"
                print(write_failure(args.out, label, r, bad), flush=True)
                stats.failures.append(bad.fail)
                if args.reduce_seconds > 0 and bad.fail not in seen_kinds:
                    small, tries = reduce_case(case, bad.fail, tools,
                                               os.path.join(work, "reduce"),
                                               args.reduce_seconds)
                    r = render(small)
                    small_bad = failure_of(check_spec(
                        r, tools, os.path.join(work, "reduce")))
                    if small_bad:
                        print(f"reduced in {tries} tries:")
                        print(write_failure(args.out, label + "-reduced", r,
                                            small_bad), flush=True)
                seen_kinds.add(bad.fail)
                if not args.keep_going:
                    break
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True)
        stats.print(time.monotonic() - start)
        print(f"spec_fuzzer: seed {seed}")
        return 1 if stats.failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
