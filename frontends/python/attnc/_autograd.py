"""PyTorch autograd for attnc kernels, on the CPU and on CUDA devices.

A call of a kernel on torch tensors, with grad mode on and a float input
that requires grad, records one autograd node. Its backward runs the
kernel's adjoint (``Kernel.vjp``: the kernel ``<name>_grad`` that attn-grad
builds; on the CPU compiled on first use, on a GPU its package) on the saved
inputs and the output adjoints, and gives every input that requires grad its
gradient in that input's dtype. Params are constants and get no gradient;
integer inputs (document ids, page tables) cannot require grad.

Two ways of recording the node, chosen by the running PyTorch:

* PyTorch 2.4 and later: the custom operators ``attnc::kernel`` and
  ``attnc::kernel_vjp`` (``torch.library.custom_op``) with fake
  implementations (output shapes from the kernel's signature) and
  ``register_autograd``, so that autograd, FakeTensor tracing and
  ``torch.compile(fullgraph=True)`` see one opaque operator per call, and
  its backward one more. The operators name the kernel by a key of this
  module's registry, where every kernel is entered when it is made.
* Older PyTorch: a ``torch.autograd.Function``.
"""

import itertools
import sys
import weakref

from ._runtime import FLOAT_DTYPES

__all__ = ["register", "records_gradient", "call", "zero_gradient_result"]

# Kernels by the key the custom operators name them with. Weak: a kernel
# nobody holds any more is freed, and its key is never given out again.
_KERNELS = weakref.WeakValueDictionary()
_KEY_NUMBERS = itertools.count()


def register(kernel):
    """Enters `kernel` into the registry the custom operators read and
    returns its key (also kept as ``kernel._autograd_key``)."""
    key = getattr(kernel, "_autograd_key", None)
    if key is None or _KERNELS.get(key) is not kernel:
        key = "%s#%d" % (kernel.name, next(_KEY_NUMBERS))
        _KERNELS[key] = kernel
        kernel._autograd_key = key
    torch = sys.modules.get("torch")
    if torch is not None and _has_custom_ops(torch):
        # Defined before torch.compile can trace a call.
        _custom_ops(torch)
    return key


def _lookup(key):
    kernel = _KERNELS.get(key)
    if kernel is None:
        raise RuntimeError("attnc: kernel '%s' no longer exists (a graph "
                           "that calls it outlived it)" % key)
    return kernel


# ------------------------------------------------------------ which path

def _has_custom_ops(torch):
    library = getattr(torch, "library", None)
    return (hasattr(library, "custom_op") and
            hasattr(library, "register_fake"))


def _compiling(torch):
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    dynamo = getattr(torch, "_dynamo", None)
    if dynamo is not None and hasattr(dynamo, "is_compiling"):
        return dynamo.is_compiling()
    return False


# Tests set this to False to exercise the autograd.Function on a PyTorch
# that has custom operators.
USE_CUSTOM_OPS = True


def _uses_custom_ops(torch):
    return USE_CUSTOM_OPS and _has_custom_ops(torch)


def records_gradient(args, kwargs):
    """Whether a kernel call with these arguments goes through
    :func:`call`: some argument is a torch tensor, and either grad mode is on
    and a tensor argument requires grad, or torch.compile is tracing the call
    (it then sees the custom operator instead of the native launch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    tensors = [x for x in itertools.chain(args, kwargs.values())
               if isinstance(x, torch.Tensor)]
    if not tensors:
        return False
    if _uses_custom_ops(torch) and _compiling(torch):
        return True
    return torch.is_grad_enabled() and any(x.requires_grad for x in tensors)


# ------------------------------------------------------------ the call

class _Call(object):
    """What a recorded call needs besides its input tensors: the kernel, and
    its params and named dims as keyword arguments."""

    def __init__(self, kernel, keywords):
        self.kernel = kernel
        self.keywords = keywords


def call(kernel, args, kwargs):
    """Runs `kernel` on `args` / `kwargs` (as ``kernel(*args, **kwargs)``)
    and records the autograd node: the kernel's outputs, one tensor or a
    tuple."""
    torch = sys.modules["torch"]
    for name, value in kwargs.items():
        if (name not in kernel.inputs and isinstance(value, torch.Tensor) and
                value.requires_grad and torch.is_grad_enabled()):
            raise RuntimeError(
                "attnc: '%s' of kernel '%s' requires grad, but params (and "
                "dims) are constants that get no gradient; pass a number or "
                "a detached tensor" % (name, kernel.name))
    inputs, params, dims = kernel._bind_call(args, kwargs)
    keywords = dict(zip(kernel.params, params))
    keywords.update(dims)
    inputs = [x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
              for x in inputs]
    compiling = _compiling(torch)
    if torch.is_grad_enabled() and not compiling:
        needed = [i for i, x in enumerate(inputs) if x.requires_grad]
        if needed:
            _prepare_gradient(kernel, needed)
    if _uses_custom_ops(torch):
        # register() defines the operators; torch.compile traces calls of
        # kernels registered (and operators defined) when they were made.
        key = kernel._autograd_key if compiling else register(kernel)
        names = ",".join(keywords)
        values = [float(value) for value in keywords.values()]
        outputs = torch.ops.attnc.kernel(key, names, inputs, values)
    else:
        outputs = _function(torch).apply(_Call(kernel, keywords), *inputs)
    outputs = tuple(outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def _prepare_gradient(kernel, needed):
    """Compiles the adjoint kernel (once per kernel) before the forward runs,
    so that a kernel attnc cannot differentiate fails at the call, naming the
    inputs that asked for a gradient."""
    from ._spec import CompileError
    wanted = ", ".join("'%s'" % kernel.inputs[i] for i in needed)
    try:
        differentiated = kernel._prepare_gradient(needed)
    except CompileError as error:
        raise CompileError(
            "attnc cannot differentiate kernel '%s' (inputs that require "
            "grad: %s): %s" % (kernel.name, wanted, error)) from None
    missing = [kernel.inputs[i] for i in needed if i not in differentiated]
    if missing:
        raise RuntimeError(
            "attnc gives no gradient for input%s %s of kernel '%s', which "
            "require%s grad" % (
                "s" if len(missing) > 1 else "",
                ", ".join("'%s'" % name for name in missing), kernel.name,
                "" if len(missing) > 1 else "s"))


def _outputs_list(outputs):
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _needed_inputs(kernel, needs):
    """The indices of the float inputs whose `needs` flag is set."""
    return [i for i, ((_, dtype, _), need) in
            enumerate(zip(kernel._input_specs, needs))
            if need and dtype in FLOAT_DTYPES]


def _adjoint_array(torch, grad):
    """An output adjoint as a dense float32 NumPy array over the tensor's
    memory where it already is one (no float64 round trip)."""
    grad = grad.detach()
    if grad.dtype != torch.float32:
        grad = grad.to(torch.float32)
    return grad.contiguous().numpy()


def _input_gradients(torch, kernel, keywords, inputs, grads, needs):
    """kernel.vjp on the saved inputs and the output adjoints (None: zero):
    one float32 tensor per float input that `needs` a gradient (a GPU
    kernel may give None for the others), None per integer input."""
    if kernel.target != "cpu":
        return kernel.vjp(*inputs, grad_outputs=tuple(grads),
                          constant_inputs=kernel._constant_inputs(
                              [i for i, need in enumerate(needs) if need]),
                          **keywords)
    adjoints = []
    for grad, (_, dtype, _) in zip(grads, kernel._output_specs):
        if grad is None or dtype not in FLOAT_DTYPES:
            adjoints.append(None)
        else:
            adjoints.append(_adjoint_array(torch, grad))
    gradients = kernel.vjp(*inputs, grad_outputs=tuple(adjoints), **keywords)
    return [g if g is None or isinstance(g, torch.Tensor) else
            torch.from_numpy(g) for g in gradients]


def _cast_gradients(kernel, inputs, gradients, needs):
    """The gradients the inputs that require grad receive, each in its
    input's dtype; None for the others."""
    result = []
    for index, (x, need, gradient) in enumerate(zip(inputs, needs,
                                                     gradients)):
        if not need:
            result.append(None)
            continue
        if gradient is None:
            raise RuntimeError("attnc gives no gradient for input '%s' of "
                               "kernel '%s'" % (kernel.inputs[index],
                                                kernel.name))
        result.append(gradient if gradient.dtype == x.dtype
                      else gradient.to(x.dtype))
    return result


# ------------------------------------------ torch.autograd.Function path

_FUNCTION = None


def _function(torch):
    """The autograd.Function that records a kernel call (made once)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    from torch.autograd.function import once_differentiable

    class KernelCall(torch.autograd.Function):
        """One call of an attnc kernel; backward through its vjp."""

        @staticmethod
        def forward(ctx, call, *inputs):
            ctx.set_materialize_grads(False)
            ctx.call = call
            kernel = call.kernel
            outputs = _outputs_list(kernel._run(inputs, call.keywords))
            ctx.save_for_backward(*inputs)
            constant = [o for o, (_, dtype, _) in
                        zip(outputs, kernel._output_specs)
                        if dtype not in FLOAT_DTYPES]
            if constant:
                ctx.mark_non_differentiable(*constant)
            return tuple(outputs)

        @staticmethod
        @once_differentiable
        def backward(ctx, *grads):
            inputs = ctx.saved_tensors
            needs = ctx.needs_input_grad[1:]
            call = ctx.call
            if not any(needs):
                return (None,) * (1 + len(inputs))
            gradients = _input_gradients(torch, call.kernel, call.keywords,
                                         inputs, grads, needs)
            return (None,) + tuple(_cast_gradients(call.kernel, inputs,
                                                   gradients, needs))

    _FUNCTION = KernelCall
    return _FUNCTION


# ------------------------------------------------- custom operator path

_OPS_DEFINED = False


def _keywords(names, values):
    if not names:
        return {}
    return dict(zip(names.split(","), values))


def _custom_ops(torch):
    """Defines attnc::kernel and attnc::kernel_vjp (once); calls
    reach them as torch.ops.attnc.*."""
    global _OPS_DEFINED
    if _OPS_DEFINED:
        return
    from typing import List, Optional
    Tensor = torch.Tensor

    @torch.library.custom_op("attnc::kernel", mutates_args=())
    def kernel_op(kernel: str, keywords: str, inputs: List[Tensor],
                  values: List[float]) -> List[Tensor]:
        """Runs the registered kernel `kernel` on `inputs`, with its
        params and named dims `keywords` (comma-separated) = `values`."""
        k = _lookup(kernel)
        return _outputs_list(k._run(list(inputs), _keywords(keywords,
                                                            values)))

    @kernel_op.register_fake
    def _(kernel, keywords, inputs, values):
        k = _lookup(kernel)
        keyword_values = _keywords(keywords, values)
        _, _, given = k._bind_call(list(inputs), keyword_values)
        dims = k._bind_dims([tuple(x.shape) for x in inputs], given)
        from ._runtime import torch_dtype
        return [inputs[0].new_empty(shape, dtype=torch_dtype(dtype))
                for shape, (_, dtype, _) in zip(k._output_shapes(dims),
                                                k._output_specs)]

    @torch.library.custom_op("attnc::kernel_vjp", mutates_args=())
    def kernel_vjp_op(kernel: str, keywords: str, inputs: List[Tensor],
                      values: List[float],
                      grad_outputs: List[Optional[Tensor]],
                      needs: List[bool]) -> List[Tensor]:
        """The float32 gradients of the registered kernel `kernel` with
        respect to its float inputs that `needs` one, in input order, for
        the output adjoints `grad_outputs` (None: zero)."""
        k = _lookup(kernel)
        inputs = list(inputs)
        gradients = _input_gradients(torch, k, _keywords(keywords, values),
                                     inputs, list(grad_outputs), needs)
        result = []
        for index in _needed_inputs(k, needs):
            if gradients[index] is None:
                raise RuntimeError("attnc gives no gradient for input '%s' "
                                   "of kernel '%s'" % (k.inputs[index],
                                                       k.name))
            result.append(gradients[index])
        return result

    @kernel_vjp_op.register_fake
    def _(kernel, keywords, inputs, values, grad_outputs, needs):
        k = _lookup(kernel)
        return [inputs[i].new_empty(inputs[i].shape, dtype=torch.float32)
                for i in _needed_inputs(k, needs)]

    def setup_context(ctx, inputs, output):
        kernel, keywords, tensors, values = inputs
        ctx.kernel_key = kernel
        ctx.keywords = keywords
        ctx.values = list(values)
        ctx.save_for_backward(*tensors)

    def backward(ctx, grads):
        tensors = list(ctx.saved_tensors)
        needs = list(ctx.needs_input_grad[2])
        # A list input is one leaf when it holds numbers, none when empty:
        # its gradient must have the same structure.
        no_values_gradient = [] if not ctx.values else None
        if not any(needs):
            return None, None, [None] * len(tensors), no_values_gradient
        k = _lookup(ctx.kernel_key)
        adjoints = [g if g is not None and dtype in FLOAT_DTYPES else None
                    for g, (_, dtype, _) in zip(grads, k._output_specs)]
        flat = torch.ops.attnc.kernel_vjp(ctx.kernel_key, ctx.keywords,
                                          tensors, ctx.values, adjoints,
                                          needs)
        gradients = [None] * len(tensors)
        for position, index in enumerate(_needed_inputs(k, needs)):
            gradients[index] = flat[position]
        return (None, None, _cast_gradients(k, tensors, gradients, needs),
                no_values_gradient)

    kernel_op.register_autograd(backward, setup_context=setup_context)
    _OPS_DEFINED = True


# -------------------------------------------------------- special cases

_ZERO_GRADIENT = None


def zero_gradient_result(outputs, inputs):
    """`outputs` (fresh tensors that do not depend on `inputs`' values, such
    as flex_attention's result when there is no key) recorded as computed
    from `inputs`, whose gradients are zero: a loss on them backpropagates
    and every input that requires grad gets a zero gradient. Returns the
    outputs as a tuple."""
    torch = sys.modules["torch"]
    global _ZERO_GRADIENT
    if _ZERO_GRADIENT is None:
        class ZeroGradient(torch.autograd.Function):
            @staticmethod
            def forward(ctx, count, *tensors):
                ctx.shapes = [(x.shape, x.dtype, x.device)
                              for x in tensors[count:]]
                return tuple(x.clone() for x in tensors[:count])

            @staticmethod
            def backward(ctx, *grads):
                return (None,) + (None,) * len(grads) + tuple(
                    torch.zeros(shape, dtype=dtype, device=device)
                    for shape, dtype, device in ctx.shapes)

        _ZERO_GRADIENT = ZeroGradient
    return tuple(_ZERO_GRADIENT.apply(len(outputs), *outputs, *inputs))
