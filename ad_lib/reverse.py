"""Reverse-mode automatic differentiation: back-propagation (chapter 4).

Two implementations of the same idea.

1. :class:`Value`, a scalar engine small enough to read on one screen: each
   operation records its inputs and a closure that sends the output's adjoint
   back to them, with the local derivative written next to the forward rule.
   ``.backward()`` visits the graph from the output to the inputs.

2. The tensor tape: :func:`vjp`, :func:`grad`, :func:`jacrev` and :func:`hvp`,
   with the signatures of ``torch.func``. A function written with
   :mod:`ad_lib.ops` is run on :class:`Traced` values, each primitive appends
   a node to the tape, and the reverse sweep applies the primitives' reverse
   partials (VJP rules) from the last node to the first, summing the adjoints
   that reach a node from its several children (chapter 4, :eq:`eq-reverse-recursion`). One
   sweep gives the whole gradient of a scalar function, for a few times the
   cost of evaluating it: the "cheap gradient principle".

Because the reverse partials are written with the primitives themselves, the
reverse sweep can run on dual numbers: :func:`hvp` is forward mode over
reverse mode.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Sequence

import torch

from ad_lib import ops
from ad_lib.forward import check_tangent, jvp as forward_jvp  # chapter 3's forward mode, for hvp
from ad_lib.ops import Box, new_level, shape

__all__ = ["Value", "Traced", "vjp", "grad", "jacrev", "hvp"]


# ---------------------------------------------------------------------------
# 1. The scalar engine
# ---------------------------------------------------------------------------


class Value:
    """A scalar that remembers how it was computed, for back-propagation.

    ``out.backward()`` adds ``d out / d leaf`` to the ``grad`` of every leaf
    (a Value made directly from a number) that ``out`` depends on, as PyTorch
    does: a second ``backward()`` adds the same again, unless
    ``out.zero_grad()`` is called in between. The intermediate values hold
    the adjoints ``d out / d value`` of the last ``backward()``.
    """

    def __init__(self, data, _parents=(), _op=""):
        self.data = float(data)
        self.grad = 0.0
        self._parents = _parents
        self._op = _op
        self._backward = lambda: None  # sends self.grad to the parents

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():  # d(a + b) = da + db
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():  # d(a b) = b da + a db
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise TypeError("Value ** exponent needs a constant real exponent; use exp(b * log(a)) otherwise")
        if self.data < 0 and not float(exponent).is_integer():
            raise ValueError(
                f"Value ** exponent: a negative base ({self.data}) with a non-integer exponent ({exponent}) "
                "has no real value"
            )
        out = Value(self.data**exponent, (self,), f"**{exponent}")

        def _backward():  # d(a^n) = n a^(n-1) da; at a = 0, as torch: 0 if n = 0, inf if 0 < n < 1
            if exponent == 0:
                return
            slope = exponent * math.inf if self.data == 0 and exponent < 1 else exponent * self.data ** (exponent - 1)
            self.grad += slope * out.grad

        out._backward = _backward
        return out

    def __rpow__(self, base):
        """``c ** a`` for a number ``c > 0``: ``d(c^a) = c^a log(c) da`` (chapter 4)."""
        if isinstance(base, bool) or not isinstance(base, numbers.Real):
            raise TypeError(f"base ** Value needs a real number base, got {type(base).__name__}")
        if base <= 0:
            raise ValueError(f"base ** Value needs a number base > 0 (its derivative has log(base)), got {base}")
        out = Value(base**self.data, (self,), f"{base}**")

        def _backward():  # d(c^a) = c^a log(c) da
            self.grad += out.data * math.log(base) * out.grad

        out._backward = _backward
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():  # d(e^a) = e^a da
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self):
        if self.data <= 0:
            raise ValueError(f"log of a non-positive Value ({self.data})")
        out = Value(math.log(self.data), (self,), "log")

        def _backward():  # d(log a) = da / a
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self):
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():  # d(tanh a) = (1 - tanh^2 a) da
            self.grad += (1 - out.data**2) * out.grad

        out._backward = _backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():  # d(relu a) = [a > 0] da
            self.grad += (self.data > 0) * out.grad

        out._backward = _backward
        return out

    def _topological_order(self):
        """Every value this one depends on, parents before children, by a depth-first search.

        The search keeps its own stack instead of recursing, so that a graph of
        any depth can be ordered (Python's recursion limit is near 1000 calls).
        """
        order, seen, stack = [], {id(self)}, [(self, iter(self._parents))]
        while stack:
            value, parents = stack[-1]
            for parent in parents:
                if id(parent) not in seen:
                    seen.add(id(parent))
                    stack.append((parent, iter(parent._parents)))
                    break
            else:  # all parents placed: the value comes after them
                stack.pop()
                order.append(value)
        return order

    def backward(self):
        """Back-propagate from this value: each leaf's ``grad`` += d self / d leaf."""
        order = self._topological_order()
        for v in order:
            if v._parents:  # intermediate values start from zero at each sweep
                v.grad = 0.0
        self.grad = 1.0 if self._parents else self.grad + 1.0
        for v in reversed(order):
            v._backward()

    def zero_grad(self):
        """Set ``grad`` of this value and all its ancestors to zero."""
        for v in self._topological_order():
            v.grad = 0.0

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def __repr__(self):
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


# ---------------------------------------------------------------------------
# 2. The tensor tape
# ---------------------------------------------------------------------------


class Node:
    """One entry of the tape: a primitive, its inputs and its output (or a leaf, ``primitive=None``).

    Only the values that the primitive's reverse rules read (its declaration
    ``reads``, :class:`ad_lib.ops.Primitive`) are kept; every other input, and
    the output if no rule reads it, is an :class:`ad_lib.ops.StandIn` that
    keeps its shape, dtype and device (chapter 4, section "The price: memory").
    """

    __slots__ = ("primitive", "inputs", "params", "value", "parents")

    def __init__(self, primitive, inputs, params, value, parents):
        self.primitive = primitive
        self.inputs = inputs
        self.params = params
        self.value = value
        self.parents = parents  # [(input index, parent node)]


class Traced(Box):
    """A value being recorded on the tape at a given level."""

    __slots__ = ("value", "node", "_level")

    def __init__(self, value, node: Node, level: int):
        self.value = value
        self.node = node
        self._level = level

    def _unbox(self):
        return self.value

    def __repr__(self) -> str:
        return f"Traced(value={self.value!r}, level={self._level})"

    @classmethod
    def apply(cls, primitive, args, params, level):
        """Run ``primitive`` on its inputs' values and record a node for the reverse sweep."""
        mine = [isinstance(a, Traced) and a._level == level for a in args]
        values = tuple(a.value if m else a for a, m in zip(args, mine))
        out = primitive(*values, **params)
        parents = [(i, a.node) for i, (a, m) in enumerate(zip(args, mine)) if m and primitive.vjp[i] is not None]
        if not parents:  # nothing to send adjoints to
            return out
        plain = ops.raw(out)
        if isinstance(plain, torch.Tensor) and plain.is_complex():
            raise TypeError(_COMPLEX_REFUSED.format(what=f"ad_lib.ops.{primitive.name} returned a complex value"))
        # keep only what the reverse rules of the differentiated inputs read
        read = primitive.reads[parents[0][0]] if len(parents) == 1 else frozenset().union(*(primitive.reads[i] for i, _ in parents))
        kept = tuple(v if j in read or isinstance(v, numbers.Number) else ops.StandIn(v) for j, v in enumerate(values))
        return Traced(out, Node(primitive, kept, params, out if "out" in read else ops.StandIn(out), parents), level)


def _reverse_sweep(output: Node, cotangent) -> dict:
    """Adjoints of every node that ``output`` depends on, by one sweep from the output back."""
    order, seen, stack = [], set(), [(output, False)]
    while stack:  # iterative depth-first search: post-order = a topological order
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((parent, False) for _, parent in node.parents)
    adjoints = {id(output): cotangent}
    for node in reversed(order):
        g = adjoints.get(id(node))
        if g is None or node.primitive is None:
            continue
        for i, parent in node.parents:
            rule = node.primitive.reverse_rule(i)
            if ops._anomaly is None:  # outside detect_anomaly: the rule itself, one flag test
                contribution = rule(g, node.value, *node.inputs, **node.params)
            else:
                contribution = ops.apply_rule(node.primitive, "reverse", i, rule, g, node.value, node.inputs, node.params)
            if contribution is None:
                continue
            previous = adjoints.get(id(parent))
            adjoints[id(parent)] = contribution if previous is None else ops.add(previous, contribution)
    return adjoints


def _leaf(x, level: int, name: str) -> Traced:
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        x = torch.tensor(float(x), dtype=torch.float64)
    if not isinstance(x, (torch.Tensor, Box)):
        raise TypeError(f"{name} must be a tensor or a real number, got {type(x).__name__}")
    value = ops.raw(x)
    if value.is_complex():
        raise TypeError(_COMPLEX_REFUSED.format(what=f"{name} is complex ({value.dtype})"))
    if not value.is_floating_point():
        raise TypeError(f"{name} must be floating-point to be differentiated, got {value.dtype}")
    return Traced(x, Node(None, (), {}, x, []), level)


_COMPLEX_REFUSED = (
    "{what}: ad_lib's reverse mode (vjp, grad, jacrev, hvp) is for real values only; its reverse partials "
    "are the transposes of real derivatives, without the complex conjugate of PyTorch's convention, so they "
    "would give wrong cotangents. Use ad_lib.forward.jvp (which agrees with torch.func.jvp on complex "
    "inputs) or torch.func.vjp"
)


def _check_output(out, level: int):
    """f's output for vjp: a tensor or an ad_lib value (a Python number is a constant), else a TypeError."""
    if isinstance(out, (tuple, list)):
        raise TypeError("ad_lib.reverse.vjp supports functions with one output; return a single tensor")
    if isinstance(out, bool) or not isinstance(out, (torch.Tensor, Box, numbers.Number)):
        raise TypeError(
            f"f returned {type(out).__name__} ({out!r:.60}); vjp needs f to return a tensor, or a Python number "
            "(a constant, whose cotangents are zeros)"
        )
    plain = ops.raw(out)
    if isinstance(plain, complex) or (isinstance(plain, torch.Tensor) and plain.is_complex()):
        raise TypeError(_COMPLEX_REFUSED.format(what="f returned a complex value"))


def vjp(f: Callable, *primals):
    """Value of ``f`` at ``primals`` and a function computing vector-Jacobian products there.

    The signature of ``torch.func.vjp``: returns ``(out, vjp_fn)``, and
    ``vjp_fn(u)`` returns a tuple with one cotangent ``J_i^T u`` per primal,
    shaped like it. The tape is kept: ``vjp_fn`` can be called any number of
    times, with different ``u``, and never changes what it returns for a given
    ``u``. ``f`` is written with :mod:`ad_lib.ops` and Python's operators and
    returns one tensor. Chapter 4, section "The tensor tape".

    A Python number returned by ``f`` is a constant function: ``vjp_fn``
    returns zeros shaped like the primals (``torch.func.vjp`` refuses it).
    Anything else (``None``, a string, a dict, a tuple) raises a
    ``TypeError``, and so do complex primals or a complex value on the tape:
    the reverse partials are not conjugated as PyTorch's convention would
    require.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    if not primals:
        raise ValueError("vjp needs at least one primal to differentiate with respect to")
    level = new_level()
    leaves = [_leaf(p, level, f"primals[{i}]") for i, p in enumerate(primals)]
    out = f(*leaves)
    _check_output(out, level)
    traced = isinstance(out, Traced) and out._level == level
    value = out.value if traced else out

    def vjp_fn(cotangent):
        if isinstance(cotangent, numbers.Real) and not isinstance(cotangent, bool):
            cotangent = torch.full_like(ops.raw(value), float(cotangent)) if isinstance(ops.raw(value), torch.Tensor) else float(cotangent)
        plain_cotangent = ops.raw(cotangent)
        if isinstance(plain_cotangent, complex) or (isinstance(plain_cotangent, torch.Tensor) and plain_cotangent.is_complex()):
            raise TypeError(_COMPLEX_REFUSED.format(what="the cotangent is complex"))
        if shape(cotangent) != shape(value):
            raise ValueError(
                f"the cotangent has shape {tuple(shape(cotangent))} but f's output has shape "
                f"{tuple(shape(value))}; they must match"
            )
        if not traced:  # the output does not depend on the inputs
            return tuple(torch.zeros_like(ops.raw(leaf.value)) for leaf in leaves)
        adjoints = _reverse_sweep(out.node, cotangent)
        return tuple(  # inputs the output does not depend on get zeros (made only for them)
            adjoints[id(leaf.node)] if id(leaf.node) in adjoints else torch.zeros_like(ops.raw(leaf.value))
            for leaf in leaves
        )

    return value, vjp_fn


def grad(f: Callable, argnums=0) -> Callable:
    """The gradient of a scalar function, as a function: one reverse sweep per call.

    ``grad(f)(*args)`` is the gradient with respect to ``args[argnums]``
    (a tuple of gradients if ``argnums`` is a tuple), like ``torch.func.grad``.
    ``f`` must return a scalar (a tensor with one element). ``argnums`` may
    not name an argument twice (a ``ValueError``, as ``torch.func.grad``
    refuses it too): the gradient with respect to an argument is one tensor.
    Chapter 4, section "The tensor tape".
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    indices = (argnums,) if isinstance(argnums, int) and not isinstance(argnums, bool) else argnums
    if not isinstance(indices, tuple) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise TypeError(f"argnums must be an int or a tuple of ints, got {argnums!r}")
    if not indices:
        raise ValueError("argnums is an empty tuple: name at least one argument to differentiate with respect to")
    if len(set(indices)) != len(indices):
        raise ValueError(
            f"argnums={argnums!r} names an argument more than once; each argument's gradient is returned once "
            "(as torch.func.grad, which refuses repeated argnums too)"
        )

    def gradient(*args):
        for i in indices:
            if not -len(args) <= i < len(args):
                raise ValueError(f"argnums contains {i} but f was given {len(args)} argument(s)")
        if len({i % len(args) for i in indices}) != len(indices):
            raise ValueError(
                f"argnums={argnums!r} names an argument more than once (a negative index counts from the end, "
                f"and f was given {len(args)} arguments); each argument's gradient is returned once"
            )

        def f_of_selected(*selected):
            full = list(args)
            for i, s in zip(indices, selected):
                full[i] = s
            return f(*full)

        out, vjp_fn = vjp(f_of_selected, *[args[i] for i in indices])
        n = 1
        for s in shape(out):
            n *= s
        if n != 1:
            raise ValueError(
                f"grad needs f to return a scalar, but it returned shape {tuple(shape(out))}; "
                "use ad_lib.reverse.vjp or jacrev for vector outputs"
            )
        raw_out = ops.raw(out)
        one = torch.ones_like(raw_out) if isinstance(raw_out, torch.Tensor) else 1.0
        gradients = vjp_fn(one)
        return gradients[0] if isinstance(argnums, int) else gradients

    gradient.__name__ = f"grad_of_{getattr(f, '__name__', 'f')}"
    return gradient


def jacrev(f: Callable, argnums: int = 0, *, vectorize: bool = True) -> Callable:
    """The Jacobian of ``f`` by reverse mode, one vector-Jacobian product per output coordinate.

    ``jacrev(f)(*args)`` has shape ``f(x).shape + x.shape`` with ``x =
    args[argnums]``, like ``torch.func.jacrev``. With ``vectorize=True`` the
    ``m`` cotangents (the canonical basis of the output space) go through one
    reverse sweep together (``torch.func.vmap`` batches the sweep's tensor
    arithmetic); with ``vectorize=False`` there are ``m`` sweeps.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"argnums must be an int, got {type(argnums).__name__}")

    def jacobian(*args):
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"argnums={argnums} but f was given {len(args)} argument(s)")
        x = args[argnums]

        def f_of_x(xx):
            full = list(args)
            full[argnums] = xx
            return f(*full)

        out, vjp_fn = vjp(f_of_x, x)
        if isinstance(out, numbers.Number):  # a constant f: its Jacobian is zero, shaped like x
            return torch.zeros_like(ops.raw(x))
        out_shape, x_shape, plain = tuple(shape(out)), tuple(shape(x)), ops.raw(out)
        m = math.prod(out_shape)
        basis = torch.eye(m, dtype=plain.dtype, device=plain.device).reshape((m,) + out_shape)
        if isinstance(out, Box):  # nested in forward mode (jacfwd(jacrev(f))): rows are dual numbers
            ones_x, ones_out = (1,) * len(x_shape), (1,) * len(out_shape)
            rows = [ops.reshape(vjp_fn(basis[i])[0], ones_out + x_shape) * basis[i].reshape(out_shape + ones_x) for i in range(m)]
            return functools.reduce(ops.add, rows)  # sum of e_i (J^T e_i)^T: the Jacobian, built with primitives
        if vectorize and not ops.anomaly_mode_enabled():
            rows = torch.func.vmap(lambda u: vjp_fn(u)[0])(basis)
        else:
            rows = torch.stack([vjp_fn(basis[i])[0] for i in range(m)])
        return rows.reshape(out_shape + x_shape)

    return jacobian


def hvp(f: Callable, x, v):
    """The Hessian-vector product ``H_f(x) v`` of a scalar function, by forward mode over reverse mode.

    The gradient is computed by a reverse sweep run on dual numbers whose
    tangent is ``v``; the tangent of the gradient is ``H v`` (chapter 4,
    section "Second order: Hessian-vector products"). Costs a small multiple of one gradient, and never
    forms the Hessian. ``v`` must have the shape, dtype and device of ``x``.
    """
    check_tangent(x, v, "x", "v")
    return forward_jvp(grad(f), (x,), (v,))[1]
