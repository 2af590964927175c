"""Forward-mode automatic differentiation with dual numbers (chapter 3).

A dual number ``x + eps x'`` with ``eps^2 = 0`` carries a value and a tangent.
Running a program on dual numbers pushes the tangent forward through every
primitive with its forward partial (its JVP rule, :mod:`ad_lib.ops`), so that
``f(x + eps v) = f(x) + eps J_f(x) v``: one pass gives one Jacobian-vector
product (chapter 3, section "Dual numbers", :eq:`eq-dual-extension`). A gradient of ``f: R^p -> R`` therefore costs
``p`` passes, one per input direction.

Perturbation confusion
----------------------
Each call of :func:`jvp` tags its dual numbers with a fresh *level*
(:func:`ad_lib.ops.new_level`). A primitive meeting dual numbers of several
levels handles the most recent one first and treats the others as constants,
so the tangents of nested derivatives never mix: ``d/dx [x * d/dy (x + y)]``
at ``x = y = 1`` is 1, as it should be, not 2 (chapter 3, section
"Nested derivatives and perturbation confusion").
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Sequence

import torch

from ad_lib import ops
from ad_lib.ops import Box, broadcast_to, new_level, shape

__all__ = ["Dual", "jvp", "derivative", "jacfwd"]


class Dual(Box):
    """A dual number ``primal + eps * tangent`` at a given level.

    ``primal`` and ``tangent`` are tensors of the same shape (or, in nested
    differentiation, dual numbers of lower levels). Arithmetic operators and
    the primitives of :mod:`ad_lib.ops` act on it.
    """

    __slots__ = ("primal", "tangent", "_level")

    def __init__(self, primal, tangent, level: int):
        self.primal = primal
        self.tangent = tangent
        self._level = level

    def _unbox(self):
        return self.primal

    def __repr__(self) -> str:
        return f"Dual(primal={self.primal!r}, tangent={self.tangent!r}, level={self._level})"

    @classmethod
    def apply(cls, primitive, args, params, level):
        """Run ``primitive`` on dual numbers: the value on the primals, the tangent by the JVP rules."""
        mine = [isinstance(a, Dual) and a._level == level for a in args]
        primals = tuple(a.primal if m else a for a, m in zip(args, mine))
        out = primitive(*primals, **params)
        tangent = None
        for i, (a, m) in enumerate(zip(args, mine)):
            if not m:
                continue
            rule = primitive.forward_rule(i)
            if rule is None:  # the output does not depend on this input differentiably
                continue
            if ops._anomaly is None:  # outside detect_anomaly: the rule itself, one flag test
                contribution = rule(a.tangent, out, *primals, **params)
            else:
                contribution = ops.apply_rule(primitive, "forward", i, rule, a.tangent, out, primals, params)
            tangent = contribution if tangent is None else ops.add(tangent, contribution)
        if tangent is None:
            return out
        if shape(tangent) != shape(out):
            tangent = broadcast_to(tangent, shape(out))
        return Dual(out, tangent, level)


def _as_tensor(x, name: str):
    if isinstance(x, torch.Tensor) or isinstance(x, Box):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return torch.tensor(float(x), dtype=torch.float64)
    raise TypeError(f"{name} must be tensors or real numbers, got {type(x).__name__}")


def _check_floating(x, name: str):
    value = ops.raw(x)
    if isinstance(value, torch.Tensor) and not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must be floating-point to be differentiated, got {value.dtype}")


def check_tangent(primal, tangent, primal_name: str, tangent_name: str) -> None:
    """Refuse a tangent whose shape, dtype or device differs from its primal's, naming both arguments."""
    if shape(tangent) != shape(primal):
        raise ValueError(
            f"{tangent_name} has shape {tuple(shape(tangent))} but {primal_name} has shape {tuple(shape(primal))}; "
            f"{tangent_name} must have the shape of {primal_name}"
        )
    rp, rt = ops.raw(primal), ops.raw(tangent)
    if isinstance(rp, torch.Tensor) and isinstance(rt, torch.Tensor) and (rt.dtype, rt.device) != (rp.dtype, rp.device):
        raise ValueError(
            f"{tangent_name} has dtype {rt.dtype} on {rt.device} but {primal_name} has dtype {rp.dtype} on "
            f"{rp.device}; {tangent_name} must have the dtype and device of {primal_name}"
        )


def _plain_tangent(out, level, what: str = "f"):
    """The tangent of an output at this level: zero if the output does not depend on the inputs.

    A Python number (a constant function) has the tangent ``0.0``; anything
    that is neither a tensor, an ad_lib value nor a number is refused.
    """
    if isinstance(out, Dual) and out._level == level:
        return out.primal, out.tangent
    if isinstance(out, bool) or not isinstance(out, (torch.Tensor, Box, numbers.Number)):
        raise TypeError(
            f"{what} returned {type(out).__name__} ({out!r:.60}); jvp needs f to return a tensor, a tuple of "
            "tensors, or a Python number (a constant, whose tangent is 0.0)"
        )
    return out, torch.zeros_like(ops.raw(out)) if isinstance(ops.raw(out), torch.Tensor) else 0.0


def jvp(f: Callable, primals: Sequence, tangents: Sequence):
    """Value and Jacobian-vector product of ``f`` at ``primals`` along ``tangents``: ``(f(x), J_f(x) v)``.

    The signature of ``torch.func.jvp``: ``primals`` and ``tangents`` are
    tuples with one entry per argument of ``f``, each tangent shaped like its
    primal; Python numbers are taken as float64 0-d tensors. ``f`` is written
    with :mod:`ad_lib.ops` and Python's operators, and may return one tensor
    or a tuple of tensors (the tangents then come as a tuple too). One pass of
    forward mode (chapter 3, section "The forward recursion").

    A Python number returned by ``f`` is a constant: it comes back as it is,
    with the tangent ``0.0`` (``torch.func.jvp`` refuses it). Anything else
    (``None``, a string, a dict) raises a ``TypeError`` naming its type.
    Complex inputs are allowed: the primitives that are holomorphic (all but
    ``relu`` and ``mask_positive``) push ``f'(z) t`` forward, as
    ``torch.func.jvp`` does.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("primals and tangents must be tuples, one entry per argument of f (as in torch.func.jvp)")
    if len(primals) != len(tangents):
        raise ValueError(f"got {len(primals)} primals but {len(tangents)} tangents; one tangent per primal is needed")
    level = new_level()
    inputs = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        p, t = _as_tensor(p, "primals"), _as_tensor(t, "tangents")
        _check_floating(p, f"primals[{i}]")
        check_tangent(p, t, f"primals[{i}]", f"tangents[{i}]")
        inputs.append(Dual(p, t, level))
    out = f(*inputs)
    if isinstance(out, (tuple, list)):
        if not out:
            raise TypeError("f returned an empty tuple; jvp needs at least one output")
        pairs = [_plain_tangent(o, level, f"f's output {i}") for i, o in enumerate(out)]
        return tuple(p for p, _ in pairs), tuple(t for _, t in pairs)
    return _plain_tangent(out, level)


def derivative(f: Callable) -> Callable:
    """The derivative of a function of one real number, ``f: R -> R^m``, as a function (one forward pass per call).

    ``derivative(f)(x)`` is ``f'(x)``, the tangent along ``1``, for a number
    or a one-element tensor ``x``. A tensor with more elements is refused
    (``ValueError``): along a vector of ones, a forward pass gives ``J 1``,
    which for a function of a vector is not a derivative (for ``sum(x ** 2)``
    it would be the sum of the gradient). For ``f'`` at many points use
    ``torch.func.vmap(derivative(f))(points)``; for a function of a vector,
    :func:`jacfwd` or :func:`ad_lib.reverse.grad`. Derivatives nest:
    ``derivative(derivative(f))`` is ``f''`` (chapter 3, section "Nested
    derivatives and perturbation confusion").
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")

    def f_prime(x):
        x = _as_tensor(x, "x")
        if math.prod(shape(x)) != 1:
            raise ValueError(
                f"derivative(f)(x) is for a function of one number, but x has shape {tuple(shape(x))}; "
                "for f' at many points use torch.func.vmap(derivative(f))(x); for a function of a vector use "
                "ad_lib.forward.jacfwd(f)(x) (the Jacobian) or ad_lib.reverse.grad(f)(x) (the gradient)"
            )
        one = ops.raw(x)
        one = torch.ones_like(one) if isinstance(one, torch.Tensor) else 1.0
        return jvp(f, (x,), (one,))[1]

    f_prime.__name__ = f"derivative_of_{getattr(f, '__name__', 'f')}"
    return f_prime


def jacfwd(f: Callable, argnums: int = 0, *, vectorize: bool = True) -> Callable:
    """The Jacobian of ``f`` by forward mode, one Jacobian-vector product per input coordinate.

    ``jacfwd(f)(*args)`` has shape ``f(x).shape + x.shape`` where ``x =
    args[argnums]``, like ``torch.func.jacfwd``. With ``vectorize=True`` the
    ``p`` tangents (the canonical basis) are pushed through in one pass, the
    tangent of every intermediate carrying a leading axis of length ``p``
    (``torch.func.vmap`` batches the tensor arithmetic of the pass); with
    ``vectorize=False`` the ``p`` passes run one after the other, as the
    notes' recursion does (chapter 3, section "The cost of p passes").
    ``x`` may itself be a value being differentiated, so that Jacobians nest:
    ``jacfwd(jacfwd(f))`` and ``jacrev(jacfwd(f))`` are Hessians.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"argnums must be an int, got {type(argnums).__name__}")

    def jacobian(*args):
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"argnums={argnums} but f was given {len(args)} argument(s)")
        x = _as_tensor(args[argnums], f"args[{argnums}]")
        _check_floating(x, f"args[{argnums}]")

        def f_of_x(xx):
            full = list(args)
            full[argnums] = xx
            return f(*full)

        def push(tangent):  # a constant f (a Python number) has the tangent 0: a 0-d tensor like x's
            tangent_out = jvp(f_of_x, (x,), (tangent,))[1]
            return tangent_out if isinstance(tangent_out, (torch.Tensor, Box)) else torch.zeros((), dtype=x.dtype, device=x.device)

        plain = ops.raw(x)
        x_shape = tuple(shape(x))
        p = math.prod(x_shape)
        basis = torch.eye(p, dtype=plain.dtype, device=plain.device).reshape(p, *x_shape)
        if isinstance(x, Box):  # nested in another differentiation (jacfwd(jacfwd(f)), jacrev(jacfwd(f)))
            # the columns are boxes, which vmap cannot batch: p passes, and the Jacobian
            # sum_i (J e_i) e_i^T assembled with primitives, so that it can be differentiated
            columns = [push(basis[i]) for i in range(p)]
            out_shape = tuple(shape(columns[0]))
            ones_x, ones_out = (1,) * len(x_shape), (1,) * len(out_shape)
            terms = [ops.reshape(c, out_shape + ones_x) * basis[i].reshape(ones_out + x_shape) for i, c in enumerate(columns)]
            return functools.reduce(ops.add, terms)
        if vectorize and not ops.anomaly_mode_enabled():
            columns = torch.func.vmap(push)(basis)
        else:
            columns = torch.stack([push(basis[i]) for i in range(p)])
        out_shape = columns.shape[1:]
        return columns.reshape(p, -1).T.reshape(tuple(out_shape) + tuple(x.shape))

    return jacobian
