"""Implicit differentiation: fixed points, argmin layers and the envelope theorem (chapter 8).

A layer whose output is defined by an equation rather than by a formula: a fixed point
``x* = h(x*, theta)`` of a map, or a minimizer ``x* = argmin_x E(x, theta)`` of an energy.
The forward pass iterates to ``x*`` without recording a graph; the backward pass needs only
``x*`` itself, through the implicit function theorem (chapter 8, section "Fixed points and the
implicit function theorem", :eq:`eq-ch8-ift`):

- :func:`fixed_point` with ``backward="implicit"`` solves ``(I - d_x h)^T w = g`` with
  vector-Jacobian products of one application of ``h`` at ``x*``; ``"unrolled"`` back-propagates
  through every iteration (memory linear in their number); ``"one_step"`` through the last one.
- :func:`argmin` solves the Hessian system ``H w = g`` with Hessian-vector products and
  :func:`conjugate_gradient` (chapter 8, section "The Hessian formula", :eq:`eq-ch8-hessian-formula`).
- :func:`minimum` returns the minimum value, differentiated by the envelope (Danskin) theorem
  (:eq:`eq-ch8-envelope`): no derivative of ``x*`` at all.
- :func:`ridge_regression` is the closed form the chapter checks all of them against, and
  :func:`sinkhorn_map` writes Sinkhorn's iteration as a fixed point (chapter 8, section
  "Sinkhorn as a fixed point"), to be differentiated in chapters 13-14.

Every solver reports what it did in a :class:`SolverInfo`; one that stops at its iteration budget
before its tolerance is reported by :func:`report` (a :class:`ConvergenceWarning` with the residual,
or a :class:`NotConvergedError` with ``on_failure="raise"``), never by a silent NaN. The report is
shared with :mod:`ad_lib.declarative` (chapter 9).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Callable, Optional

import torch

__all__ = [
    "SolverInfo", "ConvergenceWarning", "NotConvergedError", "check_on_failure", "report",
    "BACKWARD_MODES", "ARGMIN_METHODS",
    "fixed_point", "conjugate_gradient", "argmin", "minimum",
    "ridge_regression", "ridge_energy",
    "sinkhorn_map", "sinkhorn_map_adjoints", "sinkhorn_energy",
]


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration budget before reaching its tolerance; the message gives the residual."""


class NotConvergedError(RuntimeError):
    """A solver stopped at its iteration budget before reaching its tolerance (raised when asked to, with
    ``on_failure="raise"``); ``info`` holds its :class:`SolverInfo`."""

    def __init__(self, message: str, info: "SolverInfo"):
        super().__init__(message)
        self.info = info


@dataclasses.dataclass
class SolverInfo:
    """What an iterative solver did: the iterations it ran, its final residual, its tolerance, whether it met it.

    ``solver`` names the solver (``"fixed_point"``, ``"conjugate_gradient"``, ...); ``residual`` is the
    quantity the solver compares with ``tol`` (each solver's docstring says which).
    """

    solver: str
    iterations: int
    residual: float
    tol: float
    converged: bool

    def __str__(self):
        state = "converged" if self.converged else "did NOT converge"
        return (f"{self.solver} {state}: {self.iterations} iterations, residual {self.residual:.3g} "
                f"(tolerance {self.tol:.3g})")


ON_FAILURE = ("warn", "raise", "ignore")


def check_on_failure(on_failure: str) -> str:
    """Validate the ``on_failure`` argument shared by the solvers: one of ``"warn"``, ``"raise"``, ``"ignore"``."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    return on_failure


def report(info: SolverInfo, on_failure: str = "warn", hint: str = "") -> SolverInfo:
    """Report a solver that did not converge: a :class:`ConvergenceWarning` (``"warn"``), a
    :class:`NotConvergedError` (``"raise"``) or nothing (``"ignore"``); returns ``info``.

    The message is ``str(info)`` (iterations, residual, tolerance) followed by ``hint``, a sentence on
    what to try. A converged ``info`` is returned without a word.
    """
    check_on_failure(on_failure)
    if not info.converged and on_failure != "ignore":
        message = str(info) + (f"; {hint}" if hint else "")
        if on_failure == "raise":
            raise NotConvergedError(message, info)
        warnings.warn(message, ConvergenceWarning, stacklevel=3)
    return info


BACKWARD_MODES = ("implicit", "unrolled", "one_step")
ARGMIN_METHODS = ("lbfgs", "gradient_descent")


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _check_positive(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_count(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def _check_choice(name: str, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_tensor(name: str, value, finite: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} holds NaN or infinite entries; pass finite values")
    return value


def _check_params(params) -> tuple:
    for i, p in enumerate(params):
        if isinstance(p, torch.Tensor) and not p.is_floating_point() and not p.is_complex():
            continue  # an integer or boolean tensor (indices, a mask): passed through, no gradient
        _check_tensor(f"params[{i}]", p)
    return tuple(params)


def _check_no_hidden_inputs(name: str, value: torch.Tensor, what: str):
    """The implicit backward differentiates only x and params: a tensor requiring a gradient that the
    function reads from elsewhere (a closure, a module's parameters) would silently get none."""
    if isinstance(value, torch.Tensor) and value.requires_grad:
        raise ValueError(f"{name} reads a tensor that requires a gradient but is not among params (a variable "
                         f"captured by a closure, or a module's parameters): backward='implicit' differentiates "
                         f"{what} only with respect to x and params, and that tensor would silently get no "
                         "gradient; pass it in params, or detach it / call requires_grad_(False) on it")


def _detached(params: tuple) -> tuple:
    return tuple(p.detach() for p in params)


_DOUBLE_BACKWARD = ("{}(backward='implicit') is differentiable once: its backward solves a linear system at "
                    "x* and is not itself differentiated (create_graph=True, a double backward, a Hessian of a "
                    "loss through it). Use backward='unrolled' for higher derivatives")


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


# ---------------------------------------------------------------------------
# Fixed points
# ---------------------------------------------------------------------------


def _apply(h: Callable, x: torch.Tensor, params: tuple) -> torch.Tensor:
    y = h(x, *params)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"h must return a tensor of x's shape {tuple(x.shape)}, got {type(y).__name__}")
    if y.shape != x.shape:
        raise ValueError(f"h must map x to a tensor of x's shape {tuple(x.shape)} (a fixed point needs "
                         f"h(x) and x in the same space), got shape {tuple(y.shape)}")
    if y.dtype != x.dtype or y.device != x.device:
        raise TypeError(f"h must return a tensor of x's dtype and device ({x.dtype}, {x.device}), got "
                        f"({y.dtype}, {y.device}); cast inside h, or pass x0 of the dtype h computes in")
    return y


def _iterate(h: Callable, x0: torch.Tensor, params: tuple, tol: float, max_iter: int, record: bool = False):
    """x <- h(x, *params) until ||h(x) - x|| <= tol * max(1, ||h(x)||); returns (x, SolverInfo).

    Without ``record`` no graph is recorded (and ``x0`` is detached); with it, every application is
    on the tape (the unrolled mode).
    """
    x = x0.detach()
    residual, converged, k = math.inf, False, 0
    with torch.set_grad_enabled(record and torch.is_grad_enabled()):
        for k in range(1, max_iter + 1):
            x_new = _apply(h, x, params)
            step = _norm(x_new.detach() - x.detach())
            scale = max(1.0, _norm(x_new.detach()))
            if not (math.isfinite(step) and math.isfinite(scale)):
                raise FloatingPointError(f"fixed_point: the iterate holds NaN or infinite entries at iteration {k} "
                                         f"(the last finite residual was {residual:.3g}); the map diverges from x0 "
                                         "or is not defined there")
            residual = step / scale
            x = x_new
            if residual <= tol:
                converged = True
                break
    return x, SolverInfo("fixed_point", k, residual, tol, converged)


class _ImplicitLayer(torch.autograd.Function):
    """Forward: the solution already found (x*), saved with the parameters and nothing else (no iterate);
    the backward of a subclass differentiates the condition that defines x* at x*."""

    @staticmethod
    def forward(ctx, fn, settings, x_star, *params):
        ctx.fn, ctx.settings = fn, settings
        ctx.save_for_backward(x_star, *params)
        return x_star.clone()

    @staticmethod
    def leaves(ctx, name):
        """x* and the parameters as fresh leaves (those that need a gradient requiring it), and which need one."""
        if torch.is_grad_enabled():  # create_graph=True: the engine runs the backward in grad mode
            raise RuntimeError(_DOUBLE_BACKWARD.format(name))
        x_star, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        x = x_star.detach().requires_grad_(True)
        return x, [p.detach().requires_grad_(need) for p, need in zip(params, needs)], needs

    @staticmethod
    def gradients(outputs, inputs, needs, cotangent):
        """The backward's return: None for ``fn``, the settings and x*, then ``[d outputs / d theta]^T cotangent``
        for each parameter that needs a gradient (None for the others, and for all when none reaches them)."""
        wanted = [p for p, need in zip(inputs, needs) if need]
        if cotangent is None or not outputs.requires_grad or not wanted:
            return (None, None, None) + tuple(None for _ in needs)
        grads = iter(torch.autograd.grad(outputs, wanted, cotangent, allow_unused=True))
        return (None, None, None) + tuple(next(grads) if need else None for need in needs)


class _ImplicitFixedPoint(_ImplicitLayer):
    """Forward: the given fixed point; backward: the implicit function theorem, matrix-free."""

    @staticmethod
    def backward(ctx, g):
        x, inputs, needs = _ImplicitLayer.leaves(ctx, "fixed_point")
        tol, max_iter, on_failure = ctx.settings
        with torch.enable_grad():
            y = ctx.fn(x, *inputs)
        if not y.requires_grad or not any(needs):
            return _ImplicitLayer.gradients(y, inputs, needs, None)
        w, info = _neumann(y, x, g, tol, max_iter)
        report(info, on_failure, hint=_rounding_hint("the backward solve (I - d_x h)^T w = g converges when h is a "
               "contraction near x*; check the forward residual, or raise backward_max_iter", tol, g.dtype))
        return _ImplicitLayer.gradients(y, inputs, needs, w)


def _rounding_hint(hint: str, tol: float, dtype: torch.dtype) -> str:
    """Add to ``hint`` that ``tol`` is below what ``dtype``'s rounding allows (float32 with the default 1e-10)."""
    eps = torch.finfo(dtype).eps
    if tol < 10 * eps:
        hint += f"; tol = {tol:.1e} is below the rounding of {dtype} (eps {eps:.1e}): use tol >= {100 * eps:.0e}"
    return hint


_DIVERGED = 1e10  # a Neumann step this much larger than g: the series diverges


def _neumann(y: torch.Tensor, x: torch.Tensor, g: torch.Tensor, tol: float, max_iter: int):
    """Solve (I - J^T) w = g, J = dy/dx, by w <- g + J^T w (the Neumann series), matrix-free.

    The residual is ||(I - J^T) w - g|| / ||g||, which for the iterate w equals ||w_new - w|| / ||g||.
    """
    g_norm = _norm(g)
    if g_norm == 0.0:
        return torch.zeros_like(g), SolverInfo("fixed_point backward (Neumann)", 0, 0.0, tol, True)
    w, residual, converged, k = g, math.inf, False, 0
    for k in range(1, max_iter + 1):
        (jtw,) = torch.autograd.grad(y, x, w, retain_graph=True, allow_unused=True)
        w_new = g if jtw is None else g + jtw
        residual = _norm(w_new - w) / g_norm
        if not math.isfinite(residual) or residual > _DIVERGED:
            raise FloatingPointError(f"fixed_point backward: the Neumann iteration w <- g + (d_x h)^T w diverges "
                                     f"(relative step {residual:.3g} at iteration {k}): d_x h has an eigenvalue "
                                     "of modulus >= 1 at x*, which is then not an attracting fixed point (the "
                                     "forward iteration stopped there by accident, or h is not a contraction "
                                     "near x*); the implicit gradient cannot be computed this way")
        w = w_new
        if residual <= tol:
            converged = True
            break
    return w, SolverInfo("fixed_point backward (Neumann)", k, residual, tol, converged)


def fixed_point(h: Callable, x0: torch.Tensor, *params, tol: float = 1e-10, max_iter: int = 1000,
                backward: str = "implicit", backward_tol: Optional[float] = None,
                backward_max_iter: Optional[int] = None, return_info: bool = False, on_failure: str = "warn"):
    """The fixed point ``x* = h(x*, *params)``, reached by iterating ``x <- h(x, *params)`` from ``x0``.

    ``h(x, *params)`` must return a tensor of ``x``'s shape (any shape; batch dimensions are simply
    part of ``x``, and the stopping test uses the norm of the whole tensor). The iteration stops at
    the first ``k`` with ``||x_k - x_{k-1}|| <= tol * max(1, ||x_k||)``: a relative test for iterates
    of norm above one, an absolute one below. The result is the last iterate ``x_k = h(x_{k-1})``.
    If ``max_iter`` iterations do not reach ``tol``, it is reported (:func:`report`, according to
    ``on_failure``: a :class:`ConvergenceWarning` giving the residual, a :class:`NotConvergedError`,
    or nothing); an iterate with a NaN or an infinity is a ``FloatingPointError`` naming the iteration.

    The result is differentiable in ``params`` (tensors; those that do not require a gradient get
    none); ``x0`` is a starting guess and gets no gradient. ``backward`` chooses how (chapter 8,
    section "Three ways to back-propagate through a fixed point"):

    - ``"implicit"``: the forward iteration records no graph, and an ``autograd.Function`` keeps
      only ``x*`` and ``params``. Its backward applies the implicit function theorem
      :eq:`eq-ch8-ift`: it solves ``(I - d_x h(x*))^T w = g`` for the incoming gradient ``g`` by the
      fixed-point (Neumann) iteration ``w <- g + (d_x h)^T w``, each step one vector-Jacobian
      product of a single application of ``h`` at ``x*`` (``torch.autograd.grad``), until
      ``||(I - d_x h)^T w - g|| <= backward_tol * ||g||`` (default ``tol``; at most
      ``backward_max_iter`` steps, default ``max_iter``; failure reported as in the forward pass),
      and returns ``(d_theta h)^T w``. The Neumann iteration converges exactly when the forward
      iteration does locally (the spectral radius of ``d_x h(x*)`` below one), at the same rate;
      one that diverges (``x*`` a repelling fixed point the forward pass stopped at) is a
      ``FloatingPointError``. Differentiable once: ``create_graph=True`` through it is a
      ``RuntimeError`` (use ``"unrolled"`` for higher derivatives).
    - ``"unrolled"``: autograd records every iteration; the gradient is that of the last iterate
      exactly, and the memory grows linearly with the number of iterations.
    - ``"one_step"``: ``x*`` is found without a graph, then ``h`` is applied once more to the
      detached ``x*`` with the graph recorded: the gradient is ``(d_theta h)^T g``, the first term of
      the Neumann series (off by a factor of order ``L / (1 - L)`` for a contraction of constant ``L``).

    Every tensor that ``h`` reads and that should receive a gradient must be passed in ``params``:
    the implicit backward differentiates only ``x`` and ``params``, so with ``"implicit"`` a tensor
    requiring a gradient that ``h`` reads otherwise (a closure, a module's parameters) is a
    ``ValueError`` rather than a silently missing gradient. ``params`` are floating-point tensors
    (integer or boolean ones, such as indices, are passed through without a gradient); ``h`` must
    return a tensor of ``x``'s shape, dtype and device (``TypeError``/``ValueError`` naming ``h``). Returns ``x*`` (a tensor of
    ``x0``'s shape), or ``(x*, SolverInfo)`` with ``return_info=True`` (the info of the forward
    iteration; ``residual`` is the relative step above). Chapter 8, section "Fixed points and the
    implicit function theorem".
    """
    if not callable(h):
        raise TypeError(f"h must be a callable h(x, *params), got {type(h).__name__}")
    x0 = _check_tensor("x0", x0)
    params = _check_params(params)
    tol = _check_positive("tol", tol)
    max_iter = _check_count("max_iter", max_iter)
    backward = _check_choice("backward", backward, BACKWARD_MODES)
    backward_tol = _check_positive("backward_tol", backward_tol, allow_none=True) or tol
    backward_max_iter = _check_count("backward_max_iter", backward_max_iter, allow_none=True) or max_iter
    check_on_failure(on_failure)
    hint = _rounding_hint("raise max_iter or tol, or check that h is a contraction near the fixed point", tol,
                          x0.dtype)

    if backward == "unrolled":
        x, info = _iterate(h, x0, params, tol, max_iter, record=True)
        report(info, on_failure, hint)
    else:
        x_star, info = _iterate(h, x0, params, tol, max_iter)
        report(info, on_failure, hint)
        if backward == "one_step":
            x = _apply(h, x_star.detach(), params)
        else:
            if torch.is_grad_enabled():
                with torch.enable_grad():
                    _check_no_hidden_inputs("h", h(x_star.detach(), *_detached(params)), "h")
            x = _ImplicitFixedPoint.apply(h, (backward_tol, backward_max_iter, on_failure), x_star, *params)
    return (x, info) if return_info else x


# ---------------------------------------------------------------------------
# Conjugate gradients
# ---------------------------------------------------------------------------


def conjugate_gradient(matvec: Callable, b: torch.Tensor, *, x0: Optional[torch.Tensor] = None,
                       tol: float = 1e-10, max_iter: Optional[int] = None):
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given only as ``matvec(v) = A v``.

    ``b`` is a tensor of any shape (``A`` acts on tensors of that shape; the inner product is the sum
    of all entries' products). Hestenes and Stiefel's conjugate gradients from ``x0`` (default zero),
    until the (recursively updated) residual satisfies ``||b - A x|| <= tol * ||b||``, or
    ``max_iter`` iterations (default ``2 * b.numel() + 10``; in exact arithmetic ``b.numel()``
    suffice). A curvature ``p^T A p <= 0`` is a ``ValueError``: ``A`` is not positive definite (for
    :func:`argmin`, ``x*`` is not a strict minimum). Returns ``(x, SolverInfo)``, the residual being
    the relative one above; non-convergence is not reported here but by the caller. Chapter 8,
    section "The Hessian formula".
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be a callable v -> A v, got {type(matvec).__name__}")
    b = _check_tensor("b", b)
    tol = _check_positive("tol", tol)
    max_iter = _check_count("max_iter", max_iter, allow_none=True) or 2 * b.numel() + 10

    def apply(v):
        out = matvec(v)
        if not isinstance(out, torch.Tensor) or out.shape != b.shape:
            raise ValueError(f"matvec must return a tensor of b's shape {tuple(b.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return out

    b_norm = _norm(b)
    if x0 is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        x0 = _check_tensor("x0", x0)
        if x0.shape != b.shape:
            raise ValueError(f"x0 must have b's shape {tuple(b.shape)}, got {tuple(x0.shape)}")
        x = x0.clone()
        r = b - apply(x)
    if b_norm == 0.0:
        return torch.zeros_like(b), SolverInfo("conjugate_gradient", 0, 0.0, tol, True)
    p = r.clone()
    rr = torch.sum(r * r)
    residual, k = math.sqrt(float(rr)) / b_norm, 0
    while residual > tol and k < max_iter:
        k += 1
        Ap = apply(p)
        curvature = torch.sum(p * Ap)
        if not float(curvature) > 0:
            raise ValueError(f"conjugate_gradient: the operator is not positive definite (p^T A p = "
                             f"{float(curvature):.3g} at iteration {k}); conjugate gradients need a symmetric "
                             "positive-definite A")
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = torch.sum(r * r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        residual = math.sqrt(float(rr)) / b_norm
        if not math.isfinite(residual):
            raise FloatingPointError(f"conjugate_gradient: NaN or infinity at iteration {k}")
    return x, SolverInfo("conjugate_gradient", k, residual, tol, residual <= tol)


# ---------------------------------------------------------------------------
# Argmin layers
# ---------------------------------------------------------------------------


def _energy_and_gradient(energy: Callable, x: torch.Tensor, params: tuple, create_graph: bool = False):
    """(E(x, *params), grad_x E) with x requiring grad; the graph kept when ``create_graph``."""
    value = energy(x, *params)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"energy must return a scalar tensor, got {got}")
    value = value.reshape(())
    if not value.requires_grad:
        return value, torch.zeros_like(x)
    (grad,) = torch.autograd.grad(value, x, create_graph=create_graph, allow_unused=True)
    return value, torch.zeros_like(x) if grad is None else grad


def _gradient_descent(energy, x0, params, step, tol, max_iter, record=False):
    """x_{k+1} = x_k - step grad_x E(x_k) (eq. 13), until ||grad_x E(x_k)|| <= tol; returns (x, SolverInfo)."""
    if record:
        x = x0.detach().clone().requires_grad_(True)
    else:
        params = tuple(p.detach() for p in params)
        x = x0.detach()
    residual, converged, k = math.inf, False, 0
    with torch.enable_grad():
        while True:
            if not record:
                x = x.detach().requires_grad_(True)
            _, grad = _energy_and_gradient(energy, x, params, create_graph=record)
            residual = _norm(grad.detach())
            if not math.isfinite(residual):
                raise FloatingPointError(f"argmin: the gradient holds NaN or infinite entries at iteration {k}; "
                                         "gradient descent diverges (is step below 2 / L, L the gradient's "
                                         "Lipschitz constant?)")
            if residual <= tol:
                converged = True
                break
            if k == max_iter:
                break
            x = x - step * grad
            k += 1
    if not record:
        x = x.detach()
    return x, SolverInfo("argmin (gradient descent)", k, residual, tol, converged)


def _lbfgs(energy, x0, params, tol, max_iter):
    """torch.optim.LBFGS with a strong-Wolfe line search, until ||grad_x E|| <= tol; returns (x, SolverInfo)."""
    params = tuple(p.detach() for p in params)
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=max_iter,
                                  max_eval=2 * max_iter + 10, tolerance_grad=tol / math.sqrt(x.numel()),
                                  tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value, grad = _energy_and_gradient(energy, x, params)
        if not math.isfinite(float(value.detach())):
            raise FloatingPointError("argmin: the energy is NaN or infinite during L-BFGS")
        x.grad = grad
        return value

    with torch.enable_grad():
        optimizer.step(closure)
        iterations = int(optimizer.state[x].get("n_iter", 0))
        x = x.detach().requires_grad_(True)
        _, grad = _energy_and_gradient(energy, x, params, create_graph=True)
        residual = _norm(grad.detach())
        # The line search compares energy values, which stop changing (to rounding) once the gradient is
        # about sqrt(eps |E|): polish with a few Newton steps H dx = -grad (Hessian-vector products and
        # conjugate gradients), each kept only if it lowers the gradient norm.
        polish = 0
        while math.isfinite(residual) and residual > tol and polish < 5 and iterations + polish < max_iter:
            def hvp(v):
                (hv,) = torch.autograd.grad(grad, x, v, retain_graph=True, allow_unused=True)
                return torch.zeros_like(v) if hv is None else hv
            try:
                dx, _ = conjugate_gradient(hvp, -grad.detach(), tol=1e-3 * min(1.0, tol / residual))
            except ValueError:  # not positive definite here: keep what L-BFGS found
                break
            x_new = (x.detach() + dx).requires_grad_(True)
            _, grad_new = _energy_and_gradient(energy, x_new, params, create_graph=True)
            residual_new = _norm(grad_new.detach())
            if not residual_new < residual:
                break
            x, grad, residual, polish = x_new, grad_new, residual_new, polish + 1
    if not math.isfinite(residual):
        raise FloatingPointError("argmin: the gradient holds NaN or infinite entries after L-BFGS")
    return x.detach(), SolverInfo("argmin (L-BFGS)", iterations + polish, residual, tol, residual <= tol)


class _ImplicitArgmin(_ImplicitLayer):
    """Forward: the given minimizer; backward: the Hessian formula with HVPs and conjugate gradients."""

    @staticmethod
    def backward(ctx, g):
        x, inputs, needs = _ImplicitLayer.leaves(ctx, "argmin")
        tol, max_iter, on_failure = ctx.settings
        with torch.enable_grad():
            _, grad_x = _energy_and_gradient(ctx.fn, x, inputs, create_graph=True)
        if not grad_x.requires_grad or not any(needs):
            return _ImplicitLayer.gradients(grad_x, inputs, needs, None)

        def hessian_vector_product(v):  # double backward: d/dx <grad_x E, v>, never the dense Hessian
            (hv,) = torch.autograd.grad(grad_x, x, v, retain_graph=True, allow_unused=True)
            return torch.zeros_like(v) if hv is None else hv

        try:
            w, info = conjugate_gradient(hessian_vector_product, g, tol=tol, max_iter=max_iter)
        except ValueError as error:
            raise ValueError(f"argmin backward: the Hessian of the energy at x* is not positive definite ({error}); "
                             "x* is not a strict minimum (the energy is not strictly convex there, or the forward "
                             "pass stopped at a saddle point), so x*(theta) is not differentiable by the Hessian "
                             "formula; add a strictly convex term (e.g. a small ridge penalty)") from error
        report(info, on_failure, hint="the backward solve H w = g (conjugate gradients on the Hessian at x*); "
               "raise backward_max_iter or check that x* is a strict minimum")
        return _ImplicitLayer.gradients(grad_x, inputs, needs, -w)  # -(d^2E/dx dtheta)^T w


def _solve_argmin(energy, x0, params, method, step, tol, max_iter, record=False):
    if method == "gradient_descent":
        return _gradient_descent(energy, x0, params, step, tol, max_iter, record=record)
    return _lbfgs(energy, x0, params, tol, max_iter)


def _check_argmin(energy, x0, params, method, step, tol, max_iter, on_failure):
    if not callable(energy):
        raise TypeError(f"energy must be a callable energy(x, *params) returning a scalar, got {type(energy).__name__}")
    x0 = _check_tensor("x0", x0)
    params = _check_params(params)
    method = _check_choice("method", method, ARGMIN_METHODS)
    step = _check_positive("step", step, allow_none=True)
    if method == "gradient_descent" and step is None:
        raise ValueError("step is required with method='gradient_descent': a step tau with 0 < tau < 2 / L, "
                         "L the Lipschitz constant of grad_x E (tau = 1 / L is the safe choice)")
    tol = _check_positive("tol", tol)
    max_iter = _check_count("max_iter", max_iter)
    check_on_failure(on_failure)
    return x0, params, method, step, tol, max_iter


_ARGMIN_HINT = "raise max_iter, loosen tol, or (gradient descent) check the step"


def argmin(energy: Callable, x0: torch.Tensor, *params, method: str = "lbfgs", step: Optional[float] = None,
           tol: float = 1e-10, max_iter: int = 1000, backward: str = "implicit",
           backward_tol: Optional[float] = None, backward_max_iter: Optional[int] = None,
           return_info: bool = False, on_failure: str = "warn"):
    """The minimizer ``x*(theta) = argmin_x energy(x, *params)``, differentiable in ``params``.

    ``energy(x, *params)`` returns a scalar tensor; ``x`` has ``x0``'s shape (batch dimensions are
    part of ``x``: sum the energies of independent problems). The forward pass, without a graph:

    - ``method="gradient_descent"``: ``x_{k+1} = x_k - step * grad_x E(x_k)`` :eq:`eq-ch8-gradient-descent`;
      ``step`` is required (``1 / L`` for an energy whose gradient is ``L``-Lipschitz);
    - ``method="lbfgs"``: ``torch.optim.LBFGS`` with a strong-Wolfe line search, history 20 and
      ``max_iter`` iterations; the line search chooses the steps, so ``step`` is not used. A line
      search compares energy values, which stop changing (to rounding) once the gradient norm is
      about ``sqrt(eps |E|)``; below that, up to five Newton steps (Hessian-vector products and
      :func:`conjugate_gradient`), each kept only if it lowers the gradient norm, reach ``tol``.

    Both stop when ``||grad_x E(x)|| <= tol`` (the absolute Euclidean norm: scale the energy to
    order one); otherwise the failure is reported as in :func:`fixed_point`. ``backward``:

    - ``"implicit"``: the Hessian formula :eq:`eq-ch8-hessian-formula`, from the implicit function
      theorem applied to ``grad_x E(x*, theta) = 0``: solve ``H w = g`` (``H`` the Hessian of ``E``
      in ``x`` at ``x*``) by :func:`conjugate_gradient` with Hessian-vector products (double
      backward; the dense Hessian is never formed), to ``backward_tol`` (default ``tol``), then
      return ``-(d^2 E / dx dtheta)^T w``, one more vector-Jacobian product. Needs ``H`` positive
      definite (a strict minimum): a curvature ``<= 0`` met by the conjugate gradients (an energy not
      strictly convex at ``x*``, a saddle) is a ``ValueError`` in the backward. As for
      :func:`fixed_point`, a tensor requiring a gradient that ``energy`` reads outside ``params`` is a
      ``ValueError``, and ``create_graph=True`` through the backward a ``RuntimeError``.
    - ``"unrolled"`` (gradient descent only): autograd through every step (double backward per step).
    - ``"one_step"`` (gradient descent only): one step ``x* - step * grad_x E(x*, theta)`` recorded
      at the detached ``x*``: the gradient ``-step (d^2E/dx dtheta)^T g``, the Hessian replaced by
      ``I / step``.

    Returns ``x*`` (or ``(x*, SolverInfo)``; ``residual`` is the gradient norm). ``x0`` gets no
    gradient. Chapter 8, section "Argmin layers".
    """
    x0, params, method, step, tol, max_iter = _check_argmin(energy, x0, params, method, step, tol, max_iter,
                                                            on_failure)
    backward = _check_choice("backward", backward, BACKWARD_MODES)
    if backward != "implicit" and method != "gradient_descent":
        raise ValueError(f"backward={backward!r} needs method='gradient_descent' (it differentiates the "
                         "gradient steps); with L-BFGS use backward='implicit'")
    backward_tol = _check_positive("backward_tol", backward_tol, allow_none=True) or tol
    backward_max_iter = _check_count("backward_max_iter", backward_max_iter, allow_none=True)

    if backward == "unrolled":
        x, info = _solve_argmin(energy, x0, params, method, step, tol, max_iter, record=True)
        report(info, on_failure, _rounding_hint(_ARGMIN_HINT, tol, x0.dtype))
        return (x, info) if return_info else x
    x_star, info = _solve_argmin(energy, x0, params, method, step, tol, max_iter)
    report(info, on_failure, _rounding_hint(_ARGMIN_HINT, tol, x0.dtype))
    if backward == "one_step":
        with torch.enable_grad():
            x_leaf = x_star.detach().requires_grad_(True)
            _, grad = _energy_and_gradient(energy, x_leaf, params, create_graph=True)
        x = x_star - step * grad  # x_star is detached: only theta carries a gradient
    else:
        if torch.is_grad_enabled():
            with torch.enable_grad():
                _check_no_hidden_inputs("energy", energy(x_star.detach(), *_detached(params)), "the energy")
        x = _ImplicitArgmin.apply(energy, (backward_tol, backward_max_iter, on_failure), x_star, *params)
    return (x, info) if return_info else x


def minimum(energy: Callable, x0: torch.Tensor, *params, method: str = "lbfgs", step: Optional[float] = None,
            tol: float = 1e-10, max_iter: int = 1000, return_info: bool = False, on_failure: str = "warn"):
    """The minimum value ``f(theta) = min_x energy(x, *params) = E(x*(theta), theta)``, a scalar tensor.

    ``x*`` is found as by :func:`argmin` (same ``method``, ``step``, ``tol``, ``max_iter``), without a
    graph; the value returned is ``energy(x*.detach(), *params)``, evaluated once more with the graph
    recorded in ``params`` only. Its gradient is therefore ``grad_theta E(x*, theta)`` with no
    derivative of ``x*``: the envelope (Danskin) theorem :eq:`eq-ch8-envelope`, exact because the
    missing term ``[d x*/d theta]^T grad_x E(x*, theta)`` is zero at a minimizer (and, to first order,
    as small as the forward gradient norm ``tol`` otherwise). First derivatives only: a second
    derivative of ``f`` needs ``d x*/d theta`` (use :func:`argmin`). Returns the value, or
    ``(value, SolverInfo)``. Chapter 8, section "The envelope theorem".
    """
    x0, params, method, step, tol, max_iter = _check_argmin(energy, x0, params, method, step, tol, max_iter,
                                                            on_failure)
    x_star, info = _solve_argmin(energy, x0, params, method, step, tol, max_iter)
    report(info, on_failure, _rounding_hint(_ARGMIN_HINT, tol, x0.dtype))
    value = energy(x_star.detach(), *params).reshape(())
    return (value, info) if return_info else value


# ---------------------------------------------------------------------------
# Ridge regression: the closed form
# ---------------------------------------------------------------------------


def _check_ridge(A, b, lam):
    A = _check_tensor("A", A)
    b = _check_tensor("b", b)
    if A.dim() < 2:
        raise ValueError(f"A must have shape (..., m, n), got {tuple(A.shape)}")
    if b.dim() < 1 or b.shape[-1] != A.shape[-2]:
        raise ValueError(f"b must have shape (..., m) with m = A.shape[-2] = {A.shape[-2]}, got {tuple(b.shape)}")
    if isinstance(lam, torch.Tensor):
        _check_tensor("lam", lam)
        if not bool((lam > 0).all()):
            raise ValueError("lam must be positive (the ridge penalty makes A^T A + lam I invertible); got "
                             f"a tensor with minimum {float(lam.min()):.3g}")
    else:
        _check_positive("lam", lam)
    return A, b


def _lam_matrix(lam, n, like):
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    if isinstance(lam, torch.Tensor):
        return lam[..., None, None] * eye
    return lam * eye


def ridge_regression(A: torch.Tensor, b: torch.Tensor, lam) -> torch.Tensor:
    """The ridge solution ``x* = (A^T A + lam I)^{-1} A^T b``, the minimizer of :func:`ridge_energy`.

    ``A`` of shape ``(..., m, n)``, ``b`` of shape ``(..., m)``, ``lam > 0`` a number or a tensor of
    the batch shape ``(...)``; batch dimensions broadcast. Returns ``x*`` of shape ``(..., n)``, by
    ``torch.linalg.solve`` (no inverse is formed), differentiable by autograd in all three inputs.
    Its derivatives, :eq:`eq-ch8-ridge-derivatives`, are ``d x*/d lam = -(A^T A + lam I)^{-1} x*``
    and ``d x*/d b = (A^T A + lam I)^{-1} A^T``. Chapter 8, section "Ridge regression: the closed form".
    """
    A, b = _check_ridge(A, b, lam)
    At = A.transpose(-1, -2)
    M = At @ A + _lam_matrix(lam, A.shape[-1], A)
    return torch.linalg.solve(M, (At @ b.unsqueeze(-1))).squeeze(-1)


def ridge_energy(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, lam) -> torch.Tensor:
    """The ridge energy ``E(x) = 1/2 ||A x - b||^2 + lam/2 ||x||^2``, of shape ``(...)`` for a batch.

    ``x`` of shape ``(..., n)``; the other shapes as in :func:`ridge_regression`. Its gradient is
    ``A^T (A x - b) + lam x`` and its Hessian ``A^T A + lam I``. Chapter 8, section "Ridge regression:
    the closed form".
    """
    A, b = _check_ridge(A, b, lam)
    if x.shape[-1] != A.shape[-1]:
        raise ValueError(f"x must have shape (..., n) with n = A.shape[-1] = {A.shape[-1]}, got {tuple(x.shape)}")
    residual = (A @ x.unsqueeze(-1)).squeeze(-1) - b
    return 0.5 * (residual**2).sum(-1) + 0.5 * lam * (x**2).sum(-1)


# ---------------------------------------------------------------------------
# Sinkhorn as a fixed point
# ---------------------------------------------------------------------------


def _split(x: torch.Tensor, theta: torch.Tensor, K: torch.Tensor):
    if not isinstance(K, torch.Tensor) or K.dim() < 2:
        raise ValueError(f"K must be a tensor of shape (..., n, m), got "
                         f"{tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__}")
    n, m = K.shape[-2:]
    for name, t in (("x", x), ("theta", theta)):
        if not isinstance(t, torch.Tensor) or t.shape[-1] != n + m:
            raise ValueError(f"{name} must have shape (..., n + m) = (..., {n + m}) for K of shape (..., {n}, {m}), "
                             f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    return n, m


def _calK(x: torch.Tensor, K: torch.Tensor, n: int) -> torch.Tensor:
    """calK x = (K v, K^T u) for x = (u, v), calK = [[0, K], [K^T, 0]]."""
    u, v = x[..., :n], x[..., n:]
    Kv = (K @ v.unsqueeze(-1)).squeeze(-1)
    Ktu = (K.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
    return torch.cat([Kv, Ktu], dim=-1)


def sinkhorn_map(x: torch.Tensor, theta: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Sinkhorn's iteration as a map: ``h(x, theta) = theta / (calK x)`` :eq:`eq-ch8-sinkhorn-map`.

    ``x = (u, v)`` and ``theta = (a, b)`` are concatenated, of shape ``(..., n + m)``; ``K`` (positive
    entries) has shape ``(..., n, m)`` and ``calK = [[0, K], [K^T, 0]]``, so that
    ``h(x, theta) = (a / (K v), b / (K^T u))``: both scalings updated at once from the previous ones
    (a Jacobi update; Sinkhorn's own alternates them). Its fixed points are the Sinkhorn scalings:
    ``diag(u) K diag(v)`` has marginals ``a`` and ``b`` (which needs ``sum a = sum b``), and they come
    as a family ``(c u, v / c)``, so ``I - d_x h`` is singular there. Chapter 8, section "Sinkhorn as
    a fixed point".
    """
    n, _ = _split(x, theta, K)
    return theta / _calK(x, K, n)


def sinkhorn_map_adjoints(x: torch.Tensor, theta: torch.Tensor, K: torch.Tensor, w: torch.Tensor):
    """The two vector-Jacobian products of :func:`sinkhorn_map` at ``(x, theta)``, written by hand.

    Returns ``([d_x h]^T w, [d_theta h]^T w)`` with :eq:`eq-ch8-sinkhorn-adjoints`
    ``[d_x h]^T = -calK^T diag(theta / (calK x)^2)`` and ``[d_theta h]^T = diag(1 / (calK x))``;
    ``w`` has ``x``'s shape, and so do both results. Chapter 8, section "Sinkhorn as a fixed point".
    """
    n, _ = _split(x, theta, K)
    if not isinstance(w, torch.Tensor) or w.shape[-1] != x.shape[-1]:
        raise ValueError(f"w must have shape (..., n + m) = (..., {x.shape[-1]}), got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
    Kx = _calK(x, K, n)
    scaled = w * theta / Kx**2
    return -_calK(scaled, K, n), w / Kx  # calK is symmetric: calK^T s = calK s


def sinkhorn_energy(x: torch.Tensor, theta: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``E(x, theta) = <theta, log x> - <u, K v>``, of shape ``(...)``, for ``x = (u, v) > 0``.

    Its stationary points in ``x`` are the fixed points of :func:`sinkhorn_map` (``grad_u E = a / u - K v``),
    where it is a maximum in the coordinates ``log x`` (it is concave in them); by the envelope
    theorem the value ``f(theta) = E(x*(theta), theta)`` has gradient ``log x*`` in ``theta``.
    With ``K = exp(-C / eps)``, ``eps * f`` is the dual value of entropic optimal transport (the
    notes' ``- eps <K u, v>`` should read ``- <K u, v>``, the whole multiplied by ``eps``).
    Chapter 8, section "Sinkhorn as a fixed point".
    """
    n, _ = _split(x, theta, K)
    u, v = x[..., :n], x[..., n:]
    Kv = (K @ v.unsqueeze(-1)).squeeze(-1)
    return (theta * torch.log(x)).sum(-1) - (u * Kv).sum(-1)
