"""Tracing FlexAttention-style ``score_mod`` / ``mask_mod`` functions into `.attn` specs.

A mod is called once with proxy objects: ``score`` stands for the scaled score
``S[b,h,m,n]``, ``b, h, q_idx, kv_idx`` for the index values ``b, h, m, n``.
Arithmetic on proxies builds an expression tree that is printed as `.attn` text.
Tensors the mod captures (closure cells, the globals it reads, through nested
functions and ``and_masks`` / ``or_masks``) become extra inputs of the spec
(``in Cap0: i32[C0_0]``) with dims of their own, so that a new sequence length
never changes the spec; plain numbers the mod captures (a window size) are
constants of the spec.

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

import dis
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
    """file:line of the innermost frame outside attnc (and torch's dispatch)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        inside = (filename.startswith(_PACKAGE_DIR + os.sep) or
                  (os.sep + "torch" + os.sep) in filename)
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
        _fail("captured tensor %s of rank %d is used without subscripts" %
              (value._label, value._rank))
    tname = type(value).__module__ + "." + type(value).__name__
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


class Proxy(object):
    """A traced scalar expression (a float score, an integer index, a boolean)."""

    __slots__ = ("_node",)
    __array_ufunc__ = None  # numpy scalars defer to the reflected operators
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
        "using it as an index of a tensor attnc did not capture",
        "attnc captures tensors held by the mod's closure or globals; other "
        "tensors (attributes of objects, function arguments) cannot be read")
    __array__ = _unsupported(
        "converting it to an array (or indexing a tensor attnc did not capture)",
        "attnc captures tensors held by the mod's closure or globals; other "
        "tensors (attributes of objects, function arguments) cannot be read")
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
    "a tensor attnc did not capture is indexed by a traced value; attnc "
    "captures the tensors a mod holds in its closure or reads as globals")


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

    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, index, kind, rank, label, prefix=()):
        self._index, self._kind, self._rank = index, kind, rank
        self._label, self._prefix = label, prefix

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
                                   self._label, tuple(subs))
        node = ("read", "float" if self._kind == "f" else "int", self.name, tuple(subs))
        if self._kind == "b":
            node = _bin("!=", node, _lit(0))
        return Proxy(node)

    def _scalar(self):
        if self._rank != len(self._prefix):
            _fail("captured tensor '%s' needs %d more subscripts" %
                  (self._label, self._rank - len(self._prefix)))
        if self._rank == 0:
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


class _Walker(object):
    """Walks what a mod captures: describes it (the trace cache key), collects
    the tensors in a deterministic order and, with build=True, rebuilds the
    functions with tensors replaced by _CapturedTensor objects."""

    def __init__(self, build):
        self.build = build
        self.tensors = []        # the captured tensors, in input order
        self.labels = []
        self._tensor_ids = {}
        self._functions = {}     # id -> (description, rebuilt function)

    def walk(self, value, label):
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
            return desc, _CapturedTensor(index, kind, rank, label)
        if isinstance(value, _CONSTANT_TYPES):
            return ("C", type(value).__name__, value), value
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            item = value.item()
            return ("C", type(item).__name__, item), value
        if isinstance(value, types.FunctionType):
            module = getattr(value, "__module__", None) or ""
            if (module.split(".")[0] in ("attnc", "torch", "numpy") and
                    not getattr(value, "_attnc_walk", False)):
                return ("A", module, value.__qualname__), value
            return self.function(value)
        if isinstance(value, (tuple, list)):
            parts = [self.walk(v, "%s[%d]" % (label, i)) for i, v in enumerate(value)]
            desc = ("L", tuple(d for d, _ in parts))
            if not self.build:
                return desc, None
            return desc, type(value)(v for _, v in parts)
        try:
            import functools
            if isinstance(value, functools.partial):
                fdesc, fn = self.walk(value.func, label)
                parts = [self.walk(v, label) for v in value.args]
                kw = sorted(value.keywords.items())
                kparts = [(k, self.walk(v, label + "." + k)) for k, v in kw]
                desc = ("P", fdesc, tuple(d for d, _ in parts),
                        tuple((k, d) for k, (d, _) in kparts))
                if not self.build:
                    return desc, None
                return desc, functools.partial(fn, *[v for _, v in parts],
                                               **{k: v for k, (_, v) in kparts})
        except TypeError:
            pass
        if isinstance(value, types.ModuleType):
            return ("M", value.__name__), value
        # Anything else (classes, builtins, objects) is used as it is; it is
        # identified by its identity.
        return ("O", id(value)), value

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
            desc, new = self.walk(contents, name)
            cell_descs.append(desc)
            cells.append(types.CellType(new) if self.build and new is not contents else cell)
        fglobals = fn.__globals__
        global_descs = []
        replaced = {}
        for name in _global_names(code):
            if name not in fglobals:
                continue
            value = fglobals[name]
            if isinstance(value, types.ModuleType):
                continue
            desc, new = self.walk(value, name)
            global_descs.append((name, desc))
            if self.build and new is not value:
                replaced[name] = new
        defaults = fn.__defaults__ or ()
        default_parts = [self.walk(v, "default") for v in defaults]
        desc = ("F", code, tuple(cell_descs), tuple(global_descs),
                tuple(d for d, _ in default_parts))
        rebuilt = None
        if self.build:
            new_globals = fglobals
            if replaced:
                new_globals = dict(fglobals)
                new_globals.update(replaced)
            rebuilt = types.FunctionType(
                code, new_globals, fn.__name__,
                tuple(v for _, v in default_parts) or fn.__defaults__, tuple(cells) or None)
            rebuilt.__kwdefaults__ = fn.__kwdefaults__
        self._functions[id(fn)] = (desc, rebuilt)
        return desc, rebuilt


def _check_callable(fn, what):
    if fn is None:
        return
    if not isinstance(fn, types.FunctionType):
        if callable(fn) and isinstance(getattr(fn, "__call__", None), types.MethodType):
            raise TraceError("%s must be a plain Python function or lambda, not "
                             "a %s" % (what, type(fn).__name__))
        raise TraceError("%s must be a Python function, got %r" % (what, fn))


# ------------------------------------------------------------------- tracing

STATS = {"traces": 0}
_TRACE_CACHE = {}


class Traced(object):
    """The result of tracing a score_mod / mask_mod pair."""

    def __init__(self, score, keep, captures, names):
        self.score = score        # float node, or None for the identity
        self.keep = keep          # bool node (lit True: no mask)
        self.captures = captures  # [(kind, rank, label)], input order
        self.names = names        # qualified names of the mods


def _walk_mods(score_mod, mask_mod, build):
    _check_callable(score_mod, "score_mod")
    _check_callable(mask_mod, "mask_mod")
    walker = _Walker(build)
    score = walker.function(score_mod) if score_mod is not None else (None, None)
    mask = walker.function(mask_mod) if mask_mod is not None else (None, None)
    return walker, score, mask


def _trace_mods(score_mod, mask_mod):
    """Returns (Traced, captured tensors) for the mods, tracing at most once
    per (code, capture dtypes and ranks, captured constants)."""
    walker, (score_desc, _), (mask_desc, _) = _walk_mods(score_mod, mask_mod, False)
    key = (score_desc, mask_desc)
    try:
        traced = _TRACE_CACHE.get(key)
    except TypeError:  # an unhashable constant: no caching
        key, traced = None, None
    if traced is None:
        traced = _run_trace(score_mod, mask_mod)
        if key is not None:
            _TRACE_CACHE[key] = traced
    return traced, walker.tensors


def _run_trace(score_mod, mask_mod):
    STATS["traces"] += 1
    walker, (_, score_fn), (_, mask_fn) = _walk_mods(score_mod, mask_mod, True)
    b, h, m, n = (Proxy(_var(x)) for x in "bhmn")
    score_node = None
    keep = _lit(True)
    if mask_fn is not None:
        result = mask_fn(b, h, m, n)
        if not _is_operand(result):
            raise TraceError("mask_mod %s returned %r, not a boolean expression" %
                             (mask_mod.__qualname__, result))
        keep = _node_of(result)
        if keep[1] != "bool":
            raise TraceError("mask_mod %s returned a%s %s expression, not a boolean "
                             "(a comparison): %s" % (
                                 mask_mod.__qualname__,
                                 "n" if keep[1] == "int" else "", keep[1],
                                 _describe_node(keep)))
    if score_fn is not None:
        score = Proxy(_var("S[b,h,m,n]", "float"))
        result = score_fn(score, b, h, m, n)
        if not _is_operand(result):
            raise TraceError("score_mod %s returned %r, not a score expression" %
                             (score_mod.__qualname__, result))
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
    for tensor, label in zip(walker.tensors, walker.labels):
        kind = _tensor_kind(tensor)
        rank = tensor.dim() if callable(getattr(tensor, "dim", None)) else tensor.ndim
        captures.append((kind, rank, label))
    names = [f.__qualname__ for f in (score_mod, mask_mod) if f is not None]
    return Traced(score_node, keep, captures, names)


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
    for i, (kind, rank, label) in enumerate(traced.captures):
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
