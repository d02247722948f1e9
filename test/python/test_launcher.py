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
