"""DLPack: reading tensors that other libraries export, without copying.

A producer's ``__dlpack__()`` returns a PyCapsule named "dltensor" that holds
a ``DLManagedTensor``. The consumer renames the capsule "used_dltensor" (so
that the capsule's own destructor no longer frees it) and calls the managed
tensor's deleter when it is done with the memory. :class:`DLView` does that
and keeps the producer object alive as well, for as long as the view lives.
"""

import ctypes

__all__ = ["DLView", "DTYPES", "dtype_name"]

# attnc dtype name -> (DLPack type code, bits).
DTYPES = {
    "f32": (2, 32),
    "f64": (2, 64),
    "f16": (2, 16),
    "bf16": (4, 16),
    "i1": (6, 8),
    "i8": (0, 8),
    "i32": (0, 32),
    "i64": (0, 64),
}
_NAMES = {value: name for name, value in DTYPES.items()}
# NumPy and PyTorch export bool as uint8 on older versions.
_NAMES[(1, 8)] = "u8"

DEVICE_CPU = 1
DEVICE_CUDA = 2


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16)]


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _Deleter),
]

_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]

_USED = ctypes.c_char_p(b"used_dltensor")


def dtype_name(code, bits, lanes=1):
    """The attnc name of a DLPack dtype ("f32", ...), or a description."""
    if lanes == 1 and (code, bits) in _NAMES:
        return _NAMES[(code, bits)]
    return "dlpack(code=%d, bits=%d, lanes=%d)" % (code, bits, lanes)


class DLView:
    """A consumed DLPack capsule of `obj`: data pointer, dtype, shape,
    strides (in elements) and device. Call :meth:`release` (or let the view
    be collected) to hand the memory back to the producer."""

    def __init__(self, obj, stream=None):
        self.owner = obj
        if stream is None:
            capsule = obj.__dlpack__()
        else:
            capsule = obj.__dlpack__(stream=stream)
        if not _api.PyCapsule_IsValid(capsule, b"dltensor"):
            raise TypeError("__dlpack__() of %s did not return a DLPack "
                            "capsule" % type(obj).__name__)
        address = _api.PyCapsule_GetPointer(capsule, b"dltensor")
        # From here on this object owns the tensor: the renamed capsule's
        # destructor leaves it alone, and release() calls its deleter.
        _api.PyCapsule_SetName(capsule, _USED)
        self._managed = ctypes.cast(address, ctypes.POINTER(DLManagedTensor))
        tensor = self._managed.contents.dl_tensor
        self.ndim = tensor.ndim
        self.shape = tuple(tensor.shape[i] for i in range(self.ndim))
        if tensor.strides:
            self.strides = tuple(tensor.strides[i] for i in range(self.ndim))
        else:
            self.strides = _compact_strides(self.shape)
        self.dtype = dtype_name(tensor.dtype.code, tensor.dtype.bits,
                                tensor.dtype.lanes)
        self.dtype_code = tensor.dtype.code
        self.dtype_bits = tensor.dtype.bits
        self.device_type = tensor.device.device_type
        self.device_id = tensor.device.device_id
        self.byte_offset = tensor.byte_offset
        self.data = (tensor.data or 0) + tensor.byte_offset

    @property
    def contiguous(self):
        """Dense row-major (sizes-1 axes may have any stride)."""
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def release(self):
        managed, self._managed = self._managed, None
        if managed:
            deleter = managed.contents.deleter
            if deleter:
                deleter(managed)
        self.owner = None

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


def _compact_strides(shape):
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return tuple(strides)
