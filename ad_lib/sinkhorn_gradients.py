"""Differentiating Sinkhorn: four gradients of entropic optimal transport, and Sinkhorn divergences (chapter 14).

The value of entropic optimal transport (chapter 13, :func:`ad_lib.sinkhorn.sinkhorn`)::

    OT_eps(a, b, C) = <C, P> + eps KL(P | a b^T),   P = exp((f_i + g_j - C_ij) / eps),

is a differentiable function of the histograms ``a``, ``b`` and of the cost ``C``. This module computes its
gradient in four ways (chapter 14, section "Four ways to differentiate Sinkhorn"), chosen by
``grad=`` in :func:`sinkhorn_loss`:

- ``"unrolled"``: torch.autograd through every iteration of :func:`ad_lib.sinkhorn.sinkhorn` (memory
  linear in the number of iterations, an ``(n, m)`` matrix per iteration);
- ``"manual"``: the same derivative, by the reverse-mode recursion through the iterations derived by hand
  for the log domain and the scaling domain, batched (:func:`sinkhorn_backward`); it stores only the
  iterates ``f_k, g_k`` (or ``u_k, v_k``), vectors, and rebuilds each plan in the backward pass;
- ``"envelope"``: Danskin's theorem (chapter 8's envelope theorem): ``grad_C = P``,
  ``grad_a = f - eps log a``, ``grad_b = g - eps log b`` (the dual potentials of the problem with
  reference ``a b^T``), no derivative of the iterations at all; exact only at convergence;
- ``"implicit"``: the implicit function theorem at the fixed point, through the plan
  (:func:`sinkhorn_plan`, whose backward pass is chapter 9's block elimination
  :func:`ad_lib.declarative.ot_backward`), the value then being a function of the plan.

The gradients in ``a`` and ``b`` are returned centered (summing to zero along the last dimension), as POT
does: ``a`` and ``b`` live on the simplex, where only mass-preserving directions exist, and the value is
defined off it only by the formula that happens to compute it (chapter 14, section
"Gradients on the simplex").

:func:`sinkhorn_divergence` is the debiased ``S_eps(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2``
between point clouds with the squared Euclidean cost, which GeomLoss computes with the halved cost
(:func:`geomloss_blur` gives the conversion), and :func:`train_sinkhorn_generator` fits chapter 12's
minimum Kantorovich estimator with it.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import torch
from tqdm.std import tqdm

from ad_lib import optim
from ad_lib.declarative import ot_backward
from ad_lib.implicit import check_on_failure
from ad_lib.sinkhorn import (SinkhornResult, _check_count, _check_domain, _check_eps, _check_problem, _check_tensor,
                             _check_tol, _solve, cost_matrix, gibbs_kernel, plan_from_potentials, sinkhorn)

__all__ = [
    "GRADS", "PLAN_GRADS", "centered", "sinkhorn_loss", "sinkhorn_plan", "envelope_gradients",
    "sinkhorn_iterates", "sinkhorn_backward", "sinkhorn_divergence", "geomloss_blur",
    "train_sinkhorn_generator",
]

GRADS = ("unrolled", "manual", "envelope", "implicit")
PLAN_GRADS = ("implicit", "unrolled")


# ---------------------------------------------------------------------------
# Checks and small helpers
# ---------------------------------------------------------------------------


def _check_grad(grad, choices=GRADS, what="sinkhorn_loss") -> str:
    if not isinstance(grad, str) or grad not in choices:
        raise ValueError(f"grad must be one of {choices} for {what} (how the gradient is computed), got {grad!r}")
    return grad


def _check_settings(a, b, C, eps, domain, max_iter, tol, on_failure):
    batch = _check_problem(a, b, C)
    eps = _check_eps(eps)
    domain = _check_domain(domain)
    max_iter = _check_count("max_iter", max_iter)
    tol = _check_tol("tol", tol)
    check_on_failure(on_failure)
    return batch, eps, domain, max_iter, tol


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum ``t`` over the dimensions that broadcasting added to ``shape`` (the adjoint of broadcasting)."""
    shape = tuple(shape)
    extra = t.dim() - len(shape)
    if extra > 0:
        t = t.sum(tuple(range(extra)))
    dims = tuple(k for k, s in enumerate(shape) if s == 1 and t.shape[k] != 1)
    if dims:
        t = t.sum(dims, keepdim=True)
    return t.reshape(shape)


def centered(h: torch.Tensor) -> torch.Tensor:
    """``h - mean(h)`` along the last dimension: the orthogonal projection of a gradient onto the directions
    that keep the mass (``sum_i d_i = 0``), the tangent space of the simplex. Shape of ``h``.
    Chapter 14, section "Gradients on the simplex"."""
    return h - h.mean(-1, keepdim=True)


class _CenteredGradient(torch.autograd.Function):
    """The identity, whose backward pass centers the incoming gradient along the last dimension."""

    @staticmethod
    def forward(ctx, h):
        return h.clone()

    @staticmethod
    def backward(ctx, grad):
        return centered(grad)


def _on_simplex(h: torch.Tensor) -> torch.Tensor:
    return _CenteredGradient.apply(h) if h.requires_grad else h


def _detached_sinkhorn(a, b, C, eps, domain, max_iter, tol, on_failure) -> SinkhornResult:
    with torch.no_grad():
        return sinkhorn(a.detach(), b.detach(), C.detach(), eps, domain=domain, max_iter=max_iter, tol=tol,
                        on_failure=on_failure)


# ---------------------------------------------------------------------------
# The envelope gradient
# ---------------------------------------------------------------------------


def envelope_gradients(result: SinkhornResult, a: torch.Tensor, b: torch.Tensor):
    """Danskin's gradients of the value from a :class:`ad_lib.sinkhorn.SinkhornResult`: ``(grad_a, grad_b, grad_C)``.

    ``grad_C = P`` ``(..., n, m)``, ``grad_a = centered(f - eps log a)`` ``(..., n)``,
    ``grad_b = centered(g - eps log b)`` ``(..., m)``: the derivatives of the Lagrangian at the solution,
    the multipliers being POT's potentials less ``eps log a``, ``eps log b`` (GeomLoss's potentials, those
    of the problem with reference ``a b^T``). Exact when the plan has both marginals; off convergence the
    error is of the order of the marginal error :eq:`eq-ch14-envelope`. Chapter 14, section
    "The envelope gradient".
    """
    eps = result.eps
    return (centered(result.f - eps * torch.log(a)), centered(result.g - eps * torch.log(b)), result.plan)


class _EnvelopeValue(torch.autograd.Function):
    """Sinkhorn forward without a graph; backward by Danskin's theorem."""

    @staticmethod
    def forward(ctx, a, b, C, eps, domain, max_iter, tol, on_failure):
        result = _detached_sinkhorn(a, b, C, eps, domain, max_iter, tol, on_failure)
        ctx.save_for_backward(a, b, C, result.plan, result.f, result.g)
        ctx.eps = eps
        return result.value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, w):
        a, b, C, P, f, g = ctx.saved_tensors
        eps = ctx.eps
        grad_a = _sum_to(w.unsqueeze(-1) * (f - eps * torch.log(a)), a.shape)
        grad_b = _sum_to(w.unsqueeze(-1) * (g - eps * torch.log(b)), b.shape)
        grad_C = _sum_to(w.unsqueeze(-1).unsqueeze(-1) * P, C.shape)
        return grad_a, grad_b, grad_C, None, None, None, None, None


# ---------------------------------------------------------------------------
# The hand-derived reverse recursion ("manual")
# ---------------------------------------------------------------------------


def sinkhorn_iterates(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *, domain: str = "log",
                      max_iter: int = 1000, tol: float = 1e-9, on_failure: str = "warn"):
    """Sinkhorn without a graph, keeping the iterates the reverse recursion needs: ``(result, iterates)``.

    The iterations, the stopping rule and the result are those of :func:`ad_lib.sinkhorn.sinkhorn`
    (same iterates, same number of iterations ``K``). ``iterates`` is a pair of stacked vectors:
    in the log domain ``(F, G)`` with ``F`` ``(K + 1, ..., n)`` holding ``f_0 = 0, f_1, ..., f_K`` and
    ``G`` ``(K, ..., m)`` holding ``g_1, ..., g_K``, where ``g_k = log_update_g(f_{k-1})`` and
    ``f_k = log_update_f(g_k)``; in the scaling domain ``(U, V)``, ``u_0 = 1, ..., u_K`` and ``v_1, ..., v_K``.
    ``K (n + m)`` numbers, against the ``K`` matrices ``(n, m)`` that autograd keeps when it unrolls.
    Chapter 14, section "Reverse mode through the iterations".
    """
    batch, eps, domain, max_iter, tol = _check_settings(a, b, C, eps, domain, max_iter, tol, on_failure)
    firsts, seconds = [], []
    with torch.no_grad():
        a, b, C = a.detach(), b.detach(), C.detach()
        f0 = torch.zeros(*batch, C.shape[-2], dtype=C.dtype, device=C.device)
        result = _solve(a, b, C, eps, domain, max_iter, tol, f0, on_failure, record=(firsts, seconds))
    return result, (torch.stack(firsts), torch.stack(seconds))


def _terminal_adjoints(f, g, a, b, C, eps, w):
    """Adjoints of the value ``_value(P(f, g), f, g, a, b)`` (chapter 13's formula) in f, g, C, a, b, times w.

    ``V = sum_ij P_ij Phi_ij + eps (sum a)(sum b)`` with ``Phi_ij = f_i - eps log a_i + g_j - eps log b_j - eps``
    and ``P = exp((f + g - C) / eps)`` :eq:`eq-ch14-terminal`."""
    P = plan_from_potentials(f, g, C, eps)
    rows, cols = P.sum(-1), P.sum(-2)
    phi = (f - eps * torch.log(a)).unsqueeze(-1) + (g - eps * torch.log(b)).unsqueeze(-2) - eps
    w1 = w.unsqueeze(-1)
    P_phi = w1.unsqueeze(-1) * P * phi
    bar_f = w1 * rows + P_phi.sum(-1) / eps
    bar_g = w1 * cols + P_phi.sum(-2) / eps
    bar_C = -P_phi / eps
    bar_a = w1 * eps * (b.sum(-1, keepdim=True) - rows / a)
    bar_b = w1 * eps * (a.sum(-1, keepdim=True) - cols / b)
    return bar_f, bar_g, bar_C, bar_a, bar_b


def sinkhorn_backward(iterates, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float,
                      grad_value: torch.Tensor, domain: str = "log"):
    """The reverse-mode recursion through Sinkhorn's iterations, derived by hand: ``(grad_a, grad_b, grad_C)``.

    ``iterates`` from :func:`sinkhorn_iterates`; ``grad_value`` ``(...)`` the cotangent of the value.
    Returns the gradients of the value computed after ``K`` iterations (not centered; shapes of ``a``, ``b``,
    ``C``), equal to what torch.autograd finds by unrolling the same ``K`` iterations.

    Log domain :eq:`eq-ch14-log-adjoint`: ``f_k = eps log a + softmin_j(C - g_k)`` has
    ``d f_k / d g_k = -diag(1 / a) P_k`` and ``d f_{k,i} / d C_ij = P_k,ij / a_i`` with ``P_k = P(f_k, g_k)``
    (rows exact), so with ``s = bar_f / a``: ``bar_g -= P_k^T s``, ``bar_C += diag(s) P_k``, ``bar_a += eps s``;
    likewise ``g_k = eps log b + softmin_i(C - f_{k-1})`` with ``Q_k = P(f_{k-1}, g_k)`` (columns exact) and
    ``t = bar_g / b``: ``bar_f = -Q_k t``, ``bar_C += Q_k diag(t)``, ``bar_b += eps t``.

    Scaling domain :eq:`eq-ch14-scaling-adjoint`: ``u_k = a / (K v_k)`` has the adjoints of chapter 8's
    :func:`ad_lib.implicit.sinkhorn_map_adjoints`, ``bar_v -= K^T (bar_u u_k^2 / a)``, ``bar_a += bar_u u_k / a``,
    ``bar_K -= (bar_u u_k^2 / a) v_k^T``; ``v_k = b / (K^T u_{k-1})`` the transposed ones; finally
    ``bar_C = -bar_K K / eps``. Each step rebuilds its plan (or uses ``K``): memory ``O(nm)``, not ``O(K nm)``.
    Chapter 14, section "Reverse mode through the iterations".
    """
    domain = _check_domain(domain)
    eps = _check_eps(eps)
    firsts, seconds = iterates
    iterations = seconds.shape[0]
    with torch.no_grad():
        a_, b_, C_ = a.detach(), b.detach(), C.detach()
        w = grad_value.detach()
        if domain == "log":
            f_K, g_K = firsts[-1], seconds[-1]
        else:
            f_K, g_K = eps * torch.log(firsts[-1]), eps * torch.log(seconds[-1])
        bar_f, bar_g, bar_C, bar_a, bar_b = _terminal_adjoints(f_K, g_K, a_, b_, C_, eps, w)
        if domain == "log":
            for k in range(iterations, 0, -1):
                f_k, g_k, f_prev = firsts[k], seconds[k - 1], firsts[k - 1]
                s = bar_f / a_                                        # through f_k = F(g_k)
                P_k = plan_from_potentials(f_k, g_k, C_, eps)
                bar_g = bar_g - (P_k * s.unsqueeze(-1)).sum(-2)
                bar_C = bar_C + P_k * s.unsqueeze(-1)
                bar_a = bar_a + eps * s
                t = bar_g / b_                                        # through g_k = G(f_{k-1})
                Q_k = plan_from_potentials(f_prev, g_k, C_, eps)
                bar_f = -(Q_k * t.unsqueeze(-2)).sum(-1)
                bar_C = bar_C + Q_k * t.unsqueeze(-2)
                bar_b = bar_b + eps * t
                bar_g = torch.zeros_like(bar_g)
        else:
            K = gibbs_kernel(C_, eps)
            bar_u, bar_v = bar_f * eps / firsts[-1], bar_g * eps / seconds[-1]
            bar_K = torch.zeros_like(bar_C)
            for k in range(iterations, 0, -1):
                u_k, v_k, u_prev = firsts[k], seconds[k - 1], firsts[k - 1]
                s = bar_u * u_k ** 2 / a_                             # through u_k = a / (K v_k)
                bar_v = bar_v - (K * s.unsqueeze(-1)).sum(-2)
                bar_K = bar_K - s.unsqueeze(-1) * v_k.unsqueeze(-2)
                bar_a = bar_a + bar_u * u_k / a_
                t = bar_v * v_k ** 2 / b_                             # through v_k = b / (K^T u_{k-1})
                bar_u = -(K * t.unsqueeze(-2)).sum(-1)
                bar_K = bar_K - u_prev.unsqueeze(-1) * t.unsqueeze(-2)
                bar_b = bar_b + bar_v * v_k / b_
                bar_v = torch.zeros_like(bar_v)
            bar_C = bar_C - bar_K * K / eps
    return _sum_to(bar_a, a.shape), _sum_to(bar_b, b.shape), _sum_to(bar_C, C.shape)


class _ManualValue(torch.autograd.Function):
    """Sinkhorn forward keeping the iterates; backward by the hand-derived recursion."""

    @staticmethod
    def forward(ctx, a, b, C, eps, domain, max_iter, tol, on_failure):
        result, (firsts, seconds) = sinkhorn_iterates(a, b, C, eps, domain=domain, max_iter=max_iter, tol=tol,
                                                      on_failure=on_failure)
        ctx.save_for_backward(a, b, C, firsts, seconds)
        ctx.eps, ctx.domain = eps, domain
        return result.value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, w):
        a, b, C, firsts, seconds = ctx.saved_tensors
        grad_a, grad_b, grad_C = sinkhorn_backward((firsts, seconds), a, b, C, ctx.eps, w, ctx.domain)
        return grad_a, grad_b, grad_C, None, None, None, None, None


# ---------------------------------------------------------------------------
# The implicit gradient of the plan
# ---------------------------------------------------------------------------


class _ImplicitPlan(torch.autograd.Function):
    """Sinkhorn forward without a graph; backward by the implicit function theorem (chapter 9's block solve)."""

    @staticmethod
    def forward(ctx, a, b, C, eps, domain, max_iter, tol, on_failure):
        result = _detached_sinkhorn(a, b, C, eps, domain, max_iter, tol, on_failure)
        ctx.save_for_backward(a, b, C, result.plan)
        ctx.eps = eps
        return result.plan

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v):
        a, b, C, P = ctx.saved_tensors
        n, m = P.shape[-2:]
        batch = P.shape[:-2]
        try:
            dC, da, db = ot_backward(P.reshape(-1, n, m), v.reshape(-1, n, m), 1.0 / ctx.eps)
        except FloatingPointError as error:
            raise FloatingPointError(
                f"sinkhorn_plan(grad='implicit') backward pass at eps = {ctx.eps:g}: the linear system of the "
                f"implicit function theorem is singular ({error}); entries of the plan have underflowed to zero "
                "(eps too small for the spread of C): use a larger eps, grad='unrolled', or for the value "
                "sinkhorn_loss(grad='envelope')") from error
        return (_sum_to(da.reshape(*batch, n), a.shape), _sum_to(db.reshape(*batch, m), b.shape),
                _sum_to(dC.reshape(*batch, n, m), C.shape), None, None, None, None, None)


def sinkhorn_plan(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *, grad: str = "implicit",
                  domain: str = "log", max_iter: int = 1000, tol: float = 1e-9, on_failure: str = "warn"):
    """The entropic plan ``P`` ``(..., n, m)`` of :func:`ad_lib.sinkhorn.sinkhorn`, differentiable in a, b, C.

    ``grad="implicit"``: the forward pass records no graph; the backward pass differentiates the optimality
    conditions at the solution (the implicit function theorem of chapter 8), with chapter 9's block
    elimination :func:`ad_lib.declarative.ot_backward` (``gamma = 1 / eps``) :eq:`eq-ch14-implicit`:
    memory ``O(nm)`` whatever the number of iterations, exact at convergence. ``grad="unrolled"``:
    torch.autograd through every iteration. Gradients in ``a`` and ``b`` are centered. Arguments and
    checks as in :func:`ad_lib.sinkhorn.sinkhorn`. Chapter 14, section "The implicit gradient of the plan".
    """
    _check_settings(a, b, C, eps, domain, max_iter, tol, on_failure)
    grad = _check_grad(grad, PLAN_GRADS, "sinkhorn_plan")
    eps = _check_eps(eps)
    a, b = _on_simplex(a), _on_simplex(b)
    if grad == "unrolled":
        return sinkhorn(a, b, C, eps, domain=domain, max_iter=max_iter, tol=tol, on_failure=on_failure).plan
    return _ImplicitPlan.apply(a, b, C, eps, domain, max_iter, tol, on_failure)


def _value_of_plan(P, a, b, C, eps):
    """``<C, P> + eps KL(P | a b^T)`` (generalized KL) written with a log of ``P`` that stays finite where
    entries underflow (their weight ``P`` is zero there)."""
    log_P = torch.log(P.clamp_min(torch.finfo(P.dtype).tiny))
    log_Q = torch.log(a).unsqueeze(-1) + torch.log(b).unsqueeze(-2)
    kl = (P * (log_P - log_Q) - P).sum((-2, -1)) + a.sum(-1) * b.sum(-1)
    return (C * P).sum((-2, -1)) + eps * kl


# ---------------------------------------------------------------------------
# The value
# ---------------------------------------------------------------------------


def sinkhorn_loss(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *, grad: str = "envelope",
                  domain: str = "log", max_iter: int = 1000, tol: float = 1e-9, on_failure: str = "warn"):
    """The entropic optimal-transport value ``<C, P> + eps KL(P | a b^T)``, differentiable in a, b and C.

    Shapes as in :func:`ad_lib.sinkhorn.sinkhorn` (``a`` ``(..., n)``, ``b`` ``(..., m)``, ``C`` ``(..., n, m)``,
    batch dimensions broadcast); returns the value ``(...)`` (a scalar for one problem, ``(B,)`` for a batch).
    ``grad`` picks how torch.autograd gets its gradient (chapter 14, section "Four ways to differentiate
    Sinkhorn"):

    - ``"unrolled"``: autograd through every iteration of :func:`ad_lib.sinkhorn.sinkhorn`;
    - ``"manual"``: the hand-derived reverse recursion :func:`sinkhorn_backward` (same number, same value,
      the same gradient to rounding), storing only the iterates (vectors);
    - ``"envelope"``: Danskin's theorem, ``grad_C = P``, ``grad_a = f - eps log a``, ``grad_b = g - eps log b``
      :eq:`eq-ch14-envelope` (:func:`envelope_gradients`);
    - ``"implicit"``: the value as a function of the plan of :func:`sinkhorn_plan` (``grad="implicit"``).

    The last two are exact only at convergence; the first two differentiate the value computed after the
    iterations actually run. Gradients in ``a`` and ``b`` are centered (they sum to zero; chapter 14,
    section "Gradients on the simplex"). ``domain``, ``max_iter``, ``tol``, ``on_failure`` and the checks
    (``ValueError``/``TypeError`` naming the argument) are those of :func:`ad_lib.sinkhorn.sinkhorn`;
    non-convergence within ``max_iter`` is reported with the marginal error reached.
    """
    _check_settings(a, b, C, eps, domain, max_iter, tol, on_failure)
    grad = _check_grad(grad)
    eps = _check_eps(eps)
    a, b = _on_simplex(a), _on_simplex(b)
    settings = (eps, domain, max_iter, tol, on_failure)
    if grad == "unrolled":
        return sinkhorn(a, b, C, eps, domain=domain, max_iter=max_iter, tol=tol, on_failure=on_failure).value
    if grad == "manual":
        return _ManualValue.apply(a, b, C, *settings)
    if grad == "envelope":
        return _EnvelopeValue.apply(a, b, C, *settings)
    return _value_of_plan(_ImplicitPlan.apply(a, b, C, *settings), a, b, C, eps)


# ---------------------------------------------------------------------------
# Sinkhorn divergences
# ---------------------------------------------------------------------------


def geomloss_blur(eps: float) -> float:
    """GeomLoss's ``blur`` for our ``eps``: ``sqrt(eps / 2)``.

    GeomLoss's ``SamplesLoss("sinkhorn", p=2, blur=s, debias=True)`` uses the cost ``|x - y|^2 / 2`` and the
    temperature ``s^2``. Since ``OT_{eps'}(a, b, C / 2) = OT_{2 eps'}(a, b, C) / 2``, our
    ``sinkhorn_divergence(x, y, eps)`` (cost ``|x - y|^2``) is twice GeomLoss's with ``blur = sqrt(eps / 2)``
    :eq:`eq-ch14-geomloss`. Chapter 14, section "Sinkhorn divergences".
    """
    return math.sqrt(_check_eps(eps) / 2)


def _uniform(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-2]
    return torch.full(x.shape[:-1], 1.0 / n, dtype=x.dtype, device=x.device)


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, eps: float, *, a: Optional[torch.Tensor] = None,
                        b: Optional[torch.Tensor] = None, grad: str = "envelope", domain: str = "log",
                        max_iter: int = 1000, tol: float = 1e-9, on_failure: str = "warn") -> torch.Tensor:
    """The Sinkhorn divergence ``S_eps(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2`` :eq:`eq-ch14-divergence`.

    Between the point clouds ``x`` ``(..., n, d)`` and ``y`` ``(..., m, d)`` with weights ``a`` ``(..., n)``
    and ``b`` ``(..., m)`` (uniform by default), for the squared Euclidean cost ``C_ij = |x_i - y_j|^2``
    (:func:`ad_lib.sinkhorn.cost_matrix`); each ``OT_eps`` is :func:`sinkhorn_loss` with ``grad`` and the
    other settings. Returns ``(...)``, differentiable in ``x``, ``y`` (through the costs) and the weights.
    Nonnegative, zero for ``x = y``, it removes the entropic bias of ``OT_eps``; it is twice GeomLoss's
    ``SamplesLoss("sinkhorn", p=2, blur=geomloss_blur(eps), debias=True)``. Chapter 14, section
    "Sinkhorn divergences".
    """
    _check_tensor("x", x)
    _check_tensor("y", y, x, "x")
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must be point clouds of shapes (..., n, d) and (..., m, d) with the same d, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    eps = _check_eps(eps)
    a = _uniform(x) if a is None else a
    b = _uniform(y) if b is None else b
    options = dict(grad=grad, domain=domain, max_iter=max_iter, tol=tol, on_failure=on_failure)
    cross = sinkhorn_loss(a, b, cost_matrix(x, y), eps, **options)
    self_x = sinkhorn_loss(a, a, cost_matrix(x, x), eps, **options)
    self_y = sinkhorn_loss(b, b, cost_matrix(y, y), eps, **options)
    return cross - 0.5 * (self_x + self_y)


# ---------------------------------------------------------------------------
# A minimum Kantorovich estimator with the Sinkhorn divergence
# ---------------------------------------------------------------------------


def train_sinkhorn_generator(generator: torch.nn.Module, sample_data: Callable, latent_dim: int, steps: int,
                             eps: float, *, batch_size: int = 256, lr: float = 1e-3, grad: str = "envelope",
                             max_iter: int = 200, tol: float = 1e-6, seed: int = 0,
                             snapshot_z: Optional[torch.Tensor] = None, snapshot_every: int = 0,
                             progress: bool = True):
    """Fit a generator by minimizing the Sinkhorn divergence to the data: chapter 12's minimum Kantorovich
    estimator with :func:`sinkhorn_divergence` in place of the sliced Wasserstein distance.

    Each step draws ``batch_size`` data points (``sample_data(n, generator) -> (n, d)``) and latent codes,
    and takes an Adam step (:class:`ad_lib.optim.Adam`) on ``S_eps(generator(z), data)`` with ``grad``
    (``"envelope"`` by default: one Sinkhorn run per problem, no graph through it). Sinkhorn stopping at
    ``max_iter`` is not reported (early steps need not converge). Returns ``{"loss": [...],
    "snapshots": [(step, samples), ...]}`` (as chapter 12's trainers), with a progress bar (``progress``).
    Chapter 14, section "Fitting a generator with the Sinkhorn divergence".
    """
    if not isinstance(generator, torch.nn.Module):
        raise TypeError(f"generator must be a torch.nn.Module, got {type(generator).__name__}")
    if not callable(sample_data):
        raise TypeError(f"sample_data must be a callable sample_data(n, generator) -> (n, d), got "
                        f"{type(sample_data).__name__}")
    for name, value, least in (("latent_dim", latent_dim, 1), ("steps", steps, 0), ("batch_size", batch_size, 1),
                               ("snapshot_every", snapshot_every, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    eps = _check_eps(eps)
    _check_grad(grad)
    try:
        reference = next(generator.parameters())
    except StopIteration:
        raise ValueError("the generator must have parameters") from None
    rng = torch.Generator(device=reference.device).manual_seed(seed)
    opt = optim.Adam(generator.parameters(), lr=lr)
    history = {"loss": [], "snapshots": []}

    def snapshot(step):
        if snapshot_z is not None and snapshot_every and (step % snapshot_every == 0 or step == steps):
            with torch.no_grad():
                history["snapshots"].append((step, generator(snapshot_z).detach().clone()))

    snapshot(0)
    bar = tqdm(range(1, steps + 1), desc="Sinkhorn divergence", disable=not progress, mininterval=2.0, ncols=80)
    for step in bar:
        real = sample_data(batch_size, rng)
        z = torch.randn(batch_size, latent_dim, generator=rng, dtype=reference.dtype, device=reference.device)
        loss = sinkhorn_divergence(generator(z), real, eps, grad=grad, max_iter=max_iter, tol=tol,
                                   on_failure="ignore")
        opt.zero_grad()
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        snapshot(step)
    return history
