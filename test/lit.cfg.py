# -*- Python -*-
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "ATTN"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".attn", ".test"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py.in", "unit", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.attn_obj_root, "test")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
# Keep compiled-kernel caches of tests inside the build tree.
config.environment["XDG_CACHE_HOME"] = os.path.join(config.attn_obj_root, "test", "cache")

config.substitutions.append(("%examples", os.path.join(config.attn_src_root, "examples")))
config.substitutions.append(("%mlir_lib_dir", config.llvm_lib_dir))
# The build tree (installed by the find_package test) and the C++ compiler
# of LLVM's toolchain for the consumer project it builds.
config.substitutions.append(("%attn_obj_root", config.attn_obj_root))
config.substitutions.append(("%attn_src_root", config.attn_src_root))
config.substitutions.append(
    ("%clangxx", os.path.join(config.llvm_tools_dir, "clang++")))
llvm_config.add_tool_substitutions(
    ["attn-opt", "attnc", "attn-fuzz-dsl", "attn-gpu-gen"],
    [os.path.join(config.attn_obj_root, "bin"), config.llvm_tools_dir])

# GPU tests that assemble PTX need ptxas (CUDA toolkit), not a GPU.
import shutil
_ptxas = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas"
    if os.access("/usr/local/cuda/bin/ptxas", os.X_OK) else None)
if _ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", _ptxas))
