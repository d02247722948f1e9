"""Builds the package with the project's CMake: the extension module and
libattnc_runtime.so come from the same build as the `attnc` tool.

    pip install --no-build-isolation ./frontends/python

Needs what the project's build needs (LLVM/MLIR 22, see scripts/setup.sh).
ATTNC_CMAKE_ARGS adds configure options; ATTNC_BUILD_DIR reuses a build
directory (default: a fresh one under build/)."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LLVM = pathlib.Path("/usr/lib/llvm-22")


class CMakeExtension(Extension):
    def __init__(self):
        super().__init__("attnc._attnc", sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = pathlib.Path(os.environ.get("ATTNC_BUILD_DIR") or
                             ROOT / "build-python-wheel")
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release", "-DATTN_ENABLE_PYTHON=ON",
            "-DATTN_ENABLE_FUZZER=OFF",
            "-DPython3_EXECUTABLE=" + sys.executable,
        ]
        if LLVM.is_dir():
            configure += [
                "-DMLIR_DIR=%s" % (LLVM / "lib/cmake/mlir"),
                "-DCMAKE_C_COMPILER=%s" % (LLVM / "bin/clang"),
                "-DCMAKE_CXX_COMPILER=%s" % (LLVM / "bin/clang++"),
            ]
        configure += shlex.split(os.environ.get("ATTNC_CMAKE_ARGS", ""))
        if not (build / "build.ninja").exists():
            subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", str(build), "--target",
                               "attnc_python", "attnc_launcher",
                               "attnc_runtime", "attnc_halide"])
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        built = build / "python" / "attnc" / target.name
        shutil.copy2(built, target)
        # attnc._launcher, the native launch path, beside it.
        launcher = target.name.replace("_attnc", "_launcher", 1)
        shutil.copy2(build / "python" / "attnc" / launcher,
                     target.parent / launcher)
        # The runtime, and the Halide backend's plugin (loaded from beside
        # the extension module on the first Halide compile).
        for library in ("libattnc_runtime.so", "libattnc_halide.so"):
            shutil.copy2(build / "lib" / library, target.parent / library)


setup(ext_modules=[CMakeExtension()], cmdclass={"build_ext": CMakeBuild})
