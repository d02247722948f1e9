"""attnc.info(): which compiler and runtime this process loaded, where
compiled kernels and GPU packages are kept, and which GPUs the runtime sees.
What it reports is what a bug report needs, so it never raises: a part that
is missing is reported with the reason."""

import importlib
import os
import sys


def _compiler():
    """The compiler module's facts, or why there is none."""
    from ._spec import _native
    native = _native()
    if native is None:
        if os.environ.get("ATTNC_NO_COMPILER", "") not in ("", "0"):
            why = "ATTNC_NO_COMPILER is set"
        else:
            try:
                importlib.import_module("attnc._attnc")
                why = "not loaded"
            except ImportError as error:
                why = str(error)
        return {"loaded": False, "error": why}
    return {"loaded": True, "path": getattr(native, "__file__", None),
            "version": native.version, "llvm": native.llvm_version,
            "halide": native.halide_backend()}


def _runtime():
    """The runtime library's path and the CUDA devices it sees, or why
    there is none."""
    from ._runtime import runtime_library, _last_error
    try:
        lib = runtime_library()
    except (OSError, RuntimeError) as error:
        return {"loaded": False, "error": str(error)}, {"count": 0}
    count = int(lib.attnc_device_count())
    gpus = {"count": count}
    if count == 0:
        gpus["error"] = _last_error(lib) or "no CUDA device"
    return {"loaded": True, "path": lib._name}, gpus


def _launcher(runtime):
    """The native launch path of GPU kernels (attnc._launcher), or why calls
    go through ctypes only."""
    try:
        from . import _launcher
    except ImportError as error:
        return {"loaded": False, "error": str(error)}
    facts = {"loaded": True, "path": getattr(_launcher, "__file__", None)}
    if runtime.get("loaded"):
        from ._runtime import runtime_library
        if not hasattr(runtime_library(), "attnc_plan_create"):
            facts["error"] = "the runtime library has no launch plans"
    return facts


def info():
    """A dict describing this installation:

    - ``version``: the package's version;
    - ``package``: the directory the ``attnc`` package was imported from;
    - ``compiler``: ``loaded``, and the extension module's ``path``, its
      ``version``, the LLVM/MLIR ``llvm`` version it was built with and
      ``halide``: the Halide backend's plugin, its ``path`` (or ``error``)
      and whether a compile has ``loaded`` it. Without a compiler,
      ``error``: why specs cannot be compiled here (a runtime-only
      installation);
    - ``runtime``: ``loaded`` and the ``path`` of libattnc_runtime.so (or
      ``error``);
    - ``launcher``: ``loaded`` and the ``path`` of attnc._launcher, the
      native launch path of repeated GPU calls (or ``error``: why calls go
      through ctypes only);
    - ``cache``: the artifact cache of compiled kernels
      ($XDG_CACHE_HOME/attnc), None where there is no home directory;
    - ``packages``: the GPU package store ($ATTNC_PACKAGE_DIR, else
      $XDG_CACHE_HOME/attnc/packages);
    - ``gpus``: ``count``, the CUDA devices the runtime sees (with ``error``
      saying why when there is none), and with PyTorch their ``names``.
    """
    from ._spec import VERSION, _native, package_store
    compiler = _compiler()
    runtime, gpus = _runtime()
    native = _native()
    torch = sys.modules.get("torch")
    if torch is not None and gpus["count"] > 0:
        try:
            gpus["names"] = [torch.cuda.get_device_name(d)
                             for d in range(gpus["count"])]
        except Exception as error:  # a broken CUDA setup is reported
            gpus["names_error"] = str(error)
    return {
        "version": VERSION,
        "package": os.path.dirname(os.path.abspath(__file__)),
        "compiler": compiler,
        "runtime": runtime,
        "launcher": _launcher(runtime),
        "cache": native.cache_directory() if native is not None else None,
        "packages": str(package_store()),
        "gpus": gpus,
    }
