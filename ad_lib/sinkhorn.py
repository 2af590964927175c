"""Optimal transport and Sinkhorn's algorithm (chapter 13).

Entropic optimal transport between two histograms ``a`` (n bins) and ``b`` (m bins) with a cost matrix
``C`` (n, m) and a regularization ``eps > 0`` (chapter 13, section "Entropic regularization",
:eq:`eq-ch13-entropic`)::

    P_eps = argmin_{P 1 = a, P^T 1 = b}  <C, P> + eps KL(P | a b^T).

Its solution is ``P = diag(u) K diag(v)`` with the Gibbs kernel ``K = exp(-C / eps)``; Sinkhorn's algorithm
finds the scalings by alternately fitting the two marginals. This module writes

- :func:`sinkhorn`, with ``domain="scaling"`` (the notes' iterations on the multipliers ``u, v``,
  :eq:`eq-ch13-scaling`) or ``domain="log"`` (the same iterations on the potentials ``f = eps log u``,
  ``g = eps log v`` with a soft-min, :eq:`eq-ch13-log-updates`, stable for small ``eps``), batched over any
  leading dimensions (Xie's "parallel" Sinkhorn), returning a :class:`SinkhornResult`;
- the one-step maps of both domains (:func:`log_update_f`, :func:`log_update_g`, :func:`log_step`,
  :func:`scaling_update_u`, :func:`scaling_update_v`, :func:`scaling_step`), public so that chapter 14
  can differentiate the iteration itself;
- :func:`sinkhorn_eps_scaling`, which decreases ``eps`` geometrically with warm starts;
- the primal and dual values (:func:`entropic_value`, :func:`dual_value`), :func:`cost_matrix` and
  Birkhoff's bound on the rate of convergence (:func:`birkhoff_rate`).

Sinkhorn's iteration written as a fixed point ``x = h(x, theta) = theta / (calK x)``, its adjoints and its
energy are chapter 8's :func:`ad_lib.implicit.sinkhorn_map`, :func:`ad_lib.implicit.sinkhorn_map_adjoints`
and :func:`ad_lib.implicit.sinkhorn_energy`; the entropic plan as a differentiable node with an implicit
backward pass is chapter 9's :func:`ad_lib.declarative.optimal_transport` (with ``gamma = 1 / eps``). This
module does not repeat them. Non-convergence is reported by :func:`ad_lib.implicit.report` (a
:class:`ad_lib.implicit.ConvergenceWarning` with the marginal error, or a
:class:`ad_lib.implicit.NotConvergedError` with ``on_failure="raise"``); an underflow of the scaling domain is
a ``FloatingPointError`` naming ``eps``, never a silent NaN.

Conventions, those of POT (``ot.sinkhorn(a, b, C, reg=eps, method="sinkhorn_log", log=True)``): the plan is
``P_ij = exp((f_i + g_j - C_ij) / eps)``, POT's ``log["log_u"]`` is ``f / eps`` and ``log["log_v"]`` is
``g / eps``; each iteration updates ``g`` then ``f`` from ``f = 0``, so that the rows of the returned plan sum
to ``a`` exactly and the stopping test measures the columns.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import List, Optional, Tuple

import torch

from ad_lib.implicit import SolverInfo, check_on_failure, report

__all__ = [
    "DOMAINS", "SinkhornResult", "sinkhorn", "sinkhorn_eps_scaling",
    "soft_min", "log_update_f", "log_update_g", "log_step",
    "gibbs_kernel", "scaling_update_u", "scaling_update_v", "scaling_step",
    "plan_from_potentials", "plan_from_scalings", "entropic_value", "dual_value",
    "cost_matrix", "birkhoff_rate",
]

DOMAINS = ("log", "scaling")


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class SinkhornResult:
    """What :func:`sinkhorn` returns. Tensors are on the inputs' device and dtype, with the batch shape ``(...)``.

    - ``plan`` ``(..., n, m)``: ``P = exp((f_i + g_j - C_ij) / eps)``; its rows sum to ``a`` (to rounding),
      its columns to ``b`` up to ``marginal_error``.
    - ``f`` ``(..., n)``, ``g`` ``(..., m)``: the potentials, ``f = eps log u``, ``g = eps log v``
      (POT's ``eps * log_u``, ``eps * log_v``); defined up to ``(f + c, g - c)``, fixed here by the
      starting point ``f = 0`` (or ``f_init``).
    - ``value`` ``(...)``: ``<C, P> + eps KL(P | a b^T)`` :eq:`eq-ch13-entropic`, which decreases to the
      exact transport cost as ``eps -> 0`` (POT's ``ot.sinkhorn2`` returns ``<C, P>`` only).
    - ``iterations``: the number of iterations run (one iteration updates ``g``, then ``f``); after
      :func:`sinkhorn_eps_scaling`, the total over its stages.
    - ``marginal_error`` ``(...)``: ``||P^T 1 - b||_1`` per problem; ``converged`` is whether its
      largest entry met ``tol``; ``errors``: that largest entry after each iteration (Python floats).
    - ``stages``: ``((eps, iterations), ...)``, one pair per value of ``eps`` run (one for :func:`sinkhorn`);
      ``domain``, ``eps`` and ``tol`` are those of the (last) run.

    The tensors carry the autograd history of the iterations when the inputs require a gradient
    (:func:`sinkhorn` does not switch autograd off): a backward pass through them is unrolled autograd,
    with memory linear in the number of iterations. Detach them, or call :func:`sinkhorn` under
    ``torch.no_grad()``, when no gradient is wanted. ``marginal_error`` and ``errors`` are detached.
    Chapter 13, section "Sinkhorn's iterations".
    """

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    value: torch.Tensor
    iterations: int
    marginal_error: torch.Tensor
    converged: bool
    errors: List[float]
    stages: Tuple[Tuple[float, int], ...]
    domain: str
    eps: float
    tol: float

    @property
    def info(self) -> SolverInfo:
        """The run as chapter 8's :class:`ad_lib.implicit.SolverInfo` (residual: the largest marginal error)."""
        return SolverInfo(f"sinkhorn ({self.domain} domain)", self.iterations, self.errors[-1], self.tol,
                          self.converged)


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _check_eps(eps, name: str = "eps") -> float:
    if isinstance(eps, torch.Tensor) and eps.numel() == 1 and eps.is_floating_point():
        eps = float(eps.detach())
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a positive real number (the entropic regularization), got "
                        f"{type(eps).__name__} {eps!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{name} must be a positive finite number (the entropic regularization), got {eps!r}")
    return float(eps)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def _check_tol(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_domain(domain) -> str:
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS} ('log': potentials with a soft-min, stable for small "
                         f"eps; 'scaling': the multipliers u, v), got {domain!r}")
    return domain


def _check_tensor(name: str, x, like: Optional[torch.Tensor] = None, like_name: str = "C") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if like is not None:
        _same_place(name, x, like, like_name)
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} holds NaN or infinite entries; expected finite values")
    return x


def _same_place(name: str, x: torch.Tensor, ref: torch.Tensor, ref_name: str = "C"):
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}, got {x.dtype}; cast one of them "
                        f"(e.g. {name}.to({ref_name}.dtype))")
    if x.device != ref.device:
        raise TypeError(f"{name} must be on {ref_name}'s device {ref.device}, got {x.device}; move one of them "
                        f"(e.g. {name}.to({ref_name}.device))")


def _mass_tolerance(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float64 else 1e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def _check_histogram(name: str, h, size: int, axis: str, C: torch.Tensor) -> torch.Tensor:
    _check_tensor(name, h, C)
    if h.dim() < 1 or h.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}) to match C of shape {tuple(C.shape)} "
                         f"({name}'s last dimension is C's {axis}), got shape {tuple(h.shape)}")
    detached = h.detach()
    if bool((detached < 0).any()):
        raise ValueError(f"{name} has negative entries (min {float(detached.min()):.3g}); a histogram must be "
                         "nonnegative")
    if bool((detached == 0).any()):
        raise ValueError(f"{name} has zero entries; sinkhorn needs positive weights (log {name} appears in the "
                         f"potentials): drop the empty bins and the matching {axis} of C")
    total = detached.sum(-1)
    tolerance = _mass_tolerance(h.dtype)
    if not bool(((total - 1).abs() <= tolerance).all()):
        worst = float(total.flatten()[(total - 1).abs().flatten().argmax()])
        raise ValueError(f"{name} must sum to one (to {tolerance:g}) along its last dimension, got a sum of "
                         f"{worst:.10g}; normalize it ({name} / {name}.sum(-1, keepdim=True))")
    return h


def _check_problem(a, b, C):
    """Check (a, b, C); return the batch shape."""
    _check_tensor("C", C)
    if C.dim() < 2 or C.shape[-2] < 1 or C.shape[-1] < 1:
        raise ValueError(f"C must have shape (..., n, m) with n, m >= 1, got {tuple(C.shape)}")
    n, m = C.shape[-2:]
    _check_histogram("a", a, n, "rows", C)
    _check_histogram("b", b, m, "columns", C)
    try:
        return torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of a {tuple(a.shape[:-1])}, b {tuple(b.shape[:-1])} and C "
                         f"{tuple(C.shape[:-2])} do not broadcast; give each (n,), (m,), (n, m) or the same "
                         "leading batch shape") from None


def _check_f_init(f_init, batch, n, C):
    if f_init is None:
        return torch.zeros(*batch, n, dtype=C.dtype, device=C.device)
    _check_tensor("f_init", f_init, C)
    if f_init.dim() < 1 or f_init.shape[-1] != n:
        raise ValueError(f"f_init must have shape (..., {n}) (a potential on the rows of C), got "
                         f"{tuple(f_init.shape)}")
    try:
        shape = torch.broadcast_shapes(f_init.shape, (*batch, n))
    except RuntimeError:
        raise ValueError(f"f_init of shape {tuple(f_init.shape)} does not broadcast to the batch shape "
                         f"{tuple(batch)} + ({n},)") from None
    return f_init.expand(shape)


# ---------------------------------------------------------------------------
# The one-step maps
# ---------------------------------------------------------------------------


def _logsumexp(Z: torch.Tensor, dim: int) -> torch.Tensor:
    """``log sum exp(Z)`` along ``dim``, shifted by the (detached) maximum, with the shifted exponents clamped
    below at ``max(2 log(eps_dtype), log(tiny) + 1)`` (-72 in float64, -32 in float32).

    A clamped term is at most ``eps_dtype^2`` times the largest one, below the rounding of the sum; the
    clamp keeps ``exp`` away from results in the subnormal range, which CPUs compute on a slow path (10 to
    100 times slower: with a small ``eps`` most entries of ``(f - C) / eps`` are there). Same value and
    gradient (a softmax) as ``torch.logsumexp`` to rounding."""
    info = torch.finfo(Z.dtype)
    floor = max(2 * math.log(info.eps), math.log(info.tiny) + 1)
    top = Z.detach().amax(dim, keepdim=True)
    return (top + torch.log(torch.exp((Z - top).clamp_min(floor)).sum(dim, keepdim=True))).squeeze(dim)


def soft_min(Z: torch.Tensor, eps: float, dim: int) -> torch.Tensor:
    """The soft-min ``min_eps(Z) = -eps log sum exp(-Z / eps)`` along ``dim``.

    It tends to ``min(Z)`` as ``eps -> 0`` (it lies between ``min Z - eps log N`` and ``min Z`` for ``N``
    entries), and never overflows: the log-sum-exp subtracts the largest exponent first (and clamps
    the exponents of terms far below the rounding of the sum, whose exponentials are slow on CPUs; the
    value and the gradient are those of ``torch.logsumexp`` to rounding). Chapter 13, section "Sinkhorn in the log
    domain", :eq:`eq-ch13-softmin`.
    """
    return -eps * _logsumexp(-Z / eps, dim)


def log_update_f(g: torch.Tensor, a: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """The row update of the log domain: ``f_i = eps log a_i + min_eps_j (C_ij - g_j)`` :eq:`eq-ch13-log-updates`.

    ``g`` ``(..., m)``, ``a`` ``(..., n)``, ``C`` ``(..., n, m)`` (batch dimensions broadcast); returns
    ``f`` ``(..., n)``, after which the plan ``exp((f_i + g_j - C_ij) / eps)`` has rows summing to ``a``.
    It is ``eps log`` of the scaling update ``u = a / (K v)``. Chapter 13, section "Sinkhorn in the log domain".
    """
    return eps * torch.log(a) + soft_min(C - g.unsqueeze(-2), eps, dim=-1)


def log_update_g(f: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """The column update of the log domain: ``g_j = eps log b_j + min_eps_i (C_ij - f_i)`` :eq:`eq-ch13-log-updates`.

    ``f`` ``(..., n)``, ``b`` ``(..., m)``, ``C`` ``(..., n, m)``; returns ``g`` ``(..., m)``, after which
    the columns of the plan sum to ``b``. Chapter 13, section "Sinkhorn in the log domain".
    """
    return eps * torch.log(b) + soft_min(C - f.unsqueeze(-1), eps, dim=-2)


def _log_update_in(work, h, w, scaled, eps: float, dim: int, span: float = math.inf, kernel=None):
    """``log_update_f(h, w, C, eps)`` (``dim=-1``) or ``log_update_g`` (``dim=-2``) to rounding, from
    ``scaled = C / eps``, computed in ``work`` (a tensor of the matrix's broadcast shape, or None), where no
    graph is recorded; returns (the update, the workspace). An iteration then makes no new (n, m) tensor and
    divides no (n, m) tensor: on a CPU, fresh memory for the two (n, m) temporaries of the public maps took
    as long as the rest of a half-step, and a division of the matrix half as long again. ``span`` bounds the
    spread of ``C`` along ``dim``: when the exponents cannot reach the subnormal range, their clamp (a pass
    over the matrix that changes no term above the rounding of the sum) is left out. ``kernel``, given only
    when the spreads of ``C / eps`` and of the potentials keep every term in exp's normal range (see
    ``_run``), is the pair ``(exp(low - scaled), low)``, with ``low`` each problem's smallest entry of
    ``scaled`` (its shape ``scaled.shape[:-2] + (1,)``): the
    log-sum-exp, shifted by one number per problem, is then a product of that matrix with a vector of
    exponentials, and no exponential of the matrix is taken in the loop."""
    if kernel is not None:
        # sum_j exp(h_j / eps - scaled_ij) = exp(top - low) sum_j kernel_ij exp(h_j / eps - top), top = max h / eps
        top = h.amax(-1, keepdim=True) / eps
        weights = torch.exp(h / eps - top)
        K, low = kernel
        sums = _matvec(K, weights) if dim == -1 else _matvec(K.transpose(-1, -2), weights)
        lse = top - low + torch.log(sums)
        return eps * torch.log(w) + -eps * lse, work
    Z = h.unsqueeze(-2 if dim == -1 else -1) / eps
    shape = torch.broadcast_shapes(Z.shape, scaled.shape)
    if work is None or work.shape != shape:
        work = torch.empty(shape, dtype=scaled.dtype, device=scaled.device)
    info = torch.finfo(scaled.dtype)
    floor = max(2 * math.log(info.eps), math.log(info.tiny) + 1)
    torch.sub(Z, scaled, out=work)  # h / eps - C / eps = -(C - h) / eps, _logsumexp's argument in soft_min(C - h)
    top = work.amax(dim, keepdim=True)
    work.sub_(top)
    # the shifted exponents lie within -(spread of h + spread of C) / eps of 0: far from exp's subnormal range,
    # the clamp has nothing to do
    if (float(h.amax() - h.amin()) + span) / eps > -math.log(info.tiny) - 1:
        work.clamp_min_(floor)
    lse = (top + work.exp_().sum(dim, keepdim=True).log_()).squeeze(dim)
    return eps * torch.log(w) + -eps * lse, work


def log_step(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float):
    """One Sinkhorn iteration in the log domain: ``g = log_update_g(f)``, then ``f_next = log_update_f(g)``.

    Returns ``(f_next, g)``; the plan of ``(f_next, g)`` has exact rows. Iterating ``f -> f_next`` from
    ``f = 0`` is what :func:`sinkhorn` does (and POT's ``sinkhorn_log``, iteration for iteration).
    Chapter 13, section "Sinkhorn in the log domain".
    """
    g = log_update_g(f, b, C, eps)
    return log_update_f(g, a, C, eps), g


def gibbs_kernel(C: torch.Tensor, eps: float) -> torch.Tensor:
    """The Gibbs kernel ``K = exp(-C / eps)``, of ``C``'s shape. Entries of ``C / eps`` above about 745
    (float64; 87 in float32) underflow to zero. Chapter 13, section "Entropic regularization"."""
    return torch.exp(-C / eps)


def _matvec(K: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (K @ v.unsqueeze(-1)).squeeze(-1)


def scaling_update_u(v: torch.Tensor, a: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The notes' row update ``u = a / (K v)`` :eq:`eq-ch13-scaling`; ``v`` ``(..., m)``, ``K`` ``(..., n, m)``,
    returns ``u`` ``(..., n)``. Chapter 13, section "Sinkhorn's iterations"."""
    return a / _matvec(K, v)


def scaling_update_v(u: torch.Tensor, b: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The notes' column update ``v = b / (K^T u)`` :eq:`eq-ch13-scaling`; ``u`` ``(..., n)``, returns ``v``
    ``(..., m)``. Chapter 13, section "Sinkhorn's iterations"."""
    return b / _matvec(K.transpose(-1, -2), u)


def scaling_step(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor, K: torch.Tensor):
    """One Sinkhorn iteration on the multipliers: ``v = b / (K^T u)``, then ``u_next = a / (K v)``.

    Returns ``(u_next, v)``. Chapter 13, section "Sinkhorn's iterations".
    """
    v = scaling_update_v(u, b, K)
    return scaling_update_u(v, a, K), v


def plan_from_potentials(f: torch.Tensor, g: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """``P_ij = exp((f_i + g_j - C_ij) / eps)``, ``(..., n, m)``. Chapter 13, section "Entropic regularization"."""
    return torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - C) / eps)


def plan_from_scalings(u: torch.Tensor, v: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``P = diag(u) K diag(v)``, ``(..., n, m)``. Chapter 13, section "Entropic regularization"."""
    return u.unsqueeze(-1) * K * v.unsqueeze(-2)


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def entropic_value(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """The entropic objective ``<C, P> + eps KL(P | a b^T)`` of any nonnegative ``plan`` :eq:`eq-ch13-entropic`.

    ``KL(P | Q) = sum P log(P / Q) - sum P + sum Q`` (the generalized divergence, zero only at
    ``P = Q``, with ``0 log 0 = 0``); for a plan with marginals ``a`` and ``b`` it is the plain
    ``sum P log(P / (a b^T))``. Shapes as in :func:`sinkhorn`; returns ``(...)``. Chapter 13, section
    "Entropic regularization".
    """
    eps = _check_eps(eps)
    Q = a.unsqueeze(-1) * b.unsqueeze(-2)
    kl = (torch.xlogy(plan, plan) - torch.xlogy(plan, Q) - plan + Q).sum((-2, -1))
    return (C * plan).sum((-2, -1)) + eps * kl


def dual_value(f: torch.Tensor, g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor,
               eps: float) -> torch.Tensor:
    """The entropic dual objective at potentials ``(f, g)`` in POT's convention :eq:`eq-ch13-entropic-dual`::

        D(f, g) = <a, f> + <b, g> - eps (<a, log a> + <b, log b>) - eps sum_ij exp((f_i + g_j - C_ij) / eps) + eps.

    Concave, maximized by Sinkhorn's potentials, where it equals the primal value (strong duality);
    below the primal value elsewhere (weak duality, for plans with marginals ``a``, ``b``). The entropy
    terms appear because POT's potentials carry ``eps log a`` and ``eps log b``: ``f - eps log a`` and
    ``g - eps log b`` are the multipliers of the problem with reference ``a b^T``. Shapes as in
    :func:`sinkhorn`; returns ``(...)``. Chapter 13, section "Entropic regularization".
    """
    eps = _check_eps(eps)
    linear = (a * (f - eps * torch.log(a))).sum(-1) + (b * (g - eps * torch.log(b))).sum(-1)
    return linear - eps * plan_from_potentials(f, g, C, eps).sum((-2, -1)) + eps


def _value(plan, f, g, a, b, eps):
    """``<C, P> + eps KL(P | a b^T)`` for ``P = exp((f + g - C) / eps)``, where ``log(P / (a b^T))`` is
    ``(f - eps log a) + (g - eps log b) - C`` over ``eps`` and the ``C`` terms cancel: no ``log`` of a plan entry
    (finite, with finite gradients, when entries underflow)."""
    rows, cols = plan.sum(-1), plan.sum(-2)
    return ((rows * (f - eps * torch.log(a))).sum(-1) + (cols * (g - eps * torch.log(b))).sum(-1)
            - eps * (rows.sum(-1) - a.sum(-1) * b.sum(-1)))


# ---------------------------------------------------------------------------
# Sinkhorn
# ---------------------------------------------------------------------------


def _rounding_hint(tol: float, dtype: torch.dtype) -> str:
    rounding = torch.finfo(dtype).eps
    if tol < 10 * rounding:
        return (f"; tol = {tol:.1e} is below the rounding of {dtype} (eps {rounding:.1e}): use tol >= "
                f"{100 * rounding:.0e}")
    return ""


def _failure_hint(a, b, tol, residual, dtype):
    hint = ("the residual is the marginal error ||P^T 1 - b||_1; raise max_iter, use a larger eps, or "
            "sinkhorn_eps_scaling")
    gap = float((a.detach().sum(-1) - b.detach().sum(-1)).abs().max())
    if gap > tol and gap >= 0.1 * residual:
        hint += (f"; a and b differ in mass by {gap:.1e}, a floor for the marginal error: normalize both "
                 "(h / h.sum(-1, keepdim=True)) in the dtype you solve in")
    return hint + _rounding_hint(tol, dtype)


def _underflow(eps, C, k, what):
    tiny = torch.finfo(C.dtype).tiny
    low, high = C.detach().amin((-2, -1)), C.detach().amax((-2, -1))
    spread = float((high - low).max()) / eps
    hint = ""
    if spread < -0.5 * math.log(tiny):          # the spread fits: the offset of C is what under/overflows
        hint = (f"; C / eps lies in [{float(low.min()) / eps:.3g}, {float(high.max()) / eps:.3g}]: shift the cost "
                "first (C - C.amin((-2, -1), keepdim=True) has the same plan)")
    return FloatingPointError(
        f"sinkhorn(domain='scaling'): {what} at iteration {k}: with eps = {eps:g} the Gibbs kernel "
        f"K = exp(-C / eps) spans a range exp(-{spread:.3g}) and the scalings u, v the inverse range, beyond "
        f"{C.dtype} (smallest normal {tiny:.3g}, i.e. exp(-{-math.log(tiny):.0f})); use domain='log' (stable "
        f"for any eps), a larger eps, or sinkhorn_eps_scaling{hint}")


def _check_kernel(K, C, eps):
    zero_rows = (K.detach() == 0).all(-1)
    zero_cols = (K.detach() == 0).all(-2)
    if bool(zero_rows.any()) or bool(zero_cols.any()):
        what = "a row" if bool(zero_rows.any()) else "a column"
        raise _underflow(eps, C, 0, f"{what} of K underflows to zero (K v = 0, u = a / 0)")


def _drop(_):
    pass


def _shifted_kernel(a, b, scaled, f0, eps):
    """``(exp(low - scaled), low)`` for ``_log_update_in``, or None where a term could leave exp's normal range.

    With ``s`` the largest spread of ``scaled = C / eps`` within a problem, a half-step's largest term,
    shifted by ``max h / eps - low``, is at least ``exp(-s)``, and the weights ``exp(h / eps - max h / eps)``
    are at least ``exp(-spread of h / eps)``. Every potential of the loop but the first is ``eps log w``
    minus a soft-min of ``C - h``, whose spread is at most ``eps (spread of log w) + spread of C``; the first
    is ``f0``. When all of this stays about 700 (float64; 85 in float32) clear of the subnormal range, no
    term that matters is lost to underflow, and the half-steps need no maximum and no exponential of the
    matrix: two matrix-vector products an iteration, as in the scaling domain, with the kernel rescaled so
    that it cannot underflow. Chapter 13, section "Sinkhorn in the log domain"."""
    margin = -math.log(torch.finfo(scaled.dtype).tiny) - 2
    low = scaled.amin((-2, -1), keepdim=True)
    spread = float((scaled.amax((-2, -1), keepdim=True) - low).max())

    def log_spread(w):
        return float((w.log().amax(-1) - w.log().amin(-1)).max())

    first = float(((f0.amax(-1) - f0.amin(-1)) / eps).max())
    if not (2 * spread + max(log_spread(a), log_spread(b)) < margin and first + spread < margin):
        return None
    return torch.exp(low - scaled), low.squeeze(-1)


def _run(a, b, C, eps, domain, max_iter, tol, f0, record=None):
    """The iteration: returns (f, g, plan, iterations, marginal errors (...), errors list).

    ``record``, a pair of lists, receives the iterates as the reverse recursion of chapter 14 needs them:
    the first list ``f_0, f_1, ..., f_K`` (the scaling domain: ``u_0, ..., u_K``), the second ``g_1, ..., g_K``
    (``v_1, ..., v_K``), the one each ``f_k`` (``u_k``) was computed from."""
    errors = []
    # kept only when asked: otherwise no iterate outlives its step (the memory stays flat in the iterations)
    keep_first, keep_second = (record[0].append, record[1].append) if record is not None else (_drop, _drop)
    if domain == "log":
        recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, C, f0))
        work = None  # without a graph, each half-step computes in one workspace (_log_update_in)
        scaled = None if recorded else C / eps
        # the largest spread of C along a row and along a column, which bounds the exponents of a half-step
        spans = (0.0, 0.0) if recorded else (float((C.amax(-1) - C.amin(-1)).max()),
                                             float((C.amax(-2) - C.amin(-2)).max()))
        kernel = None if recorded else _shifted_kernel(a, b, scaled, f0, eps)
        if kernel is not None:
            scaled = None  # the half-steps read only the kernel: C / eps need not stay alive

        def update(h, w, dim):  # log_update_f (dim=-1, w = a) or log_update_g (dim=-2, w = b)
            nonlocal work
            if recorded:
                return (log_update_f if dim == -1 else log_update_g)(h, w, C, eps)
            out, work = _log_update_in(work, h, w, scaled, eps, dim, spans[dim == -2], kernel)
            return out

        f = f0
        keep_first(f)
        g = update(f, b, -2)
        for k in range(1, max_iter + 1):
            f = update(g, a, -1)                                # rows of plan(f, g) exact
            keep_first(f)
            keep_second(g)
            g_next = update(f, b, -2)
            with torch.no_grad():                               # columns of plan(f, g): b exp((g - g_next) / eps)
                marginal = (b * torch.expm1((g - g_next) / eps)).abs().sum(-1)
                worst = float(marginal.max())
            if not math.isfinite(worst):
                raise FloatingPointError(f"sinkhorn(domain='log'): the marginal error is {worst} at iteration {k} "
                                         f"(eps = {eps:g}); the inputs were checked finite, so this is a bug")
            errors.append(worst)
            if worst <= tol or k == max_iter:
                break
            g = g_next
        plan = plan_from_potentials(f, g, C, eps)
        return f, g, plan, k, marginal, errors

    K = gibbs_kernel(C, eps)
    _check_kernel(K, C, eps)
    u = torch.exp(f0 / eps)
    keep_first(u)
    v = scaling_update_v(u, b, K)
    for k in range(1, max_iter + 1):
        u = scaling_update_u(v, a, K)
        keep_first(u)
        keep_second(v)
        v_next = scaling_update_v(u, b, K)
        with torch.no_grad():
            for name, s in (("u", u), ("v", v_next)):
                if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
                    bad = "NaN" if bool(torch.isnan(s).any()) else "inf" if bool(torch.isinf(s).any()) else "0"
                    raise _underflow(eps, C, k, f"the scaling {name} holds {bad}")
            marginal = (b * (v / v_next - 1)).abs().sum(-1)
            worst = float(marginal.max())
        errors.append(worst)
        if worst <= tol or k == max_iter:
            break
        v = v_next
    f, g = eps * torch.log(u), eps * torch.log(v)
    plan = plan_from_scalings(u, v, K)
    if not bool(torch.isfinite(plan.detach()).all()):
        raise _underflow(eps, C, k, "the plan holds NaN or inf")
    return f, g, plan, k, marginal, errors


def sinkhorn(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *, domain: str = "log",
             max_iter: int = 1000, tol: float = 1e-9, f_init: Optional[torch.Tensor] = None,
             on_failure: str = "warn") -> SinkhornResult:
    """The entropic optimal-transport plan between ``a`` and ``b`` for the cost ``C``, by Sinkhorn's algorithm.

    Solves ``min <C, P> + eps KL(P | a b^T)`` over plans with ``P 1 = a``, ``P^T 1 = b``
    :eq:`eq-ch13-entropic`, whose solution is ``P = diag(u) K diag(v)``, ``K = exp(-C / eps)``. Shapes:
    ``a`` ``(..., n)``, ``b`` ``(..., m)``, ``C`` ``(..., n, m)``, the leading (batch) dimensions
    broadcast: ``a`` ``(n,)`` or ``(B, n)``, ``b`` ``(m,)`` or ``(B, m)``, ``C`` ``(n, m)`` or ``(B, n, m)``
    solve ``B`` problems in one set of tensor operations (chapter 13, section "Batched Sinkhorn").

    - ``domain="scaling"``: the notes' iterations on the multipliers, ``v = b / (K^T u)``,
      ``u = a / (K v)`` :eq:`eq-ch13-scaling` (chapter 13, section "Sinkhorn's iterations"). Fast, but
      ``K`` underflows when ``C / eps`` is large (``eps`` small against the spread of ``C``): that is
      detected and raised as a ``FloatingPointError`` naming ``eps`` (never a NaN plan).
    - ``domain="log"``: the same iterations on ``f = eps log u``, ``g = eps log v``,
      ``g = eps log b + softmin_i(C - f)``, ``f = eps log a + softmin_j(C - g)`` :eq:`eq-ch13-log-updates`
      (:func:`log_update_g`, :func:`log_update_f`), stable for every ``eps`` (chapter 13, section
      "Sinkhorn in the log domain").

    Each iteration updates ``g`` (or ``v``) then ``f`` (``u``), starting from ``f = f_init`` (default
    zero, i.e. ``u = 1``), so the rows of the plan sum to ``a`` exactly; the stopping test is the
    column error ``||P^T 1 - b||_1 <= tol`` (the largest over the batch), checked after every iteration
    at no extra cost (it comes from the next column update). ``a`` and ``b`` must be positive and sum to
    one; ``C`` finite; all three of one floating dtype and device (``ValueError``/``TypeError`` naming
    the argument otherwise). Stopping at ``max_iter`` before ``tol`` is reported with the marginal error
    reached (:func:`ad_lib.implicit.report`: ``on_failure="warn"`` a ``ConvergenceWarning``, ``"raise"``
    a ``NotConvergedError``, ``"ignore"``).

    No ``torch.no_grad`` inside: the returned tensors carry the autograd history of all the iterations
    when the inputs require a gradient (see :class:`SinkhornResult`). ``eps`` is a number (a
    one-element tensor is read as a number, without a gradient). Returns a :class:`SinkhornResult`;
    it equals POT's ``ot.sinkhorn(a, b, C, reg=eps, method="sinkhorn_log")`` (plan, and ``f / eps``,
    ``g / eps`` as ``log_u``, ``log_v``) at convergence.
    """
    batch = _check_problem(a, b, C)
    eps = _check_eps(eps)
    domain = _check_domain(domain)
    max_iter = _check_count("max_iter", max_iter)
    tol = _check_tol("tol", tol)
    check_on_failure(on_failure)
    f0 = _check_f_init(f_init, batch, C.shape[-2], C)
    return _solve(a, b, C, eps, domain, max_iter, tol, f0, on_failure)


def _solve(a, b, C, eps, domain, max_iter, tol, f0, on_failure, record=None) -> SinkhornResult:
    """:func:`sinkhorn` on checked arguments: the iteration (``_run``, which fills ``record``), its report, the result."""
    f, g, plan, k, marginal, errors = _run(a, b, C, eps, domain, max_iter, tol, f0, record)
    converged = errors[-1] <= tol
    if not converged and on_failure != "ignore":
        report(SolverInfo(f"sinkhorn ({domain} domain)", k, errors[-1], tol, converged), on_failure,
               hint=_failure_hint(a, b, tol, errors[-1], C.dtype))
    value = _value(plan, f, g, a, b, eps)
    return SinkhornResult(plan, f, g, value, k, marginal, converged, errors, ((eps, k),), domain, eps, tol)


def sinkhorn_eps_scaling(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *,
                         eps_start: Optional[float] = None, decay: float = 0.5, domain: str = "log",
                         max_iter: int = 1000, tol: float = 1e-9, stage_tol: Optional[float] = None,
                         on_failure: str = "warn") -> SinkhornResult:
    """Sinkhorn with eps-scaling: run :func:`sinkhorn` for ``eps_k = eps_start * decay^k`` down to ``eps``.

    Each stage starts from the potential ``f`` of the one before (a warm start: the potentials move
    little when ``eps`` shrinks by a constant factor), and the intermediate stages stop at ``stage_tol``
    (default ``max(tol, 1e-3)``; they only have to bring ``f`` near the next stage's solution); the last
    stage, at ``eps`` itself, stops at ``tol``. ``eps_start`` defaults to the largest spread
    ``max C - min C`` of the cost (at least ``eps``); ``decay`` in ``(0, 1)``; ``max_iter`` is the budget
    of each stage. Returns the last stage's :class:`SinkhornResult`, with ``iterations`` the total over
    the stages and ``stages`` the pairs ``(eps_k, iterations_k)``; intermediate stages that stop at their
    budget are not reported, the last one is (``on_failure``). Chapter 13, section
    "Small regularization and eps-scaling".
    """
    _check_problem(a, b, C)
    eps = _check_eps(eps)
    _check_domain(domain)
    _check_count("max_iter", max_iter)
    tol = _check_tol("tol", tol)
    stage_tol = max(tol, 1e-3) if stage_tol is None else _check_tol("stage_tol", stage_tol)
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay < 1:
        raise ValueError(f"decay must be a number in (0, 1) (the factor applied to eps at each stage), got {decay!r}")
    if eps_start is None:
        eps_start = max(eps, float((C.detach().amax((-2, -1)) - C.detach().amin((-2, -1))).max()))
    eps_start = _check_eps(eps_start, "eps_start")
    if eps_start < eps:
        raise ValueError(f"eps_start must be >= eps = {eps:g}, got {eps_start:g}")
    schedule = []
    current = eps_start
    while current > eps * (1 + 1e-12):
        schedule.append(current)
        current *= decay
    schedule.append(eps)
    f, stages, total, errors = None, [], 0, []
    for k, eps_k in enumerate(schedule):
        last = k == len(schedule) - 1
        result = sinkhorn(a, b, C, eps_k, domain=domain, max_iter=max_iter, tol=tol if last else stage_tol,
                          f_init=f, on_failure=on_failure if last else "ignore")
        f = result.f
        stages.append((eps_k, result.iterations))
        total += result.iterations
        errors += result.errors
    return dataclasses.replace(result, iterations=total, stages=tuple(stages), errors=errors)


# ---------------------------------------------------------------------------
# Costs and rates
# ---------------------------------------------------------------------------


def cost_matrix(x: torch.Tensor, y: torch.Tensor, p: float = 2) -> torch.Tensor:
    """``C_ij = ||x_i - y_j||^p`` (Euclidean norm) for points ``x`` ``(..., n, d)`` and ``y`` ``(..., m, d)``.

    Returns ``(..., n, m)``; ``p = 2`` is the squared distance (computed from the differences, not by
    expanding the square, so that it is exactly zero for equal points), for which the transport cost
    is ``W_2^2`` :eq:`eq-ch13-wp`. Chapter 13, section "Monge and Kantorovich".
    """
    _check_tensor("x", x)
    _check_tensor("y", y, x, "x")
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have shapes (..., n, d) and (..., m, d) with the same d, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p > 0:
        raise ValueError(f"p must be a positive number, got {p!r}")
    diff = x.unsqueeze(-2) - y.unsqueeze(-3)
    if p == 2:
        return (diff ** 2).sum(-1)
    return torch.linalg.vector_norm(diff, dim=-1) ** p


def birkhoff_rate(C: torch.Tensor, eps: float) -> torch.Tensor:
    """Birkhoff's bound on the linear rate of Sinkhorn's iteration: ``tanh(Delta / (4 eps))^2``.

    ``Delta = max_{i,j,k,l} (C_ij + C_kl - C_il - C_kj)``, so that ``exp(Delta / eps)`` is the largest
    cross ratio ``K_il K_kj / (K_ij K_kl)`` of the kernel. Each of the two half-steps of an iteration
    contracts Hilbert's projective metric by ``tanh(Delta / (4 eps))`` (Birkhoff; Franklin and Lorenz),
    so the error of the scalings shrinks at least by the returned factor per iteration. Computed in
    ``O(n^2 m)`` as ``max_{i,k} (M_ik + M_ki)``, ``M_ik = max_j (C_ij - C_kj)``; ``C`` ``(..., n, m)``,
    returns ``(...)``. Chapter 13, section "The fixed-point view and the rate of convergence",
    :eq:`eq-ch13-birkhoff`.
    """
    _check_tensor("C", C)
    eps = _check_eps(eps)
    M = (C.unsqueeze(-2) - C.unsqueeze(-3)).amax(-1)        # (..., n, n): max_j C_ij - C_kj
    delta = (M + M.transpose(-1, -2)).amax((-2, -1))
    return torch.tanh(delta / (4 * eps)) ** 2
