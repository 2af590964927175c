"""The primitives of automatic differentiation, each with its two derivative rules (chapters 2-4).

A program is a composition of a few elementary operations: the primitives.
Each primitive is defined here once, with

- its **value** on plain tensors (a torch function),
- for each input ``x_i``, its **forward partial** ``t_i -> (d out / d x_i) t_i``
  (the JVP rule, used by forward mode, chapter 3), and
- for each input ``x_i``, its **reverse partial** ``g -> (d out / d x_i)^T g``
  (the VJP rule, used by reverse mode, chapter 4),

side by side, so that the whole calculus of the library fits in one table.
The forward partials of all inputs are summed (the notes' sum over the
"fathers" of a node); the reverse partials are accumulated into each input
(the sum over the "sons").

How a primitive runs
--------------------
``ops.exp(x)`` on a plain tensor (or a Python number) is ``torch.exp(x)``.
On a *boxed* value, the primitive hands itself to the box's interpreter:
:class:`ad_lib.forward.Dual` (forward mode), :class:`ad_lib.reverse.Traced`
(reverse mode) or :class:`ad_lib.graph.GraphNode` (tracing a graph). Every
box carries a *level*, a number that grows with each differentiation started
(:func:`new_level`); when boxes of several levels meet, the primitive goes to
the highest one first, which unwraps its own boxes and calls the primitive
again on the rest. That is what makes nested derivatives right ("perturbation
confusion", chapter 3), and what lets forward mode run over reverse mode for
Hessian-vector products.

The rules are themselves written with these primitives, so derivatives can be
differentiated again.

A function written with ``ad_lib.ops`` and Python's operators
(``+ - * / ** @``, unary ``-``) runs unchanged on plain tensors, on dual
numbers, and on reverse-mode values.
"""

from __future__ import annotations

import itertools
import numbers
from typing import Callable, Optional, Sequence

import torch

__all__ = [
    "Primitive",
    "Box",
    "new_level",
    "shape",
    "raw",
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "exp",
    "log",
    "sin",
    "cos",
    "tanh",
    "sqrt",
    "relu",
    "mask_positive",
    "sum",
    "mean",
    "matmul",
    "reshape",
    "transpose",
    "broadcast_to",
    "sum_to",
    "PRIMITIVES",
    "MISSING",
]

_levels = itertools.count(1)


def new_level() -> int:
    """A fresh level, higher than every level handed out before (one per differentiation)."""
    return next(_levels)


class Box:
    """A value wrapped by an interpreter: the common base of dual numbers, traced values and graph nodes.

    Subclasses set ``_level`` and implement ``apply(primitive, args, params, level)``
    (a classmethod) and ``_unbox()``. The base class gives every box Python's
    arithmetic operators, a ``shape``, and a clear error when a plain ``torch``
    function is called on it.
    """

    _level: int

    @classmethod
    def apply(cls, primitive: "Primitive", args: tuple, params: dict, level: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _unbox(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def shape(self) -> torch.Size:
        return shape(self._unbox())

    @property
    def T(self):
        """The transpose of a matrix (a vector or a scalar is returned as it is)."""
        rank = len(self.shape)
        if rank > 2:
            raise ValueError(f".T is for matrices; use ad_lib.ops.transpose(x, dim0, dim1) on a {rank}-d value")
        return self if rank < 2 else transpose(self, 0, 1)

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def sum(self, dim=None, keepdim=False):
        return sum(self, dim=dim, keepdim=keepdim)

    def reshape(self, *new_shape):
        if len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list, torch.Size)):
            new_shape = tuple(new_shape[0])
        return reshape(self, tuple(new_shape))

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __pow__(self, other):
        return pow(self, other)

    def __rpow__(self, other):
        return pow(other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        return neg(self)

    def __pos__(self):
        return self

    def __bool__(self):
        raise TypeError(
            f"the truth value of an ad_lib {type(self).__name__} is not defined: branching on a value being "
            "differentiated needs its plain value, ad_lib.ops.raw(x)"
        )

    # Tensor operators with a box on the right (tensor + box) come here through
    # torch's __torch_function__ protocol; other torch functions are refused.
    _TENSOR_OPERATORS = {
        "__add__": lambda a, b: add(a, b),
        "__radd__": lambda a, b: add(b, a),
        "__sub__": lambda a, b: sub(a, b),
        "__rsub__": lambda a, b: sub(b, a),
        "__mul__": lambda a, b: mul(a, b),
        "__rmul__": lambda a, b: mul(b, a),
        "__truediv__": lambda a, b: div(a, b),
        "__rtruediv__": lambda a, b: div(b, a),
        "__matmul__": lambda a, b: matmul(a, b),
        "__rmatmul__": lambda a, b: matmul(b, a),
        "__pow__": lambda a, b: pow(a, b),
        "__rpow__": lambda a, b: pow(b, a),
    }

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in cls._TENSOR_OPERATORS and not kwargs and len(args) == 2:
            return cls._TENSOR_OPERATORS[name](*args)
        raise TypeError(
            f"torch.{name} was called on an ad_lib {cls.__name__}, which plain torch functions cannot "
            f"differentiate; use the primitive ad_lib.ops.{name} if it exists, or write the function "
            "with ad_lib.ops (see ad_lib.ops.PRIMITIVES)"
        )


def raw(x):
    """The plain value inside any number of boxes (a tensor or a Python number)."""
    while isinstance(x, Box):
        x = x._unbox()
    return x


def shape(x) -> torch.Size:
    """The shape of a tensor, a box or a Python number (``()``)."""
    if isinstance(x, Box):
        return x.shape
    if isinstance(x, torch.Tensor):
        return x.shape
    if isinstance(x, numbers.Number):
        return torch.Size(())
    raise TypeError(f"expected a tensor, a number or an ad_lib value, got {type(x).__name__}")


Rule = Optional[Callable]


def MISSING(*args, **params):  # pragma: no cover - never called: interpreters check for it first
    """Marks a derivative rule that has not been written (``None`` means: the derivative is zero)."""
    raise NotImplementedError


class Primitive:
    """An elementary operation with its value and, per input, its forward and reverse partials.

    A rule that has not been written is :data:`MISSING`; differentiating
    through it raises ``NotImplementedError`` naming the primitive.

    Parameters
    ----------
    name
        the operation's name, as it appears in graphs and traces.
    value
        ``value(*inputs, **params)``: the result on plain tensors.
    jvp
        one entry per input: ``jvp_i(t, out, *inputs, **params)`` returns the
        contribution ``(d out / d x_i) t`` of a tangent ``t`` of input ``i`` to
        the tangent of the output, or ``None`` where the output does not depend
        on that input differentiably.
    vjp
        one entry per input: ``vjp_i(g, out, *inputs, **params)`` returns the
        cotangent ``(d out / d x_i)^T g`` of input ``i``, shaped like that input,
        or ``None`` as above.
    params
        the names of the primitive's non-differentiable parameters (a shape, a
        dimension), which may follow the inputs by position.
    """

    def __init__(self, name: str, value: Callable, jvp: Sequence[Rule], vjp: Sequence[Rule], params: Sequence[str] = ()):
        if len(jvp) != len(vjp):
            raise ValueError(f"primitive {name}: one forward and one reverse rule per input are needed")
        self.name = name
        self.value = value
        self.jvp = tuple(jvp)
        self.vjp = tuple(vjp)
        self.arity = len(jvp)
        self.params = tuple(params)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def forward_rule(self, i: int) -> Rule:
        """The forward partial of input ``i``, or an error naming the primitive if it has none."""
        if self.jvp[i] is MISSING:
            raise NotImplementedError(
                f"ad_lib.ops.{self.name} has no forward-mode (JVP) rule for its input {i}: it cannot be "
                "differentiated in forward mode"
            )
        return self.jvp[i]

    def reverse_rule(self, i: int) -> Rule:
        """The reverse partial of input ``i``, or an error naming the primitive if it has none."""
        if self.vjp[i] is MISSING:
            raise NotImplementedError(
                f"ad_lib.ops.{self.name} has no reverse-mode (VJP) rule for its input {i}: it cannot be "
                "differentiated in reverse mode"
            )
        return self.vjp[i]

    def __call__(self, *args, **params):
        if len(args) > self.arity:  # parameters given by position, after the inputs
            extra = args[self.arity :]
            if len(extra) > len(self.params):
                raise TypeError(f"ad_lib.ops.{self.name} takes {self.arity} input(s) and the parameters {self.params}")
            params = {**dict(zip(self.params, extra)), **params}
            args = args[: self.arity]
        if len(args) != self.arity:
            raise TypeError(f"ad_lib.ops.{self.name} takes {self.arity} input(s), got {len(args)}")
        top = None
        for a in args:
            if isinstance(a, Box) and (top is None or a._level > top._level):
                top = a
            elif not isinstance(a, (Box, torch.Tensor, numbers.Number)):
                raise TypeError(
                    f"ad_lib.ops.{self.name} takes tensors, numbers or ad_lib values, got {type(a).__name__}"
                )
        if top is None:
            if all(isinstance(a, numbers.Number) for a in args):  # numbers in, a number out (float64)
                return self.value(*[torch.tensor(a, dtype=torch.float64) for a in args], **params).item()
            return self.value(*args, **params)
        return type(top).apply(self, args, params, top._level)


PRIMITIVES: dict[str, Primitive] = {}


def _define(name, value, jvp, vjp, params=()):
    primitive = Primitive(name, value, jvp, vjp, params)
    PRIMITIVES[name] = primitive
    return primitive


# ---------------------------------------------------------------------------
# Shapes: broadcasting and its adjoint
# ---------------------------------------------------------------------------


def _sum_to_value(x: torch.Tensor, target) -> torch.Tensor:
    target = torch.Size(target)
    if x.shape == target:
        return x
    lead = x.dim() - len(target)
    dims = list(range(lead)) + [lead + i for i, s in enumerate(target) if s == 1 and x.shape[lead + i] != 1]
    out = x.sum(dim=dims, keepdim=True) if dims else x
    return out.reshape(target)


def _broadcast_to_value(x, target):
    if isinstance(x, numbers.Number):
        return torch.full(tuple(target), x)
    return torch.broadcast_to(x, tuple(target))


#                     value                 forward partial                         reverse partial
broadcast_to = _define(
    "broadcast_to", _broadcast_to_value,
    jvp=[lambda t, out, x, target: broadcast_to(t, target)],
    vjp=[lambda g, out, x, target: sum_to(g, shape(x))],
    params=("target",),
)
sum_to = _define(
    "sum_to", _sum_to_value,
    jvp=[lambda t, out, x, target: sum_to(t, target)],
    vjp=[lambda g, out, x, target: broadcast_to(g, shape(x))],
    params=("target",),
)


def _unbroadcast(g, x):
    """The cotangent g of a broadcast result, summed back to x's shape (None for numbers)."""
    if isinstance(x, numbers.Number):
        return None
    target = shape(x)
    return g if shape(g) == target else sum_to(g, target)


# ---------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------

add = _define(
    "add", torch.add,
    jvp=[lambda t, out, a, b: t, lambda t, out, a, b: t],
    vjp=[lambda g, out, a, b: _unbroadcast(g, a), lambda g, out, a, b: _unbroadcast(g, b)],
)
sub = _define(
    "sub", torch.sub,
    jvp=[lambda t, out, a, b: t, lambda t, out, a, b: neg(t)],
    vjp=[lambda g, out, a, b: _unbroadcast(g, a), lambda g, out, a, b: _unbroadcast(neg(g), b)],
)
mul = _define(
    "mul", torch.mul,
    jvp=[lambda t, out, a, b: mul(t, b), lambda t, out, a, b: mul(a, t)],
    vjp=[lambda g, out, a, b: _unbroadcast(mul(g, b), a), lambda g, out, a, b: _unbroadcast(mul(g, a), b)],
)
div = _define(
    "div", torch.div,
    jvp=[lambda t, out, a, b: div(t, b), lambda t, out, a, b: neg(div(mul(out, t), b))],
    vjp=[lambda g, out, a, b: _unbroadcast(div(g, b), a), lambda g, out, a, b: _unbroadcast(neg(div(mul(g, out), b)), b)],
)
neg = _define(
    "neg", torch.neg,
    jvp=[lambda t, out, a: neg(t)],
    vjp=[lambda g, out, a: neg(g)],
)
def _power_derivative(a, b):
    """d(a^b)/da = b a^(b-1); for a number b, b - 1 stays a number, and a^1 is a itself.

    As torch: 0 where b = 0 (not 0 * a^(-1), NaN at a = 0).
    """
    if isinstance(b, numbers.Number):
        if b == 0:
            return 0.0
        if b == 1:
            return 1.0
        return mul(b, a if b == 2 else pow(a, b - 1))
    return mask_positive(mul(b, pow(a, sub(b, 1))), torch.as_tensor(raw(b)) != 0)


def _power_exponent_derivative(out, a, b):
    """d(a^b)/db = a^b log a; as torch, 0 where a = 0 and b >= 0 (not 0 * log 0, NaN)."""
    base_zero = (torch.as_tensor(raw(a)) == 0) & (torch.as_tensor(raw(b)) >= 0)
    return mask_positive(mul(out, log(a)), ~base_zero)


# a ** b: d/da = b a^(b-1), d/db = a^b log a (only computed when b is being differentiated)
pow = _define(
    "pow", torch.pow,
    jvp=[
        lambda t, out, a, b: mul(t, _power_derivative(a, b)),
        lambda t, out, a, b: mul(t, _power_exponent_derivative(out, a, b)),
    ],
    vjp=[
        lambda g, out, a, b: _unbroadcast(mul(g, _power_derivative(a, b)), a),
        lambda g, out, a, b: _unbroadcast(mul(g, _power_exponent_derivative(out, a, b)), b),
    ],
)

# ---------------------------------------------------------------------------
# Elementary functions
# ---------------------------------------------------------------------------

exp = _define("exp", torch.exp, jvp=[lambda t, out, a: mul(t, out)], vjp=[lambda g, out, a: mul(g, out)])
log = _define("log", torch.log, jvp=[lambda t, out, a: div(t, a)], vjp=[lambda g, out, a: div(g, a)])
sin = _define("sin", torch.sin, jvp=[lambda t, out, a: mul(t, cos(a))], vjp=[lambda g, out, a: mul(g, cos(a))])
cos = _define("cos", torch.cos, jvp=[lambda t, out, a: neg(mul(t, sin(a)))], vjp=[lambda g, out, a: neg(mul(g, sin(a)))])
tanh = _define(
    "tanh", torch.tanh,
    jvp=[lambda t, out, a: mul(t, sub(1, mul(out, out)))],
    vjp=[lambda g, out, a: mul(g, sub(1, mul(out, out)))],
)
sqrt = _define(
    "sqrt", torch.sqrt,
    jvp=[lambda t, out, a: div(t, mul(2, out))],
    vjp=[lambda g, out, a: div(g, mul(2, out))],
)
# mask_positive(x, a) = x where a > 0, else 0: linear in x, and piecewise constant
# in a (its derivative in a is zero: None)
def _mask_positive_value(x, a):
    if isinstance(x, torch.Tensor) and isinstance(a, torch.Tensor) and x.dtype == a.dtype:
        # torch.where(a > 0, x, 0) in one fused kernel: PyTorch's own relu backward,
        # ten times faster than where on a CPU (and, like PyTorch's relu, it passes x
        # where a is NaN)
        return torch.ops.aten.threshold_backward(x, a, 0)
    return torch.where(torch.as_tensor(a) > 0, x, 0.0)


mask_positive = _define(
    "mask_positive", _mask_positive_value,
    jvp=[lambda t, out, x, a: mask_positive(t, a), None],
    vjp=[lambda g, out, x, a: _unbroadcast(mask_positive(g, a), x), None],
)
# relu passes a tangent, or an adjoint, where its input is positive
relu = _define(
    "relu", torch.relu,
    jvp=[lambda t, out, a: mask_positive(t, a)],
    vjp=[lambda g, out, a: mask_positive(g, a)],
)

# ---------------------------------------------------------------------------
# Reductions, shapes and linear algebra
# ---------------------------------------------------------------------------


def _sum_value(a, dim=None, keepdim=False):
    return a.sum() if dim is None else a.sum(dim=dim, keepdim=keepdim)


def _sum_vjp(g, out, a, dim=None, keepdim=False):
    if dim is not None and not keepdim:
        dims = [dim] if isinstance(dim, int) else list(dim)
        rank = len(shape(a))
        kept = list(shape(g))
        for d in sorted(x % rank for x in dims):
            kept.insert(d, 1)
        g = reshape(g, tuple(kept))
    return broadcast_to(g, shape(a))


sum = _define(
    "sum", _sum_value,
    jvp=[lambda t, out, a, dim=None, keepdim=False: sum(t, dim=dim, keepdim=keepdim)],
    vjp=[_sum_vjp],
    params=("dim", "keepdim"),
)
reshape = _define(
    "reshape", lambda a, target: a.reshape(target),
    jvp=[lambda t, out, a, target: reshape(t, target)],
    vjp=[lambda g, out, a, target: reshape(g, shape(a))],
    params=("target",),
)
transpose = _define(
    "transpose", lambda a, dim0, dim1: a.transpose(dim0, dim1),
    jvp=[lambda t, out, a, dim0, dim1: transpose(t, dim0, dim1)],
    vjp=[lambda g, out, a, dim0, dim1: transpose(g, dim0, dim1)],
    params=("dim0", "dim1"),
)


def _matrix_transpose(x):
    return transpose(x, -1, -2)


def _column(x):
    """x with a trailing axis of length 1: (..., n) -> (..., n, 1)."""
    return reshape(x, tuple(shape(x)) + (1,))


def _row(x):
    """x with an axis of length 1 before its last: (..., m) -> (..., 1, m)."""
    return reshape(x, tuple(shape(x)[:-1]) + (1, shape(x)[-1]))


# torch.matmul promotes a vector operand to a matrix and drops the added axis
# afterwards; the reverse partials below undo that, case by case.
def _matmul_vjp_a(g, out, a, b):
    ra, rb = len(shape(a)), len(shape(b))
    if ra == 1 and rb == 1:  # dot product: (k,) . (k,) -> ()
        return mul(g, b)
    if ra == 1:  # (k,) @ (..., k, m) -> (..., m): g b^T, summed over the batch
        return sum_to(reshape(matmul(b, _column(g)), tuple(shape(g)[:-1]) + (shape(a)[0],)), shape(a))
    if rb == 1:  # (..., n, k) @ (k,) -> (..., n): the outer product g b^T
        return _unbroadcast(mul(_column(g), b), a)
    return _unbroadcast(matmul(g, _matrix_transpose(b)), a)


def _matmul_vjp_b(g, out, a, b):
    ra, rb = len(shape(a)), len(shape(b))
    if ra == 1 and rb == 1:
        return mul(g, a)
    if ra == 1:  # (k,) @ (..., k, m): the outer product a g^T
        return _unbroadcast(mul(_column(a), _row(g)), b)
    if rb == 1:  # (..., n, k) @ (k,): a^T g (a matrix product), summed over the batch
        return sum_to(reshape(matmul(_matrix_transpose(a), _column(g)), tuple(shape(a)[:-2]) + (shape(a)[-1],)), shape(b))
    return _unbroadcast(matmul(_matrix_transpose(a), g), b)


matmul = _define(
    "matmul", torch.matmul,
    jvp=[lambda t, out, a, b: matmul(t, b), lambda t, out, a, b: matmul(a, t)],
    vjp=[_matmul_vjp_a, _matmul_vjp_b],
)


def mean(a, dim=None, keepdim=False):
    """The mean, as a sum divided by a count (a composite, not a primitive)."""
    n = 1
    if dim is None:
        for s in shape(a):
            n *= s
    else:
        for d in [dim] if isinstance(dim, int) else dim:
            n *= shape(a)[d]
    return div(sum(a, dim=dim, keepdim=keepdim), n)
