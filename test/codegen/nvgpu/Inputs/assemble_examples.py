#!/usr/bin/env python3
"""Compiles every example the GPU backend accepts into a package for CHIP and
assembles its PTX with ptxas, printing one line per example:

  NAME: ok; <entries, stack, spill bytes and registers over all its modules>
        [; wgmma serialized in <modules>]
  NAME: unsupported (<why>)

Usage: assemble_examples.py ATTNC PTXAS CHIP EXAMPLES_DIR WORK_DIR [--grad]
(--grad: the package of each example's adjoint kernel instead)
"""
import os, re, subprocess, sys


def package_modules(path):
    """(name, text) of every PTX module of an .attnpkg (runtime/README.md)."""
    data = open(path, "rb").read()
    header = re.match(rb"attnpkg 1\nmanifest (\d+)\n", data)
    at = header.end() + int(header.group(1)) + 1
    while True:
        section = re.compile(rb"module (\S+) (ptx|cubin) (\d+)\n").match(data, at)
        if not section:
            return
        size = int(section.group(3))
        if section.group(2) == b"ptx":
            yield (section.group(1).decode(),
                   data[section.end():section.end() + size].decode())
        at = section.end() + size + 1


attnc, ptxas, chip, examples, work = sys.argv[1:6]
extra = sys.argv[6:]
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
         "-o", package] + dtype + shape + extra,
        capture_output=True, text=True)
    if compiled.returncode != 0:
        why = next((l for l in compiled.stderr.splitlines() if "error" in l), "?")
        print(f"{name}: unsupported ({why.strip()})")
        continue
    failures, entries, stack, spills, registers = [], 0, 0, 0, 0
    hopper, serialized = "", []
    for module, ptx_text in package_modules(package):
        if module == "attn_wgmma":
            # The Hopper skeleton's instructions, each named when present.
            hopper = "; hopper:" + "".join(
                " " + word for word, instruction in (
                    ("tma", "cp.async.bulk.tensor"), ("mbarrier", "mbarrier.try_wait"),
                    ("wgmma", "wgmma.mma_async"), ("setmaxnreg", "setmaxnreg.inc"),
                    ("grid-constant-maps", ".param .align 64 .b8"))
                if instruction in ptx_text)
        ptx = os.path.join(work, f"{name}.{module}.ptx")
        with open(ptx, "w") as f:
            f.write(ptx_text)
        assembled = subprocess.run(
            [ptxas, f"-arch={chip}", "-v", ptx, "-o", os.devnull],
            capture_output=True, text=True)
        if assembled.returncode != 0:
            failures.append(assembled.stderr.strip().replace("\n", " | "))
            continue
        log = assembled.stderr
        # ptxas waits for each wgmma where registers it reads may change
        # while it runs (C7513): the products no longer overlap anything.
        if re.search(r"wgmma.mma_async instructions are serialized", log):
            serialized.append(module)
        entries += len(re.findall(r"Compiling entry function", log))
        stack += sum(int(n) for n in re.findall(r"(\d+) bytes stack frame", log))
        spills += sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
        registers = max([registers] + [int(n) for n in re.findall(r"Used (\d+) registers", log)])
    if failures:
        print(f"{name}: ptxas failed; {' '.join(failures)}")
    else:
        print(f"{name}: ok; {entries} entries, stack {stack} bytes, "
              f"spills {spills} bytes, at most {registers} registers"
              + (f"; wgmma serialized in {' '.join(serialized)}" if serialized else "")
              + hopper)
