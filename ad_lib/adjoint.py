"""Neural ODEs and the adjoint-state method: ``odeint`` and ``odeint_adjoint`` (chapter 6).

A residual network with a step ``tau -> 0`` becomes the ODE ``y'(t) =
func(t, y)`` (chapter 6, section "Residual networks as explicit Euler
steps"). This module integrates it with fixed-step Runge-Kutta methods and
differentiates the result in two ways:

- :func:`odeint` records every step on ``torch.autograd``'s tape:
  back-propagation through the solver (discretize, then differentiate). Its
  gradients are the exact gradients of the discrete scheme; its memory grows
  linearly with the number of steps.
- :func:`odeint_adjoint` is an ``autograd.Function`` that keeps only the
  outputs. Its backward integrates the adjoint ODE ``a' = -[d_y func]^T a``
  together with the state (recomputed backward in time) and the parameter
  adjoint ``a_theta' = -[d_theta func]^T a``: differentiate, then
  discretize (chapter 6, section "The augmented adjoint system",
  :eq:`eq-augmented`). Its memory does not depend on the number of steps; its
  gradients differ from those of :func:`odeint` by the solver's error,
  ``O(h^p)`` for a method of order ``p``.

Both have the signatures of ``torchdiffeq.odeint`` and
``torchdiffeq.odeint_adjoint`` for the fixed-step methods: ``func(t, y)`` an
``nn.Module`` (or any callable, for :func:`odeint`), ``t`` a 1-D tensor of
increasing output times, the output of shape ``(len(t), *y0.shape)``, the
step size given as ``options=dict(step_size=h)``, and the keywords ``rtol``
and ``atol`` accepted and ignored, as torchdiffeq ignores them for these
methods.

The methods (:data:`METHODS`): ``"euler"`` (order 1), ``"midpoint"`` (the
explicit midpoint rule, order 2), ``"rk4"`` (the classical Runge-Kutta
method, order 4) and ``"rk4_38"`` (Kutta's 3/8 rule, order 4). Note that
torchdiffeq's ``method="rk4"`` is Kutta's 3/8 rule, that is, ``"rk4_38"``
here; ``"euler"``, ``"midpoint"`` and ``"rk4_38"`` give torchdiffeq's
numbers (to rounding) when the step size divides every interval of ``t``,
in float32 as in float64.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import nn

__all__ = ["Tableau", "METHODS", "steps_per_interval", "odeint", "odeint_adjoint", "augmented_dynamics"]


class Tableau(NamedTuple):
    """An explicit Runge-Kutta method: its Butcher tableau and its order.

    A step of size ``h`` from ``(t, y)`` computes the slopes
    ``k_i = f(t + nodes[i] h, y + h sum_j matrix[i][j] k_j)`` and returns
    ``y + h sum_i weights[i] k_i`` (chapter 6, section "Neural ODEs: odeint
    and odeint_adjoint").
    """

    nodes: tuple
    matrix: tuple
    weights: tuple
    order: int


METHODS = {
    "euler": Tableau((0.0,), ((),), (1.0,), 1),
    "midpoint": Tableau((0.0, 0.5), ((), (0.5,)), (0.0, 1.0), 2),
    "rk4": Tableau((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6), 4),
    "rk4_38": Tableau((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                      (1 / 8, 3 / 8, 3 / 8, 1 / 8), 4),
}


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _check_method(method) -> Tableau:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; the fixed-step methods are {sorted(METHODS)}")
    return METHODS[method]


def _check_y0(y0) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got {y0.dtype}")
    return y0


def _check_times(t) -> torch.Tensor:
    """``t`` checked as given (its own dtype): a 1-D floating-point tensor of finite, increasing times."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a 1-D tensor of increasing output times, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"t must be a 1-D tensor of at least two increasing times, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating-point tensor, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"t must hold finite times, got {t.tolist()}")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError(
            f"t must be strictly increasing, got {t.tolist()}; to integrate backward in time, "
            "substitute s = -t (integrate -func(-s, y) over increasing s)"
        )
    return t


def _check_t(t, y0: torch.Tensor) -> torch.Tensor:
    """``t`` checked, then cast to the device and dtype of ``y0`` (still strictly increasing after the cast)."""
    t = _check_times(t).to(device=y0.device, dtype=y0.dtype)
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] > t[:-1]).all()):
        raise ValueError(
            f"t is not finite and strictly increasing once cast to y0's dtype {y0.dtype}: got {t.tolist()}; "
            "pass times that are distinct in that dtype"
        )
    return t


def _check_tolerances(rtol, atol) -> None:
    """``rtol`` and ``atol`` are accepted, as by torchdiffeq, and ignored: the methods have a fixed grid."""
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None and not isinstance(tol, torch.Tensor) and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)):
            raise TypeError(f"{name} must be a real number, a tensor or None (it is ignored by the fixed-step "
                            f"methods), got {type(tol).__name__}")


def _check_call(func, y0, method, rtol, atol):
    """The checks odeint and odeint_adjoint share: (the method's tableau, y0 checked)."""
    if not callable(func):
        raise TypeError(f"func must be a callable func(t, y), usually an nn.Module, got {type(func).__name__}")
    tableau = _check_method(method)
    _check_tolerances(rtol, atol)
    return tableau, _check_y0(y0)


# at most this many steps in all: beyond, a step size is a mistake (10^8 steps of a 3-vector take minutes)
_MAX_STEPS = 10**8


def steps_per_interval(t: torch.Tensor, options: Optional[dict] = None) -> list:
    """The number of steps ``n_i`` of each interval ``[t_i, t_{i+1}]`` of the output times ``t``.

    Without ``options`` (or without its ``step_size``): one step per
    interval, so the output times are the grid. With
    ``options=dict(step_size=h)``: ``n_i = ceil((t_{i+1} - t_i) / h)``
    equal steps, a step at most ``h``, and every output time a grid point
    (no interpolation). A quotient within rounding of an integer (``64 eps``
    relative, ``eps`` that of ``t``'s dtype, or of ``h``'s if ``h`` is a
    coarser tensor) counts as that integer: in float32, ``(0.2 - 0.1) / 0.01``
    is ``10.0000001``, which is 10 steps, not 11. Pass the times as the user
    gave them, before any cast, so that ``t``'s own dtype sets the tolerance.
    When ``h`` divides the intervals this is the grid of ``torchdiffeq`` with
    the same option. More than ``_MAX_STEPS`` (``10^8``) steps in all, or a
    quotient that overflows, is a ``ValueError``. Chapter 6, section "Neural
    ODEs: odeint and odeint_adjoint".
    """
    t = _check_times(t)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict such as dict(step_size=0.01) or None, got {type(options).__name__}")
    unknown = set(options) - {"step_size"}
    if unknown:
        raise ValueError(f"options: unknown option(s) {sorted(unknown)}; the fixed-step solvers take only 'step_size'")
    times = t.tolist()
    step = options.get("step_size")
    if step is None:
        return [1] * (len(times) - 1)
    eps = torch.finfo(t.dtype).eps
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        if step.is_floating_point():
            eps = max(eps, torch.finfo(step.dtype).eps)
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step) or step <= 0:
        raise ValueError(f"options['step_size'] must be a positive real number, got {step!r}")
    quotients = [(b - a) / step for a, b in zip(times[:-1], times[1:])]
    if not all(math.isfinite(q) for q in quotients) or sum(quotients) > _MAX_STEPS:
        raise ValueError(
            f"options['step_size'] = {step!r} gives {sum(quotients):.3g} steps over t = [{times[0]:.6g}, {times[-1]:.6g}], "
            f"more than {_MAX_STEPS:.0e}: the solver would not finish; choose a larger step size"
        )
    steps = []
    for q in quotients:
        nearest = round(q)
        n = nearest if abs(q - nearest) <= 64 * eps * max(q, 1.0) else math.ceil(q)
        steps.append(max(1, n))
    return steps


# ---------------------------------------------------------------------------
# The fixed-step solver, on tuples of tensors
# ---------------------------------------------------------------------------


def _rk_step(tableau: Tableau, f: Callable, t, h, y: tuple) -> tuple:
    """One explicit Runge-Kutta step of size ``h`` (negative: backward in time) for a state ``y`` (a tuple)."""
    slopes = []
    for c, row in zip(tableau.nodes, tableau.matrix):
        stage = y
        for a, k in zip(row, slopes):
            if a != 0:
                stage = tuple(s + (a * h) * ki for s, ki in zip(stage, k))
        slopes.append(f(t + c * h, stage))
    out = y
    for b, k in zip(tableau.weights, slopes):
        if b != 0:
            out = tuple(o + (b * h) * ki for o, ki in zip(out, k))
    return out


def _integrate(tableau: Tableau, f: Callable, y: tuple, t_start, t_end, steps: int) -> tuple:
    """``steps`` equal steps from ``t_start`` to ``t_end`` (which may be smaller: backward in time)."""
    h = (t_end - t_start) / steps
    for j in range(steps):
        y = _rk_step(tableau, f, t_start + j * h, h, y)
    return y


def _check_finite(state: tuple, what: str, t_a, t_b):
    if not all(bool(torch.isfinite(s).all()) for s in state):
        raise FloatingPointError(
            f"{what} is not finite after integrating from t = {float(t_a):.6g} to t = {float(t_b):.6g}: the "
            "solution blows up, or the step is too large for this ODE (try a smaller options['step_size'])"
        )


def _checked_rhs(func: Callable, y0: torch.Tensor) -> Callable:
    """``func`` on 1-tuples of states, checking that it returns a tensor shaped like ``y0``."""

    def rhs(t, state):
        out = func(t, state[0])
        if not isinstance(out, torch.Tensor) or out.shape != y0.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"func(t, y) must return a tensor shaped like y0, {tuple(y0.shape)}, got {got}")
        return (out,)

    return rhs


def _solve(func: Callable, tableau: Tableau, steps: list, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    rhs = _checked_rhs(func, y0)
    ys, y = [y0], (y0,)
    for i, n in enumerate(steps):
        y = _integrate(tableau, rhs, y, t[i], t[i + 1], n)
        _check_finite(y, "the state y", t[i], t[i + 1])
        ys.append(y[0])
    return torch.stack(ys)


def odeint(func: Callable, y0: torch.Tensor, t: torch.Tensor, method: str = "rk4", options: Optional[dict] = None,
           *, rtol=None, atol=None):
    """The solution of ``y' = func(t, y)``, ``y(t_0) = y0``, at the times ``t``, differentiable step by step.

    ``func(t, y)`` (an ``nn.Module`` or any callable) returns a tensor shaped
    like ``y``; ``t`` is a 1-D tensor of at least two strictly increasing
    times; the result has shape ``(len(t), *y0.shape)`` with ``ys[0] = y0``.
    ``method`` is one of :data:`METHODS`; the step is one interval of ``t``,
    or at most ``options["step_size"]`` (:func:`steps_per_interval`, which
    counts the steps from ``t`` as given, before it is cast to ``y0``'s
    dtype and device). ``rtol`` and ``atol`` are accepted and ignored, as
    ``torchdiffeq`` does for its fixed-grid methods, so that a call written
    for ``torchdiffeq.odeint`` runs unchanged.

    Every operation of every step is recorded by ``torch.autograd``:
    back-propagation through the solver, exact for the discrete scheme, with
    memory linear in the number of steps (chapter 6, section "Memory: flat
    against linear"). A state that stops being finite is a
    ``FloatingPointError``. Chapter 6, section "Neural ODEs: odeint and
    odeint_adjoint".
    """
    tableau, y0 = _check_call(func, y0, method, rtol, atol)
    steps = steps_per_interval(t, options)  # from the user's t, in its own dtype
    return _solve(func, tableau, steps, y0, _check_t(t, y0))


def augmented_dynamics(func: Callable, params: Sequence[torch.Tensor]) -> Callable:
    """The right-hand side of the augmented adjoint system, for a state ``(y, a, a_theta_1, ...)``.

    Returns ``g(t, state)`` with ``state = (y, a, *a_params)`` and::

        g(t, state) = (func(t, y),  -[d_y func(t, y)]^T a,  *(-[d_p func(t, y)]^T a for p in params))

    the two vector-Jacobian products computed by one ``torch.autograd.grad``
    call. Integrated backward from ``(y(T), dL/dy(T), 0)``, it recomputes
    the state, carries the adjoint ``a(t) = dL/dy(t)`` and accumulates
    ``a_theta(t_0) = int [d_theta func]^T a dt``, the parameter gradient
    (chapter 6, section "The augmented adjoint system", :eq:`eq-augmented`).
    """
    params = tuple(params)

    def dynamics(t, state):
        y, a = state[0], state[1]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = func(t, y)
            if f.requires_grad:
                vjps = torch.autograd.grad(f, (y, *params), a, allow_unused=True)
            else:  # func depends neither on y nor on the parameters
                vjps = (None,) * (1 + len(params))
        vjps = [torch.zeros_like(x) if v is None else v for v, x in zip(vjps, (y, *params))]
        return (f.detach(), *(-v for v in vjps))

    return dynamics


class _AdjointODE(torch.autograd.Function):
    """``odeint`` whose backward is the adjoint-state method; saves ``t``, the outputs and the parameters."""

    @staticmethod
    def forward(ctx, func, tableau, steps, y0, t, *params):
        """The solution at the times ``t``, computed without a graph; saves ``t``, it and the parameters."""
        with torch.no_grad():
            ys = _solve(func, tableau, steps, y0, t)
        ctx.func, ctx.tableau, ctx.steps = func, tableau, steps
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        """The gradients for ``y0`` and the parameters, by the augmented system integrated backward."""
        t, ys, *params = ctx.saved_tensors
        dynamics = augmented_dynamics(ctx.func, params)
        a = grad_ys[-1]
        a_params = tuple(torch.zeros_like(p) for p in params)
        for i in range(len(ctx.steps) - 1, -1, -1):
            # from t_{i+1} back to t_i, starting from the stored output y(t_{i+1}), not a trajectory
            state = _integrate(ctx.tableau, dynamics, (ys[i + 1], a, *a_params), t[i + 1], t[i], ctx.steps[i])
            _check_finite(state[1:], "the adjoint", t[i + 1], t[i])
            a = state[1] + grad_ys[i]  # the loss's own dependence on y(t_i)
            a_params = state[2:]
        return (None, None, None, a, None, *a_params)


def odeint_adjoint(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, method: str = "rk4",
                   options: Optional[dict] = None, adjoint_params: Optional[Sequence[torch.Tensor]] = None,
                   *, rtol=None, atol=None):
    """:func:`odeint`'s values, back-propagated by the adjoint-state method with memory flat in the steps.

    The forward pass integrates without recording a graph and saves only
    ``t``, the ``len(t)`` outputs and the parameters. The backward pass, for
    each interval from the last to the first, integrates the augmented system
    (:func:`augmented_dynamics`) backward in time from the stored output, with
    the same method and the same steps, and adds the output's gradient at
    each ``t_i`` to the adjoint. Gradients reach ``y0`` and the
    ``adjoint_params``: by default the parameters of ``func`` (an
    ``nn.Module``) that require grad, as in ``torchdiffeq``; a ``func`` that
    is not a module needs them explicitly (``()`` if it has none). A tensor
    listed twice (two modules sharing a weight) is kept once, at its first
    place, and receives its gradient once. ``t``
    receives no gradient: a ``t`` that requires grad is a ``ValueError``.
    The backward is not itself differentiable (no second derivatives).

    The gradients are those of the continuous problem, computed to the
    solver's accuracy: they differ from :func:`odeint`'s by ``O(h^p)``
    (chapter 6, section "Agreement and order"). Shapes, methods, options,
    the ignored ``rtol`` and ``atol``, and errors as in :func:`odeint`. Chapter 6, section "The augmented adjoint
    system".
    """
    tableau, y0 = _check_call(func, y0, method, rtol, atol)
    if isinstance(t, torch.Tensor) and t.requires_grad:
        raise ValueError(
            "t requires grad, but odeint_adjoint computes no gradient with respect to the times; pass t.detach() "
            "(or use odeint, which back-propagates through every step)"
        )
    steps = steps_per_interval(t, options)  # from the user's t, in its own dtype
    t = _check_t(t, y0)
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(
                "func is not an nn.Module, so its parameters cannot be found: pass adjoint_params=(tensors func "
                "uses that need a gradient), or adjoint_params=() if there are none"
            )
        adjoint_params = tuple(func.parameters())
    elif isinstance(adjoint_params, torch.Tensor):
        raise TypeError("adjoint_params must be a sequence of tensors, not a tensor: wrap it, (p,)")
    adjoint_params = tuple(adjoint_params)
    for k, p in enumerate(adjoint_params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params[{k}] must be a tensor, got {type(p).__name__}")
    unique = {}  # by identity, in order: a tensor listed twice must not get its gradient twice
    for p in adjoint_params:
        if p.requires_grad:
            unique.setdefault(id(p), p)
    return _AdjointODE.apply(func, tableau, steps, y0, t, *unique.values())
