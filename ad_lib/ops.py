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

import contextlib
import functools
import inspect
import itertools
import math
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
    "index",
    "scatter_index",
    "StandIn",
    "NoRuleError",
    "AnomalyError",
    "detect_anomaly",
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

    @property
    def ndim(self) -> int:
        """The number of dimensions, as ``len(x.shape)``."""
        return len(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the plain value inside."""
        return _dtype_of(raw(self))

    @property
    def device(self) -> torch.device:
        """The device of the plain value inside."""
        return _device_of(raw(self))

    def dim(self) -> int:
        """The number of dimensions, as ``torch.Tensor.dim``."""
        return len(self.shape)

    def size(self, dim: Optional[int] = None):
        """The shape, or the length of dimension ``dim``, as ``torch.Tensor.size``."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        """The number of elements, as ``torch.Tensor.numel``."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d ad_lib value (as of a 0-d tensor)")
        return self.shape[0]

    def __iter__(self):
        # without it Python would iterate by x[0], x[1], ... until an IndexError
        for i in range(len(self)):
            yield index(self, i)

    def __getitem__(self, key):
        """``x[key]`` through the primitive :func:`index` (ints, slices, ``...`` and ``None``)."""
        return index(self, key)

    # the tensor methods: every primitive is one (x.exp(), x.pow(2), x.matmul(W), x.sum(dim=-1),
    # through __getattr__ below), and these composites or special signatures
    def mean(self, dim=None, keepdim=False):
        """``ad_lib.ops.mean(x, dim, keepdim)``."""
        return mean(self, dim=dim, keepdim=keepdim)

    def reshape(self, *new_shape):
        """``ad_lib.ops.reshape(x, shape)``; the shape as one tuple or as several ints."""
        if len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list, torch.Size)):
            new_shape = tuple(new_shape[0])
        return reshape(self, tuple(new_shape))

    # Python's operators that have no derivative rule: an error that says why, not "bad operand type"
    def __abs__(self):
        raise NoRuleError(_no_rule_message("abs(x)", "abs", type(self).__name__))

    def _compare(self, symbol):
        raise NoRuleError(
            f"x {symbol} ... was called on an ad_lib {type(self).__name__}: a comparison has no derivative; "
            f"to branch on the value being differentiated, compare its plain value, ad_lib.ops.raw(x) {symbol} ..."
        )

    def __lt__(self, other):
        self._compare("<")

    def __le__(self, other):
        self._compare("<=")

    def __gt__(self, other):
        self._compare(">")

    def __ge__(self, other):
        self._compare(">=")

    def __float__(self):
        raise NoRuleError(
            f"float(x) was called on an ad_lib {type(self).__name__}: a Python number cannot carry a derivative "
            "(math.exp and the like need one); use the primitives of ad_lib.ops, or ad_lib.ops.raw(x) for the plain value"
        )

    __int__ = __float__
    __complex__ = __float__

    def __getattr__(self, name):
        # only reached when normal lookup fails: a primitive as a method (x.exp() is ops.exp(x)),
        # else a tensor method without a rule
        if not name.startswith("_") and name in PRIMITIVES:
            return functools.partial(PRIMITIVES[name], self)
        if not name.startswith("_") and hasattr(torch.Tensor, name):
            raise NoRuleError(_no_rule_message(f"x.{name}()", name, type(self).__name__))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        raise NoRuleError(_no_rule_message(f"torch.{name}", name, cls.__name__))


class NoRuleError(TypeError, AttributeError):
    """An operation without a derivative rule in :mod:`ad_lib.ops` was applied to a value being differentiated.

    A ``TypeError`` (the operation does not apply to the value) and, since a
    missing tensor method is looked up as an attribute, an ``AttributeError``
    too, so that ``hasattr(x, "grad")`` answers ``False`` as Python expects.
    """


def _no_rule_message(what: str, name: str, kind: str) -> str:
    if name in PRIMITIVES:
        hint = f"use the primitive ad_lib.ops.{name} instead, which has its rules"
    else:
        hint = (
            f"ad_lib.ops has no primitive {name!r}: write the function with the primitives listed in "
            f"ad_lib.ops.PRIMITIVES ({', '.join(sorted(PRIMITIVES))}), or define a new one with ad_lib.ops.Primitive"
        )
    return f"{what} was called on an ad_lib {kind}, which it cannot differentiate; {hint}"


def raw(x):
    """The plain value inside any number of boxes (a tensor or a Python number)."""
    while isinstance(x, Box):
        x = x._unbox()
    return x


def shape(x) -> torch.Size:
    """The shape of a tensor, a box, a :class:`StandIn` or a Python number (``()``)."""
    if isinstance(x, (Box, StandIn)):
        return x.shape
    if isinstance(x, torch.Tensor):
        return x.shape
    if isinstance(x, numbers.Number):
        return torch.Size(())
    raise TypeError(f"expected a tensor, a number or an ad_lib value, got {type(x).__name__}")


def _dtype_of(value) -> torch.dtype:
    if isinstance(value, (torch.Tensor, StandIn)):
        return value.dtype
    return torch.float64 if isinstance(value, numbers.Number) else None


def _device_of(value) -> torch.device:
    if isinstance(value, (torch.Tensor, StandIn)):
        return value.device
    return torch.device("cpu")


class StandIn:
    """What the tape keeps of a value that no reverse rule reads: its shape, dtype and device only.

    A reverse rule that reads the value instead of its shape fails loudly:
    every primitive and every torch function refuses a stand-in. (A meta
    tensor would not do: torch mixes a meta tensor with a 0-d CPU tensor
    without complaint, and would hand back a meta result.) Chapter 4,
    section "The price: memory".
    """

    __slots__ = ("shape", "dtype", "device")

    def __init__(self, value):
        if type(value) is torch.Tensor:  # the common case, fast
            self.shape, self.dtype, self.device = value.shape, value.dtype, value.device
            return
        self.shape = shape(value)
        plain = raw(value)
        self.dtype = _dtype_of(plain)
        self.device = _device_of(plain)

    def __repr__(self) -> str:
        return f"StandIn(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


# ---------------------------------------------------------------------------
# Anomaly mode: stop at the first primitive that makes a NaN or an infinity
# ---------------------------------------------------------------------------

# None outside the mode; inside it, the stack of the derivative rules being run
# (so that a failure inside a rule says which rule it was in). The only state
# of the module besides the table of primitives and the level counter.
_anomaly: Optional[list] = None


class AnomalyError(FloatingPointError):
    """Raised under :func:`detect_anomaly` by the first primitive whose value or derivative is not finite."""


@contextlib.contextmanager
def detect_anomaly():
    """Inside this ``with`` block, every primitive checks what it computes for NaN and infinity.

    The first primitive whose value, or whose forward partial or reverse
    partial contribution for one of its inputs, holds a NaN or an infinity
    raises :class:`AnomalyError` (a ``FloatingPointError``) naming the
    primitive, the rule (value, forward partial of input i, reverse partial
    of input i, and the rule it was called from, if any) and a summary of
    its inputs: shapes, dtypes, and their values where the bad entry is.
    It works in forward mode, in reverse mode and nested (``hvp``), as
    ``torch.autograd.detect_anomaly`` does for PyTorch. Outside the block
    each primitive pays one test of a module-level flag. Under the mode,
    ``jacfwd`` and ``jacrev`` run their passes one by one instead of through
    ``torch.func.vmap``, whose batched values cannot be inspected. The book
    has no section on the mode itself; the rules it checks are those of
    chapter 3, section "The forward recursion", and chapter 4, section "The
    reverse recursion".
    """
    global _anomaly
    previous, _anomaly = _anomaly, []
    try:
        yield
    finally:
        _anomaly = previous


def anomaly_mode_enabled() -> bool:
    """Whether the code runs inside :func:`detect_anomaly`."""
    return _anomaly is not None


def _first_bad(value):
    """None if ``value`` is finite; else (index of its first non-finite entry, that entry)."""
    plain = raw(value)
    if isinstance(plain, numbers.Number):
        return None if isinstance(plain, bool) or math.isfinite(abs(plain)) else ((), plain)
    if not isinstance(plain, torch.Tensor) or not (plain.is_floating_point() or plain.is_complex()):
        return None
    finite = torch.isfinite(plain)
    try:
        if bool(finite.all()):
            return None
    except RuntimeError as err:  # a torch.func.vmap batched tensor: its values cannot be inspected
        raise AnomalyError(
            "ad_lib.detect_anomaly cannot inspect values inside torch.func.vmap; run the computation without vmap "
            "(jacfwd and jacrev do so by themselves under the mode)"
        ) from err
    where = tuple(int(i) for i in torch.nonzero(~finite)[0])
    return where, plain[where].item()


def _describe_inputs(inputs, where, bad_shape) -> str:
    lines = []
    for i, a in enumerate(inputs):
        plain = raw(a)
        if isinstance(plain, numbers.Number):
            lines.append(f"  input {i}: the number {plain!r}")
            continue
        if not isinstance(plain, torch.Tensor):
            lines.append(f"  input {i}: {type(plain).__name__}")
            continue
        text = f"  input {i}: shape {tuple(plain.shape)}, {plain.dtype}"
        try:
            text += f", value at {where}: {torch.broadcast_to(plain, bad_shape)[where].item()!r}"
        except (RuntimeError, IndexError):
            if plain.numel() <= 6:
                text += f", values {plain.tolist()}"
        if (plain.is_floating_point() or plain.is_complex()) and not bool(torch.isfinite(plain).all()):
            text += f" (it already holds {int((~torch.isfinite(plain)).sum())} non-finite entries)"
        lines.append(text)
    return "\n".join(lines)


def _raise_anomaly(primitive, rule: str, found, inputs, params, bad_shape):
    where, entry = found
    context = f" (inside the {', inside the '.join(reversed(_anomaly))})" if _anomaly else ""
    parameters = f" with {params}" if params else ""
    raise AnomalyError(
        f"detect_anomaly: ad_lib.ops.{primitive.name}{parameters}{context}: its {rule} is {entry} at index "
        f"{where} (shape {tuple(bad_shape)}). Its inputs:\n{_describe_inputs(inputs, where, bad_shape)}"
    )


def apply_rule(primitive, kind: str, i: int, rule, seed, out, inputs, params):
    """Run a derivative rule of ``primitive`` for its input ``i``, checked under :func:`detect_anomaly`.

    ``kind`` is ``"forward"`` (``seed`` is a tangent of input ``i``) or
    ``"reverse"`` (``seed`` is the output's cotangent). Returns the rule's
    contribution, ``rule(seed, out, *inputs, **params)``. Used by the
    interpreters of :mod:`ad_lib.forward` and :mod:`ad_lib.reverse`.
    """
    if _anomaly is None:
        return rule(seed, out, *inputs, **params)
    label = f"{kind} partial of input {i}"
    _anomaly.append(f"{label} of {primitive.name}")
    try:
        contribution = rule(seed, out, *inputs, **params)
    finally:
        _anomaly.pop()
    found = None if contribution is None else _first_bad(contribution)
    if found is not None:
        _raise_anomaly(primitive, label, found, inputs, params, shape(contribution))
    return contribution


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
    reads
        one entry per input: what the reverse partial of that input reads, as
        a string of the rule's argument names separated by commas (``"out"``,
        ``"b"``, ``"out, b"``), or ``""`` for a rule that reads only shapes.
        The tape (:mod:`ad_lib.reverse`) keeps the values so named and a
        :class:`StandIn` for the others (chapter 4, section "The price:
        memory"). ``None`` (the default) declares that every rule reads
        every value.
    """

    def __init__(
        self, name: str, value: Callable, jvp: Sequence[Rule], vjp: Sequence[Rule], params: Sequence[str] = (),
        reads: Optional[Sequence[str]] = None,
    ):
        if len(jvp) != len(vjp):
            raise ValueError(f"primitive {name}: one forward and one reverse rule per input are needed")
        self.name = name
        self.value = value
        self.jvp = tuple(jvp)
        self.vjp = tuple(vjp)
        self.arity = len(jvp)
        self.params = tuple(params)
        everything = frozenset(["out", *range(self.arity)])
        if reads is None:
            self.reads = (everything,) * self.arity
        else:
            if isinstance(reads, str) or len(reads) != self.arity:
                raise ValueError(f"primitive {name}: reads needs one string per input ({self.arity}), got {reads!r}")
            self.reads = tuple(self._parse_reads(i, r) for i, r in enumerate(reads))

    def _parse_reads(self, i: int, declared: str) -> frozenset:
        """``"out, b"`` -> ``{"out", 1}``: names of the reverse rule's arguments, as positions."""
        rule = self.vjp[i]
        if rule is None or rule is MISSING:
            return frozenset()
        arguments = list(inspect.signature(rule).parameters)[2 : 2 + self.arity]  # after (g, out)
        kept = set()
        for word in (w.strip() for w in declared.split(",")):
            if not word:
                continue
            if word == "out":
                kept.add("out")
            elif word in arguments:
                kept.add(arguments.index(word))
            else:
                raise ValueError(
                    f"primitive {self.name}: reads[{i}] names {word!r}, which is not 'out' nor an input of its "
                    f"reverse rule {arguments}"
                )
        return frozenset(kept)

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
            elif isinstance(a, StandIn):
                raise TypeError(
                    f"ad_lib.ops.{self.name} was given a stand-in ({a!r}) for a value the tape did not keep: a "
                    "reverse rule read a value that its primitive's declaration (reads=) says it does not read"
                )
            elif not isinstance(a, (Box, torch.Tensor, numbers.Number)):
                raise TypeError(
                    f"ad_lib.ops.{self.name} takes tensors, numbers or ad_lib values, got {type(a).__name__}"
                )
        if top is None:
            numbers_only = all(isinstance(a, numbers.Number) for a in args)
            values = [torch.tensor(a, dtype=torch.float64) for a in args] if numbers_only else args
            out = self.value(*values, **params)
            if _anomaly is not None:  # the one flag test of a primitive call
                found = _first_bad(out)
                if found is not None:
                    _raise_anomaly(self, "value", found, args, params, shape(out))
            return out.item() if numbers_only else out  # numbers in, a number out (float64)
        return type(top).apply(self, args, params, top._level)


PRIMITIVES: dict[str, Primitive] = {}


def _define(name, value, jvp, vjp, params=(), reads=None):
    primitive = Primitive(name, value, jvp, vjp, params, reads)
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
    if lead < 0 or any(s not in (1, n) for s, n in zip(target, x.shape[lead:])):
        raise ValueError(
            f"sum_to: a value of shape {tuple(x.shape)} cannot be summed to shape {tuple(target)}: the target must "
            "be a shape that broadcasts to it (aligned from the right, each dimension of the target either equal "
            "to the value's or 1, and no more dimensions than the value has)"
        )
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
    params=("target",), reads=[""],
)
sum_to = _define(
    "sum_to", _sum_to_value,
    jvp=[lambda t, out, x, target: sum_to(t, target)],
    vjp=[lambda g, out, x, target: broadcast_to(g, shape(x))],
    params=("target",), reads=[""],
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
    vjp=[lambda g, out, a, b: _unbroadcast(g, a), lambda g, out, a, b: _unbroadcast(g, b)], reads=["", ""],
)
sub = _define(
    "sub", torch.sub,
    jvp=[lambda t, out, a, b: t, lambda t, out, a, b: neg(t)],
    vjp=[lambda g, out, a, b: _unbroadcast(g, a), lambda g, out, a, b: _unbroadcast(neg(g), b)], reads=["", ""],
)
mul = _define(
    "mul", torch.mul,
    jvp=[lambda t, out, a, b: mul(t, b), lambda t, out, a, b: mul(a, t)],
    vjp=[lambda g, out, a, b: _unbroadcast(mul(g, b), a), lambda g, out, a, b: _unbroadcast(mul(g, a), b)], reads=["b", "a"],
)
div = _define(
    "div", torch.div,
    jvp=[lambda t, out, a, b: div(t, b), lambda t, out, a, b: neg(div(mul(out, t), b))],
    vjp=[lambda g, out, a, b: _unbroadcast(div(g, b), a), lambda g, out, a, b: _unbroadcast(neg(div(mul(g, out), b)), b)], reads=["b", "out, b"],
)
neg = _define(
    "neg", torch.neg,
    jvp=[lambda t, out, a: neg(t)],
    vjp=[lambda g, out, a: neg(g)], reads=[""],
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
    """d(a^b)/db = a^b log a; as torch, 0 where a = 0 and b >= 0 (not 0 * log 0, NaN).

    For a complex exponent, "b >= 0" is read on its real part.
    """
    exponent = torch.as_tensor(raw(b))
    base_zero = (torch.as_tensor(raw(a)) == 0) & ((exponent.real if exponent.is_complex() else exponent) >= 0)
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
    reads=["a, b", "out, a, b"],
)

# ---------------------------------------------------------------------------
# Elementary functions
# ---------------------------------------------------------------------------

exp = _define("exp", torch.exp, jvp=[lambda t, out, a: mul(t, out)], vjp=[lambda g, out, a: mul(g, out)], reads=["out"])
log = _define("log", torch.log, jvp=[lambda t, out, a: div(t, a)], vjp=[lambda g, out, a: div(g, a)], reads=["a"])
sin = _define("sin", torch.sin, jvp=[lambda t, out, a: mul(t, cos(a))], vjp=[lambda g, out, a: mul(g, cos(a))], reads=["a"])
cos = _define("cos", torch.cos, jvp=[lambda t, out, a: neg(mul(t, sin(a)))], vjp=[lambda g, out, a: neg(mul(g, sin(a)))], reads=["a"])
tanh = _define(
    "tanh", torch.tanh,
    jvp=[lambda t, out, a: mul(t, sub(1, mul(out, out)))],
    vjp=[lambda g, out, a: mul(g, sub(1, mul(out, out)))],
    reads=["out"],  # its output: the input W x of a tanh layer need not be kept
)
sqrt = _define(
    "sqrt", torch.sqrt,
    jvp=[lambda t, out, a: div(t, mul(2, out))],
    vjp=[lambda g, out, a: div(g, mul(2, out))],
    reads=["out"],
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
    reads=["a", ""],
)
# relu passes a tangent, or an adjoint, where its input is positive, which is
# where its output is: the reverse rule reads the output, so that the tape
# need not keep the input as well
relu = _define(
    "relu", torch.relu,
    jvp=[lambda t, out, a: mask_positive(t, a)],
    vjp=[lambda g, out, a: mask_positive(g, out)],
    reads=["out"],
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
    params=("dim", "keepdim"), reads=[""],
)
reshape = _define(
    "reshape", lambda a, target: a.reshape(target),
    jvp=[lambda t, out, a, target: reshape(t, target)],
    vjp=[lambda g, out, a, target: reshape(g, shape(a))],
    params=("target",), reads=[""],
)
transpose = _define(
    "transpose", lambda a, dim0, dim1: a.transpose(dim0, dim1),
    jvp=[lambda t, out, a, dim0, dim1: transpose(t, dim0, dim1)],
    vjp=[lambda g, out, a, dim0, dim1: transpose(g, dim0, dim1)],
    params=("dim0", "dim1"), reads=[""],
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
    vjp=[_matmul_vjp_a, _matmul_vjp_b], reads=["b", "a"],
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


# ---------------------------------------------------------------------------
# Indexing, and its adjoint: a scatter into zeros
# ---------------------------------------------------------------------------

_BASIC_KEYS = (int, slice, type(Ellipsis), type(None))


def _check_key(key):
    """The key as a tuple of ints, slices, ``...`` and ``None`` (basic indexing), or a TypeError."""
    parts = key if isinstance(key, tuple) else (key,)
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, _BASIC_KEYS):
            raise TypeError(
                f"ad_lib.ops.index supports basic indexing (ints, slices, ... and None), got {part!r} of type "
                f"{type(part).__name__}; indexing by tensors, lists or masks has no rule in ad_lib.ops"
            )
        if isinstance(part, slice) and part.step is not None and (not isinstance(part.step, int) or part.step <= 0):
            raise ValueError(f"ad_lib.ops.index: a slice step must be a positive int, got {part.step!r}")
    return key


def _index_value(a, key):
    return a[_check_key(key)]


def _scatter_index_value(g, key, target):
    # zeros of the target shape with g written at key; made with new_zeros so
    # that it also works on torch.func.vmap's batched tensors
    out = g.new_zeros(tuple(target))
    out[_check_key(key)] = g
    return out


# x[key] and its adjoint: the forward partial indexes the tangent, the reverse
# partial writes the cotangent into zeros shaped like x (basic indexing never
# selects an entry twice, so writing is summing); both are linear, so they nest
index = _define(
    "index", _index_value,
    jvp=[lambda t, out, a, key: index(t, key)],
    vjp=[lambda g, out, a, key: scatter_index(g, key, shape(a))],
    params=("key",), reads=[""],
)
scatter_index = _define(
    "scatter_index", _scatter_index_value,
    jvp=[lambda t, out, g, key, target: scatter_index(t, key, target)],
    vjp=[lambda u, out, g, key, target: index(u, key)],
    params=("key", "target"), reads=[""],
)


# What each primitive computes, for help() and the library reference: the
# primitives are objects, not functions, so each gets its docstring here.
_WHAT = {
    "broadcast_to": ("broadcast_to(x, target)", "x repeated along new or length-1 axes to the shape target, as torch.broadcast_to; its adjoint is sum_to"),
    "sum_to": ("sum_to(x, target)", "x summed over the axes that broadcasting to x's shape repeated, back to the shape target; its adjoint is broadcast_to"),
    "add": ("add(a, b)", "a + b, with broadcasting"),
    "sub": ("sub(a, b)", "a - b, with broadcasting"),
    "mul": ("mul(a, b)", "a * b, elementwise, with broadcasting"),
    "div": ("div(a, b)", "a / b, elementwise, with broadcasting"),
    "neg": ("neg(a)", "-a"),
    "pow": ("pow(a, b)", "a ** b, elementwise; d/da = b a^(b-1), d/db = a^b log a, both 0 where torch's are"),
    "exp": ("exp(a)", "the exponential, elementwise"),
    "log": ("log(a)", "the natural logarithm, elementwise (NaN for a < 0, as torch; detect_anomaly stops there)"),
    "sin": ("sin(a)", "the sine, elementwise"),
    "cos": ("cos(a)", "the cosine, elementwise"),
    "tanh": ("tanh(a)", "the hyperbolic tangent, elementwise; its reverse partial reads only its output"),
    "sqrt": ("sqrt(a)", "the square root, elementwise; its partials read only its output"),
    "mask_positive": ("mask_positive(x, a)", "x where a > 0 and 0 elsewhere: linear in x, piecewise constant in a"),
    "relu": ("relu(a)", "max(a, 0), elementwise; its partials pass the tangent or cotangent where a > 0"),
    "sum": ("sum(a, dim=None, keepdim=False)", "the sum of all entries, or along dim, as torch.sum"),
    "reshape": ("reshape(a, target)", "a with the shape target"),
    "transpose": ("transpose(a, dim0, dim1)", "a with the axes dim0 and dim1 exchanged"),
    "matmul": ("matmul(a, b)", "the matrix product a @ b, with torch.matmul's rules for vectors and batches"),
    "index": ("index(a, key)", "a[key] for basic indexing (ints, slices, ... and None); its reverse partial is scatter_index"),
    "scatter_index": ("scatter_index(g, key, target)", "zeros of the shape target with g written at [key]: the adjoint of index"),
}
for _name, (_call, _what) in _WHAT.items():
    PRIMITIVES[_name].__doc__ = (
        f"``{_call}``, the primitive that computes {_what}.\n\n"
        "It runs on tensors, numbers and ad_lib values; its forward (JVP) and reverse (VJP) partials "
        "are defined with it in this module (chapter 3, section \"Where the forward partials live\"; "
        "chapter 4, section \"The tensor tape\")."
    )
del _name, _call, _what
