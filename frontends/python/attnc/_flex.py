"""A FlexAttention-compatible front end: flex_attention, create_block_mask.

``from attnc import flex_attention, create_block_mask`` replaces
``from torch.nn.attention.flex_attention import ...``: the score_mod and
mask_mod functions are traced into an `.attn` spec (see _trace.py), compiled
once per spec, target and head dim, and run on the caller's tensors (numpy
arrays on the CPU, torch tensors on the CPU or a CUDA GPU).

Differences from FlexAttention: attnc classifies (query tile, key tile) pairs
itself from the traced mask when it compiles, so a BlockMask holds only the
mask_mod and its sizes (no block map is materialised; BLOCK_SIZE matters only
for to_dense()), and ``kernel_options`` are accepted and ignored.
"""

import math
import operator
import re
import sys

from ._spec import CompileError
from ._trace import _evaluate, _spec_text, _trace_mods

__all__ = ["flex_attention", "create_block_mask", "and_masks", "or_masks",
           "noop_mask", "BlockMask"]


# ---------------------------------------------------------------- mask mods

def noop_mask(b, h, q_idx, kv_idx):
    """A mask_mod that keeps every (query, key) pair."""
    return True


def and_masks(*mask_mods):
    """A mask_mod that keeps the pairs every one of `mask_mods` keeps."""
    return _combine(mask_mods, "and_mask", True, operator.and_)


def or_masks(*mask_mods):
    """A mask_mod that keeps the pairs any one of `mask_mods` keeps."""
    return _combine(mask_mods, "or_mask", False, operator.or_)


def _combine(mask_mods, name, start, op):
    for mod in mask_mods:
        if not callable(mod):
            raise TypeError("%ss: expected mask_mod functions, got %r" % (name, mod))

    def combined(b, h, q_idx, kv_idx):
        result = start
        for mod in mask_mods:
            result = op(result, mod(b, h, q_idx, kv_idx))
        return result
    combined.__name__ = combined.__qualname__ = name
    combined._attnc_walk = True  # the tracer looks into the combined mods
    return combined


noop_mask._attnc_walk = True


# --------------------------------------------------------------- BlockMask

class BlockMask(object):
    """A mask_mod with the sizes it was created for (B/H None: broadcast).

    attnc derives its (query tile, key tile) classification from the traced
    mask when it compiles, so no block map is stored; to_dense() computes one
    for inspection."""

    def __init__(self, mask_mod, B, H, Q_LEN, KV_LEN, BLOCK_SIZE=128, device=None):
        self.mask_mod = mask_mod
        self.B, self.H = B, H
        self.Q_LEN, self.KV_LEN = int(Q_LEN), int(KV_LEN)
        if isinstance(BLOCK_SIZE, int):
            BLOCK_SIZE = (BLOCK_SIZE, BLOCK_SIZE)
        self.BLOCK_SIZE = tuple(int(x) for x in BLOCK_SIZE)
        self.device = device

    @property
    def shape(self):
        return (self.B or 1, self.H or 1, self.Q_LEN, self.KV_LEN)

    @property
    def seq_lengths(self):
        return (self.Q_LEN, self.KV_LEN)

    def __repr__(self):
        name = getattr(self.mask_mod, "__qualname__", repr(self.mask_mod))
        return "BlockMask(shape=%r, block_size=%r, mask_mod=%s)" % (
            self.shape, self.BLOCK_SIZE, name)

    def to_dense(self):
        """numpy bool [B or 1, H or 1, ceil(Q_LEN / BS), ceil(KV_LEN / BS)]:
        which blocks keep at least one pair."""
        import numpy as np
        traced, tensors = _trace_mods(None, self.mask_mod)
        captures = [_to_numpy(t) for t in tensors]
        bq, bkv = self.BLOCK_SIZE
        nq, nkv = -(-self.Q_LEN // bq), -(-self.KV_LEN // bkv)
        B, H = self.shape[:2]
        dense = np.zeros((B, H, nq, nkv), dtype=bool)
        n = np.arange(self.KV_LEN)[None, :]
        pad = nkv * bkv - self.KV_LEN
        for b in range(B):
            for h in range(H):
                for qb in range(nq):
                    m = np.arange(qb * bq, min((qb + 1) * bq, self.Q_LEN))[:, None]
                    keep = _evaluate(traced.keep, {"b": np.array(b), "h": np.array(h),
                                                   "m": m, "n": n}, captures)
                    keep = np.broadcast_to(np.asarray(keep, dtype=bool), (m.shape[0], self.KV_LEN))
                    row = np.concatenate([keep.any(axis=0), np.zeros(pad, dtype=bool)])
                    dense[b, h, qb] = row.reshape(nkv, bkv).any(axis=1)
        return dense

    def sparsity(self):
        """Percentage of blocks that keep no pair."""
        dense = self.to_dense()
        return 100.0 * (1.0 - dense.mean())


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device=None, BLOCK_SIZE=128,
                      _compile=False):
    """A BlockMask for `mask_mod(b, h, q_idx, kv_idx)`; B or H None broadcasts.

    The mask_mod is traced here, so untraceable code fails at once. Lengths
    may be 0 (flex_attention then has nothing to compute)."""
    if not callable(mask_mod):
        raise TypeError("create_block_mask: mask_mod must be a function, got %r" % (mask_mod,))
    for name, value in (("Q_LEN", Q_LEN), ("KV_LEN", KV_LEN)):
        if int(value) < 0:
            raise ValueError("create_block_mask: %s must not be negative, got %r" %
                             (name, value))
    _trace_mods(None, mask_mod)
    return BlockMask(mask_mod, B, H, Q_LEN, KV_LEN, BLOCK_SIZE, device)


# ---------------------------------------------------------------- tensors

def _library(x, name):
    module = type(x).__module__.split(".")[0]
    if module == "numpy" and type(x).__name__ == "ndarray":
        return "numpy"
    if module == "torch" and hasattr(x, "dim"):
        return "torch"
    raise TypeError("flex_attention: %s must be a numpy array or a torch tensor, "
                    "got %s" % (name, type(x).__name__))


_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16",
           "torch.float32": "f32", "torch.bfloat16": "bf16", "torch.float16": "f16"}


def _to_numpy(t):
    if type(t).__module__.split(".")[0] == "torch":
        t = t.detach().cpu()
        if "bfloat16" in str(t.dtype) or "float16" in str(t.dtype):
            t = t.float()
        return t.numpy()
    return t


# Integer captures of torch tensors as converted last, by the id of the
# tensor: {id: (weak reference, version, data pointer, device, converted)}.
# An int64 document-id tensor would otherwise cost a range check (two
# device synchronisations) and a conversion kernel on every call.
_CONVERTED_INDICES = {}
_CONVERTED_INDICES_KEPT = 16


def _convert_capture(t, capture, library, device):
    """A captured tensor as a kernel input: f32 or i32 of the same shape (a
    0-d one stays 0-d), on the query's device."""
    source = type(t).__module__.split(".")[0]
    if capture.kind == "f" or library != "torch" or source != "torch":
        return _convert_capture_now(t, capture, library, device)
    import torch
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # A graph replays the conversion it captured, so that a new value
        # copied into the captured tensor reaches the kernel.
        return _convert_capture_now(t, capture, library, device)
    # The same tensor, unmodified since (in-place writes bump its version):
    # the same input.
    kept = _CONVERTED_INDICES.get(id(t))
    if kept is not None:
        ref, version, pointer, kept_device, converted = kept
        if (ref() is t and version == t._version and pointer == t.data_ptr() and
                kept_device == device):
            return converted
    converted = _convert_capture_now(t, capture, library, device)
    if converted is t:
        return converted
    import weakref
    try:
        ref = weakref.ref(t)
    except TypeError:
        return converted
    if len(_CONVERTED_INDICES) >= _CONVERTED_INDICES_KEPT:
        _CONVERTED_INDICES.pop(next(iter(_CONVERTED_INDICES)))
    _CONVERTED_INDICES[id(t)] = (ref, t._version, t.data_ptr(), device, converted)
    return converted


def _convert_capture_now(t, capture, library, device):
    import numpy as np
    source = type(t).__module__.split(".")[0]
    if capture.kind != "f" and "int32" not in str(t.dtype):
        size = t.numel() if source == "torch" else t.size
        if "bool" not in str(t.dtype) and size:
            lo, hi = int(t.min()), int(t.max())
            if lo < -2 ** 31 or hi >= 2 ** 31:
                raise ValueError("flex_attention: captured integer tensor '%s'%s holds "
                                 "values outside int32 (%d..%d)" % (
                                     capture.label, _read_at(capture), lo, hi))
    # np.ascontiguousarray would make a 0-d array 1-d.
    np_dtype = np.float32 if capture.kind == "f" else np.int32
    if library == "numpy":
        return np.asarray(_to_numpy(t), dtype=np_dtype, order="C")
    import torch
    if source == "numpy":
        return torch.from_numpy(np.asarray(t, dtype=np_dtype, order="C")).to(device)
    dtype = torch.float32 if capture.kind == "f" else torch.int32
    # Not detached: a float tensor that requires grad gets its gradient
    # through this conversion.
    return t.to(device=device, dtype=dtype).contiguous()


def _read_at(capture):
    return " (read at %s)" % capture.read_at if capture.read_at else ""


_SPEC_LOCATION = re.compile(r"<string>:(\d+):\d+: ")
_CAPTURE_DIM = re.compile(r"\bC(\d+)_(\d+)\b")
_CAPTURE = re.compile(r"\bCap(\d+)\b")


def _explain(message, traced, spec):
    """A compile or launch error about a traced spec in the caller's terms:
    captured tensors (the spec's Cap<i> inputs and their C<i>_<axis> dims)
    by the name or expression the mod read them through and where, spec
    lines by the mod they came from."""
    captures = traced.captures
    named = []
    for match in re.finditer(r"\bC(?:ap)?(\d+)", message):
        index = int(match.group(1))
        if index < len(captures) and index not in named:
            named.append(index)

    def dim(match):
        index = int(match.group(1))
        if index not in named:
            return match.group(0)
        return "%s.shape[%s]" % (captures[index].label, match.group(2))

    def tensor(match):
        index = int(match.group(1))
        return captures[index].label if index in named else match.group(0)

    def location(match):
        lines = spec.splitlines()
        line = int(match.group(1))
        statement = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        role = None
        if statement.startswith("T["):
            role = "score_mod"
        elif statement.startswith("keep"):
            role = "mask_mod" if "mask_mod" in traced.mods else "score_mod"
        return "in %s %s: " % (role, traced.mods[role]) if role in traced.mods else ""

    first, newline, rest = message.partition("\n")
    first = _SPEC_LOCATION.sub(location, first)
    first = _CAPTURE.sub(tensor, _CAPTURE_DIM.sub(dim, first))
    reads = ["'%s' is read at %s" % (captures[i].label, captures[i].read_at)
             for i in named if captures[i].read_at]
    if reads:
        first += " (%s)" % "; ".join(reads)
    if newline and named:
        rest += "\n(in the traced spec: %s)" % ", ".join(
            "Cap%d is '%s', C%d_<axis> its sizes" % (i, captures[i].label, i) for i in named)
    return first + newline + rest


def _contiguous(x, library, target):
    """`x` as the kernel reads it: dense on the CPU; on a GPU, whose kernels
    take any strides but a unit innermost one, as it is (the kernel copies
    it if it must)."""
    if library == "numpy":
        import numpy as np
        return np.ascontiguousarray(x)
    if target != "cpu":
        return x
    return x if x.is_contiguous() else x.contiguous()


def _target_of(x, library):
    if library == "numpy" or x.device.type == "cpu":
        return "cpu"
    if x.device.type != "cuda":
        raise ValueError("flex_attention: tensors on %s are not supported (cpu or "
                         "cuda)" % x.device)
    import torch
    major, _ = torch.cuda.get_device_capability(x.device)
    return "sm_90a" if major == 9 else "sm_80"


# ---------------------------------------------------------------- kernels

_KERNELS = {}
_SPECS = {}


def _spec_for(traced, gqa, return_lse, value_dim, dtype):
    key = (id(traced), gqa, return_lse, value_dim, dtype)
    entry = _SPECS.get(key)
    if entry is None or entry[0] is not traced:
        entry = _SPECS[key] = (traced, _spec_text(traced, gqa, return_lse, value_dim, dtype))
    return entry[1]


def _deterministic():
    """Whether PyTorch is asked for deterministic algorithms
    (torch.use_deterministic_algorithms): GPU gradients then repeat their
    bits (attnc.compile's `deterministic`)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.are_deterministic_algorithms_enabled()


def _kernel(spec, target, head_dim, value_dim):
    shapes = None
    deterministic = False
    if target != "cpu":
        shapes = {"D": head_dim}
        if value_dim is not None:
            shapes["E"] = value_dim
        deterministic = _deterministic()
    key = (spec, target, tuple(sorted(shapes.items())) if shapes else None,
           deterministic)
    kernel = _KERNELS.get(key)
    if kernel is None:
        from . import compile as attnc_compile
        kernel = _KERNELS[key] = attnc_compile(spec, target=target, dtype=None, shapes=shapes,
                                               deterministic=deterministic)
        # Captured tensors (the inputs after query, key and value) that do
        # not require grad are constants of the GPU backward.
        kernel._optional_gradients = tuple(range(3, len(kernel.inputs)))
    return kernel


def prepare(score_mod=None, mask_mod=None, *, dtype="f32", target="cpu", head_dim=None,
            value_dim=None, gqa=False, return_lse=False, grad=False,
            grad_captures=False):
    """Compiles (or loads) the kernel flex_attention would use for these mods
    without running it; returns (spec text, kernel). `value_dim`: V's head dim
    when it differs from `head_dim`; GPU targets need `head_dim`. With
    `grad`, the kernel's adjoint too (for a GPU target, its package goes
    into the package store beside the forward's): the one for calls whose
    captured tensors do not require grad, or with `grad_captures` the one
    that differentiates them too."""
    if isinstance(mask_mod, BlockMask):
        mask_mod = mask_mod.mask_mod
    traced, _ = _trace_mods(score_mod, mask_mod)
    spec = _spec_for(traced, bool(gqa), bool(return_lse), value_dim is not None, dtype)
    kernel = _kernel(spec, target, head_dim, value_dim)
    if grad:
        kernel._prepare_gradient(
            tuple(range(len(kernel.inputs))) if grad_captures else None)
    return spec, kernel


# ---------------------------------------------------------- flex_attention

def _shape(x, name, what):
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 4:
        raise ValueError("flex_attention: %s must have rank 4 %s, got shape %s" %
                         (name, what, shape))
    return shape


def flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                   enable_gqa=False, return_lse=False, kernel_options=None):
    """Attention with a traced score_mod and mask, as in FlexAttention.

    query [B, Hq, L, E], key [B, Hkv, S, E], value [B, Hkv, S, Ev]; scores
    score_mod(q . k * scale, b, h, q_idx, kv_idx), kept where
    block_mask.mask_mod(b, h, q_idx, kv_idx); scale defaults to 1/sqrt(E);
    enable_gqa maps query head h to key/value head h // (Hq // Hkv). Returns
    the output [B, Hq, L, Ev] in the query's dtype, and with return_lse also
    the natural-log logsumexp of the kept scores [B, Hq, L] (float32). A query
    that keeps no key (S = 0 included) gets output 0 and LSE -inf. numpy
    arrays and torch CPU tensors run on the CPU, CUDA tensors on the GPU.

    float32, bfloat16 and float16 are computed in that type. float64 (numpy
    or torch alike) has no kernels: it is computed in float32 and the output
    returned as float64 (LSE stays float32).

    The mods may be functions, bound methods (model.score_mod), partials or
    objects with a __call__; what they read through closures, globals,
    attributes and dict items is checked on every call, so changing a
    setting (cfg.window = 128) takes effect at the next call.

    Differentiable on torch tensors, CPU and CUDA: when query, key, value
    or a float tensor the mods capture (ALiBi slopes, bias tables) requires
    grad, the call is recorded for autograd and ``backward()`` runs the
    kernel's compiled adjoint, giving each of them its gradient (a captured
    tensor through its conversion to float32, so a leaf gets ``.grad``); the
    LSE takes a gradient too. Integer captures and ``scale`` get none. A
    gradient the target's backward cannot give is an error at the call,
    naming the tensors that require grad."""
    call_key = _call_key(query, key, value, score_mod, block_mask, scale, enable_gqa,
                         return_lse)
    call = _CALLS.get(call_key) if call_key is not None else None
    if call is not None:
        # Everything but what the mods read is as at that call: walk the mods
        # (their reads may have changed) and run the same kernel.
        traced, tensors = _trace_mods(score_mod, call.mask_mod)
        if traced is call.traced:
            return _run(call, query, key, value, tensors)
    libraries = [_library(x, n) for x, n in ((query, "query"), (key, "key"), (value, "value"))]
    if len(set(libraries)) != 1:
        raise TypeError("flex_attention: query, key and value must all be numpy arrays "
                        "or all torch tensors")
    library = libraries[0]
    B, Hq, L, E = _shape(query, "query", "[B, Hq, L, E]")
    Bk, Hkv, S, Ek = _shape(key, "key", "[B, Hkv, S, E]")
    Bv, Hv, Sv, Ev = _shape(value, "value", "[B, Hkv, S, Ev]")
    if Bk != B or Bv != B:
        raise ValueError("flex_attention: batch sizes differ: query %d, key %d, value %d" %
                         (B, Bk, Bv))
    if Hv != Hkv:
        raise ValueError("flex_attention: key has %d heads but value has %d" % (Hkv, Hv))
    if Sv != S:
        raise ValueError("flex_attention: key has sequence length %d but value has %d" % (S, Sv))
    if Ek != E:
        raise ValueError("flex_attention: query has head dim %d but key has %d "
                         "(query [B, Hq, L, E] and key [B, Hkv, S, E] share E)" % (E, Ek))
    if enable_gqa:
        if Hq != Hkv and (Hkv == 0 or Hq % Hkv):
            raise ValueError("flex_attention: enable_gqa: the query heads Hq (%d, "
                             "query.shape[1]) must be a multiple of the key/value heads "
                             "Hkv (%d, key.shape[1] and value.shape[1])" % (Hq, Hkv))
    elif Hq != Hkv:
        raise ValueError("flex_attention: query has %d heads but key/value have %d; "
                         "set enable_gqa=True for grouped-query attention" % (Hq, Hkv))
    dtypes = {str(x.dtype) for x in (query, key, value)}
    if len(dtypes) != 1:
        raise ValueError("flex_attention: query, key and value have different dtypes: %s" %
                         ", ".join(sorted(dtypes)))
    dtype_name = dtypes.pop()
    upcast = dtype_name in ("float64", "torch.float64")
    dtype = "f32" if upcast else _DTYPES.get(dtype_name)
    if dtype is None:
        raise ValueError("flex_attention: dtype %s is not supported (float32, float64, "
                         "bfloat16, float16)" % dtype_name)
    if library == "torch" and len({str(x.device) for x in (query, key, value)}) != 1:
        raise ValueError("flex_attention: query, key and value are on different devices")
    mask_mod = None
    if block_mask is not None:
        if not isinstance(block_mask, BlockMask):
            raise TypeError("flex_attention: block_mask must come from "
                            "attnc.create_block_mask, got %s" % type(block_mask).__name__)
        if block_mask.seq_lengths != (L, S):
            raise ValueError("flex_attention: block_mask was created for (Q_LEN, KV_LEN) = "
                             "%r but query/key have lengths (%d, %d)" %
                             (block_mask.seq_lengths, L, S))
        for axis, (mine, size) in enumerate(zip(block_mask.shape[:2], (B, Hq))):
            if mine not in (1, size):
                raise ValueError("flex_attention: block_mask has %s = %d but query has "
                                 "%d" % ("BH"[axis], mine, size))
        mask_mod = block_mask.mask_mod
        if getattr(mask_mod, "__code__", None) is noop_mask.__code__:
            mask_mod = None
    if score_mod is not None and not callable(score_mod):
        raise TypeError("flex_attention: score_mod must be a function, got %r" % (score_mod,))
    if getattr(scale, "requires_grad", False) and _grad_enabled():
        raise RuntimeError("flex_attention: scale requires grad, but it is a "
                           "constant that gets no gradient; pass a number or "
                           "a detached tensor")
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)

    traced, tensors = _trace_mods(score_mod, mask_mod)
    target = _target_of(query, library)
    if 0 in (B, Hq, L, S):
        result = _without_keys(query, (B, Hq, L, Ev), return_lse, library)
        if library == "torch":
            result = _zero_gradients(result, (query, key, value), tensors)
        return result
    gqa = Hq != Hkv
    call = _Call(traced, mask_mod, library, target, upcast,
                 _spec_for(traced, gqa, bool(return_lse), Ev != E, dtype), E,
                 Ev if Ev != E else None, scale, bool(return_lse),
                 query.device if library == "torch" else None)
    result = _run(call, query, key, value, tensors)
    if call_key is not None:
        if len(_CALLS) >= _CALLS_KEPT:
            _CALLS.pop(next(iter(_CALLS)), None)
        _CALLS[call_key] = call
    return result


class _Call(object):
    """What flex_attention derives from a call's arguments but their data
    and what the mods read: kept by _call_key, so that a call like an
    earlier one only walks the mods and launches."""

    __slots__ = ("traced", "mask_mod", "library", "target", "upcast", "spec", "head_dim",
                 "value_dim", "scale", "return_lse", "device", "kernel")

    def __init__(self, traced, mask_mod, library, target, upcast, spec, head_dim,
                 value_dim, scale, return_lse, device):
        self.traced, self.mask_mod, self.library = traced, mask_mod, library
        self.target, self.upcast, self.spec = target, upcast, spec
        self.head_dim, self.value_dim, self.scale = head_dim, value_dim, scale
        self.return_lse, self.device, self.kernel = return_lse, device, None


# Validated calls by _call_key, oldest first.
_CALLS = {}
_CALLS_KEPT = 64


def _call_key(query, key, value, score_mod, block_mask, scale, enable_gqa, return_lse):
    """What a call's validation depends on besides what the mods read: the
    arguments' types, shapes, dtypes and devices, the mods, the block mask,
    the scale, the flags and whether PyTorch asks for deterministic
    algorithms (which picks the kernel). None for a call that is not kept (a
    scale that is not a number, a mod that cannot be a key)."""
    if scale is not None and type(scale) not in (float, int):
        return None
    try:
        call_key = (type(query), type(key), type(value), tuple(query.shape),
                    tuple(key.shape), tuple(value.shape), query.dtype, key.dtype,
                    value.dtype, getattr(query, "device", None), getattr(key, "device", None),
                    getattr(value, "device", None), score_mod, block_mask, scale,
                    bool(enable_gqa), bool(return_lse), _deterministic())
        hash(call_key)
    except (AttributeError, TypeError):
        return None
    if 0 in call_key[3] or 0 in call_key[4]:
        return None  # nothing to compute: not the kernel's path
    return call_key


def _run(call, query, key, value, tensors):
    """The kernel of `call` on the tensors, and the result as flex_attention
    returns it."""
    library = call.library
    inputs = [_contiguous(x, library, call.target) for x in (query, key, value)]
    if call.upcast:
        inputs = [_cast(x, library, "float32") for x in inputs]
    for tensor, capture in zip(tensors, call.traced.captures):
        inputs.append(_convert_capture(tensor, capture, library, call.device))
    try:
        kernel = call.kernel
        if kernel is None:
            kernel = call.kernel = _kernel(call.spec, call.target, call.head_dim,
                                           call.value_dim)
        result = kernel(*inputs, scale=call.scale)
    except (CompileError, ValueError, TypeError) as error:
        message = _explain(str(error), call.traced, call.spec)
        if message == str(error):
            raise
        raise type(error)(message) from None
    if call.return_lse:
        out, lse = result
    else:
        out = result[0] if isinstance(result, (tuple, list)) else result
    if call.upcast:
        out = _cast(out, library, "float64")
    return (out, lse) if call.return_lse else out




def _grad_enabled():
    torch = sys.modules.get("torch")
    return torch is not None and torch.is_grad_enabled()


def _zero_gradients(result, qkv, tensors):
    """flex_attention's result without keys, recorded for autograd when an
    input requires grad: the inputs get zero gradients."""
    import torch
    inputs = [t for t in list(qkv) + list(tensors)
              if isinstance(t, torch.Tensor) and t.requires_grad]
    if not inputs or not torch.is_grad_enabled():
        return result
    from ._autograd import zero_gradient_result
    outputs = result if isinstance(result, tuple) else (result,)
    outputs = zero_gradient_result(outputs, inputs)
    return outputs if isinstance(result, tuple) else outputs[0]


def _cast(x, library, name):
    if library == "numpy":
        return x.astype(name)
    import torch
    return x.to(getattr(torch, name))


def _without_keys(query, out_shape, return_lse, library):
    """flex_attention's result when there is nothing to compute (no batch,
    head or query, or no key): output 0 and LSE -inf, as FlexAttention
    gives, without compiling or launching a kernel."""
    lse_shape = out_shape[:3]
    if library == "numpy":
        import numpy as np
        out = np.zeros(out_shape, dtype=query.dtype)
        lse = np.full(lse_shape, -np.inf, dtype=np.float32)
    else:
        import torch
        out = torch.zeros(out_shape, dtype=query.dtype, device=query.device)
        lse = torch.full(lse_shape, -math.inf, dtype=torch.float32, device=query.device)
    return (out, lse) if return_lse else out
