"""attnc.info(): the compiler and runtime this process loaded, the cache
directories and the GPUs seen; it never raises, and says why a part is
missing."""
import os
import subprocess
import sys

import attnc
from conftest import requires_compiler


@requires_compiler
def test_info_names_the_loaded_compiler_and_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ATTNC_PACKAGE_DIR", raising=False)
    facts = attnc.info()
    assert facts["version"] == attnc.__version__
    assert os.path.isdir(facts["package"])
    compiler = facts["compiler"]
    assert compiler["loaded"] and os.path.isfile(compiler["path"])
    assert compiler["version"] == attnc.__version__
    assert compiler["llvm"].startswith("22.")
    halide = compiler["halide"]
    assert os.path.isfile(halide["path"])
    assert os.path.basename(halide["path"]) == "libattnc_halide.so"
    runtime = facts["runtime"]
    assert runtime["loaded"] and os.path.isfile(runtime["path"])
    launcher = facts["launcher"]
    assert launcher["loaded"] and os.path.isfile(launcher["path"])
    assert "error" not in launcher
    assert facts["cache"] == os.path.join(str(tmp_path), "attnc")
    assert facts["packages"] == os.path.join(str(tmp_path), "attnc",
                                             "packages")
    gpus = facts["gpus"]
    assert gpus["count"] >= 0
    if gpus["count"] == 0:
        assert gpus["error"]


@requires_compiler
def test_importing_attnc_does_not_load_libhalide():
    # libHalide14 and its LLVM come with the Halide backend's plugin, on the
    # first compile that takes it: importing the package, compiling a fused
    # kernel and asking info() do not load it.
    code = ("import attnc\n"
            "attnc.compile(%r, dtype='f32')\n"
            "facts = attnc.info()['compiler']['halide']\n"
            "maps = open('/proc/self/maps').read()\n"
            "print(facts['loaded'], 'libHalide' in maps)\n"
            % os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                           "causal.attn"))
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["False", "False"]


def test_info_without_compiler_or_runtime_says_why(tmp_path):
    # A fresh process: no compiler (as in a runtime-only installation) and a
    # runtime library that does not exist.
    code = ("import attnc, json; print(json.dumps(attnc.info()))")
    env = dict(os.environ, ATTNC_NO_COMPILER="1",
               ATTNC_RUNTIME_LIBRARY=str(tmp_path / "missing.so"),
               ATTNC_PACKAGE_DIR=str(tmp_path / "store"))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    import json
    facts = json.loads(out)
    assert facts["compiler"] == {"loaded": False,
                                 "error": "ATTNC_NO_COMPILER is set"}
    assert not facts["runtime"]["loaded"]
    assert "missing.so" in facts["runtime"]["error"]
    assert facts["cache"] is None
    assert facts["packages"] == str(tmp_path / "store")
    assert facts["gpus"]["count"] == 0
