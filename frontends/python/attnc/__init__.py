"""attnc: a compiler for attention variants.

    import attnc
    k = attnc.compile("examples/causal.attn", dtype="f32")
    O = k(Q, K, V)                      # NumPy arrays or PyTorch tensors
    dQ, dK, dV = k.vjp(Q, K, V, grad_outputs=(dO,))   # gradients (CPU)
    k(Qt, Kt, Vt).sum().backward()     # torch CPU tensors: autograd

Specs are .attn text or paths. ``target="cpu"`` compiles in this process;
``target="sm_90a"`` / ``"sm_80"`` makes a kernel package (kept in a package
store, see :func:`package_path`) that the runtime launches on CUDA tensors.
:func:`flex_attention` traces FlexAttention ``score_mod`` / ``mask_mod``
functions into specs; :func:`varlen_attention` runs them on packed
variable-length sequences (``cu_seqlens``).

Importing attnc needs neither the compiler nor a GPU: the compiler module
loads when a spec is compiled, the runtime library when a package loads.
"""

from ._spec import VERSION as __version__
from ._spec import CompileError, compile, package_path
from ._runtime import Kernel, load
from ._info import info
from ._flex import (flex_attention, create_block_mask, and_masks, or_masks,
                    noop_mask, BlockMask)
from ._varlen import varlen_attention
from ._trace import trace, where, TraceError
from ._trace import (exp, log, tanh, sigmoid, sqrt, rsqrt, abs, minimum,
                     maximum)

__all__ = [
    "__version__", "CompileError", "Kernel", "compile", "load", "info",
    "package_path", "flex_attention", "varlen_attention",
    "create_block_mask", "and_masks",
    "or_masks", "noop_mask", "BlockMask", "trace", "where", "TraceError",
    "exp", "log", "tanh", "sigmoid", "sqrt", "rsqrt", "abs", "minimum",
    "maximum",
]
