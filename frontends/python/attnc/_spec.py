"""attnc.compile: a spec to a kernel, on the CPU through the in-process JIT,
for CUDA chips through kernel packages kept in a package store.

The compiler is the native module attnc._attnc, imported only when a spec
has to be compiled (or the reference evaluated): a machine with only the
runtime library runs packages from the store without it."""

import hashlib
import importlib
import json
import os
import pathlib
import sys
import tempfile
import time

from . import _autograd
from ._dlpack import DEVICE_CPU
from ._runtime import (FLOAT_DTYPES, NUMPY_DTYPES, Kernel, _view, dtype_of,
                       is_torch, load, torch_dtype)

__all__ = ["CompileError", "compile", "package_path", "VERSION"]

VERSION = "0.1.0"


class CompileError(Exception):
    """A spec that does not compile. The message is the compiler's
    diagnostic: ``file:line:col: error: ...``, the source line and a caret
    (the file is "<string>" for specs given as text)."""


def _native():
    """The compiler module, or None in a runtime-only installation (or when
    ATTNC_NO_COMPILER=1 asks to behave as one)."""
    if os.environ.get("ATTNC_NO_COMPILER", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("attnc._attnc")
    except ImportError:
        return None


def _read_spec(spec):
    """(source text, file name for diagnostics) of a spec given as text or
    as a path."""
    if isinstance(spec, os.PathLike):
        path = os.fspath(spec)
    elif isinstance(spec, str) and "\n" not in spec and (
            spec.endswith(".attn") or os.path.isfile(spec)):
        path = spec
    elif isinstance(spec, str):
        return spec, "<string>"
    else:
        raise TypeError("spec: expected .attn source text or a path, got %s" %
                        type(spec).__name__)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as error:
        raise CompileError("cannot open '%s': %s" % (path, error.strerror))


def _check_target(target):
    if target != "cpu" and not (isinstance(target, str) and
                                target.startswith("sm_")):
        raise ValueError("target: expected 'cpu' or a CUDA chip ('sm_90a', "
                         "'sm_80'), got %r" % (target,))


def _check_shapes(shapes, allow_zero=False):
    """Sizes fixed at compile time must be positive; sizes of a launch
    (`allow_zero`) may be 0, where the result is empty or a row keeps no
    key."""
    shapes = dict(shapes or {})
    least = 0 if allow_zero else 1
    for name, size in shapes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < least:
            raise ValueError("shapes: size of '%s' must be a %s integer, "
                             "got %r" % (name, "non-negative" if allow_zero
                                         else "positive", size))
    return shapes


def package_store():
    """The directory of the package store: $ATTNC_PACKAGE_DIR, else
    $XDG_CACHE_HOME/attnc/packages, else ~/.cache/attnc/packages."""
    directory = os.environ.get("ATTNC_PACKAGE_DIR")
    if directory:
        return pathlib.Path(directory)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "attnc" / "packages"


def _package_key(text, target, dtype, shapes, grad=False, constants=(),
                 deterministic=False):
    fields = [text, target, dtype or "", sorted(shapes.items()), VERSION]
    if grad:
        fields.append(["grad"] + sorted(constants))
    if grad and deterministic:
        fields.append("deterministic")
    key = json.dumps(fields)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _package_file(text, target, dtype, shapes, grad=False, constants=(),
                  deterministic=False):
    key = _package_key(text, target, dtype, shapes, grad, constants,
                       deterministic)
    return package_store() / (key + ".attnpkg")


def package_path(spec, target, dtype=None, shapes=None, grad=False,
                 grad_constants=(), deterministic=False):
    """Where the package store keeps the package of `spec` compiled for
    `target` with `dtype` and `shapes` (with `grad`, that of its adjoint
    kernel, which training needs too, with the float inputs named in
    `grad_constants` held constant, `deterministic` as attnc.compile's);
    compile on one machine, carry the store to another that has only the
    runtime."""
    _check_target(target)
    text, _ = _read_spec(spec)
    return str(_package_file(text, target, dtype, _check_shapes(shapes),
                             grad, tuple(grad_constants), deterministic))


def compile(spec, target="cpu", dtype=None, shapes=None, name=None,
            grad=False, backend="auto", deterministic=False):
    """Compiles `spec` (.attn text or a path) for `target`: "cpu" (JIT in
    this process) or a CUDA chip ("sm_90a", "sm_80": a kernel package from
    the package store, compiled into it when missing). `dtype` ("f32",
    "bf16", "f16") overrides the spec's float types; `shapes` ({"D": 128})
    fixes dims at compile time (GPU targets need the head dims fixed).
    `name` renames the returned kernel. With `grad`, the adjoint kernel is
    compiled now too (else on the first call that needs a gradient): for
    a GPU target its package goes into the store beside the forward's.
    `deterministic`: gradients with the same bits on every run (on sm_90a
    the backward then computes dQ in a kernel of its own instead of adding
    each key block's share with atomics; slower). The CPU's always are.
    Returns a :class:`Kernel`."""
    _check_target(target)
    shapes = _check_shapes(shapes)
    text, filename = _read_spec(spec)
    if target == "cpu":
        kernel = _compile_cpu(text, filename, dtype, shapes, backend)
    else:
        kernel = _compile_gpu(text, filename, target, dtype, shapes,
                              deterministic=deterministic)
    if grad:
        kernel._prepare_gradient()
    if name is not None:
        kernel.name = name
    return kernel


def _path_name(halide, fused):
    """The path a CPU kernel took, as `attnc run --json` names it."""
    if halide:
        return "halide"
    return "fused" if fused else "unfused"


def _compile_cpu(text, filename, dtype, shapes, backend="auto"):
    native = _native()
    if native is None:
        raise CompileError("no attnc compiler in this installation: "
                           "target 'cpu' compiles in process and needs the "
                           "native module attnc._attnc")
    return CpuKernel(native.compile_cpu(text, filename, dtype, shapes,
                                        backend=backend), text)


def _compile_gpu(text, filename, target, dtype, shapes, grad=False,
                 constants=(), deterministic=False):
    """The package of `text` for `target` (with `grad`, of its adjoint
    kernel, the float inputs named in `constants` held constant). Where the
    compiler is installed it comes from attnc's artifact
    cache (keyed by the code generator too, so a package an older compiler
    built is never served) and is exported to the package store; a machine
    with only the runtime loads it from the store."""
    start = time.perf_counter()
    path = _package_file(text, target, dtype, shapes, grad, constants,
                         deterministic)
    native = _native()
    if native is not None:
        data, hit = native.compile_gpu_package(
            text, filename, target, dtype, shapes, grad=grad,
            grad_constants=sorted(constants), deterministic=deterministic)
        _export_package(path, data)
    elif path.is_file():
        hit = True
    else:
        raise CompileError(
            "no attnc compiler in this installation and no precompiled "
            "package %s for this spec/target%s; compile it where attnc is "
            "built (attnc.compile(spec, target=%r, dtype=..., shapes=...%s) "
            "with the same arguments) and copy the package store there "
            "(see attnc.package_path, ATTNC_PACKAGE_DIR)" % (
                path, _gradient_label(grad, constants), target,
                ", grad=True" if grad else ""))
    kernel = load(path)
    kernel.spec = text
    kernel.cache_hit = hit
    kernel.compile_ms = (time.perf_counter() - start) * 1e3
    if not grad:
        kernel._gradient_source = (text, filename, dtype, shapes,
                                   deterministic)
    return kernel


def _gradient_label(grad, constants):
    if not grad:
        return ""
    if not constants:
        return " (its gradient)"
    return " (its gradient, %s held constant)" % ", ".join(sorted(constants))


def _export_package(path, data):
    """Writes `data` to `path` unless it already holds exactly that,
    atomically: a reader never sees half a package."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=path.name,
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _widen_bf16(bits):
    """float32 values of bf16 bit patterns held in a uint16 array."""
    import numpy as np
    return (bits.astype(np.uint32) << 16).view(np.float32)


class CpuKernel(Kernel):
    """A kernel JIT-compiled into this process. Inputs are NumPy arrays,
    PyTorch CPU tensors, anything with ``__dlpack__`` on the CPU, or
    sequences NumPy turns into arrays. NumPy has no bfloat16: bf16 inputs
    take torch.bfloat16 tensors (or compile with dtype="f32"), and bf16
    outputs computed from NumPy inputs come back as float32 arrays.

    :meth:`vjp` gives the gradients of the outputs with respect to every
    float input through the adjoint kernel (compiled on first use),
    :meth:`reference_vjp` those of the float64 reference. Calls on torch
    tensors that require grad are recorded for autograd (see _autograd.py):
    ``loss.backward()`` runs the same adjoint kernel."""

    def __init__(self, native, text):
        super().__init__(native.name, "cpu", native.dims, native.inputs,
                         native.params, native.outputs)
        self._native = native
        self.path = _path_name(native.halide, native.fused)
        self.compile_ms = native.compile_ms
        self.cache_hit = native.cache_hit
        self.spec = text
        self.threads = native.threads
        #: Remarks of the compiler (why a cascade stays unfused), as text.
        self.diagnostics = native.diagnostics
        _autograd.register(self)

    def _host_input(self, name, obj, dtype, keep):
        """(address, dtype, shape) of `obj` as a dense host buffer: the
        caller's memory when it already is one, else a copy."""
        import numpy as np
        copied = False
        if is_torch(obj):
            self._check_dtype(name, dtype_of(obj), dtype)
            if obj.requires_grad:
                # Gradients are recorded around the launch (_autograd.py).
                obj = obj.detach()
            if obj.device.type != "cpu":
                raise TypeError("input '%s': kernel '%s' runs on the CPU, "
                                "got a tensor on %s" % (name, self.name,
                                                        obj.device))
            if not obj.is_contiguous():
                obj, copied = obj.contiguous(), True
        elif isinstance(obj, np.ndarray) or not hasattr(obj, "__dlpack__"):
            if not isinstance(obj, np.ndarray):
                obj = np.asarray(obj, dtype=NUMPY_DTYPES.get(dtype))
            hint = ""
            if dtype == "bf16":
                hint = (" (NumPy has no bfloat16: pass a torch.bfloat16 "
                        "tensor, or compile with dtype='f32')")
            self._check_dtype(name, dtype_of(obj), dtype, hint)
            if not obj.flags.c_contiguous:
                obj, copied = np.ascontiguousarray(obj), True
            keep.append(obj)
            return (obj.ctypes.data, dtype, tuple(obj.shape)), copied
        view = _view(obj)
        keep.append(view)
        if view.device_type != DEVICE_CPU:
            raise TypeError("input '%s': kernel '%s' runs on the CPU, got a "
                            "tensor on device type %d" % (
                                name, self.name, view.device_type))
        self._check_dtype(name, view.dtype, dtype)
        if not view.contiguous:
            array = np.ascontiguousarray(np.from_dlpack(obj))
            keep.append(array)
            return (array.ctypes.data, dtype, tuple(array.shape)), True
        return (view.data, dtype, view.shape), copied

    def _bind_buffers(self, args, kwargs):
        inputs, params, given = self._bind_call(args, kwargs)
        keep, buffers, copied = [], [], []
        for obj, (name, dtype, _) in zip(inputs, self._input_specs):
            buffer, was_copied = self._host_input(name, obj, dtype, keep)
            buffers.append(buffer)
            if was_copied:
                copied.append(name)
        self.last_copied = tuple(copied)
        dims = self._bind_dims([buffer[2] for buffer in buffers], given)
        return inputs, dims, buffers, params, keep

    def __call__(self, *args, **kwargs):
        if _autograd.records_gradient(args, kwargs):
            return _autograd.call(self, args, kwargs)
        return self._run(args, kwargs)

    def _run(self, args, kwargs):
        """The launch itself: outputs in the inputs' library, nothing
        recorded for autograd."""
        import numpy as np
        inputs, dims, buffers, params, keep = self._bind_buffers(args, kwargs)
        torch = sys.modules.get("torch") if is_torch(inputs[0]) else None
        results, out_buffers = [], []
        for shape, (_, dtype, _) in zip(self._output_shapes(dims),
                                        self._output_specs):
            if torch is not None:
                result = torch.empty(shape, dtype=torch_dtype(dtype))
                address = result.data_ptr()
            else:
                result = np.empty(shape, NUMPY_DTYPES.get(dtype, "uint16"))
                address = result.ctypes.data
            results.append(result)
            out_buffers.append((address, dtype, tuple(shape)))
        self._native.run(dims, buffers, params, out_buffers)
        del keep
        if torch is None:
            results = [_widen_bf16(result) if dtype == "bf16" else result
                       for result, (_, dtype, _) in zip(results,
                                                        self._output_specs)]
        return results[0] if len(results) == 1 else tuple(results)

    def reference(self, *args, **kwargs):
        """The float64 reference evaluator on the same arguments: one
        float64 NumPy array per output (absent entries 0, LSE of a fully
        masked row -inf)."""
        _, dims, buffers, params, keep = self._bind_buffers(args, kwargs)
        results = self._native.reference(dims, buffers, params)
        del keep
        return results[0] if len(results) == 1 else tuple(results)

    # -- gradients ---------------------------------------------------------

    def vjp(self, *args, grad_outputs=None, **params):
        """The vector-Jacobian product: for L = sum over outputs o of
        <grad_outputs[o], o>, one entry per kernel input, in input order:
        dL/dinput as a float32 array of the input's shape for float inputs
        (Q, K, V, ALiBi slopes, sink logits, ...), None for integer inputs
        (document ids, page tables), which have no gradient.

        Inputs, params and dims by name are given as to a call of the
        kernel. `grad_outputs` holds one adjoint per output (dO, dLSE, ...),
        of the output's shape and any float dtype (it is rounded to
        float32), or None for a zero adjoint; a kernel with one output also
        takes its adjoint alone. PyTorch CPU tensors in give float32 torch
        tensors out, anything else NumPy arrays.

        The gradients come from the adjoint kernel ``<name>_grad`` that
        attn-grad builds from the spec (it recomputes the forward cascade
        and walks it backwards), compiled for the CPU on the first call,
        through the artifact cache like any kernel, and kept on this kernel:
        ``grad_path`` then says whether it took the fused or the unfused
        pipeline. A masked-out entry contributes nothing, so a fully masked
        query row gets zero gradients. Raises CompileError when the spec
        cannot be differentiated, ValueError for a grad_output of the wrong
        shape or a refused launch, MemoryError for a launch larger than the
        memory available.

        A FlexAttention mod has a kernel too:
        ``attnc._flex.prepare(score_mod, mask_mod)`` returns its (spec,
        kernel), whose vjp takes the inputs flex_attention would pass (the
        query, key and value, then the captured tensors, and ``scale=``)."""
        import numpy as np
        inputs, dims, buffers, params_, keep = self._bind_buffers(
            args, params)
        adjoints = self._bind_grad_outputs(grad_outputs, dims, "vjp",
                                           np.float32)
        differentiated, adjointed = self._native.prepare_grad()
        output_shapes = self._output_shapes(dims)
        adjoint_buffers = []
        for output in adjointed:
            adjoint = adjoints[output]
            if adjoint is None:
                adjoint = np.zeros(output_shapes[output], np.float32)
            keep.append(adjoint)
            adjoint_buffers.append((adjoint.ctypes.data, "f32",
                                    tuple(adjoint.shape)))
        gradients = {}
        gradient_buffers = []
        for index in differentiated:
            gradient = np.empty(buffers[index][2], np.float32)
            gradients[index] = gradient
            gradient_buffers.append((gradient.ctypes.data, "f32",
                                     tuple(gradient.shape)))
        self._native.vjp(dims, buffers + adjoint_buffers, params_,
                         gradient_buffers)
        del keep
        torch = sys.modules.get("torch") if is_torch(inputs[0]) else None
        result = []
        for index in range(len(self.inputs)):
            gradient = gradients.get(index)
            if gradient is not None and torch is not None:
                gradient = torch.from_numpy(gradient)
            result.append(gradient)
        return tuple(result)

    def reference_vjp(self, *args, grad_outputs=None, return_scales=False,
                      **params):
        """The gradients of :meth:`vjp` from the float64 reference
        evaluator's reverse mode over the cascade as written (no compiled
        code): one float64 NumPy array per float input, None per integer
        input. The same arguments as vjp; the adjoints are taken in float64
        as given.

        With ``return_scales=True``, a pair ``(gradients, scales)``: beside
        each gradient, per element the root of the sum of squares of the
        terms it sums. A float32 gradient is off by the rounding of those
        terms, so its error is measured against max(|ref|, |scale|) (norms
        over the tensor): where the terms cancel (by structure, as for a
        bias added to a whole softmax row, or by chance) the reference alone
        is far below them."""
        import numpy as np
        _, dims, buffers, params_, keep = self._bind_buffers(args, params)
        adjoints = self._bind_grad_outputs(grad_outputs, dims,
                                           "reference_vjp", np.float64)
        adjoint_buffers = [
            None if adjoint is None else
            (adjoint.ctypes.data, "f64", tuple(adjoint.shape))
            for adjoint in adjoints]
        result = self._native.reference_vjp(dims, buffers, params_,
                                            adjoint_buffers,
                                            with_scales=return_scales)
        del keep, adjoints
        if return_scales:
            gradients, scales = result
            return tuple(gradients), tuple(scales)
        return tuple(result)

    def _bind_grad_outputs(self, grad_outputs, dims, what, dtype):
        """One dense array of `dtype` per output from `grad_outputs`, None
        where the adjoint is zero; errors name the entry and the shape it
        must have."""
        import numpy as np
        names = ", ".join(self.outputs)
        if grad_outputs is None:
            raise TypeError("%s: grad_outputs is required: one adjoint per "
                            "output of kernel '%s' (%s), None for a zero "
                            "adjoint" % (what, self.name, names))
        if not isinstance(grad_outputs, (tuple, list)):
            if len(self.outputs) != 1:
                raise TypeError("%s: grad_outputs must be a tuple of %d "
                                "adjoints, one per output (%s)" % (
                                    what, len(self.outputs), names))
            grad_outputs = (grad_outputs,)
        if len(grad_outputs) != len(self.outputs):
            raise TypeError("%s: grad_outputs has %d entries but kernel "
                            "'%s' has %d outputs (%s)" % (
                                what, len(grad_outputs), self.name,
                                len(self.outputs), names))
        adjoints = []
        for index, (obj, shape, (name, out_dtype, axes)) in enumerate(
                zip(grad_outputs, self._output_shapes(dims),
                    self._output_specs)):
            if obj is None:
                adjoints.append(None)
                continue
            label = "grad_outputs[%d] (the adjoint of output '%s')" % (
                index, name)
            if out_dtype not in FLOAT_DTYPES:
                raise TypeError("%s: %s: output '%s' is %s and has no "
                                "adjoint; pass None" % (what, label, name,
                                                        out_dtype))
            if is_torch(obj):
                if obj.device.type != "cpu":
                    raise TypeError("%s: %s: kernel '%s' runs on the CPU, "
                                    "got a tensor on %s" % (
                                        what, label, self.name, obj.device))
                torch = sys.modules["torch"]
                obj = obj.detach().to(torch.float64).numpy()
            array = np.ascontiguousarray(obj, dtype=dtype)
            if tuple(array.shape) != tuple(shape):
                raise ValueError("%s: %s must have shape %s ([%s] for the "
                                 "bound dims), got %s" % (
                                     what, label, tuple(shape),
                                     ", ".join(str(axis) for axis in axes),
                                     tuple(array.shape)))
            adjoints.append(array)
        return adjoints

    def _prepare_gradient(self, needed=None):
        """Compiles the adjoint kernel if needed (CompileError when the
        spec cannot be differentiated); the indices of the inputs that get a
        gradient (every float input, whichever are `needed`)."""
        differentiated, _ = self._native.prepare_grad()
        return tuple(differentiated)

    @property
    def grad_path(self):
        """"fused", "unfused" or "halide": the path the adjoint kernel
        took, None until vjp compiled it."""
        fused = self._native.grad_fused
        if fused is None:
            return None
        return _path_name(self._native.grad_halide, fused)

    @property
    def grad_compile_ms(self):
        """Milliseconds vjp spent building and compiling the adjoint kernel
        (0 until it did)."""
        return self._native.grad_compile_ms

    @property
    def grad_cache_hit(self):
        """Whether the artifact cache held the adjoint kernel's object, None
        until vjp compiled it."""
        return self._native.grad_cache_hit

    def random_inputs(self, shapes=None, seed=0):
        """Random NumPy inputs as `attnc run` makes them (floats N(0, 1);
        integers drawn for their role: gather indices in range, divisors
        nonzero, lengths over the range they are compared with, ids in
        runs), in input order. Dims not in `shapes` get the defaults attnc
        run picks. bf16 and f16 inputs come back as float32 arrays."""
        dims = self._native.bind_dims(_check_shapes(shapes, allow_zero=True))
        return self._native.random_inputs(dims, seed)

    def bind_dims(self, shapes=None):
        """Every dim's value as `attnc run --shape` binds them."""
        values = self._native.bind_dims(_check_shapes(shapes, allow_zero=True))
        return {name: value for (name, _), value in zip(self._dims, values)}
