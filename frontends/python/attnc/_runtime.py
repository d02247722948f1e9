"""Kernels and the runtime: argument binding shared by every kernel, and GPU
kernel packages launched through libattnc_runtime.so (ctypes, the C API of
runtime/include/attnc/attnc.h). Nothing here needs the compiler, so a machine
with only the runtime library (and PyTorch) runs packages made elsewhere."""

import ctypes
import os
import pathlib
import sys

# attnc_tensor and attnc_dtype are DLPack's DLTensor and DLDataType, field
# for field.
from ._dlpack import (DEVICE_CPU, DEVICE_CUDA, DTYPES, DLDataType, DLDevice,
                      DLTensor, DLView)

__all__ = ["Kernel", "GpuKernel", "load", "runtime_library"]

_LIBRARY_NAME = "libattnc_runtime.so"

# attnc dtype name -> NumPy dtype name (NumPy has no bf16).
NUMPY_DTYPES = {
    "f32": "float32", "f64": "float64", "f16": "float16", "i8": "int8",
    "i32": "int32", "i64": "int64", "i1": "bool",
}
FLOAT_DTYPES = ("f32", "f64", "f16", "bf16")
_TORCH_DTYPES = {
    "f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16",
    "i8": "int8", "i32": "int32", "i64": "int64", "i1": "bool",
}


# --------------------------------------------------------------------------
# The runtime library
# --------------------------------------------------------------------------

class _ArgInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("kind", ctypes.c_int32),
        ("dtype", DLDataType),
        ("size", ctypes.c_int64),
        ("axis_dims", ctypes.POINTER(ctypes.c_char_p)),
        ("axis_sizes", ctypes.POINTER(ctypes.c_int64)),
        ("layout", ctypes.c_int32),
        ("has_default", ctypes.c_int32),
        ("default_value", ctypes.c_double),
    ]


_ARG_DIM, _ARG_INPUT, _ARG_PARAM, _ARG_OUTPUT = 0, 1, 2, 3
_STATUS_NO_DEVICE = 4
_library = None


def _library_candidates():
    """Where libattnc_runtime.so may be, most specific first."""
    here = pathlib.Path(__file__).resolve().parent
    env = os.environ.get("ATTNC_RUNTIME_LIBRARY")
    if env:
        return [pathlib.Path(env)]
    # An installed package carries it; a build tree has it in build/lib next
    # to build/python/attnc; a source tree (frontends/python/attnc) in the
    # repository's build or standalone runtime build.
    root = here.parent.parent.parent
    return [here / _LIBRARY_NAME, here.parent.parent / "lib" / _LIBRARY_NAME,
            root / "build" / "lib" / _LIBRARY_NAME,
            root / "build-rt" / "lib" / _LIBRARY_NAME]


def runtime_library():
    """The loaded libattnc_runtime.so (ctypes.CDLL), loaded on first use."""
    global _library
    if _library is not None:
        return _library
    tried = []
    lib = None
    candidates = _library_candidates()
    for path in candidates:
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            break
        tried.append(str(path))
    if lib is None and not os.environ.get("ATTNC_RUNTIME_LIBRARY"):
        try:
            lib = ctypes.CDLL(_LIBRARY_NAME)
        except OSError:
            tried.append(_LIBRARY_NAME + " on the loader's path")
    if lib is None:
        raise RuntimeError(
            "attnc: cannot find the runtime library; looked at: " +
            ", ".join(tried) + " (set ATTNC_RUNTIME_LIBRARY, or build it: "
            "cmake -S runtime -B build-rt && cmake --build build-rt)")
    _declare(lib)
    _library = lib
    return lib


def _declare(lib):
    status = ctypes.c_int
    pkg = ctypes.c_void_p
    tensors = ctypes.POINTER(DLTensor)
    doubles = ctypes.POINTER(ctypes.c_double)
    signatures = {
        "attnc_last_error": (ctypes.c_char_p, []),
        "attnc_package_load": (status, [ctypes.c_char_p,
                                        ctypes.POINTER(ctypes.c_void_p)]),
        "attnc_package_free": (None, [pkg]),
        "attnc_package_name": (ctypes.c_char_p, [pkg]),
        "attnc_package_target": (ctypes.c_char_p, [pkg]),
        "attnc_package_num_args": (ctypes.c_size_t, [pkg]),
        "attnc_package_arg": (status, [pkg, ctypes.c_size_t,
                                       ctypes.POINTER(_ArgInfo)]),
        "attnc_package_prepare": (status, [pkg, ctypes.c_int]),
        "attnc_device_count": (ctypes.c_int, []),
        "attnc_stream_wrap": (status, [ctypes.c_int, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_void_p)]),
        "attnc_launch": (status, [pkg, ctypes.c_char_p, tensors,
                                  ctypes.c_size_t, doubles, ctypes.c_size_t,
                                  tensors, ctypes.c_size_t, ctypes.c_void_p]),
    }
    # Launch plans (the native launch path); a runtime built before them
    # has none, and calls then go the checked way only.
    plans = {
        "attnc_plan_create": (status, [pkg, ctypes.c_char_p, tensors,
                                       ctypes.c_size_t, doubles,
                                       ctypes.c_size_t, tensors,
                                       ctypes.c_size_t,
                                       ctypes.POINTER(ctypes.c_void_p)]),
        "attnc_plan_launch": (status, [ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_void_p]),
        "attnc_plan_num_workspaces": (ctypes.c_size_t, [ctypes.c_void_p]),
        "attnc_plan_workspace_bytes": (ctypes.c_size_t, [ctypes.c_void_p,
                                                         ctypes.c_size_t]),
        "attnc_plan_free": (None, [ctypes.c_void_p]),
    }
    signatures.update({name: signature for name, signature in plans.items()
                       if hasattr(lib, name)})
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def _last_error(lib):
    return (lib.attnc_last_error() or b"").decode("utf-8", "replace")


def _raise_for(lib, status, what):
    if status == 0:
        return
    message = _last_error(lib)
    if status == _STATUS_NO_DEVICE:
        raise RuntimeError("%s: %s" % (what, message))
    raise ValueError("%s: %s" % (what, message))


# --------------------------------------------------------------------------
# Kernels: signatures and argument binding
# --------------------------------------------------------------------------

class Kernel:
    """A compiled kernel. Call it as ``k(*inputs, **params)``; inputs may
    also be given by name, and dims that no input axis sizes (a range
    ``n < N`` only) by name too.

    Attributes: ``name``, ``target``, ``inputs``/``params``/``outputs``
    (names in declaration order), ``path`` ("fused"/"unfused" on the CPU,
    None for GPU packages), ``compile_ms``, ``cache_hit``, ``spec`` (the
    source, None when loaded from a package alone) and ``last_copied`` (the
    inputs the last call had to copy: not contiguous or not where the kernel
    runs)."""

    def __init__(self, name, target, dims, inputs, params, outputs):
        self.name = name
        self.target = target
        # (name, fixed size or None)
        self._dims = list(dims)
        # (name, dtype, axes): an axis is a dim name or a literal size.
        self._input_specs = list(inputs)
        self._output_specs = list(outputs)
        # (name, dtype, default or None)
        self._param_specs = list(params)
        self.inputs = [spec[0] for spec in self._input_specs]
        self.params = [spec[0] for spec in self._param_specs]
        self.outputs = [spec[0] for spec in self._output_specs]
        self.path = None
        self.compile_ms = 0.0
        self.cache_hit = False
        self.spec = None
        self.last_copied = ()

    def __repr__(self):
        return "<attnc.Kernel %s target=%s inputs=%s params=%s outputs=%s>" % (
            self.name, self.target, self.inputs, self.params, self.outputs)

    # -- binding -----------------------------------------------------------

    def _bind_call(self, args, kwargs):
        """Inputs in declaration order, every param value, and the dims given
        by name (those no input axis sizes)."""
        if len(args) > len(self.inputs):
            raise TypeError("kernel '%s' takes %d inputs (%s), got %d" % (
                self.name, len(self.inputs), ", ".join(self.inputs),
                len(args)))
        inputs = list(args) + [None] * (len(self.inputs) - len(args))
        given = {}
        dim_names = [name for name, _ in self._dims]
        dims = {}
        for key, value in kwargs.items():
            if key in self.inputs:
                index = self.inputs.index(key)
                if index < len(args):
                    raise TypeError("kernel '%s': input '%s' given twice" %
                                    (self.name, key))
                inputs[index] = value
            elif key in self.params:
                given[key] = value
            elif key in dim_names:
                dims[key] = int(value)
            else:
                raise TypeError(
                    "kernel '%s' has no input or param '%s' (inputs: %s; "
                    "params: %s)" % (self.name, key, ", ".join(self.inputs),
                                     ", ".join(self.params) or "none"))
        for name, value in zip(self.inputs, inputs):
            if value is None:
                raise TypeError("kernel '%s': missing input '%s'" %
                                (self.name, name))
        params = []
        for name, dtype, default in self._param_specs:
            value = given.get(name, default)
            if value is None:
                raise TypeError("kernel '%s': missing param '%s' (it has no "
                                "default)" % (self.name, name))
            if dtype.startswith("i"):
                if float(value) != int(value):
                    raise TypeError("kernel '%s': param '%s' is %s, got %r" %
                                    (self.name, name, dtype, value))
                value = int(value)
            params.append(float(value))
        return inputs, params, dims

    def _bind_dims(self, shapes, given):
        """Dim values from the input shapes and the dims `given` by name; a
        mismatch names the input."""
        bound = {name: size for name, size in self._dims if size is not None}
        for name, size in given.items():
            if bound.get(name, size) != size:
                raise ValueError("dim '%s': got %d, but the kernel fixes it "
                                 "to %d" % (name, size, bound[name]))
            bound[name] = size
        for (name, _, axes), shape in zip(self._input_specs, shapes):
            trial = dict(bound)
            ok = len(shape) == len(axes)
            for axis, size in zip(axes, shape) if ok else ():
                if isinstance(axis, int):
                    ok = ok and size == axis
                elif axis in trial:
                    ok = ok and trial[axis] == size
                else:
                    trial[axis] = size
            if not ok:
                expected = ", ".join(str(axis) for axis in axes)
                values = ", ".join(
                    str(axis) if isinstance(axis, int) else
                    str(bound.get(axis, "?")) for axis in axes)
                raise ValueError("input '%s': got shape %s, expected [%s] = "
                                 "(%s)" % (name, tuple(shape), expected,
                                           values))
            bound = trial
        dims = []
        for name, _ in self._dims:
            if name not in bound:
                raise ValueError("kernel '%s': dim '%s' is not the size of "
                                 "any input axis; pass it by name (%s=...)" %
                                 (self.name, name, name))
            dims.append(bound[name])
        return dims

    def _output_shapes(self, dims):
        values = {name: dims[i] for i, (name, _) in enumerate(self._dims)}
        return [tuple(axis if isinstance(axis, int) else values[axis]
                      for axis in axes)
                for _, _, axes in self._output_specs]

    def _check_dtype(self, name, got, expected, hint=""):
        if got != expected:
            raise TypeError("input '%s': got dtype %s, expected %s%s" %
                            (name, got, expected, hint))

    # -- gradients ---------------------------------------------------------

    def vjp(self, *args, grad_outputs=None, **kwargs):
        """The gradients of the kernel's outputs with respect to its inputs
        (CpuKernel.vjp, GpuKernel.vjp)."""
        raise NotImplementedError("kernel '%s' (target %s) has no vjp" %
                                  (self.name, self.target))

    def reference_vjp(self, *args, grad_outputs=None, **kwargs):
        """The float64 reference gradients (see CpuKernel.reference_vjp):
        they need the compiler and the spec, as kernels compiled for the CPU
        have them."""
        raise NotImplementedError(
            "kernel '%s' (target %s) has no reference_vjp: compile the spec "
            "with attnc.compile(spec, target='cpu')" % (self.name,
                                                        self.target))


# --------------------------------------------------------------------------
# Tensors of the calling library
# --------------------------------------------------------------------------

def is_torch(obj):
    return type(obj).__module__.split(".")[0] == "torch"


def torch_dtype(name):
    torch = sys.modules["torch"]
    return getattr(torch, _TORCH_DTYPES[name])


def dtype_of(obj):
    """The attnc dtype name of a NumPy array or PyTorch tensor, else None."""
    if is_torch(obj):
        for name, attr in _TORCH_DTYPES.items():
            if obj.dtype == getattr(sys.modules["torch"], attr):
                return name
        return str(obj.dtype).replace("torch.", "")
    dtype = getattr(obj, "dtype", None)
    if dtype is None:
        return None
    for name, numpy_name in NUMPY_DTYPES.items():
        if str(dtype) == numpy_name:
            return name
    return str(dtype)


def _dl_tensor(view, shape_store):
    shape = (ctypes.c_int64 * max(1, len(view.shape)))(*view.shape)
    strides = (ctypes.c_int64 * max(1, len(view.strides)))(*view.strides)
    shape_store.extend([shape, strides])
    code, bits = view.dtype_code, view.dtype_bits
    return DLTensor(view.data, DLDevice(view.device_type, view.device_id),
                    len(view.shape), DLDataType(code, bits, 1), shape,
                    strides, 0)


class _TorchView:
    """What a DLView gives of a torch tensor, read from the tensor itself:
    a launch exports no DLPack capsule per tensor."""

    def __init__(self, tensor, dtype):
        self.owner = tensor
        self.shape = tuple(tensor.shape)
        self.strides = tuple(tensor.stride())
        self.ndim = len(self.shape)
        self.dtype = dtype
        self.dtype_code, self.dtype_bits = DTYPES[dtype]
        device = tensor.device
        self.device_type = DEVICE_CUDA if device.type == "cuda" else DEVICE_CPU
        self.device_id = device.index or 0
        self.data = tensor.data_ptr()

    @property
    def contiguous(self):
        return self.owner.is_contiguous()

    def release(self):
        self.owner = None


def _view(obj):
    """A _TorchView of a torch tensor of an attnc dtype, else a DLView."""
    if is_torch(obj):
        dtype = dtype_of(obj)
        if dtype in DTYPES:
            return _TorchView(obj, dtype)
    return DLView(obj)


class _LaunchPlan(object):
    """The argument arrays of a checked launch, whose shapes, strides and
    params a launch with the same _plan_key shares: attnc_launch still
    checks every launch, but Python builds nothing but the data pointers."""

    __slots__ = ("inputs", "outputs", "params", "num_params", "results",
                 "keep")

    def __init__(self, inputs, outputs, params, num_params, results, keep):
        self.inputs, self.outputs = inputs, outputs
        self.params, self.num_params = params, num_params
        self.results = results  # (shape, torch dtype) of each output
        self.keep = keep        # the shape and stride arrays pointed to


_PLANS_PER_KERNEL = 64


def _plan_key(inputs, params):
    """What a launch's argument arrays depend on, for torch tensors; None
    for other inputs."""
    try:
        return (tuple((x.dtype, x.shape, x.stride(), x.get_device())
                      for x in inputs), tuple(params))
    except (AttributeError, TypeError):
        return None


def _native_launcher(kernel, torch):
    """An attnc._launcher.Launcher for `kernel`'s calls on torch tensors;
    None where that module is not built or the runtime has no plans."""
    try:
        from . import _launcher
    except ImportError:
        return None
    lib = kernel._package.lib
    if not hasattr(lib, "attnc_plan_create"):
        return None
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value
    functions = (address(lib.attnc_plan_launch), address(lib.attnc_plan_free),
                 address(lib.attnc_stream_wrap), address(lib.attnc_last_error))
    defaults = tuple(None if default is None else float(default)
                     for _, _, default in kernel._param_specs)
    return _launcher.Launcher(kernel.name, functions, len(kernel.inputs),
                              tuple(kernel.params), defaults, torch)


# attnc_stream handles of PyTorch streams, by (device, CUstream).
_STREAMS = {}


def _current_stream(lib, torch, device):
    """The attnc_stream of PyTorch's current stream on `device`; None for
    the legacy default stream (the runtime's NULL)."""
    handle = torch.cuda.current_stream(device).cuda_stream
    if not handle:
        return None
    key = (device.index, handle)
    stream = _STREAMS.get(key)
    if stream is None:
        stream = ctypes.c_void_p()
        _raise_for(lib, lib.attnc_stream_wrap(device.index, handle,
                                              ctypes.byref(stream)),
                   "PyTorch's current stream on %s" % device)
        _STREAMS[key] = stream
    return stream


# --------------------------------------------------------------------------
# GPU kernels from packages
# --------------------------------------------------------------------------

class _Package:
    """An attnc_package handle; freed with the object."""

    def __init__(self, path):
        self.lib = runtime_library()
        handle = ctypes.c_void_p()
        status = self.lib.attnc_package_load(os.fsencode(path),
                                             ctypes.byref(handle))
        _raise_for(self.lib, status, "cannot load package '%s'" % path)
        self.handle = handle

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self.lib.attnc_package_free(handle)

    def signature(self):
        from ._dlpack import dtype_name
        dims, inputs, params, outputs = [], [], [], []
        for i in range(self.lib.attnc_package_num_args(self.handle)):
            info = _ArgInfo()
            _raise_for(self.lib, self.lib.attnc_package_arg(
                self.handle, i, ctypes.byref(info)), "package argument")
            name = info.name.decode()
            dtype = dtype_name(info.dtype.code, info.dtype.bits)
            if info.kind == _ARG_DIM:
                dims.append((name, None if info.size < 0 else info.size))
            elif info.kind == _ARG_PARAM:
                default = info.default_value if info.has_default else None
                if default is not None and dtype.startswith("i"):
                    default = int(default)
                params.append((name, dtype, default))
            else:
                axes = []
                for k in range(info.size):
                    dim = info.axis_dims[k]
                    axes.append(dim.decode() if dim else info.axis_sizes[k])
                (inputs if info.kind == _ARG_INPUT else outputs).append(
                    (name, dtype, axes))
        return dims, inputs, params, outputs


class GpuKernel(Kernel):
    """A kernel package launched on a CUDA device through the runtime.
    Inputs are CUDA tensors (any object with ``__dlpack__``; PyTorch in
    practice); outputs are new PyTorch tensors on the first input's device.
    Launches go to PyTorch's current stream on that device.

    Gradients come from the package of the adjoint kernel ``<name>_grad``
    (made by ``attnc.compile(..., grad=True)`` or on the first call that
    needs it, or given to :func:`load`): :meth:`vjp` launches it, and calls
    on torch tensors that require grad are recorded for autograd as on the
    CPU (see _autograd.py)."""

    # The native launch path (attnc._launcher), made with the first plan
    # (False where it cannot be: not built, or a runtime without plans); and
    # torch.compiler.is_compiling, which keeps it out of traces.
    _native = None
    _is_compiling = None

    def __init__(self, path, grad=None):
        package = _Package(path)
        lib = package.lib
        dims, inputs, params, outputs = package.signature()
        super().__init__(lib.attnc_package_name(package.handle).decode(),
                         lib.attnc_package_target(package.handle).decode(),
                         dims, inputs, params, outputs)
        self.package_path = str(path)
        self._package = package
        # (text, filename, dtype, shapes) when compiled from a spec: the
        # gradient packages are compiled from the same arguments.
        self._gradient_source = None
        self._gradient_path = None if grad is None else os.fspath(grad)
        # Gradient kernels by the names of the inputs they hold constant.
        self._gradients = {}
        # Launch plans by _plan_key.
        self._plans = {}
        # Float inputs that a call may hold constant when they do not require
        # grad (flex_attention's captured tensors): their gradient has a
        # package of its own, which may fuse where the full one does not.
        self._optional_gradients = ()
        from . import _autograd
        _autograd.register(self)

    def prepare(self, device=0):
        """Loads the package's module on `device` now (JIT of the PTX), so
        that errors and load time show up before the first launch."""
        lib = self._package.lib
        _raise_for(lib, lib.attnc_package_prepare(self._package.handle,
                                                  device),
                   "kernel '%s'" % self.name)

    def _cuda_view(self, name, obj, dtype):
        if not hasattr(obj, "__dlpack__"):
            raise TypeError(
                "input '%s': kernel '%s' runs on %s and takes CUDA tensors "
                "(e.g. torch tensors on a cuda device), got %s" % (
                    name, self.name, self.target, type(obj).__name__))
        if (type(obj).__module__ == "numpy" or
                is_torch(obj) and obj.device.type != "cuda"):
            raise TypeError(
                "input '%s': kernel '%s' runs on %s and takes CUDA tensors "
                "(e.g. torch tensors on a cuda device), got a %s on the CPU" %
                (name, self.name, self.target, type(obj).__name__))
        self._check_dtype(name, dtype_of(obj) or dtype, dtype)
        view = _view(obj)
        if view.device_type != DEVICE_CUDA:
            view.release()
            raise TypeError(
                "input '%s': kernel '%s' runs on %s and takes CUDA tensors, "
                "got a %s on device type %d" % (
                    name, self.name, self.target, type(obj).__name__,
                    view.device_type))
        if view.dtype != dtype:
            view.release()
            self._check_dtype(name, view.dtype, dtype)
        if view.strides and view.strides[-1] != 1 and view.shape[-1] != 1:
            # The kernels read rows with vector loads.
            view.release()
            if not hasattr(obj, "contiguous"):
                raise ValueError("input '%s': the innermost axis must be "
                                 "contiguous" % name)
            self.last_copied += (name,)
            view = _view(obj.contiguous())
        return view

    def __call__(self, *args, **kwargs):
        native = self._native
        if native and not self._is_compiling():
            # None when it does not take the call (see Launcher.cpp).
            result = native(*args, **kwargs)
            if result is not None:
                self.last_copied = ()
                return result
        from . import _autograd
        if _autograd.records_gradient(args, kwargs):
            return _autograd.call(self, args, kwargs)
        return self._run(args, kwargs)

    def _run(self, args, kwargs):
        """The launch itself: nothing recorded for autograd."""
        inputs, params, given = self._bind_call(args, kwargs)
        return self._launch(inputs, params, given)

    def _launch(self, inputs, params, given):
        """Launches on `inputs`; a launch like one before (the same dtypes,
        shapes, strides, devices and params) goes through the native
        launcher, or reuses that one's checked argument arrays, so that only
        the data pointers are new."""
        native = self._native
        if native and not given:
            # Autograd's record of a call launches here with its inputs as
            # they are (they may require grad).
            result = native.launch(tuple(inputs), tuple(params))
            if result is not None:
                self.last_copied = ()
                return result
        torch = sys.modules.get("torch")
        key = _plan_key(inputs, params) if torch is not None and not given \
            else None
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:
            return self._launch_planned(torch, plan, inputs)
        return self._launch_checked(inputs, params, given, key)

    def _launch_planned(self, torch, plan, inputs):
        in_array = plan.inputs.__class__.from_buffer_copy(plan.inputs)
        for i, tensor in enumerate(inputs):
            in_array[i].data = tensor.data_ptr()
        device = inputs[0].device
        results = [torch.empty(shape, dtype=dtype, device=device)
                   for shape, dtype in plan.results]
        out_array = plan.outputs.__class__.from_buffer_copy(plan.outputs)
        for i, result in enumerate(results):
            out_array[i].data = result.data_ptr()
        lib = self._package.lib
        status = lib.attnc_launch(self._package.handle, None, in_array,
                                  len(inputs), plan.params, plan.num_params,
                                  out_array, len(results),
                                  _current_stream(lib, torch, device))
        self.last_copied = ()
        _raise_for(lib, status, "kernel '%s'" % self.name)
        return results[0] if len(results) == 1 else tuple(results)

    def _launch_checked(self, inputs, params, given, key):
        torch = sys.modules.get("torch")
        if torch is not None:
            # Gradients are recorded around the launch (_autograd.py).
            inputs = [obj.detach() if isinstance(obj, torch.Tensor) else obj
                      for obj in inputs]
        self.last_copied = ()
        views = []
        try:
            for obj, (name, dtype, _) in zip(inputs, self._input_specs):
                views.append(self._cuda_view(name, obj, dtype))
            dims = self._bind_dims([view.shape for view in views], given)
            if torch is None or not is_torch(inputs[0]):
                raise TypeError("kernel '%s': outputs of a GPU kernel are "
                                "torch tensors; pass torch tensors" %
                                self.name)
        except BaseException:
            for view in views:
                view.release()
            raise
        device = inputs[0].device
        results = [torch.empty(shape, dtype=torch_dtype(dtype), device=device)
                   for shape, (_, dtype, _) in zip(self._output_shapes(dims),
                                                   self._output_specs)]
        out_views = [_view(result) for result in results]
        keep = []
        in_array = (DLTensor * max(1, len(views)))(
            *[_dl_tensor(view, keep) for view in views])
        out_array = (DLTensor * max(1, len(out_views)))(
            *[_dl_tensor(view, keep) for view in out_views])
        param_array = (ctypes.c_double * max(1, len(params)))(*params)
        lib = self._package.lib
        handle = self._package.handle
        # attnc_launch checks every argument before any driver call; the
        # launch joins PyTorch's current stream on the inputs' device.
        status = lib.attnc_launch(handle, None, in_array, len(views),
                                  param_array, len(params), out_array,
                                  len(out_views),
                                  _current_stream(lib, torch, device))
        for view in views + out_views:
            view.release()
        _raise_for(lib, status, "kernel '%s'" % self.name)
        if key is not None and not self.last_copied:
            if len(self._plans) >= _PLANS_PER_KERNEL:
                try:  # the oldest; another thread may have taken it
                    self._plans.pop(next(iter(self._plans)), None)
                except (StopIteration, RuntimeError):
                    pass
            self._plans[key] = _LaunchPlan(
                in_array, out_array, param_array, len(params),
                [(tuple(r.shape), r.dtype) for r in results], keep)
            self._remember_native(torch, in_array, len(views), param_array,
                                  params, out_array, results, inputs)
        return results[0] if len(results) == 1 else tuple(results)

    def _remember_native(self, torch, in_array, num_inputs, param_array,
                         params, out_array, results, inputs):
        """Hands the native launcher a plan of this checked launch, for the
        calls alike that follow."""
        if self._native is None:
            self._native = _native_launcher(self, torch) or False
            compiler = getattr(torch, "compiler", None)
            self._is_compiling = getattr(compiler, "is_compiling",
                                         lambda: False)
        if not self._native:
            return
        lib = self._package.lib
        plan = ctypes.c_void_p()
        status = lib.attnc_plan_create(
            self._package.handle, None, in_array, num_inputs, param_array,
            len(params), out_array, len(results), ctypes.byref(plan))
        if status != 0:
            return  # Calls alike keep going the checked way.
        workspace_bytes = tuple(
            lib.attnc_plan_workspace_bytes(plan, w)
            for w in range(lib.attnc_plan_num_workspaces(plan)))
        try:  # remember frees a plan it refuses
            self._native.remember(
                plan.value, tuple(inputs), tuple(float(p) for p in params),
                tuple(tuple(r.shape) for r in results),
                tuple(r.dtype for r in results), results[0].device,
                workspace_bytes)
        except (TypeError, ValueError):
            pass  # e.g. a tensor subclass: such calls keep the checked way

    # -- gradients ---------------------------------------------------------

    def _gradient_kernel(self, constants=()):
        """The package of the adjoint kernel that holds the inputs named in
        `constants` constant, loaded (and compiled, where the compiler is)
        on first use; CompileError when the spec has no GPU backward or no
        package for it is at hand."""
        constants = tuple(sorted(constants))
        gradient = self._gradients.get(constants)
        if gradient is not None:
            return gradient
        if self._gradient_path is not None and not constants:
            gradient = GpuKernel(self._gradient_path)
        elif self._gradient_source is not None:
            from ._spec import _compile_gpu
            text, filename, dtype, shapes, deterministic = (
                self._gradient_source)
            gradient = _compile_gpu(text, filename, self.target, dtype,
                                    shapes, grad=True, constants=constants,
                                    deterministic=deterministic)
        else:
            from ._spec import CompileError
            raise CompileError(
                "kernel '%s' was loaded from a package without its gradient "
                "package%s: load it with attnc.load(path, grad=GRAD_PATH) "
                "(attnc compile --grad makes one)" % (
                    self.name, " for constant %s" % ", ".join(constants)
                    if constants else ""))
        self._check_gradient_signature(gradient, constants)
        self._gradients[constants] = gradient
        return gradient

    def _adjointed_outputs(self):
        return [i for i, (_, dtype, _) in enumerate(self._output_specs)
                if dtype in FLOAT_DTYPES]

    def _differentiated_inputs(self, constants=()):
        return [i for i, (name, dtype, _) in enumerate(self._input_specs)
                if dtype in FLOAT_DTYPES and name not in constants]

    def _constant_inputs(self, needed):
        """The names of the inputs a call whose inputs at indices `needed`
        require grad holds constant: the optional ones it does not need."""
        return tuple(sorted(self._input_specs[i][0]
                            for i in self._optional_gradients
                            if i not in needed and
                            self._input_specs[i][1] in FLOAT_DTYPES))

    def _check_gradient_signature(self, gradient, constants=()):
        """The adjoint kernel takes the forward's inputs, then one adjoint
        per float output, and gives one gradient per float input not held
        constant."""
        expected = ([spec[0] for spec in self._input_specs] +
                    ["d" + self._output_specs[i][0]
                     for i in self._adjointed_outputs()])
        given = ["d" + self._input_specs[i][0]
                 for i in self._differentiated_inputs(constants)]
        if gradient.inputs != expected or gradient.outputs != given:
            raise ValueError(
                "package '%s' is not the gradient of kernel '%s': it takes "
                "(%s) and gives (%s), expected (%s) and (%s)" % (
                    gradient.package_path, self.name,
                    ", ".join(gradient.inputs), ", ".join(gradient.outputs),
                    ", ".join(expected), ", ".join(given)))

    def _prepare_gradient(self, needed=None):
        """Loads the package of the adjoint kernel a call whose inputs at
        indices `needed` require grad launches (CompileError when the spec
        has no GPU backward); the indices of the inputs that get a
        gradient."""
        constants = self._constant_inputs(needed or ())
        self._gradient_kernel(constants)
        return tuple(self._differentiated_inputs(constants))

    def vjp(self, *args, grad_outputs=None, constant_inputs=(), **kwargs):
        """The vector-Jacobian product on the GPU: for L = sum over outputs
        o of <grad_outputs[o], o>, one entry per kernel input, in input
        order: dL/dinput as a float32 CUDA tensor of the input's shape for
        float inputs, None for integer inputs and the float inputs named in
        `constant_inputs` (held constant: their own package of the adjoint
        kernel, which may fuse where the full one does not).
        `grad_outputs` holds one adjoint per output (a tensor of the
        output's shape, any float dtype, on the inputs' device; None: zero);
        a kernel with one output also takes the tensor alone. The adjoint
        kernel recomputes the forward from the inputs."""
        torch = sys.modules.get("torch")
        inputs, params, given = self._bind_call(args, kwargs)
        if torch is None or not is_torch(inputs[0]):
            raise TypeError("vjp of kernel '%s': pass torch CUDA tensors" %
                            self.name)
        gradient = self._gradient_kernel(constant_inputs)
        if grad_outputs is None or is_torch(grad_outputs):
            grad_outputs = (grad_outputs,)
        grad_outputs = tuple(grad_outputs)
        if len(grad_outputs) != len(self._output_specs):
            raise ValueError("vjp of kernel '%s': grad_outputs needs one "
                             "adjoint per output (%s), got %d" % (
                                 self.name, ", ".join(self.outputs),
                                 len(grad_outputs)))
        adjoint_specs = gradient._input_specs[len(self._input_specs):]
        adjoints = []
        forward_shapes = None
        for index, (_, dtype, _) in zip(self._adjointed_outputs(),
                                        adjoint_specs):
            name = self._output_specs[index][0]
            grad = grad_outputs[index]
            if grad is None:
                if forward_shapes is None:
                    shapes = [tuple(x.shape) for x in inputs]
                    dims = self._bind_dims(shapes, given)
                    forward_shapes = self._output_shapes(dims)
                grad = torch.zeros(forward_shapes[index],
                                   dtype=torch_dtype(dtype),
                                   device=inputs[0].device)
            elif not is_torch(grad):
                raise TypeError("vjp of kernel '%s': the adjoint of '%s' "
                                "must be a torch tensor, got %s" % (
                                    self.name, name, type(grad).__name__))
            elif grad.device != inputs[0].device:
                raise ValueError("vjp of kernel '%s': the adjoint of '%s' "
                                 "is on %s, the inputs on %s" % (
                                     self.name, name, grad.device,
                                     inputs[0].device))
            else:
                grad = grad.detach().to(torch_dtype(dtype))
            adjoints.append(grad)
        results = gradient._launch(list(inputs) + adjoints, params, given)
        if not isinstance(results, tuple):
            results = (results,)
        gradients = [None] * len(self._input_specs)
        for index, result in zip(self._differentiated_inputs(constant_inputs),
                                 results):
            gradients[index] = result
        return gradients


def load(path, grad=None):
    """Loads an .attnpkg with the runtime alone (no compiler needed); `grad`
    is the package of its adjoint kernel (``attnc compile --grad``), which
    calls that need gradients launch."""
    return GpuKernel(os.fspath(path), grad)
