"""Optimal transport between Markov chains: the discounted distance and its gradient (chapter 16).

Two Markov chains ``X`` on ``n`` states and ``Y`` on ``m`` states, with transition matrices ``PX`` ``(n, n)`` and
``PY`` ``(m, m)`` (rows on the simplex) and a cost ``C`` ``(n, m)`` between their states, are compared by the
discounted distance of Brugère, Wan and Wang (their discounted Weisfeiler-Lehman distance, entropic; chapter 16,
section "The discounted distance", :eq:`eq-ch16-fixed-point`)::

    C_inf = delta C + (1 - delta) T(C_inf),     T(M)_ij = OT_eps(PX_i, PY_j; M),
    d(X, Y) = OT_eps(mu_X, mu_Y; C_inf),

where ``OT_eps(a, b; M) = min_{P 1 = a, P^T 1 = b} <M, P> + eps KL(P | a b^T)`` is chapter 13's entropic value
*with* its entropic term, the value the package of the authors (``ot_markov_distances``) computes, and ``mu_X``,
``mu_Y`` are initial distributions (by default the stationary ones). ``T`` is 1-Lipschitz in the sup norm, so
``M -> delta C + (1 - delta) T(M)`` is a contraction of constant ``1 - delta`` and the iteration
``C^(k+1) = delta C + (1 - delta) T(C^(k))`` from ``C^(0) = delta C`` converges at that rate.

This module writes

- the chains of random walks on graphs (:func:`random_walk`, :func:`small_graphs`) and their stationary
  distributions (:func:`stationary_distribution`);
- the ``n m`` inner problems solved at once (:func:`transport_values`): one Sinkhorn iteration for all of them,
  whose Gibbs kernel ``exp(-M / eps)`` they share, is two matrix products; the histograms are rows of transition
  matrices, with zeros for the states a walk cannot reach, so the potentials are those relative to ``a b^T``
  (chapter 14's GeomLoss convention), finite where the weights vanish;
- :func:`markov_ot_distance`, the fixed point and the distance, with three gradients (``grad=``): the implicit
  function theorem with the adjoint system ``K^T L = G``, ``K = I - (1 - delta) P``, solved by the Neumann
  iteration ``L <- G + (1 - delta) P^T L`` without ever forming ``P`` or ``K`` (``"implicit"``), the same system
  formed and solved densely as in the authors' notes (``"implicit_dense"``), and autograd through every
  iteration (``"unrolled"``);
- :func:`pair_plans`, the ``(nm) x (nm)`` matrix ``P`` of the inner plans, for the dense solve and the figures,
  and :func:`fit_transition_matrix`, gradient descent on a chain's transition matrix.

Shapes: ``PX`` ``(..., n, n)``, ``PY`` ``(..., m, m)``, ``C`` ``(..., n, m)``, ``mu_X`` ``(..., n)``,
``mu_Y`` ``(..., m)``; leading batch dimensions broadcast. Everything runs on the inputs' device and dtype.
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from tqdm.std import tqdm

from ad_lib import optim
from ad_lib.implicit import SolverInfo, check_on_failure, report
from ad_lib.sinkhorn import _check_count, _check_eps, _check_tensor, _check_tol
from ad_lib.sinkhorn_gradients import _on_simplex

__all__ = [
    "GRADS", "MarkovOTResult", "InnerTransport",
    "random_walk", "small_graphs", "stationary_distribution",
    "transport_values", "pair_plans", "factored_limit",
    "markov_ot_distance", "fit_transition_matrix",
]

GRADS = ("implicit", "implicit_dense", "unrolled")


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class MarkovOTResult(NamedTuple):
    """What :func:`markov_ot_distance` returns; tensors on the inputs' device and dtype, batch shape ``(...)``.

    - ``distance`` ``(...)``: ``OT_eps(mu_X, mu_Y; C_inf)``, differentiable in ``PX``, ``PY``, ``C``, ``mu_X``,
      ``mu_Y`` (by ``grad``).
    - ``cost`` ``(..., n, m)``: ``C_inf``, the last iterate ``C^(k)``, differentiable as well.
    - ``iterations``: the outer iterations ``k`` run; ``residual``: the last relative step
      ``||C^(k) - C^(k-1)||_inf / max(1, ||C^(k)||_inf)`` (the largest over the batch), and ``residuals`` the
      list of them. By the contraction, ``||C^(k) - C_inf||_inf <= (1 - delta) / delta`` times the last step.
    - ``converged``: the residual met ``tol`` and the inner problems their tolerance.
    - ``inner_iterations``: the Sinkhorn iterations of all the inner solves together; ``inner_error``: the
      largest marginal error ``||P^T 1 - b||_1`` of the last inner solve and of the final problem.
    - ``plan`` ``(..., n, m)``: the plan of the final problem between ``mu_X`` and ``mu_Y``; ``mu_X``,
      ``mu_Y``: the initial distributions used (detached).

    Chapter 16, section "The discounted distance".
    """

    distance: torch.Tensor
    cost: torch.Tensor
    iterations: int
    residual: float
    converged: bool
    residuals: List[float]
    inner_iterations: int
    inner_error: float
    plan: torch.Tensor
    mu_X: torch.Tensor
    mu_Y: torch.Tensor


class InnerTransport(NamedTuple):
    """What :func:`transport_values` returns: ``values`` ``(..., n, m)``, ``T(M)_ij = OT_eps(PX_i, PY_j; M)``;
    the potentials ``f`` ``(..., n, m, n)`` and ``g`` ``(..., n, m, m)`` of each inner problem ``(i, j)``,
    relative to ``PX_i PY_j^T`` (so that its plan is ``PX_ik PY_jl exp((f_k + g_l - M_kl) / eps)``); the
    Sinkhorn ``iterations`` run and the largest ``marginal_error`` ``||P^T 1 - b||_1`` over the problems.
    Chapter 16, section "The inner problems"."""

    values: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    marginal_error: float


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _stochastic_tolerance(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def _check_transition(name: str, P, like: Optional[torch.Tensor] = None, like_name: str = "C") -> torch.Tensor:
    """A (batch of) row-stochastic square matrices: nonnegative, rows summing to one."""
    _check_tensor(name, P, like, like_name)
    if P.dim() < 2 or P.shape[-1] != P.shape[-2] or P.shape[-1] < 1:
        raise ValueError(f"{name} must be a transition matrix of shape (..., k, k) (square in its last two "
                         f"dimensions), got shape {tuple(P.shape)}")
    detached = P.detach()
    if bool((detached < 0).any()):
        where = tuple(int(i) for i in (detached < 0).nonzero()[0])
        raise ValueError(f"{name} has negative entries (min {float(detached.min()):.3g}, at index {where}); a "
                         "transition matrix holds probabilities, all nonnegative")
    rows = detached.sum(-1)
    tolerance = _stochastic_tolerance(P.dtype)
    bad = (rows - 1).abs() > tolerance
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"the rows of {name} must sum to one (to {tolerance:g}): row {where[-1]} (index {where}) "
                         f"sums to {float(rows[where]):.10g}; normalize it ({name} / {name}.sum(-1, keepdim=True))")
    return P


def _check_distribution(name: str, mu, size: int, owner: str, like: torch.Tensor) -> torch.Tensor:
    """A (batch of) histograms on ``size`` states: nonnegative, summing to one (zeros allowed)."""
    _check_tensor(name, mu, like, "C")
    if mu.dim() < 1 or mu.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), one probability per state of {owner}, got shape "
                         f"{tuple(mu.shape)}")
    detached = mu.detach()
    if bool((detached < 0).any()):
        raise ValueError(f"{name} has negative entries (min {float(detached.min()):.3g}); an initial distribution "
                         "lies on the simplex (nonnegative, summing to one)")
    total = detached.sum(-1)
    tolerance = _stochastic_tolerance(mu.dtype)
    if not bool(((total - 1).abs() <= tolerance).all()):
        worst = float(total.flatten()[(total - 1).abs().flatten().argmax()])
        raise ValueError(f"{name} must sum to one (to {tolerance:g}), got a sum of {worst:.10g}: an initial "
                         f"distribution lies on the simplex; normalize it ({name} / {name}.sum(-1, keepdim=True))")
    return mu


def _check_delta(delta) -> float:
    if isinstance(delta, torch.Tensor) and delta.numel() == 1 and delta.is_floating_point():
        if delta.requires_grad:
            raise TypeError("delta is a tensor that requires grad, but markov_ot_distance does not differentiate in "
                            "delta (it is a float setting); pass float(delta), and see the exercise on the gradient "
                            "in delta for K d C_inf / d delta = C - T(C_inf)")
        delta = float(delta)
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"delta must be a real number in (0, 1) (the discount), got {type(delta).__name__} {delta!r}")
    if not math.isfinite(delta) or not 0 < delta < 1:
        raise ValueError(f"delta must lie in the open interval (0, 1) (the discount: C_inf = delta C + (1 - delta) "
                         f"T(C_inf) is a contraction of constant 1 - delta), got {delta!r}")
    return float(delta)


def _check_grad(grad) -> str:
    if not isinstance(grad, str) or grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS} (how the gradient is computed), got {grad!r}")
    return grad


def _check_block_rows(block_rows):
    if block_rows is None:
        return None
    return _check_count("block_rows", block_rows)


def _check_problem(PX, PY, C):
    """Check (PX, PY, C); return (the broadcast batch shape, n, m)."""
    _check_tensor("C", C)
    if C.dim() < 2:
        raise ValueError(f"C must have shape (..., n, m), the cost between the states of X and of Y, got "
                         f"{tuple(C.shape)}")
    _check_transition("PX", PX, C)
    _check_transition("PY", PY, C)
    n, m = PX.shape[-1], PY.shape[-1]
    if C.shape[-2:] != (n, m):
        raise ValueError(f"C must have shape (..., {n}, {m}) to match PX (n = {n} states) and PY (m = {m} states), "
                         f"got shape {tuple(C.shape)}")
    try:
        batch = torch.broadcast_shapes(PX.shape[:-2], PY.shape[:-2], C.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of PX {tuple(PX.shape[:-2])}, PY {tuple(PY.shape[:-2])} and C "
                         f"{tuple(C.shape[:-2])} do not broadcast") from None
    return batch, n, m


# ---------------------------------------------------------------------------
# Chains: random walks on graphs, stationary distributions
# ---------------------------------------------------------------------------


def random_walk(adjacency: torch.Tensor, laziness: float = 0.0) -> torch.Tensor:
    """The transition matrix of the random walk on a graph: ``P = (1 - q) D^{-1} A + q I``.

    ``adjacency`` ``(..., n, n)``: nonnegative edge weights (0/1 for a plain graph; ``A_kl`` the weight of the
    edge from ``k`` to ``l``). From state ``k`` the walk stays with probability ``q = laziness`` in ``[0, 1)`` and
    moves to a neighbour ``l`` with probability proportional to ``A_kl`` otherwise (the q-Markov chain of Chen et
    al. that the package's ``weighted_transition_matrix`` builds); a state without edges stays where it is.
    Returns ``(..., n, n)``, rows on the simplex. Chapter 16, section "Random walks on graphs".
    """
    _check_tensor("adjacency", adjacency)
    if adjacency.dim() < 2 or adjacency.shape[-1] != adjacency.shape[-2]:
        raise ValueError(f"adjacency must have shape (..., n, n), got {tuple(adjacency.shape)}")
    if bool((adjacency.detach() < 0).any()):
        raise ValueError("adjacency has negative entries; edge weights must be nonnegative")
    if isinstance(laziness, bool) or not isinstance(laziness, numbers.Real) or not 0 <= laziness < 1:
        raise ValueError(f"laziness must be a number in [0, 1) (the probability of staying), got {laziness!r}")
    degree = adjacency.sum(-1, keepdim=True)
    isolated = degree == 0
    eye = torch.eye(adjacency.shape[-1], dtype=adjacency.dtype, device=adjacency.device)
    walk = torch.where(isolated, eye, adjacency / torch.where(isolated, torch.ones_like(degree), degree))
    return (1 - laziness) * walk + laziness * eye


def small_graphs(n: int = 8, *, dtype: torch.dtype = torch.float64, device=None) -> Dict[str, torch.Tensor]:
    """Adjacency matrices ``(n, n)`` of five graphs on ``n`` nodes a reader can draw: ``"path"``, ``"cycle"``,
    ``"star"`` (node 0 the centre), ``"two communities"`` (two cliques of ``n / 2`` nodes joined by one edge,
    ``n`` even) and ``"complete"``. ``n >= 4``. Chapter 16, section "Random walks on graphs"."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 4 or n % 2:
        raise ValueError(f"n must be an even integer >= 4 (the two communities have n / 2 nodes each), got {n!r}")
    n = int(n)
    graphs = {}

    def empty():
        return torch.zeros(n, n, dtype=dtype, device=device)

    path = empty()
    k = torch.arange(n - 1)
    path[k, k + 1] = path[k + 1, k] = 1
    graphs["path"] = path
    cycle = path.clone()
    cycle[0, n - 1] = cycle[n - 1, 0] = 1
    graphs["cycle"] = cycle
    star = empty()
    star[0, 1:] = star[1:, 0] = 1
    graphs["star"] = star
    half = n // 2
    communities = empty()
    communities[:half, :half] = 1
    communities[half:, half:] = 1
    communities.fill_diagonal_(0)
    communities[half - 1, half] = communities[half, half - 1] = 1
    graphs["two communities"] = communities
    complete = torch.ones(n, n, dtype=dtype, device=device)
    complete.fill_diagonal_(0)
    graphs["complete"] = complete
    return graphs


def stationary_distribution(P: torch.Tensor) -> torch.Tensor:
    """The stationary distribution ``mu`` of a chain, ``mu^T P = mu^T``, ``sum(mu) = 1``: ``(..., n)``.

    Solves the linear system ``(I - P^T) mu = 0`` with its last equation replaced by ``1^T mu = 1`` (the
    equations of ``I - P^T`` sum to zero, so one is redundant), by ``torch.linalg.solve``: differentiable in
    ``P`` (autograd through the solve). Unique when the chain has one closed class (an irreducible chain, or one
    with transient states, which get zero mass; periodic chains such as walks on bipartite graphs are fine).
    A chain with several closed classes has many stationary distributions: a ``ValueError`` naming ``P`` asks
    for an explicit initial distribution. Chapter 16, section "Random walks on graphs".
    """
    return _stationary(_check_transition("P", P), "P")


def _stationary(P: torch.Tensor, name: str) -> torch.Tensor:
    n = P.shape[-1]
    eye = torch.eye(n, dtype=P.dtype, device=P.device)
    system = torch.cat([(eye - P.transpose(-1, -2))[..., :-1, :], torch.ones_like(P[..., :1, :])], dim=-2)
    rhs = torch.zeros(P.shape[:-1], dtype=P.dtype, device=P.device)
    rhs[..., -1] = 1
    mu, info = torch.linalg.solve_ex(system, rhs)
    tolerance = 1e3 * n * torch.finfo(P.dtype).eps
    with torch.no_grad():
        finite = bool(torch.isfinite(mu).all()) and not bool(info.any())
        residual = float(((mu.unsqueeze(-2) @ P).squeeze(-2) - mu).abs().sum(-1).max()) if finite else math.inf
        lowest = float(mu.min()) if finite else -math.inf
    if not finite or residual > tolerance or lowest < -tolerance:
        raise ValueError(f"{name} has no unique stationary distribution (the linear system is singular or its "
                         f"solution is off the simplex: residual {residual:.3g}, smallest entry {lowest:.3g}): its chain has "
                         "more than one closed class of states; pass the initial distribution explicitly (mu_X, "
                         "mu_Y)")
    return mu.clamp_min(0)


# ---------------------------------------------------------------------------
# The inner problems: one Sinkhorn iteration for all n m of them
# ---------------------------------------------------------------------------


def _masked_log(h: torch.Tensor) -> torch.Tensor:
    """``log h`` with ``-inf`` where ``h = 0``, and a zero (not NaN) gradient there."""
    positive = h > 0
    return torch.where(positive, torch.log(torch.where(positive, h, torch.ones_like(h))),
                       torch.full_like(h, -math.inf))


def factored_limit(dtype: torch.dtype) -> float:
    """The largest ``(max M - min M) / eps`` for which the inner iterations use matrix products with the shared
    kernel: half of ``-log`` of the smallest normal number (354 in float64, 43.7 in float32).

    Below it, each sum of a half-step is at least ``exp(-spread / eps)`` (its largest weight is one, after the shift
    by the largest exponent, against a kernel entry of at least that), so no sum underflows and a term that does
    is negligible against it; above it the iterations take the log-domain half-step, one log-sum-exp over an
    ``(..., n, m, n, m)`` tensor, in blocks. Chapter 16, section "The inner problems".
    """
    return -0.5 * math.log(torch.finfo(dtype).tiny)


class _Kernel(NamedTuple):
    """The cost ``M`` ``(b, n, m)`` of the inner problems as the half-steps use it."""

    scaled: torch.Tensor          # M / eps
    low: torch.Tensor             # min M / eps, (b, 1, 1), detached
    gibbs: Optional[torch.Tensor]  # exp(-(M - min M) / eps), or None on the log path
    rows: Optional[int]           # rows i of pairs per block on the log path


def _kernel(M: torch.Tensor, eps: float, block_rows: Optional[int], pairs: Tuple[int, int]) -> _Kernel:
    scaled = M / eps
    low = scaled.detach().amin((-2, -1), keepdim=True)
    spread = float((scaled.detach().amax((-2, -1)) - low.flatten()).max())
    if spread <= factored_limit(M.dtype):
        return _Kernel(scaled, low.unsqueeze(-1), torch.exp(low - scaled), None)
    if block_rows is None:  # a block of the log path holds at most 2^22 entries (32 MiB in float64)
        per_row = M.shape[0] * pairs[1] * M.shape[-2] * M.shape[-1]
        block_rows = max(1, (1 << 22) // max(per_row, 1))
    return _Kernel(scaled, low.unsqueeze(-1), None, block_rows)


def _blocks(size: int, rows: int):
    return [(start, min(start + rows, size)) for start in range(0, size, rows)]


def _rows_of(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return t if t.shape[1] == 1 else t[:, start:stop]


def _update_f(psi: torch.Tensor, lb: torch.Tensor, kernel: _Kernel) -> torch.Tensor:
    """``phi_k = -log sum_l b_l exp(psi_l - M_kl / eps)`` for every pair: ``psi`` ``(b, p, q, m)`` ->
    ``phi`` ``(b, p, q, n)`` (``phi = f / eps``; ``lb = log b``, ``-inf`` for zero weights)."""
    y = psi + lb
    b, p, q, m = y.shape
    if kernel.gibbs is not None:
        shift = y.detach().amax(-1, keepdim=True)
        weights = torch.exp(y - shift).reshape(b, p * q, m)
        sums = (weights @ kernel.gibbs.transpose(-1, -2)).reshape(b, p, q, -1)
        return -torch.log(sums) - shift + kernel.low
    parts = []
    for start, stop in _blocks(p, kernel.rows):
        Z = _rows_of(y, start, stop).unsqueeze(-2) - kernel.scaled[:, None, None]
        parts.append(-torch.logsumexp(Z, -1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _update_g(phi: torch.Tensor, la: torch.Tensor, kernel: _Kernel) -> torch.Tensor:
    """``psi_l = -log sum_k a_k exp(phi_k - M_kl / eps)`` for every pair: ``phi`` ``(b, p, q, n)`` ->
    ``psi`` ``(b, p, q, m)``."""
    x = phi + la
    b, p, q, n = x.shape
    if kernel.gibbs is not None:
        shift = x.detach().amax(-1, keepdim=True)
        weights = torch.exp(x - shift).reshape(b, p * q, n)
        sums = (weights @ kernel.gibbs).reshape(b, p, q, -1)
        return -torch.log(sums) - shift + kernel.low
    parts = []
    for start, stop in _blocks(p, kernel.rows):
        Z = _rows_of(x, start, stop).unsqueeze(-1) - kernel.scaled[:, None, None]
        parts.append(-torch.logsumexp(Z, -2))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _sinkhorn(la, lb, wb, kernel, phi, tol, max_iter):
    """Sinkhorn's iteration on all the pairs at once, from ``phi``: each iteration updates ``psi`` then ``phi``
    (rows of every plan exact), and stops when the largest column error ``||P^T 1 - b||_1`` meets ``tol``.
    Returns ``(phi, psi, iterations, error)``; records a graph when its inputs have one."""
    psi = _update_g(phi, la, kernel)
    error = math.inf
    for k in range(1, max_iter + 1):
        phi = _update_f(psi, lb, kernel)
        psi_next = _update_g(phi, la, kernel)
        with torch.no_grad():  # the columns of the plan of (phi, psi): b exp(psi - psi_next)
            error = float((wb * torch.expm1(psi - psi_next)).abs().sum(-1).max())
        if not math.isfinite(error):
            raise FloatingPointError(f"the inner Sinkhorn iteration produced a non-finite marginal error at iteration "
                                     f"{k}; the inputs were checked finite, so this is a bug")
        if error <= tol or k == max_iter:
            break
        psi = psi_next
    return phi, psi, k, error


def _values(phi, psi, wa, wb, eps):
    """``OT_eps = eps (<a, phi> + <b, psi>)`` for each pair: the dual value, equal to the primal value with its
    entropic term at convergence (the rows of the plan are exact, so its mass is one)."""
    return eps * ((wa * phi).sum(-1) + (wb * psi).sum(-1))


def _pair_weights(PX: torch.Tensor, PY: torch.Tensor):
    """The histograms of the inner problems as broadcastable tensors: ``a = PX_i`` ``(b, n, 1, n)``, ``b = PY_j``
    ``(b, 1, m, m)``, and their masked logs."""
    wa, wb = PX.unsqueeze(-2), PY.unsqueeze(-3)
    return wa, wb, _masked_log(wa), _masked_log(wb)


def _flat(t: torch.Tensor, batch, tail) -> torch.Tensor:
    return t.expand(*batch, *tail).reshape(-1, *tail)


def transport_values(PX: torch.Tensor, PY: torch.Tensor, M: torch.Tensor, eps: float, *, tol: float = 1e-9,
                     max_iter: int = 1000, f_init: Optional[torch.Tensor] = None, block_rows: Optional[int] = None,
                     on_failure: str = "warn") -> InnerTransport:
    """The inner problems ``T(M)_ij = OT_eps(PX_i, PY_j; M)`` for all pairs of states, by one batched Sinkhorn.

    ``PX`` ``(..., n, n)``, ``PY`` ``(..., m, m)``, ``M`` ``(..., n, m)``; the value is the entropic one,
    ``min <M, P> + eps KL(P | PX_i PY_j^T)`` over the plans between the rows ``PX_i`` and ``PY_j``.
    All ``n m`` problems share the cost ``M`` and hence the Gibbs kernel ``exp(-M / eps)``: with the potentials
    of every problem stacked as the rows of an ``(n m, n)`` and an ``(n m, m)`` matrix, a half-step of all of them
    is one matrix product with that kernel (memory ``O(n m (n + m))``, no ``(n m, n m)`` tensor), while
    ``(max M - min M) / eps`` stays below :func:`factored_limit`; beyond it, the log-domain half-step, in blocks of
    ``block_rows`` rows ``i`` (default: blocks of at most 2^22 entries). The potentials are relative to the
    product ``PX_i PY_j^T`` (``f - eps log a`` in chapter 13's terms), finite where a row has zero weights (a walk
    on a graph reaches only neighbours), which chapter 13's :func:`ad_lib.sinkhorn.sinkhorn` does not accept.

    Each iteration updates the potentials ``g`` then ``f`` of every problem, from ``f = f_init`` (default 0),
    and stops when the largest column error ``||P^T 1 - b||_1`` meets ``tol`` (reported otherwise, as chapter
    13's ``sinkhorn``). No ``torch.no_grad`` inside: the values carry the autograd history of the iterations
    (unrolled), whose gradient at convergence is the envelope one (``d T_ij / d M = P^(ij)``,
    ``d T_ij / d PX_i = f^(ij)`` up to a constant). Returns an :class:`InnerTransport`. Chapter 16, section
    "The inner problems".
    """
    _check_tensor("M", M)
    _check_transition("PX", PX, M, "M")
    _check_transition("PY", PY, M, "M")
    n, m = PX.shape[-1], PY.shape[-1]
    if M.dim() < 2 or M.shape[-2:] != (n, m):
        raise ValueError(f"M must have shape (..., {n}, {m}) to match PX and PY, got {tuple(M.shape)}")
    eps = _check_eps(eps)
    tol = _check_tol("tol", tol)
    max_iter = _check_count("max_iter", max_iter)
    block_rows = _check_block_rows(block_rows)
    check_on_failure(on_failure)
    batch = torch.broadcast_shapes(PX.shape[:-2], PY.shape[:-2], M.shape[:-2])
    PXf, PYf, Mf = _flat(PX, batch, (n, n)), _flat(PY, batch, (m, m)), _flat(M, batch, (n, m))
    wa, wb, la, lb = _pair_weights(PXf, PYf)
    if f_init is None:
        phi = torch.zeros(Mf.shape[0], n, m, n, dtype=M.dtype, device=M.device)
    else:
        _check_tensor("f_init", f_init, M, "M")
        if f_init.shape[-3:] != (n, m, n):
            raise ValueError(f"f_init must have shape (..., {n}, {m}, {n}), got {tuple(f_init.shape)}")
        phi = _flat(f_init, batch, (n, m, n)) / eps
    kernel = _kernel(Mf, eps, block_rows, (n, m))
    phi, psi, k, error = _sinkhorn(la, lb, wb, kernel, phi, tol, max_iter)
    if error > tol:
        report(SolverInfo("transport_values (inner Sinkhorn)", k, error, tol, False), on_failure,
               hint="the residual is the largest marginal error; raise max_iter or eps")
    values = _values(phi, psi, wa, wb, eps)
    return InnerTransport(values.reshape(*batch, n, m), (eps * phi).reshape(*batch, n, m, n),
                          (eps * psi).reshape(*batch, n, m, m), k, error)


def pair_plans(PX: torch.Tensor, PY: torch.Tensor, M: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
               eps: float) -> torch.Tensor:
    """The plans of all the inner problems, ``P[..., i, j, k, l] = PX_ik PY_jl exp((f_ijk + g_ijl - M_kl) / eps)``.

    ``f`` ``(..., n, m, n)`` and ``g`` ``(..., n, m, m)`` are :func:`transport_values`' potentials; returns
    ``(..., n, m, n, m)``, which reshaped to ``(..., n m, n m)`` is the matrix ``P`` of the adjoint system
    ``K = I - (1 - delta) P``: row ``(i, j)`` is the plan of problem ``(i, j)``, summing to one. ``(n m)^2``
    entries: the memory that the implicit gradient of :func:`markov_ot_distance` avoids. Chapter 16, section
    "The gradient by one linear solve".
    """
    eps = _check_eps(eps)
    x = f / eps + _masked_log(PX).unsqueeze(-2)
    y = g / eps + _masked_log(PY).unsqueeze(-3)
    return torch.exp(x.unsqueeze(-1) + y.unsqueeze(-2) - (M / eps).unsqueeze(-3).unsqueeze(-3))


# ---------------------------------------------------------------------------
# The fixed point
# ---------------------------------------------------------------------------


class _Settings(NamedTuple):
    delta: float
    eps: float
    tol: float
    max_iter: int
    inner_tol: float
    inner_max_iter: int
    backward_tol: float
    backward_max_iter: int
    block_rows: Optional[int]
    on_failure: str


class _Solution(NamedTuple):
    distance: torch.Tensor   # (b,)
    cost: torch.Tensor       # (b, n, m): C^(k)
    M: torch.Tensor          # (b, n, m): C^(k-1), the cost of the inner problems whose potentials are kept
    phi: torch.Tensor        # (b, n, m, n): f / eps of the inner problems at M
    psi: torch.Tensor        # (b, n, m, m)
    phi0: torch.Tensor       # (b, 1, 1, n): f / eps of the final problem at C^(k)
    psi0: torch.Tensor       # (b, 1, 1, m)
    plan: torch.Tensor       # (b, n, m)
    iterations: int
    residuals: List[float]
    inner_iterations: int
    inner_error: float
    converged: bool


def _fixed_point(PX, PY, C, mu_X, mu_Y, s: _Settings) -> _Solution:
    """The outer iteration C^(k+1) = delta C + (1 - delta) T(C^(k)) from C^(0) = delta C, the inner problems
    warm-started from the potentials of the previous iteration, then the final problem. Flat batch (b, ...)."""
    b, n, m = C.shape
    wa, wb, la, lb = _pair_weights(PX, PY)
    eps, delta = s.eps, s.delta
    phi = torch.zeros(b, n, m, n, dtype=C.dtype, device=C.device)
    cost = delta * C
    residuals, inner_total, previous, error = [], 0, 1.0, math.inf
    converged = False
    for k in range(1, s.max_iter + 1):
        M = cost
        # early outer iterations, far from C_inf, need no accurate inner solve: a tolerance that follows the
        # outer step (1/100 of it), down to inner_tol
        inner_tol = max(s.inner_tol, 1e-2 * previous)
        kernel = _kernel(M, eps, s.block_rows, (n, m))
        phi, psi, inner, error = _sinkhorn(la, lb, wb, kernel, phi, inner_tol, s.inner_max_iter)
        inner_total += inner
        cost = delta * C + (1 - delta) * _values(phi, psi, wa, wb, eps)
        with torch.no_grad():
            step = float((cost - M).abs().amax())
            scale = max(1.0, float(cost.abs().amax()))
        if not math.isfinite(step):
            raise FloatingPointError(f"markov_ot_distance: the cost holds NaN or infinite entries at iteration {k}; "
                                     "the inputs were checked finite, so this is a bug")
        residuals.append(step / scale)
        previous = residuals[-1]
        if residuals[-1] <= s.tol and error <= s.inner_tol:
            converged = True
            break
    # the final problem, between the initial distributions, on C^(k)
    wa0, wb0 = mu_X[:, None, None, :], mu_Y[:, None, None, :]
    la0, lb0 = _masked_log(wa0), _masked_log(wb0)
    kernel = _kernel(cost, eps, s.block_rows, (1, 1))
    phi0 = torch.zeros(b, 1, 1, n, dtype=C.dtype, device=C.device)
    phi0, psi0, inner, error0 = _sinkhorn(la0, lb0, wb0, kernel, phi0, s.inner_tol, s.inner_max_iter)
    inner_total += inner
    distance = _values(phi0, psi0, wa0, wb0, eps).reshape(b)
    plan = torch.exp((phi0 + la0).reshape(b, n, 1) + (psi0 + lb0).reshape(b, 1, m) - cost / eps)
    converged = converged and error0 <= s.inner_tol
    return _Solution(distance, cost, M, phi, psi, phi0, psi0, plan, k, residuals, inner_total,
                     max(error, error0), converged)


def _failure_hint(s: _Settings, solution: _Solution, dtype) -> str:
    hint = (f"the residual is the relative step ||C^(k) - C^(k-1)||_inf / max(1, ||C^(k)||_inf), which shrinks by "
            f"about 1 - delta = {1 - s.delta:g} per iteration; raise max_iter (about "
            f"{math.ceil(math.log(s.tol) / math.log(1 - s.delta))} iterations are needed from a step of 1)")
    if solution.inner_error > s.inner_tol:
        hint += (f"; the inner problems reached a marginal error of {solution.inner_error:.3g} only, above inner_tol = "
                 f"{s.inner_tol:.3g}: raise inner_max_iter or eps")
    rounding = torch.finfo(dtype).eps
    if min(s.tol, s.inner_tol) < 10 * rounding:
        hint += (f"; a tolerance below the rounding of {dtype} (eps {rounding:.1e}) cannot be met: use >= "
                 f"{100 * rounding:.0e}")
    return hint


# ---------------------------------------------------------------------------
# The adjoint system K^T L = G, K = I - (1 - delta) P
# ---------------------------------------------------------------------------


class _Plans(NamedTuple):
    """The plans of the inner problems at the fixed point, in factored form: P^(ij) = s_ij A_ij B_ij^T o Kt."""

    A: torch.Tensor               # (b, n m, n): PX_ik exp(phi_ijk - alpha_ij), in [0, 1]
    B: torch.Tensor               # (b, n m, m): PY_jl exp(psi_ijl - beta_ij), in [0, 1]
    scale: torch.Tensor           # (b, n m): exp(alpha_ij + beta_ij - min M / eps)
    gibbs: Optional[torch.Tensor]  # (b, n, m): exp(-(M - min M) / eps); None: build blocks in the log domain
    x: torch.Tensor               # (b, n, m, n): phi + log PX_i
    y: torch.Tensor               # (b, n, m, m): psi + log PY_j
    kernel: _Kernel


def _plans(PX, PY, solution: _Solution, s: _Settings) -> _Plans:
    b, n, m = solution.M.shape
    _, _, la, lb = _pair_weights(PX, PY)
    x, y = solution.phi + la, solution.psi + lb
    alpha, beta = x.amax(-1, keepdim=True), y.amax(-1, keepdim=True)
    kernel = _kernel(solution.M, s.eps, s.block_rows, (n, m))
    A = torch.exp(x - alpha).reshape(b, n * m, n)
    B = torch.exp(y - beta).reshape(b, n * m, m)
    scale = torch.exp(alpha + beta - kernel.low).reshape(b, n * m)
    return _Plans(A, B, scale, kernel.gibbs, x, y, kernel)


def _apply_transpose(plans: _Plans, L: torch.Tensor) -> torch.Tensor:
    """``P^T L``: ``(P^T L)_kl = sum_ij L_ij P^(ij)_kl`` for ``L`` ``(b, n, m)``, without forming ``P``.

    With the shared kernel it is ``Kt o (A^T diag(s L) B)``, one matrix product ``(n, n m) x (n m, m)``; on the log
    path, the plans are rebuilt in blocks of rows ``i`` and contracted with ``L``."""
    b, n, m = L.shape
    if plans.gibbs is not None:
        weighted = (plans.scale * L.reshape(b, n * m)).unsqueeze(-1) * plans.B
        return plans.gibbs * (plans.A.transpose(-1, -2) @ weighted)
    out = torch.zeros_like(L)
    for start, stop in _blocks(n, plans.kernel.rows):
        block = torch.exp(plans.x[:, start:stop].unsqueeze(-1) + plans.y[:, start:stop].unsqueeze(-2)
                          - plans.kernel.scaled[:, None, None])
        out += torch.einsum("bijkl,bij->bkl", block, L[:, start:stop])
    return out


def _adjoint_iterative(plans: _Plans, G: torch.Tensor, s: _Settings) -> torch.Tensor:
    """Solve ``K^T L = G`` by ``L <- G + (1 - delta) P^T L``: a contraction of constant ``1 - delta`` in the l1
    norm (each plan has mass one), stopped when ``||L_new - L||_1 <= backward_tol ||G||_1``."""
    g_norm = float(G.abs().sum())
    if g_norm == 0.0:
        return torch.zeros_like(G)
    L, residual, k = G, math.inf, 0
    for k in range(1, s.backward_max_iter + 1):
        L_new = G + (1 - s.delta) * _apply_transpose(plans, L)
        residual = float((L_new - L).abs().sum()) / g_norm
        L = L_new
        if residual <= s.backward_tol:
            break
    if residual > s.backward_tol:
        report(SolverInfo("markov_ot_distance backward (Neumann iteration for K^T L = G)", k, residual,
                          s.backward_tol, False), s.on_failure,
               hint=f"it contracts by 1 - delta = {1 - s.delta:g} per step: raise backward_max_iter, or use "
                    "grad='implicit_dense' for a delta close to 0")
    return L


def _adjoint_dense(PX, PY, solution: _Solution, G: torch.Tensor, s: _Settings) -> torch.Tensor:
    """Solve ``K^T L = G`` with ``K = I - (1 - delta) P`` formed, ``(n m, n m)``, by ``torch.linalg.solve`` (the
    authors' notes and package)."""
    b, n, m = G.shape
    P = pair_plans(PX, PY, solution.M, s.eps * solution.phi, s.eps * solution.psi, s.eps).reshape(b, n * m, n * m)
    K = torch.eye(n * m, dtype=G.dtype, device=G.device) - (1 - s.delta) * P
    return torch.linalg.solve(K.transpose(-1, -2), G.reshape(b, n * m)).reshape(b, n, m)


class _MarkovImplicit(torch.autograd.Function):
    """Forward: the solution already found (no graph); backward: the implicit function theorem at C_inf."""

    @staticmethod
    def forward(ctx, PX, PY, C, mu_X, mu_Y, solution, settings, dense):
        ctx.solution, ctx.settings, ctx.dense = solution, settings, dense
        ctx.save_for_backward(PX, PY)
        return solution.distance.clone(), solution.cost.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_distance, grad_cost):
        PX, PY = ctx.saved_tensors
        sol, s = ctx.solution, ctx.settings
        b, n, m = sol.cost.shape
        w = torch.zeros(b, dtype=sol.cost.dtype, device=sol.cost.device) if grad_distance is None else grad_distance
        # the final problem, by the envelope theorem: d distance / d C_inf = its plan, / d mu = its potentials
        G = w[:, None, None] * sol.plan
        if grad_cost is not None:
            G = G + grad_cost
        grad_mu_X = s.eps * w[:, None] * sol.phi0.reshape(b, n)
        grad_mu_Y = s.eps * w[:, None] * sol.psi0.reshape(b, m)
        needs_inner = any(ctx.needs_input_grad[:3])
        L = None
        if needs_inner:
            L = _adjoint_dense(PX, PY, sol, G, s) if ctx.dense else _adjoint_iterative(_plans(PX, PY, sol, s), G, s)
        grad_PX = grad_PY = grad_C = None
        if ctx.needs_input_grad[0]:     # (1 - delta) F^T L: F_(ij),(i k) = f_ijk, never formed
            grad_PX = (1 - s.delta) * s.eps * torch.einsum("bijk,bij->bik", sol.phi, L)
        if ctx.needs_input_grad[1]:     # (1 - delta) G^T L
            grad_PY = (1 - s.delta) * s.eps * torch.einsum("bijl,bij->bjl", sol.psi, L)
        if ctx.needs_input_grad[2]:
            grad_C = s.delta * L
        return grad_PX, grad_PY, grad_C, grad_mu_X, grad_mu_Y, None, None, None


def markov_ot_distance(PX: torch.Tensor, PY: torch.Tensor, C: torch.Tensor, delta: float = 0.4, eps: float = 0.1, *,
                       mu_X: Optional[torch.Tensor] = None, mu_Y: Optional[torch.Tensor] = None,
                       grad: str = "implicit", tol: float = 1e-9, max_iter: int = 500,
                       inner_tol: Optional[float] = None, inner_max_iter: int = 1000,
                       backward_tol: Optional[float] = None, backward_max_iter: Optional[int] = None,
                       block_rows: Optional[int] = None, on_failure: str = "warn") -> MarkovOTResult:
    """The discounted optimal-transport distance between two Markov chains, and its fixed-point cost ``C_inf``.

    ``PX`` ``(..., n, n)`` and ``PY`` ``(..., m, m)``: transition matrices (nonnegative, rows summing to one);
    ``C`` ``(..., n, m)``: the cost between their states; ``mu_X`` ``(..., n)``, ``mu_Y`` ``(..., m)``: the
    initial distributions (default: the stationary ones, :func:`stationary_distribution`, through which the
    gradient flows to ``PX`` and ``PY``); batch dimensions broadcast. Computes :eq:`eq-ch16-fixed-point`::

        C^(k+1) = delta C + (1 - delta) T(C^(k)),  C^(0) = delta C,     d = OT_eps(mu_X, mu_Y; C_inf),

    with ``T(M)_ij = OT_eps(PX_i, PY_j; M)`` the entropic value with its ``eps KL`` term
    (:func:`transport_values`), until the relative step ``||C^(k) - C^(k-1)||_inf / max(1, ||C^(k)||_inf)`` meets
    ``tol``; it shrinks by ``1 - delta`` per iteration. The inner problems are warm-started from the previous
    potentials, and stop at the marginal error ``max(inner_tol, step / 100)`` (default ``inner_tol = tol``): the
    early iterations, far from ``C_inf``, are solved coarsely. Equal to ``ot_markov_distances.discounted_wl_infty``
    with ``sinkhorn_reg = eps`` run to convergence (chapter 16, section "Checking against the authors' package").

    ``grad`` (chapter 16, section "The gradient by one linear solve"):

    - ``"implicit"`` (default): no graph in the forward pass; the backward pass solves the adjoint system
      ``K^T L = G``, ``K = I - (1 - delta) P`` :eq:`eq-ch16-adjoint` for the gradient ``G`` reaching ``C_inf``,
      where ``P`` ``(n m, n m)`` holds the plans of the inner problems, by the Neumann iteration
      ``L <- G + (1 - delta) P^T L`` (a contraction, each plan having mass one), each step one matrix product
      with the shared kernel: neither ``P`` nor ``K`` is formed, memory ``O(n m (n + m))``; then
      ``grad_C = delta L``, ``grad_PX[i, k] = (1 - delta) sum_j L_ij f^(ij)_k``, likewise for ``PY`` with ``g``;
    - ``"implicit_dense"``: the same system with ``K`` formed and solved by ``torch.linalg.solve``, as the authors'
      notes do: memory ``O((n m)^2)``, time ``O((n m)^3)``;
    - ``"unrolled"``: autograd through every outer and inner iteration (memory linear in their number).

    The gradients in ``PX`` and ``PY`` (each row) and in ``mu_X``, ``mu_Y`` are returned centered, the
    projection onto the directions that keep them on the simplex; the gradient in ``C`` is not. Bad input is a
    ``ValueError`` or ``TypeError`` naming the argument: a transition matrix with negative entries or rows not
    summing to one, ``delta`` outside ``(0, 1)``, ``eps <= 0``, mismatched shapes, dtypes or devices, initial
    distributions off the simplex, a chain without a unique stationary distribution. Stopping at ``max_iter``
    before ``tol`` is reported with the residual reached (:func:`ad_lib.implicit.report`: ``on_failure="warn"``
    a ``ConvergenceWarning``, ``"raise"`` a ``NotConvergedError``, ``"ignore"``), as is a backward solve that
    stops at ``backward_max_iter`` (defaults: ``backward_tol = tol``, ``backward_max_iter = 10 max_iter``).
    Returns a :class:`MarkovOTResult`. Chapter 16, section "The discounted distance".
    """
    batch, n, m = _check_problem(PX, PY, C)
    delta = _check_delta(delta)
    eps = _check_eps(eps)
    grad = _check_grad(grad)
    tol = _check_tol("tol", tol)
    max_iter = _check_count("max_iter", max_iter)
    inner_tol = tol if inner_tol is None else _check_tol("inner_tol", inner_tol)
    inner_max_iter = _check_count("inner_max_iter", inner_max_iter)
    backward_tol = tol if backward_tol is None else _check_tol("backward_tol", backward_tol)
    backward_max_iter = 10 * max_iter if backward_max_iter is None else _check_count("backward_max_iter",
                                                                                     backward_max_iter)
    block_rows = _check_block_rows(block_rows)
    check_on_failure(on_failure)
    if mu_X is not None:
        _check_distribution("mu_X", mu_X, n, "PX", C)
    if mu_Y is not None:
        _check_distribution("mu_Y", mu_Y, m, "PY", C)
    settings = _Settings(delta, eps, tol, max_iter, inner_tol, inner_max_iter, backward_tol, backward_max_iter,
                         block_rows, on_failure)

    PX, PY = _on_simplex(PX), _on_simplex(PY)     # row gradients centered, whatever path reaches them
    mu_X = _stationary(PX, "PX") if mu_X is None else _on_simplex(mu_X)
    mu_Y = _stationary(PY, "PY") if mu_Y is None else _on_simplex(mu_Y)
    try:
        batch = torch.broadcast_shapes(batch, mu_X.shape[:-1], mu_Y.shape[:-1])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of mu_X {tuple(mu_X.shape[:-1])} and mu_Y {tuple(mu_Y.shape[:-1])} "
                         f"do not broadcast with those of PX, PY and C {tuple(batch)}") from None
    flat = (_flat(PX, batch, (n, n)), _flat(PY, batch, (m, m)), _flat(C, batch, (n, m)), _flat(mu_X, batch, (n,)),
            _flat(mu_Y, batch, (m,)))

    if grad == "unrolled":
        solution = _fixed_point(*flat, settings)
        distance, cost = solution.distance, solution.cost
    else:
        with torch.no_grad():
            solution = _fixed_point(*(t.detach() for t in flat), settings)
        distance, cost = _MarkovImplicit.apply(*flat, solution, settings, grad == "implicit_dense")
    if not solution.converged and on_failure != "ignore":
        report(SolverInfo("markov_ot_distance (fixed point of C = delta C0 + (1 - delta) T(C))", solution.iterations,
                          solution.residuals[-1], tol, False), on_failure,
               hint=_failure_hint(settings, solution, C.dtype))
    return MarkovOTResult(distance.reshape(batch), cost.reshape(*batch, n, m), solution.iterations,
                          solution.residuals[-1], solution.converged, solution.residuals, solution.inner_iterations,
                          solution.inner_error, solution.plan.detach().reshape(*batch, n, m),
                          flat[3].detach().reshape(*batch, n), flat[4].detach().reshape(*batch, m))


# ---------------------------------------------------------------------------
# Moving a chain towards another
# ---------------------------------------------------------------------------


def fit_transition_matrix(PY: torch.Tensor, C: torch.Tensor, logits: torch.Tensor, steps: int, *, lr: float = 0.1,
                          delta: float = 0.4, eps: float = 0.1, debias: bool = True, grad: str = "implicit",
                          tol: float = 1e-7, snapshot_every: int = 0, progress: bool = True) -> dict:
    """Gradient descent on a chain's transition matrix ``PX = softmax(logits)`` (row by row) towards the chain
    ``PY``: Adam (:class:`ad_lib.optim.Adam`) on ``logits`` ``(n, n)``, both chains started from their
    stationary distributions.

    The loss is the discounted distance ``d(X, Y)`` of :func:`markov_ot_distance` (``delta``, ``eps``, ``grad``,
    ``tol``; ``C`` ``(n, m)`` the cost between the states), or with ``debias`` (default) the debiased
    ``d(X, Y) - (d(X, X) + d(Y, Y)) / 2``, zero at ``PX = PY``: like chapter 14's Sinkhorn divergence, it removes the
    entropic bias that makes ``d(X, X) > 0`` and moves the minimizer of ``d(., Y)`` away from ``Y`` (``d(X, X)``
    needs ``C`` square, ``n = m``, the two chains on one set of states). The row softmax keeps ``PX`` a transition
    matrix with positive entries. Returns ``{"loss": [...], "gap": [||PX - PY||_1, ...] (when n = m),
    "PX": the final PX, "snapshots": [(step, PX), ...]}`` (every ``snapshot_every`` steps, the first and the last),
    with a progress bar (``progress``); ``logits`` is not modified. Chapter 16, section "Moving a chain towards
    another".
    """
    _check_tensor("logits", logits, C)
    n = logits.shape[-1]
    if logits.dim() != 2 or logits.shape[0] != n or C.dim() != 2 or C.shape[0] != n:
        raise ValueError(f"logits must have shape (n, n) and C shape (n, m), got {tuple(logits.shape)} and "
                         f"{tuple(C.shape)}")
    _check_transition("PY", PY, C)
    if debias and C.shape != (n, n):
        raise ValueError(f"debias=True needs the chains on one set of states: C of shape ({n}, {n}), got "
                         f"{tuple(C.shape)}")
    for name, value, least in (("steps", steps, 0), ("snapshot_every", snapshot_every, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    options = dict(grad=grad, tol=tol, on_failure="ignore")
    with torch.no_grad():
        self_Y = markov_ot_distance(PY, PY, C, delta, eps, **options).distance if debias else 0.0
    theta = logits.detach().clone().requires_grad_(True)
    opt = optim.Adam([theta], lr=lr)
    history = {"loss": [], "gap": [], "snapshots": []}

    def snapshot(step):
        if snapshot_every and (step % snapshot_every == 0 or step == steps):
            history["snapshots"].append((step, torch.softmax(theta.detach(), -1)))

    snapshot(0)
    bar = tqdm(range(1, steps + 1), desc="discounted distance", disable=not progress, mininterval=2.0, ncols=80)
    for step in bar:
        PX = torch.softmax(theta, -1)
        loss = markov_ot_distance(PX, PY, C, delta, eps, **options).distance
        if debias:
            loss = loss - 0.5 * markov_ot_distance(PX, PX, C, delta, eps, **options).distance - 0.5 * self_Y
        opt.zero_grad()
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        if PX.shape == PY.shape:
            history["gap"].append(float((PX.detach() - PY).abs().sum()))
        snapshot(step)
    history["PX"] = torch.softmax(theta.detach(), -1)
    return history
