"""Tracing FlexAttention-style ``score_mod`` / ``mask_mod`` functions into `.attn` specs.

A mod (a function, a bound method, a functools.partial or an object with a
Python ``__call__``) is called once with proxy objects: ``score`` stands for
the scaled score ``S[b,h,m,n]``, ``b, h, q_idx, kv_idx`` for the index values
``b, h, m, n``. Arithmetic on proxies builds an expression tree that is
printed as `.attn` text. Tensors the mod reads (through closure cells,
globals, default arguments, object attributes and dict items, nested
functions, methods and ``and_masks`` / ``or_masks``) become extra inputs of
the spec (``in Cap0: i32[C0_0]``) with dims of their own, so that a new
sequence length never changes the spec; plain numbers the mod reads (a window
size) are constants of the spec.

A trace is reused while it would come out the same: the key is the mods' code
with what their closures, globals and defaults hold (constants by value,
tensors by dtype class and rank, objects by type), and every read through an
object (``cfg.window``, ``d["w"]``, ``self.slopes``, ``config.W``) is a guard
replayed before reuse. A trace that depends on something a guard cannot
replay (a builtin method of a held object, writing to it) is not reused.

The `.attn` scalar language has ``+ - * / % ^``, comparisons, ``and or not``,
``select`` and a few functions; the mapping of Python's operators:

* ``/`` is true division (int / int gives a float, as in PyTorch);
* ``//`` is floor division (floats: ``floor(a / b)``), ``%`` the floored
  remainder (Python's and ``torch.remainder``'s sign rule);
* ``**`` with a small non-negative integer exponent is repeated
  multiplication, ``** 0.5`` is ``sqrt``, anything else a float ``^``;
* ``&``, ``|``, ``^``, ``~`` on booleans are ``and``, ``or``, ``!=``, ``not``
  (``~`` on integers is ``-x - 1``); bitwise operators on integers are not in
  the language;
* a score_mod may return ``-inf`` from a ``where`` branch (possibly plus or
  times a positive constant): those entries become masked, as in FlexAttention.
"""

import collections
import dis
import enum
import functools
import math
import os
import sys
import types

__all__ = ["trace", "where", "TraceError", "exp", "log", "tanh", "sigmoid",
           "sqrt", "rsqrt", "abs", "minimum", "maximum"]

_builtin_abs = abs
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class TraceError(Exception):
    """A mod does something that cannot be traced into a spec."""


def _user_location():
    """file:line of the innermost frame outside attnc (and torch's and
    NumPy's dispatch)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        inside = (filename.startswith(_PACKAGE_DIR + os.sep) or
                  (os.sep + "torch" + os.sep) in filename or
                  (os.sep + "numpy" + os.sep) in filename or
                  frame.f_code.co_filename.startswith("<__array_function__"))
        if not inside:
            return frame, "%s:%d" % (frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None, "<unknown>"


def _fail(message):
    _, where_ = _user_location()
    raise TraceError("%s: %s" % (where_, message))


def _source_line(frame):
    if frame is None:
        return ""
    import linecache
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()


# ---------------------------------------------------------------- expressions
# Nodes are tuples (op, kind, payload...); kind is "float", "int" or "bool".

_OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _POW, _ATOM = range(1, 10)
_CMP_OPS = ("<", "<=", ">", ">=", "==", "!=")
_FLOAT_FUNCS = ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "softplus")


def _lit(value):
    if isinstance(value, bool):
        return ("lit", "bool", value)
    if isinstance(value, int):
        return ("lit", "int", value)
    return ("lit", "float", float(value))


def _var(name, kind="int"):
    return ("var", kind, name)


def _is_lit(node, value=None):
    return node[0] == "lit" and (value is None or node[2] == value)


def _arith_kind(a, b):
    return "float" if "float" in (a[1], b[1]) else "int"


def _children(node):
    op = node[0]
    if op in ("lit", "var"):
        return ()
    if op in ("call", "read"):
        return node[3]
    if op in ("not", "neg"):
        return (node[2],)
    return (node[3], node[4])


def _has_inf(node):
    if node[0] == "lit":
        return node[1] == "float" and math.isinf(node[2])
    return any(_has_inf(x) for x in _children(node))


def _bin(op, a, b):
    if op in ("and", "or"):
        for x, y in ((a, b), (b, a)):
            if _is_lit(x):
                if x[2] == (op == "and"):
                    return y
                return _lit(op == "or")
        return ("bin", "bool", op, a, b)
    if op in _CMP_OPS:
        return ("bin", "bool", op, a, b)
    if op == "^":
        return ("bin", "float", op, a, b)
    return ("bin", _arith_kind(a, b), op, a, b)


def _not(a):
    if _is_lit(a):
        return _lit(not a[2])
    if a[0] == "not":
        return a[2]
    return ("not", "bool", a)


def _to_float(node):
    if node[1] == "float":
        return node
    if node[0] == "lit":
        return _lit(float(node[2]))
    return _bin("*", node, _lit(1.0))


def _call(name, *args):
    if name == "select":
        cond, a, b = args
        if _is_lit(cond):
            return a if cond[2] else b
        kind = "bool" if a[1] == b[1] == "bool" else _arith_kind(a, b)
        return ("call", kind, name, args)
    if name in ("min", "max"):
        return ("call", _arith_kind(*args), name, args)
    if name in ("abs", "relu"):
        return ("call", "float" if args[0][1] == "float" else "int", name, args)
    return ("call", "float", name, args)


def _render(node):
    """(text, precedence) of a node in `.attn` syntax."""
    op = node[0]
    if op == "lit":
        value = node[2]
        if node[1] == "bool":
            return ("0 == 0" if value else "0 != 0"), _CMP
        if node[1] == "int":
            return str(value), (_NEG if value < 0 else _ATOM)
        if math.isinf(value) or math.isnan(value):
            raise TraceError(
                "%r cannot appear in a spec; a score_mod may return -inf from "
                "a where(...) branch, anything else needs a mask_mod" % value)
        text = repr(value)
        return text, (_NEG if value < 0 else _ATOM)
    if op == "var":
        return node[2], _ATOM
    if op == "read":
        subs = []
        for sub in node[3]:
            if sub[0] == "var" and sub[2] in ("b", "h", "m", "n"):
                # `+ 0`: the axis keeps its own dim instead of taking the
                # index's range (a whole index would tie the two sizes).
                subs.append(sub[2] + " + 0")
            else:
                subs.append(_render(sub)[0])
        return "%s[%s]" % (node[2], ", ".join(subs)), _ATOM
    if op == "not":
        return "not " + _wrap(node[2], _NOT), _NOT
    if op == "neg":
        text = _wrap(node[2], _NEG)
        if text.startswith("-"):
            text = "(" + text + ")"
        return "-" + text, _NEG
    if op == "call":
        return "%s(%s)" % (node[2], ", ".join(_render(a)[0] for a in node[3])), _ATOM
    # Binary.
    name, a, b = node[2], node[3], node[4]
    if name == "or":
        return "%s or %s" % (_wrap(a, _OR), _wrap(b, _AND)), _OR
    if name == "and":
        return "%s and %s" % (_wrap(a, _AND), _wrap(b, _NOT)), _AND
    if name in _CMP_OPS:
        return "%s %s %s" % (_wrap(a, _ADD), name, _wrap(b, _ADD)), _CMP
    if name in ("+", "-"):
        return "%s %s %s" % (_wrap(a, _ADD), name, _wrap(b, _MUL)), _ADD
    if name in ("*", "/", "%"):
        return "%s %s %s" % (_wrap(a, _MUL), name, _wrap(b, _NEG)), _MUL
    return "%s ^ %s" % (_wrap(a, _ATOM), _wrap(b, _NEG)), _POW


def _wrap(node, level):
    text, prec = _render(node)
    return text if prec >= level else "(" + text + ")"


def _split_inf(node):
    """Splits a score expression that may be -inf into (value, keep).

    `value` is the expression without infinities (None where it is always
    -inf), `keep` a boolean node: the entries where the score is finite."""
    true, false = _lit(True), _lit(False)
    if not _has_inf(node):
        return node, true
    if node[0] == "lit":
        if node[2] < 0:
            return None, false
    elif node[0] == "call" and node[2] == "select":
        cond, a, b = node[3]
        if _has_inf(cond):
            raise TraceError("-inf inside the condition of a where(...)")
        va, ka = _split_inf(a)
        vb, kb = _split_inf(b)
        if va is None:
            return vb, _bin("and", _not(cond), kb)
        if vb is None:
            return va, _bin("and", cond, ka)
        keep = true
        if not (_is_lit(ka, True) and _is_lit(kb, True)):
            keep = _bin("or", _bin("and", cond, ka), _bin("and", _not(cond), kb))
        return _call("select", cond, va, vb), keep
    elif node[0] == "bin" and node[2] in ("+", "-", "*", "/"):
        name, a, b = node[2], node[3], node[4]
        positive = lambda x: _is_lit(x) and x[1] != "bool" and x[2] > 0
        if name in ("*", "/") and not (positive(b) or (name == "*" and positive(a))):
            return _inf_unsupported(node)
        if name == "-" and _has_inf(b):
            return _inf_unsupported(node)
        va, ka = _split_inf(a)
        vb, kb = _split_inf(b)
        if va is None or vb is None:
            return None, false
        return _bin(name, va, vb), _bin("and", ka, kb)
    elif node[0] == "call" and node[2] == "min":
        va, ka = _split_inf(node[3][0])
        vb, kb = _split_inf(node[3][1])
        if va is None or vb is None:
            return None, false
        return _call("min", va, vb), _bin("and", ka, kb)
    return _inf_unsupported(node)


def _inf_unsupported(node):
    raise TraceError(
        "the score_mod computes an infinity the spec cannot express (%s); "
        "return -inf only from a where(...) branch, or use a mask_mod" %
        _describe_node(node))


def _describe_node(node):
    try:
        return _render(node)[0]
    except TraceError:
        return "an expression with inf"


# -------------------------------------------------------------------- proxies

def _node_of(value):
    """The expression node of a proxy or a Python / 0-d tensor constant."""
    if isinstance(value, Proxy):
        return value._node
    if isinstance(value, (bool, int, float)):
        return _lit(value)
    if isinstance(value, _CapturedTensor):
        if value._rank == 0:
            return value._scalar()._node
        _fail("captured tensor '%s' of rank %d is used without subscripts" %
              (value._label, value._rank))
    tname = type(value).__module__ + "." + type(value).__name__
    if isinstance(value, _Guarded):
        tname = "%s (%s)" % (_guarded_parts(value)[2], value.__class__.__name__)
    if tname.startswith("numpy.") and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return _lit(value.item())
    if tname.startswith("torch.") and hasattr(value, "item") and value.dim() == 0:
        return _lit(value.item())
    _fail("cannot use a %s in a traced expression (only traced values, Python "
          "numbers and captured tensors indexed by b, h, q_idx, kv_idx)" % tname)


def _is_operand(value):
    return isinstance(value, (Proxy, bool, int, float, _CapturedTensor)) or (
        type(value).__module__.split(".")[0] in ("numpy", "torch") and
        getattr(value, "ndim", None) == 0)


def _wrap_node(node):
    return Proxy(node)


def _binary(op, a, b):
    na, nb = _node_of(a), _node_of(b)
    if op == "/":
        return Proxy(_bin("/", _to_float(na), nb))
    if op == "//":
        if na[1] != "float" and nb[1] != "float":
            return Proxy(_bin("/", na, nb))
        q = _bin("/", _to_float(na), nb)
        return Proxy(_bin("-", q, _bin("%", q, _lit(1.0))))
    if op == "**":
        if nb[0] == "lit" and nb[1] == "int" and 0 <= nb[2] <= 4:
            if nb[2] == 0:
                return Proxy(_lit(1.0 if na[1] == "float" else 1))
            out = na
            for _ in range(nb[2] - 1):
                out = _bin("*", out, na)
            return Proxy(out)
        if _is_lit(nb, 0.5):
            return Proxy(_call("sqrt", na))
        return Proxy(_bin("^", na, nb))
    if op in ("&", "|", "^b"):
        if na[1] != "bool" or nb[1] != "bool":
            _fail("bitwise '%s' on integers is not in the .attn language; "
                  "'&', '|', '^' work on booleans (comparisons)" % op[0])
        name = {"&": "and", "|": "or", "^b": "!="}[op]
        return Proxy(_bin(name, na, nb))
    return Proxy(_bin(op, na, nb))


def _unsupported(construct, hint):
    def method(self, *args, **kwargs):
        _fail("%s on a traced value is not supported: %s" % (construct, hint))
    return method


_BOOL_HINT = ("a mod is traced once into a spec, not run per element, so its "
              "control flow cannot depend on traced values; use "
              "attnc.where(cond, a, b) (or torch.where) instead of if/else, "
              "'&', '|', '~' instead of and/or/not, split chained comparisons "
              "(a <= x < b) into (a <= x) & (x < b), and attnc.minimum / "
              "attnc.maximum instead of min() / max()")


_CAPTURE_HINT = (
    "attnc captures the tensors (numpy arrays, torch tensors) a mod reads "
    "through its closure, globals, default arguments, object attributes and "
    "dict items, not tensors it makes or gets from calls; Python lists "
    "cannot be indexed by traced values (make them arrays)")


def _numpy_ufunc(self, ufunc, method, *inputs, **kwargs):
    """NumPy ufuncs on traced values: those with a tracer equivalent are
    traced (np.exp, np.add, np.minimum, ...; a NumPy scalar operand gets
    here too), the others fail naming what to use instead."""
    name = getattr(ufunc, "__name__", str(ufunc))
    handler = _NUMPY_UFUNCS.get(name)
    if handler is None or method != "__call__" or kwargs:
        _numpy_unsupported("numpy.%s%s" % (name, "" if method == "__call__" else
                                            "." + method), inputs)
    return handler(*inputs)


def _numpy_function(self, func, types_, args, kwargs):
    """NumPy functions that are not ufuncs (np.where, np.clip) on traced values."""
    name = getattr(func, "__name__", str(func))
    if name == "where" and len(args) == 3 and not kwargs:
        return where(*args)
    if name == "clip" and len(args) == 3 and not kwargs:
        return _clamp(*args)
    _numpy_unsupported("numpy.%s" % name, args)


def _numpy_unsupported(what, args):
    traced = next((a for a in args if isinstance(a, (Proxy, _CapturedTensor))), None)
    if isinstance(traced, Proxy):
        value = "a traced %s (%s)" % (traced._node[1], _describe_node(traced._node))
    else:
        value = "a traced value"
    _fail("%s is applied to %s: a mod is traced once with symbolic score, b, "
          "h, q_idx and kv_idx into a spec, not run on arrays, and %s has no "
          "equivalent there; use the functions the tracer supports: attnc.exp, "
          "log, tanh, sigmoid, sqrt, rsqrt, abs, minimum, maximum and where, "
          "their torch.* namesakes (also clamp, softplus, relu), or numpy's exp, "
          "log, tanh, sqrt, absolute, square, minimum, maximum, where, clip and "
          "its arithmetic, comparison and logical functions" % (what, value, what))


class Proxy(object):
    """A traced scalar expression (a float score, an integer index, a boolean)."""

    __slots__ = ("_node",)
    __array_ufunc__ = _numpy_ufunc
    __array_function__ = _numpy_function
    __array_priority__ = 1000

    def __init__(self, node):
        self._node = node

    @property
    def dtype(self):
        return self._node[1]

    def __repr__(self):
        return "<attnc traced %s: %s>" % (self._node[1], _describe_node(self._node))

    # Arithmetic.
    def __add__(self, o): return _binary("+", self, o)
    def __radd__(self, o): return _binary("+", o, self)
    def __sub__(self, o): return _binary("-", self, o)
    def __rsub__(self, o): return _binary("-", o, self)
    def __mul__(self, o): return _binary("*", self, o)
    def __rmul__(self, o): return _binary("*", o, self)
    def __truediv__(self, o): return _binary("/", self, o)
    def __rtruediv__(self, o): return _binary("/", o, self)
    def __floordiv__(self, o): return _binary("//", self, o)
    def __rfloordiv__(self, o): return _binary("//", o, self)
    def __mod__(self, o): return _binary("%", self, o)
    def __rmod__(self, o): return _binary("%", o, self)
    def __pow__(self, o): return _binary("**", self, o)
    def __rpow__(self, o): return _binary("**", o, self)
    def __and__(self, o): return _binary("&", self, o)
    def __rand__(self, o): return _binary("&", o, self)
    def __or__(self, o): return _binary("|", self, o)
    def __ror__(self, o): return _binary("|", o, self)
    def __xor__(self, o): return _binary("^b", self, o)
    def __rxor__(self, o): return _binary("^b", o, self)

    def __neg__(self):
        node = self._node
        if node[0] == "lit":
            return Proxy(_lit(-node[2]))
        if node[1] == "bool":
            node = _call("select", node, _lit(1), _lit(0))
        return Proxy(("neg", node[1], node))

    def __pos__(self):
        return self

    def __abs__(self):
        return Proxy(_call("abs", self._node))

    def __invert__(self):
        if self._node[1] == "bool":
            return Proxy(_not(self._node))
        if self._node[1] == "int":
            return Proxy(_bin("-", ("neg", "int", self._node), _lit(1)))
        _fail("'~' on a float is not defined")

    # Comparisons.
    def __lt__(self, o): return _binary("<", self, o)
    def __le__(self, o): return _binary("<=", self, o)
    def __gt__(self, o): return _binary(">", self, o)
    def __ge__(self, o): return _binary(">=", self, o)
    def __eq__(self, o): return _binary("==", self, o)
    def __ne__(self, o): return _binary("!=", self, o)
    __hash__ = object.__hash__

    # Conversions Python would need a concrete value for.
    def __bool__(self):
        frame, _ = _user_location()
        line = _source_line(frame)
        word = line.split(" ", 1)[0] if line else ""
        if word in ("if", "elif", "while", "assert"):
            construct = "Python '%s'" % word
        elif " if " in line and " else " in line:
            construct = "a conditional expression (x if c else y)"
        else:
            construct = "bool() (also: and / or / not, chained comparisons, min() / max())"
        _fail("%s on a traced value is not supported: %s" % (construct, _BOOL_HINT))

    def __float__(self):
        _fail("float() of a traced value is not supported (math.* functions "
              "need plain numbers): use attnc.exp / attnc.log / attnc.tanh / "
              "... or torch.* functions instead of math.*")

    __int__ = _unsupported("int()", "use '//' for integer division, or "
                           "'.float()' / '* 1.0' for conversions")
    __index__ = _unsupported(
        "using it as an index of a list or of a tensor attnc did not capture",
        _CAPTURE_HINT)
    __array__ = _unsupported(
        "converting it to an array (or indexing a tensor attnc did not capture)",
        _CAPTURE_HINT)
    __len__ = _unsupported("len()", "a traced value is a scalar")
    __iter__ = _unsupported("iteration", "a traced value is a scalar")
    __round__ = _unsupported("round()", "the .attn language has no rounding "
                             "(use '//' for integer division)")

    # Tensor-style methods (score.tanh(), q_idx.float(), ...).
    def exp(self): return exp(self)
    def log(self): return log(self)
    def tanh(self): return tanh(self)
    def sigmoid(self): return sigmoid(self)
    def sqrt(self): return sqrt(self)
    def rsqrt(self): return rsqrt(self)
    def abs(self): return abs(self)
    def neg(self): return -self
    def square(self): return self * self
    def relu(self): return Proxy(_call("relu", self._node))
    def minimum(self, other): return minimum(self, other)
    def maximum(self, other): return maximum(self, other)
    def clamp(self, min=None, max=None): return _clamp(self, min, max)
    clip = clamp
    def logical_not(self): return Proxy(_not(_as_bool(self._node)))
    def logical_and(self, o): return Proxy(_bin("and", _as_bool(self._node), _as_bool(_node_of(o))))
    def logical_or(self, o): return Proxy(_bin("or", _as_bool(self._node), _as_bool(_node_of(o))))
    def float(self): return Proxy(_to_float(self._node))
    def double(self): return self.float()
    def half(self): return self.float()
    def bfloat16(self): return self.float()
    def int(self): return self._to_int()
    def long(self): return self._to_int()
    def bool(self): return Proxy(_as_bool(self._node))
    def clone(self): return self
    def detach(self): return self
    def contiguous(self): return self
    def item(self): _fail(".item() of a traced value: " + _BOOL_HINT)
    def tolist(self): _fail(".tolist() of a traced value: " + _BOOL_HINT)

    def to(self, *args, **kwargs):
        dtype = kwargs.get("dtype", args[0] if args else None)
        name = str(dtype)
        if "bool" in name:
            return self.bool()
        if "int" in name:
            return self._to_int()
        if "float" in name or "half" in name or "double" in name:
            return self.float()
        return self

    type = to
    type_as = lambda self, other: self.to(getattr(other, "dtype", None))

    def _to_int(self):
        if self._node[1] == "float":
            _fail("converting a float to an integer is not in the .attn "
                  "language (no truncation or rounding)")
        if self._node[1] == "bool":
            return Proxy(_call("select", self._node, _lit(1), _lit(0)))
        return self

    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        handler = _TORCH_FUNCS.get(name)
        if handler is None:
            _fail("torch function '%s' is not supported on traced values "
                  "(supported: %s)" % (name, ", ".join(sorted(
                      n for n in _TORCH_FUNCS if not n.startswith("_")))))
        return handler(*args, **kwargs)


def _as_bool(node):
    if node[1] == "bool":
        return node
    return _bin("!=", node, _lit(0.0 if node[1] == "float" else 0))


def _clamp(x, lo=None, hi=None):
    out = x
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out


def _unary_math(name, fn):
    def op(x):
        if isinstance(x, Proxy):
            return Proxy(_call(name, x._node))
        mod = type(x).__module__.split(".")[0]
        if mod in ("numpy", "torch"):
            lib = sys.modules[mod]
            if name == "rsqrt":
                return 1.0 / lib.sqrt(x)
            if name == "sigmoid":
                return 1.0 / (1.0 + lib.exp(-x))
            return getattr(lib, name)(x)
        if isinstance(x, _CapturedTensor):
            return op(Proxy(_node_of(x)))
        return fn(x)
    op.__name__ = name
    op.__doc__ = "%s of a traced value (or of a number or array)." % name
    return op


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


exp = _unary_math("exp", math.exp)
log = _unary_math("log", math.log)
tanh = _unary_math("tanh", math.tanh)
sigmoid = _unary_math("sigmoid", _sigmoid)
sqrt = _unary_math("sqrt", math.sqrt)
rsqrt = _unary_math("rsqrt", lambda x: 1.0 / math.sqrt(x))
_softplus = _unary_math("softplus", lambda x: math.log1p(math.exp(-_builtin_abs(x))) + max(x, 0.0))


def abs(x):
    """Absolute value of a traced value (or of a number or array)."""
    if isinstance(x, (Proxy, _CapturedTensor)):
        return Proxy(_call("abs", _node_of(x)))
    return _builtin_abs(x)


def _min_max(name):
    def op(a, b):
        if isinstance(a, (Proxy, _CapturedTensor)) or isinstance(b, (Proxy, _CapturedTensor)):
            return Proxy(_call(name, _node_of(a), _node_of(b)))
        for v in (a, b):
            mod = type(v).__module__.split(".")[0]
            if mod in ("numpy", "torch"):
                return getattr(sys.modules[mod], name + "imum")(a, b)
        return (min if name == "min" else max)(a, b)
    op.__name__ = name + "imum"
    op.__doc__ = "Elementwise %simum of traced values (or numbers, arrays)." % name
    return op


minimum = _min_max("min")
maximum = _min_max("max")


def where(condition, x, y):
    """`x` where `condition` holds, else `y` (torch.where on traced values)."""
    if not any(isinstance(v, (Proxy, _CapturedTensor)) for v in (condition, x, y)):
        mod = type(condition).__module__.split(".")[0]
        if mod in ("numpy", "torch"):
            return sys.modules[mod].where(condition, x, y)
        return x if condition else y
    cond = _as_bool(_node_of(condition))
    return Proxy(_call("select", cond, _node_of(x), _node_of(y)))


def _torch_binary(op, swap=False):
    def handler(a, b, *rest, **kwargs):
        if rest or kwargs.get("alpha", 1) != 1:
            _fail("torch '%s' with extra arguments is not supported" % op)
        return _binary(op, b, a) if swap else _binary(op, a, b)
    return handler


def _torch_min_max(name):
    def handler(a, b=None, *rest, **kwargs):
        if b is None or rest or kwargs:
            _fail("torch.%s over a traced value needs two operands "
                  "(an elementwise %simum)" % (name, name))
        return (minimum if name == "min" else maximum)(a, b)
    return handler


def _torch_where(condition, x=None, y=None):
    if x is None or y is None:
        _fail("torch.where needs three arguments on traced values")
    return where(condition, x, y)


_TORCH_FUNCS = {
    "where": _torch_where, "exp": exp, "log": log, "tanh": tanh,
    "sigmoid": sigmoid, "sqrt": sqrt, "rsqrt": rsqrt, "abs": abs,
    "absolute": abs, "minimum": minimum, "maximum": maximum,
    "fmin": minimum, "fmax": maximum,
    "min": _torch_min_max("min"), "max": _torch_min_max("max"),
    "clamp": lambda x, min=None, max=None: _clamp(x, min, max),
    "clip": lambda x, min=None, max=None: _clamp(x, min, max),
    "softplus": lambda x, beta=1, threshold=20: _softplus(x) if beta == 1 else
    _softplus(x * beta) / beta,
    "relu": lambda x, inplace=False: Proxy(_call("relu", _node_of(x))),
    "square": lambda x: x * x, "neg": lambda x: -x, "negative": lambda x: -x,
    "logical_not": lambda x: Proxy(_not(_as_bool(_node_of(x)))),
    "logical_and": lambda a, b: Proxy(_bin("and", _as_bool(_node_of(a)), _as_bool(_node_of(b)))),
    "logical_or": lambda a, b: Proxy(_bin("or", _as_bool(_node_of(a)), _as_bool(_node_of(b)))),
    "logical_xor": lambda a, b: Proxy(_bin("!=", _as_bool(_node_of(a)), _as_bool(_node_of(b)))),
    "add": _torch_binary("+"), "sub": _torch_binary("-"),
    "subtract": _torch_binary("-"), "mul": _torch_binary("*"),
    "multiply": _torch_binary("*"), "div": _torch_binary("/"),
    "divide": _torch_binary("/"), "true_divide": _torch_binary("/"),
    "floor_divide": _torch_binary("//"), "remainder": _torch_binary("%"),
    "pow": _torch_binary("**"), "eq": _torch_binary("=="),
    "ne": _torch_binary("!="), "lt": _torch_binary("<"),
    "le": _torch_binary("<="), "gt": _torch_binary(">"),
    "ge": _torch_binary(">="), "bitwise_and": _torch_binary("&"),
    "bitwise_or": _torch_binary("|"), "bitwise_xor": _torch_binary("^b"),
    "bitwise_not": lambda x: ~Proxy(_node_of(x)),
}
for _op, _sym in (("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"),
                  ("floordiv", "//"), ("mod", "%"), ("pow", "**"),
                  ("and", "&"), ("or", "|"), ("xor", "^b")):
    _TORCH_FUNCS["__%s__" % _op] = _torch_binary(_sym)
    _TORCH_FUNCS["__r%s__" % _op] = _torch_binary(_sym, swap=True)
for _op, _sym in (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="),
                  ("eq", "=="), ("ne", "!=")):
    _TORCH_FUNCS["__%s__" % _op] = _torch_binary(_sym)
_TORCH_FUNCS["__neg__"] = lambda x: -x
_TORCH_FUNCS["__invert__"] = lambda x: ~Proxy(_node_of(x))
_TORCH_FUNCS["__getitem__"] = lambda t, i: _fail(
    "a tensor attnc did not capture is indexed by a traced value; " + _CAPTURE_HINT)

_NUMPY_UFUNCS = {name: _TORCH_FUNCS[name] for name in (
    "exp", "log", "tanh", "sqrt", "absolute", "minimum", "maximum", "fmin",
    "fmax", "square", "negative", "logical_not", "logical_and", "logical_or",
    "logical_xor", "add", "subtract", "multiply", "divide", "true_divide",
    "floor_divide", "remainder", "bitwise_and", "bitwise_or", "bitwise_xor")}
_NUMPY_UFUNCS.update(
    fabs=abs, positive=lambda x: x, mod=_TORCH_FUNCS["remainder"],
    power=_torch_binary("**"), invert=_TORCH_FUNCS["bitwise_not"],
    less=_torch_binary("<"), less_equal=_torch_binary("<="),
    greater=_torch_binary(">"), greater_equal=_torch_binary(">="),
    equal=_torch_binary("=="), not_equal=_torch_binary("!="))


# ------------------------------------------------------------------- captures

def _tensor_kind(value):
    """'f', 'i' or 'b' for a numpy array / torch tensor, None for other values."""
    tname = type(value).__module__.split(".")[0]
    if tname == "numpy" and type(value).__name__ == "ndarray":
        pass
    elif tname == "torch" and hasattr(value, "dtype") and hasattr(value, "dim"):
        pass
    else:
        return None
    dtype = str(value.dtype)
    if "bool" in dtype:
        return "b"
    if "complex" in dtype:
        raise TraceError("captured complex tensors are not supported")
    if "float" in dtype or "half" in dtype or "double" in dtype:
        return "f"
    if "int" in dtype:
        return "i"
    raise TraceError("captured tensor of dtype %s is not supported" % dtype)


class _CapturedTensor(object):
    """Stands for a captured tensor while tracing: indexing it reads an input."""

    __array_ufunc__ = _numpy_ufunc
    __array_function__ = _numpy_function
    __array_priority__ = 1000

    def __init__(self, index, kind, rank, label, prefix=(), reads=None):
        self._index, self._kind, self._rank = index, kind, rank
        self._label, self._prefix = label, prefix
        self._reads = {} if reads is None else reads  # index -> file:line

    def _note_read(self):
        if self._index not in self._reads:
            self._reads[self._index] = _user_location()[1]

    @property
    def name(self):
        return "Cap%d" % self._index

    @property
    def ndim(self):
        return self._rank - len(self._prefix)

    def dim(self):
        return self.ndim

    @property
    def shape(self):
        _fail("reading the shape of captured tensor '%s' inside a mod is not "
              "supported: it would make the spec depend on the size" % self._label)

    size = lambda self, *a: self.shape

    def __getitem__(self, subscripts):
        if not isinstance(subscripts, tuple):
            subscripts = (subscripts,)
        subs = list(self._prefix)
        for sub in subscripts:
            if isinstance(sub, slice) or sub is None or sub is Ellipsis:
                _fail("captured tensor '%s': slices are not supported, index it "
                      "with b, h, q_idx, kv_idx expressions" % self._label)
            axis = len(subs)
            if axis >= self._rank:
                _fail("captured tensor '%s' has rank %d but gets %d subscripts" %
                      (self._label, self._rank, len(self._prefix) + len(subscripts)))
            if isinstance(sub, _CapturedTensor) and sub._rank == len(sub._prefix):
                sub = sub._scalar()
            if isinstance(sub, bool) or not isinstance(sub, (int, Proxy)):
                sub_node = _node_of(sub)
            elif isinstance(sub, int):
                sub_node = _lit(sub)
                if sub < 0:
                    sub_node = _bin("-", _var("C%d_%d" % (self._index, axis)), _lit(-sub))
            else:
                sub_node = sub._node
            if sub_node[1] != "int":
                _fail("captured tensor '%s' is indexed by a %s expression; "
                      "subscripts must be integers" % (self._label, sub_node[1]))
            subs.append(sub_node)
        if len(subs) < self._rank:
            return _CapturedTensor(self._index, self._kind, self._rank,
                                   self._label, tuple(subs), self._reads)
        self._note_read()
        node = ("read", "float" if self._kind == "f" else "int", self.name, tuple(subs))
        if self._kind == "b":
            node = _bin("!=", node, _lit(0))
        return Proxy(node)

    def _scalar(self):
        if self._rank != len(self._prefix):
            _fail("captured tensor '%s' needs %d more subscripts" %
                  (self._label, self._rank - len(self._prefix)))
        if self._rank == 0:
            self._note_read()
            node = ("var", "float" if self._kind == "f" else "int", self.name)
            if self._kind == "b":
                node = _bin("!=", node, _lit(0))
            return Proxy(node)
        return self[()]

    def __repr__(self):
        return "<attnc captured tensor %s (%s)>" % (self.name, self._label)

    def _arith(op, swap=False):
        def method(self, other):
            a, b = (other, self._scalar()) if swap else (self._scalar(), other)
            return _binary(op, a, b)
        return method

    __add__, __radd__ = _arith("+"), _arith("+", True)
    __sub__, __rsub__ = _arith("-"), _arith("-", True)
    __mul__, __rmul__ = _arith("*"), _arith("*", True)
    __truediv__, __rtruediv__ = _arith("/"), _arith("/", True)
    __lt__, __le__ = _arith("<"), _arith("<=")
    __gt__, __ge__ = _arith(">"), _arith(">=")
    __eq__, __ne__ = _arith("=="), _arith("!=")
    __hash__ = object.__hash__
    del _arith

    def __neg__(self):
        return -self._scalar()

    def __bool__(self):
        return bool(self._scalar())

    def __float__(self):
        return float(self._scalar())

    def __len__(self):
        _fail("len() of captured tensor '%s' inside a mod is not supported: it "
              "would make the spec depend on the size" % self._label)

    def __iter__(self):
        _fail("iterating over captured tensor '%s' inside a mod is not "
              "supported" % self._label)

    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        return Proxy.__torch_function__(func, types_, args, kwargs)


_CODE_GLOBALS = {}

# Builtins that reach values behind the walker's back (the caller's
# namespaces, code run from text): a trace that names them is not reused.
_NAMESPACE_BUILTINS = frozenset(("globals", "locals", "vars", "eval", "exec",
                                 "__import__"))


def _global_names(code):
    """Names a code object (and the code nested in it) loads as globals."""
    names = _CODE_GLOBALS.get(code)
    if names is None:
        found = []
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in found:
                found.append(ins.argval)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found.extend(n for n in _global_names(const) if n not in found)
        names = _CODE_GLOBALS[code] = tuple(found)
    return names


_CONSTANT_TYPES = (bool, int, float, str, bytes, type(None))
_LIBRARIES = ("attnc", "torch", "numpy")
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodWrapperType,
                      types.WrapperDescriptorType, types.MethodDescriptorType,
                      types.ClassMethodDescriptorType)
# Builtin methods of containers that only read (dict.get, dict.items, ...):
# calling one through a guarded object is itself a guarded read.
_READING_METHODS = frozenset(("get", "keys", "values", "items", "index", "count"))
# How many traces of one key (the same code, constants and capture kinds,
# other values read through objects) are kept.
_TRACES_PER_KEY = 8


def _is_library(module_name):
    return (module_name or "").split(".")[0] in _LIBRARIES


def _is_library_function(fn):
    return _is_library(getattr(fn, "__module__", None)) and not getattr(fn, "_attnc_walk", False)


def _is_immutable_library_value(value):
    """dtypes, devices and ufuncs: used as they are, compared by identity."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.dtype, numpy.ufunc)):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(
        value, (torch.dtype, torch.device, torch.layout, torch.memory_format))


class _Identity(object):
    """Compares a value by identity inside a trace cache key, and keeps it
    alive so that its id is not reused while the key exists."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def _is_guardable_key(key):
    """Whether a key read through a guarded object can be replayed: a
    constant (or a tuple or slice of constants)."""
    if isinstance(key, _CONSTANT_TYPES) or isinstance(key, enum.Enum):
        return True
    if isinstance(key, tuple):
        return all(_is_guardable_key(k) for k in key)
    if isinstance(key, slice):
        return all(_is_guardable_key(k) for k in (key.start, key.stop, key.step))
    return False


def _is_traced(value):
    if isinstance(value, (Proxy, _CapturedTensor)):
        return True
    return isinstance(value, tuple) and any(_is_traced(v) for v in value)


def _perform(obj, step):
    """Does the read that `step` records on `obj`."""
    kind = step[0]
    if kind == "attr":
        return getattr(obj, step[1])
    if kind == "item":
        return obj[step[1]]
    if kind == "len":
        return len(obj)
    if kind == "in":
        return step[1] in obj
    if kind == "iter":
        return list(obj)
    if kind == "bool":
        return bool(obj)
    if kind == "call":
        result = getattr(obj, step[1])(*step[2])
        return list(result) if step[1] in ("keys", "values", "items") else result
    raise AssertionError("unknown read %r" % (step,))


# A read that fails fails the same way when it is replayed (hasattr(), a
# missing key caught by the mod).
_READ_ERRORS = (AttributeError, KeyError, IndexError, TypeError)


def _python_call(target):
    """(attribute, function) that calling `target` runs when that is Python
    code attnc can trace through (forward for a torch.nn.Module), else None."""
    if isinstance(target, type):
        return None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(target, torch.nn.Module):
        return "forward", getattr(type(target), "forward", None)
    call = getattr(type(target), "__call__", None)
    if isinstance(call, types.FunctionType) and not _is_library_function(call):
        return "__call__", call
    return None


def _first_parameter(fn):
    code = fn.__code__
    return code.co_varnames[0] if code.co_argcount else "self"


class _Walker(object):
    """Walks what a mod reads: describes it (the trace cache key and the
    guards), collects the captured tensors in a deterministic order and,
    with build=True, rebuilds the functions with tensors replaced by
    _CapturedTensor objects and other objects by _Guarded stand-ins, which
    record each read through them as a guard.

    Descriptions: ("T", kind, rank, index) a captured tensor, ("C", type,
    value) a constant, ("L", items) a list or tuple, ("F", code, cells,
    globals, defaults) a function, ("BM", function, self) a bound method,
    ("P", ...) a functools.partial, ("I", identity) a library value used as
    it is, ("R", index, identity) an object (an instance, a dict, a module,
    a class) whose contents the trace reads through guards. A guard is
    (root index, read, description of the value read): replayed in order on
    a new walk, the guards of a trace rebuild its roots and captures in the
    same order, and any difference means the trace is stale."""

    def __init__(self, build):
        self.build = build
        self.tensors = []         # the captured tensors, in input order
        self.labels = []          # their Python names or expressions
        self.reads = {}           # tensor index -> file:line of its first read
        self.roots = []           # the objects read through guards
        self.guards = []
        self.uncacheable = None   # why the trace may not be reused, if so
        self._tensor_ids = {}
        self._root_ids = {}
        self._stand_ins = {}      # root index -> _Guarded
        self._functions = {}      # id -> (description, rebuilt function)

    def fork(self):
        """A copy to replay one cache entry's guards on."""
        other = _Walker(self.build)
        for name, value in vars(self).items():
            if isinstance(value, (list, dict)):
                value = type(value)(value)
            setattr(other, name, value)
        return other

    def mark_uncacheable(self, why):
        if self.uncacheable is None:
            self.uncacheable = why

    def mod(self, fn, what):
        """Walks a score_mod / mask_mod: a function, a bound method, a
        functools.partial or an object with a Python __call__ (forward for a
        torch.nn.Module)."""
        if isinstance(fn, types.FunctionType):
            return self.function(fn)
        if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
            return self.walk(fn, what)
        if isinstance(fn, functools.partial) and callable(fn.func):
            return self.walk(fn, what)
        call = _python_call(fn)
        if call is not None and isinstance(call[1], types.FunctionType):
            return self.walk(types.MethodType(call[1], fn), what)
        raise TraceError("%s must be a Python function, a bound method, a "
                         "functools.partial or an object with a __call__ "
                         "method written in Python, got %r" % (what, fn))

    def walk(self, value, label):
        """(description, stand-in while tracing) of a value the mod reads."""
        kind = _tensor_kind(value)
        if kind is not None:
            index = self._tensor_ids.get(id(value))
            if index is None:
                index = self._tensor_ids[id(value)] = len(self.tensors)
                self.tensors.append(value)
                self.labels.append(label)
            rank = value.dim() if callable(getattr(value, "dim", None)) else value.ndim
            desc = ("T", kind, rank, index)
            if not self.build:
                return desc, None
            return desc, _CapturedTensor(index, kind, rank, self.labels[index],
                                         reads=self.reads)
        if isinstance(value, _CONSTANT_TYPES):
            return ("C", type(value).__name__, value), value
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            item = value.item()
            return ("C", type(item).__name__, item), value
        if isinstance(value, enum.Enum) or _is_immutable_library_value(value):
            return ("I", _Identity(value)), value
        if isinstance(value, types.FunctionType):
            if _is_library_function(value):
                return ("I", _Identity(value)), value
            return self.function(value)
        if isinstance(value, types.MethodType):
            return self._method(value, label)
        if isinstance(value, (tuple, list)):
            return self._sequence(value, label)
        if isinstance(value, functools.partial):
            return self._partial(value, label)
        if isinstance(value, _BUILTIN_CALLABLES):
            owner = getattr(value, "__self__", None)
            if (owner is None or isinstance(owner, (types.ModuleType, type) + _CONSTANT_TYPES)
                    or _is_immutable_library_value(owner)):
                return ("I", _Identity(value)), value
            # A builtin method of an object the mod holds (d.get taken
            # early): what it returns is not guarded.
            owner_desc, _ = self.walk(owner, label.rpartition(".")[0] or label)
            desc = ("BI", getattr(value, "__name__", ""), owner_desc)
            return desc, (_UnguardedCall(self, value, label) if self.build else None)
        if isinstance(value, type) and (value.__module__ == "builtins" or
                                        _is_library(value.__module__)):
            return ("I", _Identity(value)), value
        return self._root(value, label)

    def _sequence(self, value, label):
        parts = [self.walk(v, "%s[%d]" % (label, i)) for i, v in enumerate(value)]
        desc = ("L", tuple(d for d, _ in parts))
        if not self.build:
            return desc, None
        if all(new is old for (_, new), old in zip(parts, value)):
            return desc, value
        items = [new for _, new in parts]
        if isinstance(value, list):
            return desc, items
        if hasattr(type(value), "_make"):  # a namedtuple
            return desc, type(value)._make(items)
        return desc, tuple(items)

    def _partial(self, value, label):
        fdesc, fn = self.walk(value.func, label)
        parts = [self.walk(v, label) for v in value.args]
        kparts = [(k, self.walk(v, label + "." + k)) for k, v in sorted(value.keywords.items())]
        desc = ("P", fdesc, tuple(d for d, _ in parts),
                tuple((k, d) for k, (d, _) in kparts))
        if not self.build:
            return desc, None
        return desc, functools.partial(fn, *[v for _, v in parts],
                                       **{k: v for k, (_, v) in kparts})

    def _method(self, value, label):
        func, owner = value.__func__, value.__self__
        owner_desc, owner_new = self.walk(owner, label.rpartition(".")[0] or (
            _first_parameter(func) if isinstance(func, types.FunctionType) else label))
        if isinstance(func, types.FunctionType) and not _is_library_function(func):
            fdesc, fn = self.function(func)
            desc = ("BM", fdesc, owner_desc)
            return desc, (types.MethodType(fn, owner_new) if self.build else None)
        # A library method (torch.nn.Module.parameters): run as it is.
        desc = ("BM", ("I", _Identity(func)), owner_desc)
        return desc, (_UnguardedCall(self, value, label) if self.build else None)

    def _root(self, value, label):
        index = self._root_ids.get(id(value))
        if index is None:
            index = self._root_ids[id(value)] = len(self.roots)
            self.roots.append(value)
            if self.build:
                self._stand_ins[index] = _Guarded(self, index, label)
        identity = value if isinstance(value, (type, types.ModuleType)) else type(value)
        return ("R", index, _Identity(identity)), self._stand_ins.get(index)

    def read(self, index, step, label):
        """Reads through root `index` while tracing, recording the guard."""
        try:
            value = _perform(self.roots[index], step)
        except _READ_ERRORS as error:
            self.guards.append((index, step, ("X", type(error))))
            raise
        desc, new = self.walk(value, label)
        self.guards.append((index, step, desc))
        return new

    def replay(self, guards):
        """Whether every read of a trace still reads what it read then."""
        for index, step, desc in guards:
            if index >= len(self.roots):
                return False
            try:
                value = _perform(self.roots[index], step)
                got = self.walk(value, "")[0]
            except _READ_ERRORS as error:
                got = ("X", type(error))
            except Exception:  # anything else: trace again, and fail there
                return False
            if got != desc:
                return False
        return True

    def function(self, fn):
        memo = self._functions.get(id(fn))
        if memo is not None:
            return memo
        self._functions[id(fn)] = (("F", id(fn)), fn)  # recursion guard
        code = fn.__code__
        cells = []
        cell_descs = []
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:
                cells.append(cell)
                cell_descs.append(("empty",))
                continue
            if name == "__class__":
                # super(): it binds methods that were not walked.
                self.mark_uncacheable("%s calls super()" % fn.__qualname__)
                cells.append(cell)
                cell_descs.append(("I", _Identity(contents)))
                continue
            desc, new = self.walk(contents, name)
            cell_descs.append(desc)
            cells.append(types.CellType(new) if self.build and new is not contents else cell)
        fglobals = fn.__globals__
        global_descs = []
        replaced = {}
        for name in _global_names(code):
            if name not in fglobals:
                if name in _NAMESPACE_BUILTINS:
                    self.mark_uncacheable("%s calls %s()" % (fn.__qualname__, name))
                continue
            value = fglobals[name]
            desc, new = self.walk(value, name)
            global_descs.append((name, desc))
            if self.build and new is not value:
                replaced[name] = new
        defaults = fn.__defaults__ or ()
        default_parts = [self.walk(v, name) for v, name in zip(
            defaults, code.co_varnames[code.co_argcount - len(defaults):])]
        kwdefaults = sorted((fn.__kwdefaults__ or {}).items())
        kw_parts = [(k, self.walk(v, k)) for k, v in kwdefaults]
        desc = ("F", code, tuple(cell_descs), tuple(global_descs),
                tuple(d for d, _ in default_parts), tuple((k, d) for k, (d, _) in kw_parts))
        rebuilt = None
        if self.build:
            new_globals = fglobals
            if replaced:
                new_globals = dict(fglobals)
                new_globals.update(replaced)
            rebuilt = types.FunctionType(
                code, new_globals, fn.__name__,
                tuple(v for _, v in default_parts) or fn.__defaults__, tuple(cells) or None)
            rebuilt.__kwdefaults__ = {k: v for k, (_, v) in kw_parts} or fn.__kwdefaults__
            rebuilt.__qualname__ = fn.__qualname__
        self._functions[id(fn)] = (desc, rebuilt)
        return desc, rebuilt


def _unwrap(value):
    """The object a _Guarded stand-in stands for (other values as they are)."""
    if isinstance(value, _Guarded):
        walker, index, _ = _guarded_parts(value)
        return walker.roots[index]
    return value


def _loads_attribute(frame, name):
    """Whether `frame` is loading attribute `name` (as opposed to a builtin
    such as isinstance() reading it)."""
    for ins in dis.get_instructions(frame.f_code):
        if ins.offset == frame.f_lasti:
            return ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval == name
    return True


def _guarded_parts(stand_in):
    return (object.__getattribute__(stand_in, "_attnc_walker"),
            object.__getattribute__(stand_in, "_attnc_index"),
            object.__getattribute__(stand_in, "_attnc_label"))


class _UnguardedCall(object):
    """Stands for a callable attnc cannot trace through (a builtin method of
    an object the mod holds, a library method): calling it makes the trace
    one that is never reused, since what it returns is not guarded."""

    __slots__ = ("_walker", "_fn", "_label")

    def __init__(self, walker, fn, label):
        self._walker, self._fn, self._label = walker, fn, label

    def __call__(self, *args, **kwargs):
        self._walker.mark_uncacheable("the mod calls %s" % self._label)
        result = self._fn(*[_unwrap(a) for a in args],
                          **{k: _unwrap(v) for k, v in kwargs.items()})
        return self._walker.walk(result, self._label + "(...)")[1]


class _Guarded(object):
    """Stands for an object (an instance, a dict, a module, a class) while a
    mod is traced: each read through it (an attribute, an item, len(), in,
    iteration, truth) becomes a guard of the trace, and what it reads is
    walked like a capture (a tensor becomes an input, a method is traced
    through). Anything else that depends on the object (calling a builtin,
    writing to it, str()) makes the trace one that is never reused."""

    __slots__ = ("_attnc_walker", "_attnc_index", "_attnc_label")

    def __init__(self, walker, index, label):
        object.__setattr__(self, "_attnc_walker", walker)
        object.__setattr__(self, "_attnc_index", index)
        object.__setattr__(self, "_attnc_label", label)

    def __getattr__(self, name):
        walker, index, label = _guarded_parts(self)
        target = walker.roots[index]
        if (name in _READING_METHODS and
                isinstance(getattr(type(target), name, None), _BUILTIN_CALLABLES)):
            def reading_method(*args, **kwargs):
                if kwargs or not _is_guardable_key(args):
                    return _UnguardedCall(walker, getattr(target, name),
                                          "%s.%s" % (label, name))(*args, **kwargs)
                return walker.read(index, ("call", name, args), "%s.%s()" % (label, name))
            return reading_method
        return walker.read(index, ("attr", name), "%s.%s" % (label, name))

    def __getitem__(self, key):
        walker, index, label = _guarded_parts(self)
        if _is_traced(key):
            _fail("'%s' (a %s) is indexed by a traced value: only tensors (numpy "
                  "arrays, torch tensors) can be indexed by b, h, q_idx, kv_idx" %
                  (label, type(walker.roots[index]).__name__))
        if not _is_guardable_key(key):
            walker.mark_uncacheable("the mod reads %s[...] with a key that is not a "
                                    "constant" % label)
            return walker.walk(walker.roots[index][_unwrap(key)], label + "[...]")[1]
        return walker.read(index, ("item", key), "%s[%r]" % (label, key))

    def __len__(self):
        walker, index, label = _guarded_parts(self)
        return walker.read(index, ("len",), "len(%s)" % label)

    def __contains__(self, key):
        walker, index, label = _guarded_parts(self)
        if not _is_guardable_key(key):
            walker.mark_uncacheable("the mod tests '... in %s'" % label)
            return _unwrap(key) in walker.roots[index]
        return walker.read(index, ("in", key), "%r in %s" % (key, label))

    def __iter__(self):
        walker, index, label = _guarded_parts(self)
        return iter(walker.read(index, ("iter",), label))

    def __bool__(self):
        walker, index, label = _guarded_parts(self)
        return walker.read(index, ("bool",), "bool(%s)" % label)

    def __call__(self, *args, **kwargs):
        walker, index, label = _guarded_parts(self)
        call = _python_call(walker.roots[index])
        if call is not None:
            return walker.read(index, ("attr", call[0]), "%s.%s" % (label, call[0]))(
                *args, **kwargs)
        return _UnguardedCall(walker, walker.roots[index], label)(*args, **kwargs)

    @property
    def __class__(self):
        # isinstance() reads it, and the class is part of the root's
        # description; reading attributes through it is not guarded.
        walker, index, label = _guarded_parts(self)
        if _loads_attribute(sys._getframe(1), "__class__"):
            walker.mark_uncacheable("the mod reads %s.__class__" % label)
        return type(walker.roots[index])

    def __instancecheck__(self, instance):
        walker, index, label = _guarded_parts(self)
        if isinstance(instance, (Proxy, _CapturedTensor)):
            walker.mark_uncacheable("the mod tests isinstance(..., %s)" % label)
        return isinstance(_unwrap(instance), walker.roots[index])

    def __subclasscheck__(self, subclass):
        walker, index, _ = _guarded_parts(self)
        return issubclass(_unwrap(subclass), walker.roots[index])

    def __eq__(self, other):
        walker, index, label = _guarded_parts(self)
        target, other = walker.roots[index], _unwrap(other)
        if type(target).__eq__ is not object.__eq__:
            walker.mark_uncacheable("the mod compares %s with ==" % label)
        return target == other

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(_unwrap(self))

    def _forward(name):
        def method(self, *args):
            walker, index, label = _guarded_parts(self)
            walker.mark_uncacheable("the mod uses %s(%s)" % (name.strip("_"), label))
            return getattr(walker.roots[index], name)(*[_unwrap(a) for a in args])
        method.__name__ = name
        return method

    __setattr__, __delattr__ = _forward("__setattr__"), _forward("__delattr__")
    __setitem__, __delitem__ = _forward("__setitem__"), _forward("__delitem__")
    __str__, __repr__ = _forward("__str__"), _forward("__repr__")
    __format__ = _forward("__format__")
    del _forward


# ------------------------------------------------------------------- tracing

STATS = {"traces": 0}
_TRACE_CACHE = {}

# One captured tensor of a trace: its kind ('f', 'i', 'b'), rank, the Python
# name or expression it was read through, and file:line of its first read.
_Capture = collections.namedtuple("_Capture", "kind rank label read_at")


class Traced(object):
    """The result of tracing a score_mod / mask_mod pair."""

    def __init__(self, score, keep, captures, names, mods=()):
        self.score = score        # float node, or None for the identity
        self.keep = keep          # bool node (lit True: no mask)
        self.captures = captures  # [_Capture], input order
        self.names = names        # qualified names of the mods
        self.mods = dict(mods)    # "score_mod" / "mask_mod" -> "name (file:line)"


def _mod_name(fn):
    if isinstance(fn, types.MethodType):
        return _mod_name(fn.__func__)
    if isinstance(fn, functools.partial):
        return "partial(%s)" % _mod_name(fn.func)
    if isinstance(fn, types.FunctionType):
        return fn.__qualname__
    call = _python_call(fn)
    return "%s.%s" % (type(fn).__qualname__, call[0] if call else "__call__")


def _mod_location(fn):
    """'name (file:line)' of a mod, for messages."""
    inner = fn
    while isinstance(inner, (types.MethodType, functools.partial)):
        inner = inner.__func__ if isinstance(inner, types.MethodType) else inner.func
    if not isinstance(inner, types.FunctionType):
        call = _python_call(inner)
        inner = call[1] if call else None
    code = getattr(inner, "__code__", None)
    if code is None:
        return _mod_name(fn)
    return "%s (%s:%d)" % (_mod_name(fn), code.co_filename, code.co_firstlineno)


def _walk_mods(score_mod, mask_mod, build):
    walker = _Walker(build)
    score = walker.mod(score_mod, "score_mod") if score_mod is not None else (None, None)
    mask = walker.mod(mask_mod, "mask_mod") if mask_mod is not None else (None, None)
    return walker, score, mask


def _trace_mods(score_mod, mask_mod):
    """Returns (Traced, captured tensors) for the mods. A trace is reused
    for the same key (code, captured constants, capture dtypes and ranks)
    when every value it read through an object (attributes, items, module
    attributes) still reads the same; a trace with a read that cannot be
    checked that way is not kept."""
    walker, (score_desc, _), (mask_desc, _) = _walk_mods(score_mod, mask_mod, False)
    key = (score_desc, mask_desc)
    try:
        entries = _TRACE_CACHE.get(key)
    except TypeError:  # an unhashable constant: no caching
        key, entries = None, None
    for position, (guards, traced) in enumerate(entries or ()):
        replay = walker.fork() if guards else walker
        if replay.replay(guards):
            entries.insert(0, entries.pop(position))
            return traced, replay.tensors
    traced, guards, tensors, uncacheable = _run_trace(score_mod, mask_mod)
    if key is not None and uncacheable is None:
        entries = _TRACE_CACHE.setdefault(key, [])
        entries.insert(0, (guards, traced))
        del entries[_TRACES_PER_KEY:]
    return traced, tensors


def _run_trace(score_mod, mask_mod):
    """Traces the mods: (Traced, guards, captured tensors, why the trace may
    not be reused or None)."""
    STATS["traces"] += 1
    walker, (_, score_fn), (_, mask_fn) = _walk_mods(score_mod, mask_mod, True)
    b, h, m, n = (Proxy(_var(x)) for x in "bhmn")
    score_node = None
    keep = _lit(True)
    if mask_fn is not None:
        result = mask_fn(b, h, m, n)
        if not _is_operand(result):
            raise TraceError("mask_mod %s returned %r, not a boolean expression" %
                             (_mod_name(mask_mod), result))
        keep = _node_of(result)
        if keep[1] != "bool":
            raise TraceError("mask_mod %s returned a%s %s expression, not a boolean "
                             "(a comparison): %s" % (
                                 _mod_name(mask_mod),
                                 "n" if keep[1] == "int" else "", keep[1],
                                 _describe_node(keep)))
    if score_fn is not None:
        score = Proxy(_var("S[b,h,m,n]", "float"))
        result = score_fn(score, b, h, m, n)
        if not _is_operand(result):
            raise TraceError("score_mod %s returned %r, not a score expression" %
                             (_mod_name(score_mod), result))
        node = _node_of(result)
        if node[1] == "bool":
            node = _call("select", node, _lit(1.0), _lit(0.0))
        value, finite = _split_inf(_to_float(node))
        keep = _bin("and", keep, finite)
        if value is None:
            value = _lit(0.0)
        if value != score._node:
            score_node = value
    captures = []
    for index, (tensor, label) in enumerate(zip(walker.tensors, walker.labels)):
        kind = _tensor_kind(tensor)
        rank = tensor.dim() if callable(getattr(tensor, "dim", None)) else tensor.ndim
        captures.append(_Capture(kind, rank, label, walker.reads.get(index)))
    mods = [(role, fn) for role, fn in (("score_mod", score_mod), ("mask_mod", mask_mod))
            if fn is not None]
    traced = Traced(score_node, keep, captures, [_mod_name(fn) for _, fn in mods],
                    [(role, _mod_location(fn)) for role, fn in mods])
    return traced, walker.guards, walker.tensors, walker.uncacheable


def _uses_score(node):
    if node[0] == "var":
        return node[2] == "S[b,h,m,n]"
    return any(_uses_score(x) for x in _children(node))


def _spec_text(traced, gqa, return_lse, value_dim, dtype):
    """The `.attn` spec of a flex_attention call (see flex_attention)."""
    g = "g" if gqa else "h"
    G = "G" if gqa else "H"
    E = "E" if value_dim else "D"
    dims = ["B", "H"] + (["G"] if gqa else []) + ["M", "N", "D"] + (["E"] if value_dim else [])
    lines = ["  dims  " + ", ".join(dims),
             "  in    Q: %s[B, H, M, D]" % dtype,
             "  in    K: %s[B, %s, N, D]" % (dtype, G),
             "  in    V: %s[B, %s, N, %s]" % (dtype, G, E)]
    for i, (kind, rank, label, _) in enumerate(traced.captures):
        shape = ", ".join("C%d_%d" % (i, a) for a in range(rank))
        ctype = "f32" if kind == "f" else "i32"
        lines.append("  in    Cap%d: %s%s    // %s%s" % (
            i, ctype, "[%s]" % shape if rank else "", label,
            " (bool, read as != 0)" if kind == "b" else ""))
    lines.append("  param scale: f32")
    lines.append("  out   O: %s[B, H, M, %s]" % (dtype, E))
    if return_lse:
        lines.append("  out   LSE: f32[B, H, M]")
    lines.append("")
    if gqa:
        lines.append("  let g = h / (H / G)")
    lines.append("  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,%s,n,d]) * scale" % g)
    scores = "S"
    if traced.score is not None:
        text = _render(traced.score)[0]
        lhs = "T[b,h,m,n]" if _uses_score(traced.score) else "T[b < B, h < H, m < M, n < N]"
        lines.append("  %s = %s" % (lhs, text))
        scores = "T"
    if not _is_lit(traced.keep, True):
        keep = _render(traced.keep)[0] if not _is_lit(traced.keep) else "n < 0"
        lines.append("  keep %s where %s" % (scores, keep))
    lines.append("  P = softmax[n](%s)" % scores)
    lines.append("  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,%s,n,e])" % g)
    if return_lse:
        lines.append("  LSE = logsumexp[n](%s)" % scores)
    body = "\n".join(lines) + "\n}\n"
    import hashlib
    digest = hashlib.sha256(body.encode()).hexdigest()[:10]
    header = "// Traced by attnc from %s.\n" % " and ".join(traced.names) if traced.names else ""
    return "%sattention flex_%s {\n%s" % (header, digest, body)


def trace(score_mod=None, mask_mod=None, *, gqa=False, return_lse=False,
          dtype="f32", value_dim=False, captures=None):
    """The `.attn` spec text attnc compiles for these mods.

    gqa: K and V have G heads shared by H // G query heads; return_lse: an
    LSE output; value_dim: V's head dim E differs from D; dtype: the element
    type of Q, K, V and O. If `captures` is a list, the captured tensors are
    appended to it in the order of the spec's Cap inputs."""
    traced, tensors = _trace_mods(score_mod, mask_mod)
    if captures is not None:
        captures.extend(tensors)
    return _spec_text(traced, gqa, return_lse, value_dim, dtype)


# ------------------------------------------------------------- evaluation

def _evaluate(node, env, captures):
    """Evaluates a node with numpy (env: index name -> integer array)."""
    import numpy as np
    op = node[0]
    if op == "lit":
        return node[2]
    if op == "var":
        if node[2] in env:
            return env[node[2]]
        if node[2].startswith("Cap"):
            return captures[int(node[2][3:])]
        cap, axis = node[2][1:].split("_")
        return captures[int(cap)].shape[int(axis)]
    if op == "read":
        subs = tuple(np.asarray(_evaluate(s, env, captures)) for s in node[3])
        return captures[int(node[2][3:])][subs]
    if op == "not":
        return np.logical_not(_evaluate(node[2], env, captures))
    if op == "neg":
        return -_evaluate(node[2], env, captures)
    if op == "call":
        args = [_evaluate(a, env, captures) for a in node[3]]
        name = node[2]
        if name == "select":
            return np.where(*args)
        fns = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh,
               "rsqrt": lambda x: 1.0 / np.sqrt(x), "abs": np.abs,
               "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
               "softplus": lambda x: np.logaddexp(0.0, x),
               "relu": lambda x: np.maximum(x, 0), "min": np.minimum,
               "max": np.maximum}
        return fns[name](*args)
    a = _evaluate(node[3], env, captures)
    b = _evaluate(node[4], env, captures)
    name = node[2]
    if name == "/":
        if node[1] == "int":
            return np.floor_divide(a, b)
        return np.true_divide(a, b)
    fns = {"+": np.add, "-": np.subtract, "*": np.multiply, "%": np.mod,
           "^": np.power, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
           "and": np.logical_and, "or": np.logical_or}
    if name == "^":
        a = np.asarray(a, dtype=np.float64)
    return fns[name](a, b)
