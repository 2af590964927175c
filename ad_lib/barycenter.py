"""Wasserstein barycenters by iterative Bregman projections, their gradients, and dictionary learning (chapter 15).

The entropic barycenter of ``K`` histograms ``a_1, ..., a_K`` (the columns of ``A``, ``(n, K)``, POT's
convention) with barycentric weights ``lambda`` on the simplex, for a cost ``C`` ``(n, n)`` and a regularization
``eps > 0`` (chapter 15, section "Barycenters of histograms", :eq:`eq-ch15-barycenter`)::

    p = argmin_p  sum_k lambda_k W_eps(a_k, p),   W_eps(a, p) = min_{P 1 = a, P^T 1 = p} <C, P> + eps sum P (log P - 1),

is found by Benamou et al.'s iterative Bregman projections: the plans ``P_k = diag(u_k) K diag(v_k)``
(``K = exp(-C / eps)``) are projected in turn, in the sense of ``KL(. | K)``, onto the plans whose rows sum to
``a_k``, and onto the plans whose columns share one histogram, which is the weighted geometric mean of their
column marginals (chapter 15, section "Iterative Bregman projections", :eq:`eq-ch15-ibp`). This module writes

- :func:`barycenter`, with ``domain="scaling"`` (the multipliers ``u_k, v_k``, all ``K`` histograms updated at
  once: Xie's "parallel" barycenter) or ``domain="log"`` (the potentials ``f_k = eps log u_k``,
  ``g_k = eps log v_k`` with soft-mins, stable for small ``eps``), batched over leading dimensions, returning a
  :class:`BarycenterResult`; ``grad="unrolled"`` lets torch.autograd differentiate it through every iteration,
  ``grad="manual"`` (the default) uses the reverse recursion derived by hand, :func:`barycenter_backward`, which
  stores vectors only (chapter 15, section "Differentiating the barycenter");
- :func:`barycenter_iterates` and :func:`barycenter_backward`, the two halves of the manual gradient;
- :class:`SeparableCost` and :func:`grid_cost`: the squared Euclidean cost on an ``n1 x n2`` grid is a sum of
  one cost per axis, its kernel a product of two small kernels, applied without the ``(n, n)`` matrix (Solomon
  et al.'s convolutional barycenters; chapter 15, section "Barycenters on a grid");
- :func:`gaussian_barycenter`, the closed form of the entropic barycenter of 1-D Gaussians (chapter 15, section
  "One histogram and two Gaussians");
- :func:`wasserstein_dictionary_learning`, Schmitz et al.'s dictionary learning: atoms and weights such that
  each data histogram is the barycenter of the atoms, fitted by Adam through :func:`barycenter` (chapter 15,
  section "Wasserstein dictionary learning").

Conventions: plan ``k`` has rows on the bins of ``a_k`` and columns on those of the barycenter, so
``W_eps(a_k, p)`` is chapter 13's ``sinkhorn(a_k, p, C)`` (:func:`ad_lib.sinkhorn.sinkhorn`); the potentials are
those of chapter 13 (``P_k = exp((f_k + g_k - C) / eps)``). The regularization is Benamou et al.'s and POT's,
``eps sum P log P`` (``KL(P | K)``), not chapter 13's ``KL(P | a p^T)``: the two values differ by
``eps (H(a) + H(p))``, which depends on ``p`` and so moves the minimizer. The iteration equals POT's
``ot.bregman.barycenter(A, C, eps, weights, method="sinkhorn_log")`` iteration for iteration; POT's
``method="sinkhorn"`` starts with a step that weighs the histograms uniformly (and applies ``K`` where our first
iteration applies ``K^T``): from that starting point (``g_init``) it is our iteration, with uniform weights and a
symmetric cost one iteration ahead of it (with uniform weights and any cost it still converges to our barycenter),
but with unequal weights it converges to plans that share a column marginal without being optimal (chapter 15, section "Iterative Bregman projections").
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch
from tqdm.std import tqdm

from ad_lib import optim
from ad_lib.implicit import SolverInfo, check_on_failure, report
from ad_lib.sinkhorn import (_check_count, _check_eps, _log_update_in, _logsumexp, _mass_tolerance, _rounding_hint,
                             gibbs_kernel, soft_min)
from ad_lib.sinkhorn_gradients import _on_simplex, _sum_to

__all__ = [
    "DOMAINS", "GRADS", "LOSSES", "BarycenterResult", "SeparableCost", "grid_cost", "barycenter",
    "barycenter_iterates", "barycenter_backward", "gaussian_barycenter", "DictionaryResult",
    "wasserstein_dictionary_learning",
]

DOMAINS = ("log", "scaling")
GRADS = ("manual", "unrolled")
LOSSES = ("kl", "l2")


# ---------------------------------------------------------------------------
# Costs: dense, or separable on a grid
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeparableCost:
    """A cost on an ``n1 x n2`` grid, a sum of one cost per axis: ``C[(i1, i2), (j1, j2)] = C1[i1, j1] + C2[i2, j2]``.

    ``C1`` ``(n1, n1)``, ``C2`` ``(n2, n2)``; the bins are the grid's cells in row-major order (bin
    ``i1 * n2 + i2`` is row ``i1``, column ``i2`` of an image), so a histogram ``(..., n1 * n2)`` is an image
    ``(..., n1, n2)`` flattened. The Gibbs kernel is then the product ``K1[i1, j1] K2[i2, j2]``: ``K x`` is the
    image ``K1 X K2^T``, two products of ``n1 x n1`` and ``n2 x n2`` matrices, and a soft-min over the grid is
    two soft-mins along the axes, in ``O(n (n1 + n2))`` instead of ``O(n^2)`` with no ``(n, n)`` matrix
    (Solomon et al.'s convolutional Wasserstein distances). The squared Euclidean cost on a grid is separable
    (:func:`grid_cost`). :meth:`dense` gives the ``(n, n)`` matrix. Chapter 15, section "Barycenters on a grid".
    """

    C1: torch.Tensor
    C2: torch.Tensor

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.C1.shape[-1], self.C2.shape[-1])

    @property
    def shape(self) -> Tuple[int, int]:
        n = self.C1.shape[-1] * self.C2.shape[-1]
        return (n, n)

    @property
    def dtype(self) -> torch.dtype:
        return self.C1.dtype

    @property
    def device(self) -> torch.device:
        return self.C1.device

    @property
    def requires_grad(self) -> bool:
        return self.C1.requires_grad or self.C2.requires_grad

    def dense(self) -> torch.Tensor:
        """The ``(n1 n2, n1 n2)`` cost matrix ``C1[i1, j1] + C2[i2, j2]``."""
        n1, n2 = self.grid
        return (self.C1[:, None, :, None] + self.C2[None, :, None, :]).reshape(n1 * n2, n1 * n2)


def grid_cost(shape: Union[int, Sequence[int]], *, dtype: torch.dtype = torch.float64, device=None,
              separable: bool = True):
    """The squared Euclidean cost between the cells of a regular grid on ``[0, 1]`` (or ``[0, 1]^2``).

    ``shape`` is ``n`` (a 1-D grid of ``n`` points ``t_i = i / (n - 1)``; returns the ``(n, n)`` matrix
    ``(t_i - t_j)^2``) or ``(n1, n2)`` (a 2-D grid, the points ``(i1 / (n1 - 1), i2 / (n2 - 1))`` in row-major
    order, POT's grid in ``ot.bregman.convolutional_barycenter2d``; returns a :class:`SeparableCost`, or with
    ``separable=False`` its dense ``(n1 n2, n1 n2)`` matrix). Chapter 15, section "Barycenters on a grid".
    """
    dims = (shape,) if isinstance(shape, numbers.Number) else tuple(shape) if isinstance(shape, (tuple, list)) else ()
    if len(dims) not in (1, 2) or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 2 for d in dims):
        raise ValueError(f"shape must be n or (n1, n2), integers >= 2, got {shape!r}")
    costs = []
    for d in dims:
        t = torch.linspace(0, 1, int(d), dtype=dtype, device=device)
        costs.append((t[:, None] - t[None, :]) ** 2)
    if len(costs) == 1:
        return costs[0]
    cost = SeparableCost(*costs)
    return cost if separable else cost.dense()


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class BarycenterResult:
    """What :func:`barycenter` returns. Tensors are on the inputs' device and dtype, with the batch shape ``(...)``.

    - ``barycenter`` ``(..., n)``: ``p``, the weighted geometric mean of the plans' column marginals at the
      last iteration (what POT returns); positive, summing to one up to ``marginal_error``.
    - ``f``, ``g`` ``(..., n, K)``: the potentials of the last iteration, column ``k`` for histogram ``k``
      (``f = eps log u``, ``g = eps log v``): the plans ``P_k = exp((f_k + g_k - C) / eps)`` have rows summing
      to ``a_k`` and columns ``c_k``; ``f`` is ``-inf`` on the empty bins of ``a_k``.
    - ``iterations``: the number of iterations run; ``marginal_error`` ``(...)``: the stopping rule's residual
      ``sum_k lambda_k ||c_k - p||_1`` per problem (how far the plans are from sharing the column marginal
      ``p``); ``converged``: whether its largest entry met ``tol``; ``errors``: that largest entry after each
      iteration (Python floats).
    - ``domain``, ``grad``, ``eps``, ``tol``: the settings of the run.

    With ``grad="unrolled"``, the tensors carry the autograd history of the iterations (when the inputs require
    a gradient); with ``grad="manual"`` only ``barycenter`` does, through the hand-derived backward pass.
    Chapter 15, section "Iterative Bregman projections".
    """

    barycenter: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    marginal_error: torch.Tensor
    converged: bool
    errors: List[float]
    domain: str
    grad: str
    eps: float
    tol: float

    @property
    def info(self) -> SolverInfo:
        """The run as chapter 8's :class:`ad_lib.implicit.SolverInfo` (residual: the largest marginal error)."""
        return SolverInfo(f"barycenter ({self.domain} domain)", self.iterations, self.errors[-1], self.tol,
                          self.converged)


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _check_floating(name: str, x, ref: Optional[torch.Tensor] = None, ref_name: str = "C") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ref is not None:
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}, got {x.dtype}; cast one of them "
                            f"(e.g. {name}.to({ref_name}.dtype))")
        if x.device != ref.device:
            raise TypeError(f"{name} must be on {ref_name}'s device {ref.device}, got {x.device}; move one of them "
                            f"(e.g. {name}.to({ref_name}.device))")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} holds NaN or infinite entries; expected finite values")
    return x


def _check_cost(C):
    """Check C (a tensor (n, n) or a SeparableCost); return (a tensor of C's dtype and device, n)."""
    if isinstance(C, SeparableCost):
        for name, part in (("C.C1", C.C1), ("C.C2", C.C2)):
            _check_floating(name, part, C.C1 if name == "C.C2" else None, "C.C1")
            if part.dim() != 2 or part.shape[0] != part.shape[1] or part.shape[0] < 1:
                raise ValueError(f"{name} must be a square matrix (n_axis, n_axis), got shape {tuple(part.shape)}")
        return C.C1, C.shape[0]
    _check_floating("C", C)
    if C.dim() != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 1:
        raise ValueError(f"C must be a square cost matrix (n, n) shared by the histograms and the barycenter (or a "
                         f"SeparableCost), got shape {tuple(C.shape)}")
    return C, C.shape[0]


def _check_histograms(A, n: int, ref: torch.Tensor, name: str = "A") -> torch.Tensor:
    _check_floating(name, A, ref)
    if A.dim() < 2 or A.shape[-2] != n or A.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., n, K) = (..., {n}, K): the K histograms as columns (POT's "
                         f"convention), n matching C of size {n}, got shape {tuple(A.shape)}")
    detached = A.detach()
    if bool((detached < 0).any()):
        raise ValueError(f"{name} has negative entries (min {float(detached.min()):.3g}); histograms must be "
                         "nonnegative")
    totals = detached.sum(-2)
    tolerance = _mass_tolerance(A.dtype)
    if not bool(((totals - 1).abs() <= tolerance).all()):
        worst = float(totals.flatten()[(totals - 1).abs().flatten().argmax()])
        raise ValueError(f"{name}'s columns must each sum to one (to {tolerance:g}), got a column summing to "
                         f"{worst:.10g}; normalize them ({name} / {name}.sum(-2, keepdim=True))")
    return A


def _check_weights(weights, K: int, ref: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.full((K,), 1.0 / K, dtype=ref.dtype, device=ref.device)
    _check_floating("weights", weights, ref)
    if weights.dim() < 1 or weights.shape[-1] != K:
        raise ValueError(f"weights must have shape (..., K) = (..., {K}), one weight per column of A, got shape "
                         f"{tuple(weights.shape)}")
    detached = weights.detach()
    if bool((detached < 0).any()):
        raise ValueError(f"weights has negative entries (min {float(detached.min()):.3g}); barycentric weights lie "
                         "on the simplex (nonnegative, summing to one)")
    totals = detached.sum(-1)
    tolerance = _mass_tolerance(weights.dtype)
    if not bool(((totals - 1).abs() <= tolerance).all()):
        worst = float(totals.flatten()[(totals - 1).abs().flatten().argmax()])
        raise ValueError(f"weights must sum to one (to {tolerance:g}) along the last dimension (the simplex), got "
                         f"a sum of {worst:.10g}; normalize them (weights / weights.sum(-1, keepdim=True))")
    return weights


def _check_choice(name: str, value, choices, what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices} ({what}), got {value!r}")
    return value


def _check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0 (0: run exactly max_iter iterations), got {tol!r}")
    return float(tol)


def _check_problem(A, C, weights, eps, domain, grad, max_iter, tol, on_failure, g_init):
    """Check every argument of :func:`barycenter`; return (weights, eps, batch shape, g0 (..., K, n))."""
    ref, n = _check_cost(C)
    _check_histograms(A, n, ref)
    K = A.shape[-1]
    weights = _check_weights(weights, K, ref)
    eps = _check_eps(eps)
    _check_choice("domain", domain, DOMAINS, "'log': potentials with soft-mins, stable for small eps; 'scaling': the "
                  "multipliers u, v")
    _check_choice("grad", grad, GRADS, "how autograd differentiates the barycenter: 'manual', the hand-derived "
                  "reverse recursion; 'unrolled', autograd through every iteration")
    _check_count("max_iter", max_iter)
    _check_tol(tol)
    check_on_failure(on_failure)
    try:
        batch = torch.broadcast_shapes(A.shape[:-2], weights.shape[:-1])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of A {tuple(A.shape[:-2])} and weights {tuple(weights.shape[:-1])} do "
                         "not broadcast; give A (n, K) or (B, n, K) and weights (K,) or (B, K)") from None
    if A.requires_grad and bool((A.detach() == 0).any()):
        raise ValueError("A has zero entries and requires a gradient: the barycenter's derivative in an empty bin is "
                         "not computed (it can be astronomically large); give A positive entries where a gradient is "
                         "wanted (a softmax parametrization, or a floor: (A + 1e-9) / (1 + n 1e-9))")
    if grad == "manual" and getattr(C, "requires_grad", False):
        raise ValueError("C requires a gradient, which grad='manual' does not compute (it differentiates in A and the "
                         "weights): use grad='unrolled' for the gradient in the cost, or detach C")
    if g_init is None:
        g0 = torch.zeros(*batch, K, n, dtype=ref.dtype, device=ref.device)
    else:
        _check_floating("g_init", g_init, ref)
        if g_init.dim() < 2 or tuple(g_init.shape[-2:]) != (n, K):
            raise ValueError(f"g_init must have shape (..., n, K) = (..., {n}, {K}) (the barycenter-side potentials, "
                             f"one column per histogram), got {tuple(g_init.shape)}")
        try:
            shape = torch.broadcast_shapes(g_init.shape[:-2], batch)
        except RuntimeError:
            raise ValueError(f"g_init of shape {tuple(g_init.shape)} does not broadcast to the batch shape "
                             f"{tuple(batch)}") from None
        batch = shape
        g0 = g_init.detach().transpose(-1, -2).expand(*batch, K, n)
    return weights, eps, batch, g0


# ---------------------------------------------------------------------------
# The kernel operations, dense or separable
# ---------------------------------------------------------------------------
#
# Both iterations and both backward passes need four operations on vectors x (..., K, n), for the cost C:
#   lse_rows(x)_j = eps log sum_i exp((x_i - C_ij) / eps),  lse_cols(x)_i = eps log sum_j exp((x_j - C_ij) / eps)
#   (log domain), K^T x and K x (scaling domain), and for the log-domain backward pass the products of the plans
#   exp((x_i + y_j - C_ij) / eps) with vectors of either side.


class _DenseKernel:
    def __init__(self, C: torch.Tensor, eps: float, domain: str, recorded: bool):
        self.C, self.eps, self.recorded = C, eps, recorded
        if domain == "scaling":
            self.K = gibbs_kernel(C, eps)
        elif not recorded:  # no graph: chapter 13's half-steps in one workspace, from C / eps
            self.scaled = C / eps
            self.work = None
            self.one = torch.ones((), dtype=C.dtype, device=C.device)

    def soft_min_cols(self, g):
        """r_i = min_eps,j (C_ij - g_j) = -lse_cols(g)_i."""
        if self.recorded:
            return soft_min(self.C - g.unsqueeze(-2), self.eps, dim=-1)
        r, self.work = _log_update_in(self.work, g, self.one, self.scaled, self.eps, -1)
        return r

    def lse_rows(self, f):
        """h_j = eps log sum_i exp((f_i - C_ij) / eps) = -min_eps,i (C_ij - f_i)."""
        if self.recorded:
            return -soft_min(self.C - f.unsqueeze(-1), self.eps, dim=-2)
        h, self.work = _log_update_in(self.work, f, self.one, self.scaled, self.eps, -2)
        return -h

    def times(self, x):  # K x
        return x @ self.K.transpose(-1, -2)

    def transposed_times(self, x):  # K^T x
        return x @ self.K

    def _plan(self, x, y):
        return torch.exp((x.unsqueeze(-1) + y.unsqueeze(-2) - self.C) / self.eps)

    def plan_times(self, x, y, z):  # sum_j exp((x_i + y_j - C_ij) / eps) z_j
        return (self._plan(x, y) @ z.unsqueeze(-1)).squeeze(-1)

    def plan_transposed_times(self, x, y, z):  # sum_i exp((x_i + y_j - C_ij) / eps) z_i
        return (z.unsqueeze(-2) @ self._plan(x, y)).squeeze(-2)


def _t(X):
    return X.transpose(-1, -2).contiguous()


class _SeparableKernel:
    def __init__(self, cost: SeparableCost, eps: float, domain: str, recorded: bool):
        self.eps, self.recorded = eps, recorded
        self.n1, self.n2 = cost.grid
        # a soft-min over the grid is one along each axis; the two stage matrices M[out, in] put the summed index
        # last, where the reduction reads contiguous memory: lse_rows sums over C's rows (M = C^T), lse_cols over
        # its columns (M = C)
        C1s, C2s = cost.C1 / eps, cost.C2 / eps
        self.rows = (C1s.transpose(0, 1).contiguous(), C2s.transpose(0, 1).contiguous())
        self.cols = (C1s.contiguous(), C2s.contiguous())
        info = torch.finfo(cost.dtype)
        # a finite stand-in for the -inf of empty bins (log 0), far below any exponent, whose products with eps
        # stay finite (a slice of -inf makes a log-sum-exp's backward pass NaN)
        self.floor = -math.sqrt(info.max)
        # chapter 13's clamp of the shifted exponents: terms below eps_dtype^2 of the largest, whose exponentials
        # land in the subnormal range that CPUs compute 10 to 100 times slower, count as eps_dtype^2
        self.exp_floor = max(2 * math.log(info.eps), math.log(info.tiny) + 1)
        self.work = {}
        if domain == "scaling":
            self.K1, self.K2 = torch.exp(-cost.C1 / eps), torch.exp(-cost.C2 / eps)

    def _image(self, x):
        return x.reshape(*x.shape[:-1], self.n1, self.n2)

    def _difference(self, X, M):
        """``X[..., r, None, i] - M[j, i]``, ``(..., r, j, i)``: a new tensor, or without a graph a workspace kept
        between calls (fresh memory for it took as long as the exponentials on a CPU)."""
        A = X.unsqueeze(-2)
        if self.recorded:
            return A - M
        shape = torch.broadcast_shapes(A.shape, M.shape)
        work = self.work.get(shape)
        if work is None:
            work = self.work[shape] = torch.empty(shape, dtype=M.dtype, device=M.device)
        return torch.sub(A, M, out=work)

    def _stage(self, X, M):
        """``log sum_i exp(X[..., r, i] - M[j, i])``, ``(..., r, j)``: one axis of a log-sum-exp over the grid."""
        Z = self._difference(X, M)
        if self.recorded:
            return _logsumexp(Z, -1)
        top = Z.amax(-1, keepdim=True)
        Z.sub_(top).clamp_min_(self.exp_floor)
        return top.squeeze(-1) + Z.exp_().sum(-1).log_()

    def _lse(self, x, stages):
        """eps log sum_i exp((x_i - C_ij) / eps) (``stages = self.rows``; ``self.cols`` sums over j instead)."""
        M1, M2 = stages
        # (the transposes are made contiguous: a difference with a transposed operand takes its memory order, and
        # the reductions along its last dimension would then read memory with a stride)
        X = self._image((x / self.eps).clamp_min(self.floor))                       # (..., i1, i2)
        T = self._stage(_t(X), M1)                                                 # (..., i2, j1, i1) -> (..., i2, j1)
        return self.eps * self._stage(_t(T), M2).reshape(x.shape)                  # (..., j1, j2, i2) -> (..., j1, j2)

    def soft_min_cols(self, g):
        return -self._lse(g, self.cols)

    def lse_rows(self, f):
        return self._lse(f, self.rows)

    def times(self, x):  # K x: the image K1 X K2^T
        return (self.K1 @ self._image(x) @ self.K2.transpose(0, 1)).reshape(x.shape)

    def transposed_times(self, x):  # K^T x: K1^T X K2
        return (self.K1.transpose(0, 1) @ self._image(x) @ self.K2).reshape(x.shape)

    def _signed_stage(self, X, signs, M):
        """``sum_i signs[..., r, i] exp(X[..., r, i] - M[j, i])`` as (the log of its magnitude, its sign), ``(..., r, j)``."""
        Z = self._difference(X, M)
        top = Z.amax(-1, keepdim=True)
        total = Z.sub_(top).clamp_min_(self.exp_floor).exp_().mul_(signs.unsqueeze(-2)).sum(-1)
        return top.squeeze(-1) + torch.log(total.abs()), torch.sign(total)

    def _signed(self, outer, inner, z, stages):
        """sum over inner's index of exp((outer + inner - C) / eps) z, for z of either sign: a log-sum-exp that
        carries signs, along each axis in turn (no graph: the backward pass's products with the plans)."""
        M1, M2 = stages
        X = self._image((inner / self.eps + torch.log(z.abs())).clamp_min(self.floor))
        L, s = self._signed_stage(_t(X), _t(self._image(torch.sign(z))), M1)
        L, s = self._signed_stage(_t(L.clamp_min(self.floor)), _t(s), M2)
        return s.reshape(outer.shape) * torch.exp(outer / self.eps + L.reshape(outer.shape))

    def plan_times(self, x, y, z):  # sum_j exp((x_i + y_j - C_ij) / eps) z_j
        return self._signed(x, y, z, self.cols)

    def plan_transposed_times(self, x, y, z):  # sum_i exp((x_i + y_j - C_ij) / eps) z_i
        return self._signed(y, x, z, self.rows)


def _kernel(C, eps, domain, recorded):
    return (_SeparableKernel if isinstance(C, SeparableCost) else _DenseKernel)(C, eps, domain, recorded)


# ---------------------------------------------------------------------------
# The iterations
# ---------------------------------------------------------------------------


def _underflow(eps, k, what, C):
    spread = ""
    if isinstance(C, torch.Tensor):
        spread = f" (C / eps spans {float((C.detach().amax() - C.detach().amin()) / eps):.3g})"
    return FloatingPointError(
        f"barycenter(domain='scaling'): {what} at iteration {k}: with eps = {eps:g} the Gibbs kernel K = exp(-C / eps)"
        f"{spread} and the scalings leave the range of floating point; use domain='log' (stable for any eps) or a "
        "larger eps")


def _check_scaling_kernel(kernel, eps, C):
    parts = (kernel.K,) if isinstance(kernel, _DenseKernel) else (kernel.K1, kernel.K2)
    for part in parts:
        if bool((part == 0).all(-1).any()) or bool((part == 0).all(-2).any()):
            raise _underflow(eps, 0, "a row or column of K underflows to zero", C)


def _run(At, w, C, eps, domain, max_iter, tol, g0, record=None):
    """The iteration on At (..., K, n) (histograms as rows), weights w (..., K), from g0 (..., K, n).

    Returns (p, f, g, iterations, marginal errors (...), errors list). ``record``, three lists, receives per
    iteration what the backward pass needs: log domain (r_l, g_{l-1}, h_l) with ``r = f - eps log a`` and
    ``h = lse_rows(f)``; scaling domain (v_{l-1}, s_l = K v_{l-1}, t_l = K^T u_l)."""
    recorded = torch.is_grad_enabled() and (At.requires_grad or w.requires_grad or getattr(C, "requires_grad", False))
    kernel = _kernel(C, eps, domain, recorded)
    lam = w.unsqueeze(-1)
    errors = []
    if domain == "log":
        eps_log_a = eps * torch.log(At)  # -inf on empty bins: those rows of the plans are zero
        g = g0
        for k in range(1, max_iter + 1):
            r = kernel.soft_min_cols(g)              # f = eps log a + r: the rows of the plans sum to a_k
            f = eps_log_a + r
            h = kernel.lse_rows(f)                   # columns c_k = exp((g + h) / eps)
            log_c = (g + h) / eps
            ell = (lam * log_c).sum(-2)              # log p, the weighted geometric mean of the c_k
            with torch.no_grad():
                marginal = (w * (torch.exp(log_c) - torch.exp(ell).unsqueeze(-2)).abs().sum(-1)).sum(-1)
            if record is not None:
                for store, x in zip(record, (r, g, h)):
                    store.append(x)
            errors.append(marginal.max())
            if (tol > 0 and float(errors[-1]) <= tol) or k == max_iter:
                break
            g = eps * ell.unsqueeze(-2) - h          # the columns of every plan become p
        p = torch.exp(ell)
    else:
        _check_scaling_kernel(kernel, eps, C)
        v = torch.exp(g0 / eps)
        for k in range(1, max_iter + 1):
            s = kernel.times(v)
            u = At / s                               # rows of diag(u) K diag(v) sum to a_k
            t = kernel.transposed_times(u)
            c = v * t                                # the column marginals
            log_c = torch.log(c)
            ell = (lam * log_c).sum(-2)
            p = torch.exp(ell)
            with torch.no_grad():
                marginal = (w * (c - p.unsqueeze(-2)).abs().sum(-1)).sum(-1)
                worst = float(marginal.max())
                if not math.isfinite(worst) or not bool(torch.isfinite(p).all()):
                    raise _underflow(eps, k, "the scalings or the barycenter hold 0, inf or NaN", C)
            if record is not None:
                for store, x in zip(record, (v, s, t)):
                    store.append(x)
            errors.append(marginal.max())
            if (tol > 0 and worst <= tol) or k == max_iter:
                break
            v = p.unsqueeze(-2) / t
        f, g = eps * torch.log(u), eps * torch.log(v)
    errors = [float(e) for e in torch.stack(errors).tolist()]
    if not all(math.isfinite(e) for e in errors):
        raise FloatingPointError(f"barycenter(domain='{domain}'): the marginal error is not finite (eps = {eps:g}); "
                                 "the inputs were checked finite")
    return p, f, g, k, marginal, errors


def _finish(p, f, g, k, marginal, errors, domain, grad, eps, tol, on_failure, dtype):
    converged = errors[-1] <= tol
    if tol > 0 and not converged and on_failure != "ignore":
        report(SolverInfo(f"barycenter ({domain} domain)", k, errors[-1], tol, converged), on_failure,
               hint="the residual is sum_k lambda_k ||P_k^T 1 - p||_1, how far the plans are from sharing the "
                    "barycenter as their column marginal; raise max_iter or use a larger eps"
                    + _rounding_hint(tol, dtype))
    return BarycenterResult(p, f.transpose(-1, -2), g.transpose(-1, -2), k, marginal, converged, errors, domain, grad,
                            eps, tol)


def barycenter_iterates(A: torch.Tensor, C, weights: Optional[torch.Tensor], eps: float, *, domain: str = "log",
                        max_iter: int = 1000, tol: float = 1e-9, g_init: Optional[torch.Tensor] = None,
                        on_failure: str = "warn"):
    """The barycenter without a graph, keeping what the reverse recursion needs: ``(result, iterates)``.

    Iterations, stopping rule and result as in :func:`barycenter` (the same ``L`` iterations); ``iterates`` is
    three stacked tensors ``(L, ..., K, n)`` (histograms as rows): in the log domain the soft-min parts
    ``r_l = f_l - eps log a`` of the row potentials, the column potentials ``g_{l-1}`` each iteration starts
    from, and ``h_l = eps log K^T exp(f_l / eps)``; in the scaling domain ``v_{l-1}``, ``s_l = K v_{l-1}``
    and ``t_l = K^T u_l``. ``3 L K n`` numbers, against the ``L`` stacks of ``K`` matrices ``(n, n)`` that autograd
    keeps when it unrolls a dense cost. Chapter 15, section "Differentiating the barycenter".
    """
    weights, eps, batch, g0 = _check_problem(A, C, weights, eps, domain, "manual", max_iter, tol, on_failure, g_init)
    record = ([], [], [])
    with torch.no_grad():
        At = A.detach().transpose(-1, -2)
        out = _run(At, weights.detach(), C, eps, domain, max_iter, float(tol), g0, record)
    result = _finish(*out, domain, "manual", eps, float(tol), on_failure, At.dtype)
    return result, tuple(torch.stack(r) for r in record)


def barycenter_backward(iterates, A: torch.Tensor, C, weights: Optional[torch.Tensor], eps: float,
                        grad_barycenter: torch.Tensor, domain: str = "log"):
    """The reverse-mode recursion through the barycenter's iterations, derived by hand: ``(grad_A, grad_weights)``.

    ``iterates`` from :func:`barycenter_iterates` (same ``A``, ``C``, ``weights``, ``eps``, ``domain``);
    ``grad_barycenter`` ``(..., n)`` the cotangent of ``p``. Returns the gradients (shapes of ``A`` and of the
    weights, not centered) of the ``p`` computed after those ``L`` iterations, equal to what torch.autograd
    finds by unrolling them :eq:`eq-ch15-log-adjoint`.

    Log domain, iteration ``l`` backwards (vectors ``(..., K, n)``, ``lambda`` broadcast along ``n``): with
    ``log c = (g_{l-1} + h) / eps`` and ``log p = sum_k lambda_k log c_k``,
    ``bar_ell = bar_p p`` (last iteration) ``+ eps sum_k bar_g_l``, ``bar_lambda_k += <bar_ell, log c_k>``,
    ``bar_h = lambda bar_ell / eps - bar_g_l``, ``bar_g_{l-1} = lambda bar_ell / eps``; then through
    ``h = lse_rows(f)``, ``bar_f = Q bar_h`` with ``Q_ij = exp((f_i - h_j - C_ij) / eps)``; through
    ``f = eps log a + softmin(C - g_{l-1})``, ``bar_a += eps bar_f / a`` and ``bar_g_{l-1} -= R^T bar_f``
    with ``R_ij = exp((r_i + g_{l-1,j} - C_ij) / eps)`` (rows summing to one).

    Scaling domain :eq:`eq-ch15-scaling-adjoint`: through ``v_l = p / t``, ``log p = sum lambda log(v_{l-1} t)``,
    ``t = K^T u``, ``u = a / s``, ``s = K v_{l-1}``: ``bar_p += sum_k bar_v_l / t``, ``bar_ell = bar_p p``,
    ``bar_t = lambda bar_ell / t - bar_v_l p / t^2``, ``bar_v_{l-1} = lambda bar_ell / v_{l-1}``,
    ``bar_u = K bar_t``, ``bar_a += bar_u / s``, ``bar_v_{l-1} -= K^T (bar_u u / s)``.
    Each step rebuilds what it needs from the stored vectors. Chapter 15, section "Differentiating the barycenter".
    """
    _check_choice("domain", domain, DOMAINS, "the domain the iterates were computed in")
    eps = _check_eps(eps)
    ref, n = _check_cost(C)
    K_hist = A.shape[-1]
    weights = _check_weights(weights, K_hist, ref)
    first, second, third = iterates                     # stacked tensors (L, ..., K, n), or lists of L tensors
    L = len(first)
    with torch.no_grad():
        At = A.detach().transpose(-1, -2)
        w = weights.detach()
        lam = w.unsqueeze(-1)
        kernel = _kernel(C.detach() if isinstance(C, torch.Tensor) else SeparableCost(C.C1.detach(), C.C2.detach()),
                         eps, domain, recorded=False)
        shape = first[0].shape
        bar_a = torch.zeros(shape, dtype=At.dtype, device=At.device)
        bar_w = torch.zeros(shape[:-1], dtype=At.dtype, device=At.device)
        bar_next = torch.zeros(shape, dtype=At.dtype, device=At.device)  # the adjoint of g_l (of v_l)
        if domain == "log":
            eps_log_a = eps * torch.log(At)
            for l in range(L, 0, -1):
                r, g_prev, h = first[l - 1], second[l - 1], third[l - 1]
                log_c = (g_prev + h) / eps
                ell = (lam * log_c).sum(-2)
                bar_ell = eps * bar_next.sum(-2)                                  # through g_l = eps ell - h
                if l == L:
                    bar_ell = bar_ell + grad_barycenter.detach() * torch.exp(ell)   # through p = exp(ell)
                bar_w = bar_w + (bar_ell.unsqueeze(-2) * log_c).sum(-1)
                bar_log_c = lam * bar_ell.unsqueeze(-2)
                bar_h = bar_log_c / eps - bar_next
                bar_g = bar_log_c / eps
                f = eps_log_a + r
                bar_f = kernel.plan_times(f, -h, bar_h)                           # through h = lse_rows(f)
                bar_a = bar_a + eps * torch.where(At > 0, bar_f / At, torch.zeros_like(bar_f))
                bar_g = bar_g - kernel.plan_transposed_times(r, g_prev, bar_f)    # through f = eps log a + softmin
                bar_next = bar_g
        else:
            for l in range(L, 0, -1):
                v_prev, s, t = first[l - 1], second[l - 1], third[l - 1]
                u = At / s
                log_c = torch.log(v_prev * t)
                p = torch.exp((lam * log_c).sum(-2))
                bar_p = (bar_next / t).sum(-2)                                     # through v_l = p / t
                if l == L:
                    bar_p = bar_p + grad_barycenter.detach()
                bar_ell = bar_p * p
                bar_w = bar_w + (bar_ell.unsqueeze(-2) * log_c).sum(-1)
                bar_log_c = lam * bar_ell.unsqueeze(-2)
                bar_t = bar_log_c / t - bar_next * p.unsqueeze(-2) / t ** 2
                bar_v = bar_log_c / v_prev
                bar_u = kernel.times(bar_t)                                        # through t = K^T u
                bar_a = bar_a + bar_u / s                                          # through u = a / s
                bar_v = bar_v - kernel.transposed_times(bar_u * u / s)             # through s = K v_{l-1}
                bar_next = bar_v
    return _sum_to(bar_a, At.shape).transpose(-1, -2), _sum_to(bar_w, weights.shape)


class _ManualBarycenter(torch.autograd.Function):
    """The barycenter's iterations without a graph, keeping vectors; backward by :func:`barycenter_backward`."""

    @staticmethod
    def forward(ctx, At, w, C, eps, domain, max_iter, tol, g0, box):
        record = ([], [], [])
        out = _run(At.detach(), w.detach(), C, eps, domain, max_iter, tol, g0, record)
        box.append(out)
        ctx.save_for_backward(At, w, *record[0], *record[1], *record[2])  # not stacked: a copy that took time
        ctx.C, ctx.eps, ctx.domain = C, eps, domain
        return out[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p):
        At, w, *saved = ctx.saved_tensors
        L = len(saved) // 3
        iterates = (saved[:L], saved[L:2 * L], saved[2 * L:])
        grad_A, grad_w = barycenter_backward(iterates, At.transpose(-1, -2), ctx.C, w, ctx.eps, grad_p, ctx.domain)
        for name, grad in (("A", grad_A), ("weights", grad_w)):
            if not bool(torch.isfinite(grad).all()):
                raise FloatingPointError(
                    f"barycenter(grad='manual', domain='{ctx.domain}') backward pass: the gradient in {name} holds NaN "
                    f"or inf at eps = {ctx.eps:g} ({grad.dtype}); the scalings under- or overflow: use domain='log', "
                    "float64 or a larger eps")
        return (grad_A.transpose(-1, -2) if ctx.needs_input_grad[0] else None,
                grad_w if ctx.needs_input_grad[1] else None, None, None, None, None, None, None, None)


def barycenter(A: torch.Tensor, C, weights: Optional[torch.Tensor], eps: float, *, domain: str = "log",
               grad: str = "manual", max_iter: int = 1000, tol: float = 1e-9, g_init: Optional[torch.Tensor] = None,
               on_failure: str = "warn") -> BarycenterResult:
    """The entropic Wasserstein barycenter of the columns of ``A`` with ``weights``, by iterative Bregman projections.

    Minimizes ``sum_k lambda_k W_eps(a_k, p)`` over histograms ``p``, with ``W_eps`` regularized by
    ``eps sum P log P`` :eq:`eq-ch15-barycenter`. Shapes: ``A`` ``(n, K)`` (the histograms as columns, POT's
    convention) or batched ``(..., n, K)``; ``C`` ``(n, n)``, one cost for every histogram and the barycenter
    (POT's ``M``), or a :class:`SeparableCost` on a grid; ``weights`` ``(K,)`` or ``(..., K)`` on the simplex
    (``None``: uniform); batch dimensions of ``A`` and ``weights`` broadcast (``A`` ``(n, K)`` shared with
    weights ``(B, K)`` gives ``B`` barycenters of the same histograms). Returns a :class:`BarycenterResult`
    whose ``barycenter`` is ``(..., n)``.

    Each iteration, from ``g = g_init`` (default 0, i.e. ``v = 1``), for all ``K`` histograms at once
    :eq:`eq-ch15-ibp`: ``u_k = a_k / (K v_k)`` (the rows of ``P_k = diag(u_k) K diag(v_k)`` fit ``a_k``), then
    ``p = prod_k (v_k K^T u_k)^lambda_k`` (the weighted geometric mean of the column marginals, the KL
    projection onto plans with a common column marginal) and ``v_k = p / (K^T u_k)``. ``domain="scaling"`` runs
    it on the multipliers (two kernel products per iteration); ``domain="log"`` on the potentials
    ``f = eps log u``, ``g = eps log v`` with soft-mins :eq:`eq-ch15-log-ibp`, stable for any ``eps`` (the
    scaling domain raises a ``FloatingPointError`` naming ``eps`` when its scalings leave floating point).

    Stopping: after each iteration the residual ``sum_k lambda_k ||P_k^T 1 - p||_1`` (per problem; the largest over
    the batch) is compared with ``tol``; ``tol=0`` runs exactly ``max_iter`` iterations and reports nothing (for
    comparisons iteration for iteration). Stopping at ``max_iter`` with ``tol > 0`` unmet is reported with the
    residual reached (chapter 8's :func:`ad_lib.implicit.report`: ``on_failure="warn"`` a ``ConvergenceWarning``,
    ``"raise"`` a ``NotConvergedError``, ``"ignore"``). POT's ``ot.bregman.barycenter`` tests the standard
    deviation of the ``c_k`` every tenth iteration; with ``tol=0`` and ``stopThr=0`` both run the same iterations.

    Gradients in ``A`` and ``weights`` (``grad``): ``"manual"``, the hand-derived reverse recursion
    :func:`barycenter_backward` (vectors stored, memory ``O(L K n)``); ``"unrolled"``, torch.autograd through
    every iteration (and the only one that differentiates ``C``). Both are centered on the simplex (each column of
    the gradient in ``A`` and the gradient in ``weights`` sum to zero, as chapter 14's). ``A`` must be positive
    where it requires a gradient; ``g_init`` (``(..., n, K)``) is a constant.

    Bad input is a ``ValueError`` or ``TypeError`` naming the argument: ``A`` negative or with a column not summing
    to one, ``weights`` off the simplex or of the wrong length, ``eps <= 0``, mismatched shapes, dtypes or
    devices, NaN or infinite entries in ``C``. Chapter 15, section "Iterative Bregman projections".
    """
    weights, eps, batch, g0 = _check_problem(A, C, weights, eps, domain, grad, max_iter, tol, on_failure, g_init)
    tol = float(tol)
    At = _on_simplex(A.transpose(-1, -2))
    w = _on_simplex(weights)
    if grad == "unrolled":
        out = _run(At, w, C, eps, domain, max_iter, tol, g0)
    else:
        box = []
        p = _ManualBarycenter.apply(At, w, C, eps, domain, max_iter, tol, g0, box)
        out = (p,) + box[0][1:]
    return _finish(*out, domain, grad, eps, tol, on_failure, At.dtype)


# ---------------------------------------------------------------------------
# A closed form: 1-D Gaussians
# ---------------------------------------------------------------------------


def gaussian_barycenter(means: Sequence[float], stds: Sequence[float], weights: Sequence[float], eps: float):
    """The entropic barycenter of the 1-D Gaussians ``N(m_k, s_k^2)`` for the cost ``(x - y)^2``: ``(mean, std)``.

    For :func:`barycenter`'s regularization ``eps sum P log P`` (the continuous limit, with the differential
    entropy), the plan between two Gaussians is Gaussian with covariance ``c = -eps / 4 + sqrt(eps^2 / 16 +
    s^2 sigma^2)``, and ``d W_eps / d sigma = 2 sigma (1 - s^2 / c)``. The barycenter is Gaussian with mean
    ``sum_k lambda_k m_k`` and the std ``sigma`` solving ``sum_k lambda_k s_k^2 / c_k(sigma) = 1``
    :eq:`eq-ch15-gaussian` (found by bisection: the left side decreases from infinity to zero). As ``eps -> 0``,
    ``sigma -> sum_k lambda_k s_k`` (McCann's interpolation); one Gaussian gives ``sigma^2 = s^2 + eps / 2``,
    its blur by the Gibbs kernel. Bad input (lengths that differ, means not finite, stds not positive and finite,
    weights off the simplex or not finite, ``eps <= 0``) is a ``ValueError`` naming the argument. Chapter 15,
    section "One histogram and two Gaussians".
    """
    means, stds, weights = [list(map(float, x)) for x in (means, stds, weights)]
    if not (len(means) == len(stds) == len(weights) >= 1):
        raise ValueError(f"means, stds and weights must have the same length >= 1, got {len(means)}, {len(stds)}, "
                         f"{len(weights)}")
    if not all(math.isfinite(m) for m in means):
        raise ValueError(f"means must be finite, got {means}")
    if any(not s > 0 or not math.isfinite(s) for s in stds):
        raise ValueError(f"stds must be positive and finite, got {stds}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not abs(sum(weights) - 1) <= 1e-9:
        raise ValueError(f"weights must be nonnegative and sum to one, got {weights}")
    eps = _check_eps(eps)

    def excess(sigma):
        return sum(w * s * s / (-eps / 4 + math.sqrt(eps * eps / 16 + s * s * sigma * sigma))
                   for w, s in zip(weights, stds)) - 1

    low, high = 1e-12, max(stds) + eps + 1.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if excess(mid) > 0 else (low, mid)
    return sum(w * m for w, m in zip(weights, means)), 0.5 * (low + high)


# ---------------------------------------------------------------------------
# Wasserstein dictionary learning
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class DictionaryResult:
    """What :func:`wasserstein_dictionary_learning` returns.

    ``atoms`` ``(n, k)``: the learned histograms (columns); ``weights`` ``(k, N)``: the barycentric weights of each
    data histogram (columns on the simplex); ``reconstruction`` ``(n, N)``: the barycenters of the atoms with those
    weights, the model's approximation of the data; ``loss``: the training loss at each step (Python floats).
    All detached. Chapter 15, section "Wasserstein dictionary learning".
    """

    atoms: torch.Tensor
    weights: torch.Tensor
    reconstruction: torch.Tensor
    loss: List[float]


def _data_loss(X, P, loss):
    """Mean over the data of KL(x | p) or ||x - p||^2; X, P (N, n)."""
    if loss == "kl":
        return (torch.xlogy(X, X) - torch.xlogy(X, P)).sum(-1).mean()
    return ((X - P) ** 2).sum(-1).mean()


def wasserstein_dictionary_learning(X: torch.Tensor, n_atoms: int, C, eps: float, *, steps: int = 200,
                                    lr: float = 0.05, loss: str = "kl", domain: str = "log", grad: str = "manual",
                                    max_iter: int = 20, seed: int = 0, progress: bool = True) -> DictionaryResult:
    """Schmitz et al.'s Wasserstein dictionary learning: ``k`` atoms and barycentric weights for ``N`` histograms.

    ``X`` ``(n, N)``: the data histograms as columns; ``C`` ``(n, n)`` or a :class:`SeparableCost`. Learns atoms
    ``D`` ``(n, k)`` and weights ``Lambda`` ``(k, N)`` minimizing ``mean_i loss(x_i, P(D, lambda_i))``, where
    ``P(D, lambda)`` is :func:`barycenter` of the atoms with weights ``lambda`` after exactly ``max_iter``
    iterations (``tol=0``; the barycenters of all data in one batched call) :eq:`eq-ch15-wdl`. The atoms and weights
    are softmaxes of free parameters (``D = softmax(alpha)`` along ``n``, ``Lambda = softmax(beta)`` along ``k``),
    so they stay on their simplices; Adam (:class:`ad_lib.optim.Adam`, rate ``lr``) takes ``steps`` steps on
    ``(alpha, beta)`` with the gradient of ``grad`` (``"manual"``: :func:`barycenter_backward`). ``loss``:
    ``"kl"``, ``KL(x | p) = sum x log(x / p)`` (data may have empty bins), or ``"l2"``, ``||x - p||^2``.
    Start: ``alpha`` drawn from ``N(0, 0.1^2)`` with ``seed`` (near-uniform atoms), ``beta = 0`` (uniform
    weights). A progress bar shows the steps (``progress``). Returns a :class:`DictionaryResult`.
    Chapter 15, section "Wasserstein dictionary learning".
    """
    ref, n = _check_cost(C)
    _check_floating("X", X, ref)
    if X.dim() != 2 or X.shape[0] != n or X.shape[1] < 1:
        raise ValueError(f"X must have shape (n, N) = ({n}, N): the data histograms as columns, got {tuple(X.shape)}")
    _check_histograms(X.detach(), n, ref, "X")
    N = X.shape[1]
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, numbers.Integral) or not 1 <= n_atoms <= N:
        raise ValueError(f"n_atoms must be an integer between 1 and the number of histograms {N}, got {n_atoms!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    _check_choice("loss", loss, LOSSES, "'kl': KL(x | p); 'l2': the squared Euclidean distance")
    eps = _check_eps(eps)
    _check_choice("domain", domain, DOMAINS, "the barycenter's iteration")
    _check_choice("grad", grad, GRADS, "how the barycenter is differentiated")
    _check_count("max_iter", max_iter)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer (the seed of the atoms' random start), got {type(seed).__name__} "
                        f"{seed!r}")
    data = X.detach().transpose(0, 1)                                       # (N, n)
    rng = torch.Generator().manual_seed(seed)
    # near-uniform atoms, told apart by a small random perturbation (starting from data histograms, tried too, ended
    # in worse local minima on both of the chapter's examples)
    alpha = (0.1 * torch.randn(n, n_atoms, generator=rng, dtype=X.dtype)).to(X.device).requires_grad_(True)
    beta = torch.zeros(n_atoms, N, dtype=X.dtype, device=X.device, requires_grad=True)
    opt = optim.Adam([alpha, beta], lr=lr)
    history = []

    def reconstruct():
        atoms, weights = torch.softmax(alpha, 0), torch.softmax(beta, 0)
        bary = barycenter(atoms, C, weights.transpose(0, 1), eps, domain=domain, grad=grad, max_iter=max_iter, tol=0)
        return atoms, weights, bary.barycenter                             # (N, n)

    bar = tqdm(range(steps), desc="Wasserstein dictionary learning", disable=not progress, mininterval=2.0, ncols=80)
    for step in bar:
        value = _data_loss(data, reconstruct()[2], loss)
        opt.zero_grad()
        value.backward()
        if not (math.isfinite(float(value.detach())) and bool(torch.isfinite(alpha.grad).all())
                and bool(torch.isfinite(beta.grad).all())):
            raise FloatingPointError(f"wasserstein_dictionary_learning: the loss or its gradient is not finite at step "
                                     f"{step} (eps = {eps:g}, domain='{domain}', {X.dtype}): use domain='log', float64, "
                                     "a larger eps or a smaller lr")
        opt.step()
        history.append(float(value.detach()))
    with torch.no_grad():
        atoms, weights, P = reconstruct()
    return DictionaryResult(atoms, weights, P.transpose(0, 1), history)
