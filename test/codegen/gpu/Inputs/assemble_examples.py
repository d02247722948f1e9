#!/usr/bin/env python3
"""Compiles every example the GPU backend accepts into a package for CHIP and
assembles its PTX with ptxas, printing one line per example:

  NAME: <ptxas register and spill summary>   or   NAME: unsupported (<why>)

Usage: assemble_examples.py ATTNC PTXAS CHIP EXAMPLES_DIR WORK_DIR
"""
import os, re, subprocess, sys

attnc, ptxas, chip, examples, work = sys.argv[1:6]
os.makedirs(work, exist_ok=True)
for spec in sorted(f for f in os.listdir(examples) if f.endswith(".attn")):
    name = spec[:-len(".attn")]
    text = open(os.path.join(examples, spec)).read()
    # As make_packages.sh: D (and E) = 128 unless fixed; bf16 unless Q is
    # declared bf16 (then side inputs and the LSE keep their own types).
    shape = [] if re.search(r"dims .*\bD *= *\d", text) else \
        ["--shape", "D=128,E=128" if re.search(r"dims .*\bE\b", text) else "D=128"]
    dtype = [] if re.search(r"^\s*in\s+Q:\s*bf16", text, re.M) else ["--dtype", "bf16"]
    package = os.path.join(work, name + ".attnpkg")
    compiled = subprocess.run(
        [attnc, "compile", os.path.join(examples, spec), "--target", chip,
         "-o", package] + dtype + shape,
        capture_output=True, text=True)
    if compiled.returncode != 0:
        why = next((l for l in compiled.stderr.splitlines() if "error" in l), "?")
        print(f"{name}: unsupported ({why.strip()})")
        continue
    lines = open(package).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("module attn ptx"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("end "))
    ptx = os.path.join(work, name + ".ptx")
    with open(ptx, "w") as f:
        f.write("\n".join(lines[start + 1:end]) + "\n")
    assembled = subprocess.run(
        [ptxas, f"-arch={chip}", "-v", ptx, "-o", os.devnull],
        capture_output=True, text=True)
    summary = " ".join(l.replace("ptxas info    :", "").strip()
                       for l in assembled.stderr.splitlines()
                       if "spill" in l or "registers" in l)
    if assembled.returncode != 0:
        summary = assembled.stderr.strip().replace("\n", " | ")
    status = "ok" if assembled.returncode == 0 else "ptxas failed"
    print(f"{name}: {status}; {summary}")
