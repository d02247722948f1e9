"""attnc._launcher, the native launch path of GPU kernels: it is built with
the package, uses the runtime ctypes loaded, takes only calls it has a plan
for (plain CUDA tensors, no gradient recorded, known params) and answers
None to every other, which then goes the checked way. Its launches are
checked on the GPU machine (test/integration/gpu/check_torch.py)."""
import ctypes

import pytest

torch = pytest.importorskip("torch")
from attnc import _runtime  # noqa: E402


def launcher(params=("scale",), defaults=(None,)):
    from attnc import _launcher
    lib = _runtime.runtime_library()
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
    functions = (address(lib.attnc_plan_launch), address(lib.attnc_plan_free),
                 address(lib.attnc_stream_wrap),
                 address(lib.attnc_last_error))
    return _launcher.Launcher("k", functions, 3, params, defaults, torch)


def test_the_launcher_is_built_with_the_package():
    from attnc import _launcher
    assert hasattr(_launcher, "Launcher")


def test_calls_without_a_plan_are_left_to_python():
    fast = launcher()
    x = torch.zeros(2, 3)
    assert fast(x, x, x, scale=1.0) is None    # CPU tensors, no plan
    assert fast(x, x) is None                   # too few inputs
    assert fast(x, x, x, other=1.0) is None     # not a param
    assert fast(x, x, x) is None                # a param without default
    assert fast(x, x, 1.0, scale=1.0) is None   # not a tensor
    assert fast.num_plans() == 0


def test_a_plan_for_tensors_unlike_the_signature_is_refused():
    fast = launcher()
    x = torch.zeros(3)
    # A null plan: freeing it (which remember does on refusal) is a no-op.
    with pytest.raises(ValueError, match="unlike the kernel's signature"):
        fast.remember(0, (x, x, x), (1.0,), ((3,),), (torch.float32,),
                      x.device, ())
    with pytest.raises(ValueError, match="unlike the kernel's signature"):
        fast.remember(0, (x, x), (1.0,), ((3,),), (torch.float32,), x.device,
                      (256,))
    assert fast.num_plans() == 0


def test_bad_construction_is_an_error_not_a_crash():
    from attnc import _launcher
    with pytest.raises(ValueError):
        _launcher.Launcher("k", (0, 0, 0, 0), 3, (), (), torch)
    with pytest.raises(ValueError):
        _launcher.Launcher("k", (1, 2), 3, (), (), torch)
    with pytest.raises(TypeError):
        _launcher.Launcher("k")


# The whole native path against the fake CUDA driver of the runtime's unit
# tests (test/unit/runtime/FakeCuda.cpp): "device memory" from malloc,
# launches recorded, not run. PyTorch stands in as a namespace whose Tensor
# type reports a CUDA device, so Launcher.cpp takes the calls; it runs in a
# process of its own, whose runtime loads the fake driver first.
FAKE_DRIVER_SCRIPT = r'''
import ctypes, os, sys, types
from attnc import _launcher, _runtime
from attnc._dlpack import DLDataType, DLDevice, DLTensor

lib = _runtime.runtime_library()
fake = ctypes.CDLL(os.environ["ATTNC_LIBCUDA"])
lib.attnc_device_alloc.argtypes = [ctypes.c_int, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_void_p)]
fake.fake_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint),
                             ctypes.POINTER(ctypes.c_uint64)]
F32 = object()  # the one torch.dtype of the stand-in


def device_memory(nbytes):
    p = ctypes.c_void_p()
    assert lib.attnc_device_alloc(0, nbytes, ctypes.byref(p)) == 0
    return p.value


class Tensor:
    def __init__(self, shape, data=None):
        self.shape, self.dtype, self.requires_grad = tuple(shape), F32, False
        self.data = data or device_memory(4 * shape[0] * shape[1])

    def stride(self):
        return (self.shape[1], 1)

    def data_ptr(self):
        return self.data

    def get_device(self):
        return 0


def empty(shape, dtype=None, device=None):
    if dtype == "uint8":
        return Tensor((1, shape[0]), device_memory(shape[0]))
    return Tensor(shape)


grad_mode = [False]
torch = types.SimpleNamespace(
    Tensor=Tensor, nn=types.SimpleNamespace(Parameter=type("P", (), {})),
    empty=empty, is_grad_enabled=lambda: grad_mode[0], uint8="uint8",
    _C=types.SimpleNamespace(_cuda_getCurrentRawStream=lambda device: 0))

package = _runtime._Package(sys.argv[1])
address = lambda f: ctypes.cast(f, ctypes.c_void_p).value
functions = (address(lib.attnc_plan_launch), address(lib.attnc_plan_free),
             address(lib.attnc_stream_wrap), address(lib.attnc_last_error))
fast = _launcher.Launcher("vadd2d", functions, 2, ("alpha",), (2.0,), torch)

# A plan of C = A + alpha B on [3, 1000], made as _runtime.py makes it.
a, b, c = Tensor((3, 1000)), Tensor((3, 1000)), Tensor((3, 1000))
shape = (ctypes.c_int64 * 2)(3, 1000)


def dl(t):
    return DLTensor(t.data, DLDevice(2, 0), 2, DLDataType(2, 32, 1), shape,
                    None, 0)


ins, outs = (DLTensor * 2)(dl(a), dl(b)), (DLTensor * 1)(dl(c))
alpha = (ctypes.c_double * 1)(0.5)
plan = ctypes.c_void_p()
assert lib.attnc_plan_create(package.handle, None, ins, 2, alpha, 1, outs, 1,
                             ctypes.byref(plan)) == 0, _runtime._last_error(lib)
fast.remember(plan.value, (a, b), (0.5,), ((3, 1000),), (F32,), "cuda:0", ())
fake.fake_reset(8)

x, y = Tensor((3, 1000)), Tensor((3, 1000))
out = fast(x, y, alpha=0.5)
assert isinstance(out, Tensor) and out.shape == (3, 1000)
assert fake.fake_num_launches() == 1
dims, params = (ctypes.c_uint * 7)(), (ctypes.c_uint64 * 8)()
fake.fake_launch(0, dims, params)
assert list(params)[:3] == [x.data, y.data, out.data], list(params)
assert dims[0] == 4 and dims[1] == 3  # ceil(1000 / 256) x R

# Calls unlike the plan are left to Python.
assert fast(x, y) is None                      # alpha = 2.0, the default
assert fast(Tensor((2, 1000)), y, alpha=0.5) is None
assert fake.fake_num_launches() == 1

# An input that requires grad, in grad mode: the call is autograd's (None),
# whose record then launches through launch() with the inputs as they are.
grad_mode[0], x.requires_grad = True, True
assert fast(x, y, alpha=0.5) is None
assert isinstance(fast.launch((x, y), (0.5,)), Tensor)
assert fast.launch((x, y), (2.0,)) is None
assert fast.launch((x, y), ()) is None
assert fake.fake_num_launches() == 2
grad_mode[0], x.requires_grad = False, False

# A pointer that is not device memory: the runtime's error, no launch.
host = ctypes.create_string_buffer(12000)
try:
    fast(Tensor((3, 1000), ctypes.addressof(host)), y, alpha=0.5)
    raise SystemExit("a host pointer was launched")
except RuntimeError as error:
    assert "kernel 'vadd2d': input 'A': data pointer" in str(error), error
    assert "is not CUDA device memory" in str(error), error
assert fake.fake_num_launches() == 2
print("ok")
'''


def test_the_native_path_launches_plans_through_a_fake_driver(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys
    import attnc
    build = pathlib.Path(attnc.__file__).resolve().parents[2]
    root = pathlib.Path(__file__).resolve().parents[2]
    driver = build / "test" / "unit" / "runtime" / "libattn-fake-cuda.so"
    runtime = build / "lib" / "libattnc_runtime.so"
    if not driver.is_file() or not runtime.is_file():
        pytest.skip("needs the build's fake CUDA driver and runtime library")
    script = tmp_path / "fake_driver.py"
    script.write_text(FAKE_DRIVER_SCRIPT)
    env = dict(os.environ, ATTNC_LIBCUDA=str(driver),
               ATTNC_RUNTIME_LIBRARY=str(runtime))
    run = subprocess.run(
        [sys.executable, str(script),
         str(root / "test" / "integration" / "gpu" / "Inputs" / "vadd2d.attnpkg")],
        capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (
        run.stdout + run.stderr)
