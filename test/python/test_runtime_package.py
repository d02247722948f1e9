"""GPU kernel packages: compiled into the package store, loaded with the
runtime alone, and launched (on this machine: refused cleanly without a
GPU)."""

import os

import numpy as np
import pytest

import attnc
from conftest import EXAMPLES, has_compiler, requires_compiler

SHAPES = {"D": 128}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNC_PACKAGE_DIR", str(tmp_path / "store"))
    # A private artifact cache too: where the compiler is, packages come
    # from it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "store"


@pytest.fixture
def causal_package(store):
    if not has_compiler():
        pytest.skip("the attnc compiler module is not built")
    try:
        kernel = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                               shapes=SHAPES)
    except attnc.CompileError as error:
        if "not registered" in str(error) or "NVPTX" in str(error):
            pytest.skip("this compiler has no NVPTX target: %s" % error)
        raise
    return kernel


def test_compile_writes_the_store(store, causal_package):
    path = attnc.package_path(EXAMPLES / "causal.attn", "sm_90a",
                              shapes=SHAPES)
    assert os.path.dirname(path) == str(store)
    assert path.endswith(".attnpkg") and os.path.isfile(path)
    assert os.listdir(str(store)) == [os.path.basename(path)]
    assert not causal_package.cache_hit
    assert causal_package.spec == (EXAMPLES / "causal.attn").read_text()
    # Different arguments, different packages.
    assert path != attnc.package_path(EXAMPLES / "causal.attn", "sm_80",
                                      shapes=SHAPES)
    assert path != attnc.package_path(EXAMPLES / "causal.attn", "sm_90a",
                                      dtype="f16", shapes=SHAPES)


def test_load_gives_the_signature(causal_package):
    path = attnc.package_path(EXAMPLES / "causal.attn", "sm_90a",
                              shapes=SHAPES)
    k = attnc.load(path)
    assert k.name == "causal" and k.target == "sm_90a"
    assert k.inputs == ["Q", "K", "V"]
    assert k.params == []
    assert k.outputs == ["O"]
    assert k.path is None and k.spec is None


def test_params_of_a_package(store):
    if not has_compiler():
        pytest.skip("the attnc compiler module is not built")
    k = attnc.compile(EXAMPLES / "sliding_window.attn", target="sm_80",
                      shapes=SHAPES)
    assert k.params == ["window"]
    assert k._param_specs[0][2] is not None


def test_numpy_inputs_need_cuda_tensors(causal_package):
    x = np.zeros((1, 2, 5, 128), np.float32)
    with pytest.raises(TypeError, match="input 'Q': kernel 'causal' runs on "
                       "sm_90a and takes CUDA tensors"):
        causal_package(x, x, x)
    with pytest.raises(TypeError, match="missing input 'V'"):
        causal_package(x, x)


def test_no_device_is_a_clean_error(causal_package):
    try:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA device")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="no CUDA device"):
        causal_package.prepare()


def test_second_compile_comes_from_the_store(causal_package):
    again = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                          shapes=SHAPES)
    assert again.cache_hit
    assert again.inputs == causal_package.inputs


def test_stale_store_entry_is_not_served(store, causal_package):
    # The store holds what another compiler wrote for this spec (here: the
    # package of another variant); with a compiler present the package comes
    # from the artifact cache, keyed by the code generator, and replaces it.
    path = attnc.package_path(EXAMPLES / "causal.attn", "sm_90a",
                              shapes=SHAPES)
    other = attnc.compile(EXAMPLES / "sliding_window.attn", target="sm_90a",
                          shapes=SHAPES)
    other_path = attnc.package_path(EXAMPLES / "sliding_window.attn",
                                    "sm_90a", shapes=SHAPES)
    good = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(open(other_path, "rb").read())
    k = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                      shapes=SHAPES)
    assert k.name == "causal" and other.name == "sliding_window"
    assert open(path, "rb").read() == good


def test_store_without_compiler(causal_package, monkeypatch):
    monkeypatch.setenv("ATTNC_NO_COMPILER", "1")
    k = attnc.compile(str(EXAMPLES / "causal.attn"), target="sm_90a",
                      shapes=SHAPES)
    assert k.cache_hit and k.name == "causal"
    missing = attnc.package_path(EXAMPLES / "causal.attn", "sm_80",
                                 shapes=SHAPES)
    with pytest.raises(attnc.CompileError) as info:
        attnc.compile(EXAMPLES / "causal.attn", target="sm_80",
                      shapes=SHAPES)
    assert "no attnc compiler in this installation" in str(info.value)
    assert missing in str(info.value)
    with pytest.raises(attnc.CompileError, match="no attnc compiler"):
        attnc.compile(EXAMPLES / "causal.attn")


@requires_compiler
def test_unsupported_chips_are_refused(store):
    for chip in ("sm_75", "sm_70", "sm_100"):
        with pytest.raises(ValueError, match="is not a chip the GPU backend "
                           "supports"):
            attnc.compile(EXAMPLES / "causal.attn", target=chip,
                          shapes=SHAPES)
    k = attnc.compile(EXAMPLES / "causal.attn", target="sm_86",
                      shapes=SHAPES)
    assert k.target == "sm_80"


@requires_compiler
def test_gpu_compile_errors(store):
    # The scale rsqrt(D) needs D fixed.
    with pytest.raises(attnc.CompileError, match=r"shapes=\{'D': 128\}"):
        attnc.compile(EXAMPLES / "causal.attn", target="sm_90a")
    with pytest.raises(ValueError, match="bf16 or f16"):
        attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                      dtype="f32", shapes=SHAPES)
    assert not store.exists() or not os.listdir(str(store))


def test_runtime_library_errors(monkeypatch, tmp_path):
    from attnc import _runtime
    monkeypatch.setattr(_runtime, "_library", None)
    monkeypatch.setenv("ATTNC_RUNTIME_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(RuntimeError, match="nope.so"):
        attnc.load(tmp_path / "x.attnpkg")


def test_load_of_a_bad_package(tmp_path):
    bad = tmp_path / "bad.attnpkg"
    bad.write_bytes(b"not a package")
    with pytest.raises(ValueError, match="cannot load package"):
        attnc.load(bad)


def test_torch_cuda_launch(causal_package):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    k = attnc.compile(EXAMPLES / "causal.attn", target="sm_90a",
                      shapes=SHAPES)
    Q, K, V = (torch.randn(1, 2, 77, 128, device="cuda",
                           dtype=torch.bfloat16) for _ in range(3))
    out = k(Q, K, V)
    ref = torch.nn.functional.scaled_dot_product_attention(
        Q.float(), K.float(), V.float(), is_causal=True)
    assert out.device == Q.device and out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_torch_tensors_are_read_without_dlpack():
    torch = pytest.importorskip("torch")
    from attnc._runtime import DLView, _TorchView, _view
    base = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    for tensor in (base, base.to(torch.bfloat16), base[:, 1:, ::2],
                   base.to(torch.int32)[1], torch.zeros(0, 4)):
        view = _view(tensor)
        assert isinstance(view, _TorchView)
        reference = DLView(tensor)
        fields = ["shape", "dtype", "dtype_code", "dtype_bits", "device_type",
                  "device_id", "data"]
        if tensor.numel():  # DLPack normalises the strides of empty ones
            fields.append("strides")
        for field in fields:
            assert getattr(view, field) == getattr(reference, field), field
        reference.release()
    # A dtype attnc has no name for goes through DLPack.
    assert isinstance(_view(torch.zeros(2, dtype=torch.uint8)), DLView)


def test_repeated_launches_reuse_the_checked_arguments(monkeypatch):
    """A launch like an earlier one (dtypes, shapes, strides, devices,
    params) passes the same argument arrays with new data pointers; another
    shape or param is checked afresh. The launch itself is a stand-in that
    records what the runtime would receive."""
    torch = pytest.importorskip("torch")
    import types
    from attnc import _runtime
    from attnc._runtime import GpuKernel, Kernel
    calls = []

    def attnc_launch(handle, entry, ins, num_ins, params, num_params, outs,
                     num_outs, stream):
        def tensors(array, count):
            return [(array[i].data,
                     tuple(array[i].shape[a] for a in range(array[i].ndim)),
                     tuple(array[i].strides[a] for a in range(array[i].ndim)))
                    for i in range(count)]
        calls.append((tensors(ins, num_ins),
                      [params[i] for i in range(num_params)],
                      tensors(outs, num_outs)))
        return 0
    kernel = GpuKernel.__new__(GpuKernel)
    Kernel.__init__(kernel, "k", "sm_90a", [("B", None), ("N", None)],
                    [("X", "f32", ["B", "N"]), ("Y", "f32", ["N"])],
                    [("scale", "f32", 1.0)], [("O", "f32", ["B", "N"])])
    kernel._package = types.SimpleNamespace(
        lib=types.SimpleNamespace(attnc_launch=attnc_launch), handle=None)
    kernel._plans = {}
    monkeypatch.setattr(GpuKernel, "_cuda_view",
                        lambda self, name, obj, dtype: _runtime._view(obj))
    monkeypatch.setattr(_runtime, "_current_stream",
                        lambda lib, torch, device: None)
    x, y = torch.randn(2, 5), torch.randn(5)
    first = kernel(x, y, scale=2.0)
    other = x.clone()
    second = kernel(other, y, scale=2.0)
    assert len(kernel._plans) == 1
    (ins1, params1, outs1), (ins2, params2, outs2) = calls
    assert [t[1:] for t in ins1] == [t[1:] for t in ins2] == [
        ((2, 5), (5, 1)), ((5,), (1,))]
    assert params1 == params2 == [2.0]
    assert ins2[0][0] == other.data_ptr() and ins2[1][0] == y.data_ptr()
    assert outs1[0][0] == first.data_ptr()
    assert outs2[0][0] == second.data_ptr() and outs2[0][1:] == ((2, 5), (5, 1))
    # A transposed view, another shape, another param: checked afresh.
    kernel(x.t().contiguous().t(), y, scale=2.0)
    kernel(x[:, :3], y[:3], scale=2.0)
    kernel(x, y, scale=3.0)
    assert len(kernel._plans) == 4
    assert calls[2][0][0][2] == (1, 2) and calls[3][0][0][1] == (2, 3)
    assert calls[4][1] == [3.0]
