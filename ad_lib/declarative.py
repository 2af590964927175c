"""Deep declarative networks: robust vector pooling and the entropic optimal-transport node (chapter 9).

A declarative node's output is the solution of an optimization problem,
``y(x) = argmin_u f(x, u)`` subject to ``h(x, u) = 0``. Its forward pass may run any solver, without
recording a graph; its backward pass differentiates the optimality conditions at the solution
(the implicit function theorem of chapter 8), eq. (3) of Gould et al. (2022). This module writes

- :func:`ddn_jacobian` and :func:`ddn_vjp`: eq. (3) for dense A, B, C, H, and its unconstrained case
  ``-H^{-1} B``, chapter 8's argmin-layer Jacobian;
- the five penalty functions of the paper's Table 1 (:func:`penalty`, :func:`kappa`) and robust vector
  pooling (:func:`robust_pool`, :class:`RobustPool`): an L-BFGS forward pass and the backward pass of
  eq. (10), one Cholesky solve per batch element and inner products before outer products;
- the entropic optimal-transport node (:func:`optimal_transport`, :class:`OptimalTransport`): a
  log-domain Sinkhorn forward pass and the backward pass of eqs. (20)-(27) by block elimination with a
  Cholesky factorization, beside the dense inverse and unrolled autograd it is compared with.

Solvers report their convergence with :func:`ad_lib.implicit.report` (a warning with the residual, or
:class:`ad_lib.implicit.NotConvergedError` with ``on_failure="raise"``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ad_lib.implicit import SolverInfo, check_on_failure, report

__all__ = [
    "PENALTIES", "OT_METHODS", "ddn_jacobian", "ddn_vjp", "penalty", "kappa", "robust_pool", "robust_pool_info",
    "RobustPoolFunction", "RobustPool", "optimal_transport", "sinkhorn_info", "ot_backward",
    "OptimalTransportFunction", "OptimalTransport",
]

PENALTIES = ("quadratic", "pseudo-huber", "huber", "welsch", "trunc-quad")
NONCONVEX = ("welsch", "trunc-quad")
OT_METHODS = ("block", "full", "unrolled")


# ----------------------------------------------------------------------------- checks


def _check_tensor(name, x, ranks=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ranks is not None and x.dim() not in ranks:
        raise ValueError(f"{name} must have {' or '.join(map(str, ranks))} dimensions, got shape {tuple(x.shape)}")
    if not torch.isfinite(x.detach()).all():
        raise ValueError(f"{name} contains NaN or infinite entries; expected finite values")


def _check_penalty(name):
    if not isinstance(name, str) or name not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {name!r}")


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    return float(alpha)


def _default_tol(dtype, float64, float32):
    return float64 if dtype == torch.float64 else float32


# ----------------------------------------------------------------------------- eq. (3)


def ddn_jacobian(H, B, A=None, C=None):
    """The Jacobian of a declarative node's solution, eq. (3) of Gould et al. (2022).

    For ``y(x) = argmin_u f(x, u)`` subject to ``h(x, u) = 0`` (p equality constraints, regular at the
    solution), with ``A = D_Y h`` (p, m), ``B = D^2_XY f - sum_i lambda_i D^2_XY h_i`` (m, n),
    ``C = D_X h`` (p, n) and ``H = D^2_YY f - sum_i lambda_i D^2_YY h_i`` (m, m)::

        Dy = H^{-1} A^T (A H^{-1} A^T)^{-1} (A H^{-1} B - C) - H^{-1} B,

    and ``Dy = -H^{-1} B`` without constraints (``A = C = None``), chapter 8's argmin Jacobian. Leading
    batch dimensions are kept: H (..., m, m), B (..., m, n), A (..., p, m), C (..., p, n) -> (..., m, n).
    Linear systems are solved, never inverted. See chapter 9, section "The gradient of a declarative node",
    :eq:`eq-ch9-ddn`.
    """
    for name, t in (("H", H), ("B", B)):
        _check_tensor(name, t)
        if t.dim() < 2:
            raise ValueError(f"{name} must be a matrix (at least 2 dimensions), got shape {tuple(t.shape)}")
    m = H.shape[-1]
    if H.shape[-2] != m or B.shape[-2] != m:
        raise ValueError(f"H must be square (m, m) and B (m, n) with the same m; got H {tuple(H.shape)}, B {tuple(B.shape)}")
    H_inv_B = torch.linalg.solve(H, B)
    if A is None and C is None:
        return -H_inv_B
    if A is None or C is None:
        raise ValueError("A and C go together: give both (constrained problem) or neither (unconstrained)")
    _check_tensor("A", A)
    _check_tensor("C", C)
    if A.shape[-1] != m or C.shape[-1] != B.shape[-1] or A.shape[-2] != C.shape[-2]:
        raise ValueError(f"A must be (p, m) and C (p, n) with H (m, m), B (m, n); got A {tuple(A.shape)}, C {tuple(C.shape)}")
    At = A.transpose(-1, -2)
    H_inv_At = torch.linalg.solve(H, At)                       # (m, p)
    schur = A @ H_inv_At                                       # A H^{-1} A^T, (p, p)
    return H_inv_At @ torch.linalg.solve(schur, A @ H_inv_B - C) - H_inv_B


def ddn_vjp(v, H, B, A=None, C=None):
    """The vector-Jacobian product ``v^T Dy`` of eq. (3), evaluated from the left.

    ``w = H^{-T} v`` first (one solve), then ``w^T A^T`` and a p-by-p solve, then the products with ``B``
    and ``C``: no m-by-n Jacobian is formed. v (..., m) -> (..., n); the other shapes as in
    :func:`ddn_jacobian`. See chapter 9, section "The gradient of a declarative node".
    """
    _check_tensor("v", v)
    _check_tensor("H", H)
    _check_tensor("B", B)
    w = torch.linalg.solve(H.transpose(-1, -2), v.unsqueeze(-1))          # (m, 1): w = H^{-T} v
    out = -(B.transpose(-1, -2) @ w)                                         # -w^T B
    if A is not None or C is not None:
        if A is None or C is None:
            raise ValueError("A and C go together: give both (constrained problem) or neither (unconstrained)")
        _check_tensor("A", A)
        _check_tensor("C", C)
        At = A.transpose(-1, -2)
        H_inv_At = torch.linalg.solve(H, At)
        schur = A @ H_inv_At
        u = torch.linalg.solve(schur.transpose(-1, -2), At.transpose(-1, -2) @ w)   # (A H^-1 A^T)^{-T} A w
        H_inv_B = torch.linalg.solve(H, B)
        out = out + (A @ H_inv_B - C).transpose(-1, -2) @ u
    return out.squeeze(-1)


# ----------------------------------------------------------------------------- Table 1


def penalty(name, z, alpha=1.0):
    """The penalty ``phi(z; alpha)`` of Table 1 of Gould et al. (2022), elementwise on z >= 0.

    quadratic ``z^2/2``; pseudo-huber ``alpha^2 (sqrt(1 + (z/alpha)^2) - 1)``; huber ``z^2/2`` for
    ``z <= alpha``, else ``alpha (z - alpha/2)``; welsch ``1 - exp(-z^2 / (2 alpha^2))``; trunc-quad
    ``z^2/2`` for ``z <= alpha``, else ``alpha^2/2``. Same shape as z. See chapter 9, section
    "Five penalties", :eq:`eq-ch9-pool`.
    """
    _check_penalty(name)
    alpha = _check_alpha(alpha)
    if not isinstance(z, torch.Tensor):
        z = torch.as_tensor(z, dtype=torch.get_default_dtype())
    if name == "quadratic":
        return 0.5 * z**2
    if name == "pseudo-huber":
        return alpha**2 * (torch.sqrt(1 + (z / alpha) ** 2) - 1)
    if name == "huber":
        return torch.where(z.abs() <= alpha, 0.5 * z**2, alpha * (z.abs() - 0.5 * alpha))
    if name == "welsch":
        return 1 - torch.exp(-(z**2) / (2 * alpha**2))
    return torch.where(z.abs() <= alpha, 0.5 * z**2, torch.full_like(z, 0.5 * alpha**2))


def kappa(name, z, alpha=1.0):
    """The coefficients ``(kappa_1, kappa_2)`` of Table 1: ``kappa_1 = phi'(z)/z`` and
    ``kappa_2 = (phi''(z) - kappa_1)/z^2``, elementwise on z >= 0 (finite at z = 0).

    They give the Hessian of ``phi(||y - x_i||)`` in y as ``kappa_1 I + kappa_2 (y - x_i)(y - x_i)^T``,
    eq. (8). Two tensors of z's shape. See chapter 9, section "Five penalties", :eq:`eq-ch9-hessian`.
    """
    _check_penalty(name)
    alpha = _check_alpha(alpha)
    if not isinstance(z, torch.Tensor):
        z = torch.as_tensor(z, dtype=torch.get_default_dtype())
    one, zero = torch.ones_like(z), torch.zeros_like(z)
    if name == "quadratic":
        return one, zero
    if name == "pseudo-huber":
        s = 1 + (z / alpha) ** 2
        return s ** -0.5, -(s ** -1.5) / alpha**2
    if name == "welsch":
        e = torch.exp(-(z**2) / (2 * alpha**2))
        return e / alpha**2, -e / alpha**4
    inside = z.abs() <= alpha
    if name == "huber":
        safe = torch.where(inside, one * alpha, z.abs())           # no 1/0 in the branch not taken
        return torch.where(inside, one, alpha / safe), torch.where(inside, zero, -alpha / safe**3)
    return torch.where(inside, one, zero), zero                     # trunc-quad


# ----------------------------------------------------------------------------- robust pooling


def _flatten_points(x):
    _check_tensor("x", x)
    if x.dim() < 3:
        raise ValueError(f"x must have shape (batch, channels, points) or (batch, channels, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x[0, 0].numel() == 0:
        raise ValueError(f"x must have at least one batch element, channel and point, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _pool_objective(name, x, y, alpha):
    """Objective sum_i phi(||y - x_i||) per batch element (b,) and its gradient sum_i kappa_1 (y - x_i) (b, m)."""
    diff = y.unsqueeze(-1) - x                                     # (b, m, n)
    z = torch.linalg.vector_norm(diff, dim=1)                      # (b, n)
    k1, _ = kappa(name, z, alpha)
    return penalty(name, z, alpha).sum(-1), (k1.unsqueeze(1) * diff).sum(-1)


def _pool_hessian(name, alpha, x, y):
    """H = sum_i kappa_1(z_i) I + kappa_2(z_i) (y - x_i)(y - x_i)^T, eqs. (8)-(9): x (b, m, n), y (b, m) -> (b, m, m)."""
    diff = y.unsqueeze(-1) - x
    k1, k2 = kappa(name, torch.linalg.vector_norm(diff, dim=1, keepdim=True), alpha)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return k1.sum(-1).unsqueeze(-1) * eye + torch.einsum("bin,bjn->bij", diff, k2 * diff)


def _lbfgs(name, x, alpha, y0, tol, max_iter, newton_steps=4):
    """Minimize the pooling objective of every batch element from y0 with torch.optim.LBFGS, then polish
    with at most ``newton_steps`` Newton steps; no graph."""
    n = x.shape[-1]
    y = y0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([y], lr=1, max_iter=max_iter, tolerance_grad=tol * n, tolerance_change=0.0,
                            history_size=10, line_search_fn="strong_wolfe")
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        with torch.no_grad():
            value, grad = _pool_objective(name, x, y.detach(), alpha)
        y.grad = grad
        return value.sum()

    opt.step(closure)
    iterations = opt.state[opt._params[0]].get("n_iter", evaluations)
    y = y.detach()
    # L-BFGS's line search compares objective values, which stop changing (in floating point) while the
    # gradient is still ~sqrt(eps); a few Newton steps on grad f = 0, with the Hessian of eq. (8), finish.
    with torch.no_grad():
        for step_number in range(newton_steps):
            value, grad = _pool_objective(name, x, y, alpha)
            if step_number >= 2 and (grad.abs().amax(-1) / n).max() <= tol:
                break                                              # two steps always: to rounding, from L-BFGS's point
            L, info = torch.linalg.cholesky_ex(_pool_hessian(name, alpha, x, y))
            step = torch.cholesky_solve(grad.unsqueeze(-1), L).squeeze(-1)
            ok = (info == 0).unsqueeze(-1) & torch.isfinite(step)
            y = torch.where(ok, y - step, y)
            iterations += 1
        value, grad = _pool_objective(name, x, y, alpha)
    residual = grad.abs().amax(-1) / n                              # per batch element: the mean objective's gradient
    return y, value, residual, iterations


def robust_pool_info(x, penalty="pseudo-huber", alpha=1.0, tol=None, max_iter=500, on_failure="warn"):
    """Robust vector pooling without a gradient: ``y = argmin_y sum_i phi(||y - x_i||; alpha)`` and the solver's report.

    x ``(batch, channels, *spatial)`` is pooled over its spatial dimensions -> y (batch, channels), and a
    :class:`ad_lib.implicit.SolverInfo` whose residual is the largest ``||grad (1/n) f||_inf`` over the batch.
    The quadratic penalty is the mean, in closed form. The others start L-BFGS from the mean; the
    non-convex ``welsch`` and ``trunc-quad`` also from the coordinate-wise median, and keep the better
    objective per batch element. ``tol`` defaults to 1e-11 in float64, 1e-5 otherwise. See chapter 9,
    section "Robust vector pooling", :eq:`eq-ch9-pool`.
    """
    _check_penalty(penalty)
    alpha = _check_alpha(alpha)
    check_on_failure(on_failure)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    points = _flatten_points(x).detach()
    tol = _default_tol(points.dtype, 1e-11, 1e-5) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    mean = points.mean(-1)
    if penalty == "quadratic":
        return mean, SolverInfo("closed-form mean", 0, 0.0, tol, True)
    with torch.enable_grad():   # LBFGS needs a leaf that requires grad; the objective itself records nothing
        starts = [mean] + ([points.median(-1).values] if penalty in NONCONVEX else [])
        best = None
        iterations = 0
        for y0 in starts:
            y, value, residual, its = _lbfgs(penalty, points, alpha, y0, tol, max_iter)
            iterations += int(its)
            if best is None:
                best = (y, value, residual)
            else:
                better = value < best[1]
                best = (torch.where(better.unsqueeze(-1), y, best[0]), torch.where(better, value, best[1]),
                        torch.where(better, residual, best[2]))
    y, _, residual = best
    worst = residual.max().item()
    if not math.isfinite(worst) or not torch.isfinite(y).all():
        raise FloatingPointError("robust_pool: L-BFGS produced NaN or infinity")
    info = SolverInfo(f"L-BFGS ({penalty})", iterations, worst, tol, worst <= tol)
    report(info, on_failure, hint="raise max_iter, loosen tol, or rescale x")
    return y, info


def _pool_backward(name, alpha, x, y, v):
    """Eq. (10): dJ/dx_i = kappa_1(z_i) w + kappa_2(z_i) (w^T (y - x_i)) (y - x_i), with H w = v.

    x (b, m, n), y (b, m), v (b, m) -> (b, m, n). Memory O(bmn + bm^2); no (n, m, m) tensor.
    """
    n = x.shape[-1]
    if name == "quadratic":                                        # kappa_1 = 1, kappa_2 = 0: the gradient of the mean
        return (v / n).unsqueeze(-1).expand(x.shape)
    diff = y.unsqueeze(-1) - x                                     # (b, m, n)
    z = torch.linalg.vector_norm(diff, dim=1, keepdim=True)        # (b, 1, n)
    k1, k2 = kappa(name, z, alpha)
    k1_sum = k1.sum(-1)                                            # (b, 1)
    if name == "trunc-quad" or bool((k2 == 0).all()):              # H = (sum_i kappa_1) I: no solve
        flat = k1_sum.squeeze(-1) <= 0
        if bool(flat.any()):
            raise FloatingPointError(_flat_message(name, flat))
        w = v / k1_sum
        return k1 * w.unsqueeze(-1)
    zero = (k1_sum.squeeze(-1) <= 0) & (k2 == 0).all(-1).squeeze(-1)   # H = 0 (kappas underflowed far from every point)
    if bool(zero.any()):
        raise FloatingPointError(_flat_message(name, zero))
    m = x.shape[1]
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    H = torch.baddbmm(k1_sum.unsqueeze(-1) * eye, diff, (k2 * diff).transpose(1, 2))   # (b, m, m), eq. (9)
    L, info = torch.linalg.cholesky_ex(H)
    if bool((info > 0).any()):
        warnings.warn(f"robust_pool ({name}): the Hessian is not positive definite at the pooled point of "
                      f"{int((info > 0).sum())} batch element(s) (a saddle or a flat minimum); using a general solve",
                      RuntimeWarning, stacklevel=3)
        w, solve_info = torch.linalg.solve_ex(H, v.unsqueeze(-1))
        w = w.squeeze(-1)
        singular = (solve_info > 0) | ~torch.isfinite(w).all(-1)
        if bool(singular.any()):
            raise FloatingPointError(_flat_message(name, singular))
    else:
        w = torch.cholesky_solve(v.unsqueeze(-1), L).squeeze(-1)    # (b, m)
    inner = torch.bmm(w.unsqueeze(1), diff)                        # w^T (y - x_i): inner products first, (b, 1, n)
    return k1 * w.unsqueeze(-1) + (k2 * inner) * diff


def _flat_message(name, flat):
    where = torch.nonzero(flat).flatten().tolist()
    return (f"robust_pool ({name}): the Hessian is singular at the pooled point of batch element(s) {where[:10]} "
            "(no point within reach of alpha: every point is an outlier); the minimizer is not isolated and has no "
            "gradient; raise alpha or rescale x")


class RobustPoolFunction(torch.autograd.Function):
    """Robust vector pooling as an autograd node: L-BFGS forward (no graph), eq. (10) backward.

    ``RobustPoolFunction.apply(x, penalty, alpha, tol, max_iter, on_failure)``; x (b, m, n) -> (b, m).
    The gradient flows to x only (alpha is a fixed hyper-parameter). See chapter 9, section
    "The backward pass of robust pooling", :eq:`eq-ch9-pool-backward`.
    """

    @staticmethod
    def forward(ctx, x, penalty, alpha, tol, max_iter, on_failure):
        """The pooled points y, found with no graph recorded; saves x and y for the backward."""
        y, _ = robust_pool_info(x, penalty, alpha, tol, max_iter, on_failure)
        ctx.save_for_backward(x, y)
        ctx.penalty, ctx.alpha = penalty, alpha
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v):
        """dJ/dx from v = dJ/dy by eq. (10), left to right: one Cholesky solve, then inner products."""
        x, y = ctx.saved_tensors
        return _pool_backward(ctx.penalty, ctx.alpha, x, y, v), None, None, None, None, None


def robust_pool(x, penalty="pseudo-huber", alpha=1.0, tol=None, max_iter=500, on_failure="warn"):
    """Robust vector pooling, ``y = argmin_y sum_i phi(||y - x_i||_2; alpha)``, differentiable in x.

    x (batch, channels, points) or (batch, channels, H, W): the points ``x_i`` are the channel vectors
    at each spatial position; returns y (batch, channels). Forward as :func:`robust_pool_info` (L-BFGS,
    no graph; the quadratic penalty is the mean); backward by eq. (10) with one Cholesky solve per batch
    element, or none when kappa_2 = 0. See chapter 9, section "Robust vector pooling", :eq:`eq-ch9-pool`.
    """
    _check_penalty(penalty)
    alpha = _check_alpha(alpha)
    flat = _flatten_points(x)
    return RobustPoolFunction.apply(flat, penalty, alpha, tol, max_iter, on_failure)


class RobustPool(nn.Module):
    """The layer form of :func:`robust_pool`: ``RobustPool(penalty="pseudo-huber", alpha=1.0)(x)``,
    x ``(batch, channels, *spatial)`` -> (batch, channels). See chapter 9, section "Robust vector pooling"."""

    def __init__(self, penalty="pseudo-huber", alpha=1.0, tol=None, max_iter=500, on_failure="warn"):
        super().__init__()
        _check_penalty(penalty)
        self.penalty, self.alpha = penalty, _check_alpha(alpha)
        self.tol, self.max_iter, self.on_failure = tol, max_iter, check_on_failure(on_failure)

    def forward(self, x):
        return robust_pool(x, self.penalty, self.alpha, self.tol, self.max_iter, self.on_failure)

    def extra_repr(self):
        return f"penalty={self.penalty!r}, alpha={self.alpha}"


# ----------------------------------------------------------------------------- optimal transport


def _check_ot_inputs(M, r, c, gamma):
    _check_tensor("M", M, ranks=(2, 3))
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
    batched = M.dim() == 3
    Mb = M if batched else M.unsqueeze(0)
    b, m, n = Mb.shape
    if m < 1 or n < 1:
        raise ValueError(f"M must have at least one row and one column, got shape {tuple(M.shape)}")
    out = []
    for name, h, size in (("r", r, m), ("c", c, n)):
        if h is None:
            h = torch.full((b, size), 1.0 / size, dtype=M.dtype, device=M.device)
        else:
            _check_tensor(name, h, ranks=(1, 2))
            if h.dtype != M.dtype or h.device != M.device:
                raise TypeError(f"{name} must have M's dtype and device ({M.dtype}, {M.device}), got ({h.dtype}, {h.device})")
            expected = (size,) if h.dim() == 1 else (b, size)
            if tuple(h.shape) != expected:
                raise ValueError(f"{name} must have shape {expected} to match M of shape {tuple(M.shape)}, got {tuple(h.shape)}")
            if not (h > 0).all():
                raise ValueError(f"{name} must be positive (a histogram with no empty bin), got min {h.min().item():.3g}")
            total = h.detach().sum(-1)
            tolerance = 1e-6 if h.dtype == torch.float64 else 1e-4
            if not torch.allclose(total, torch.ones_like(total), rtol=0, atol=tolerance):
                raise ValueError(f"{name} must sum to 1 (to {tolerance:g}), got sum(s) {total.tolist()}")
            h = h.expand(b, size) if h.dim() == 1 else h
        out.append(h)
    return batched, Mb, out[0], out[1], float(gamma)


def _sinkhorn(M, r, c, gamma, tol, max_iter):
    """Log-domain Sinkhorn on (b, m, n): returns log P and (iterations, residual). Differentiable if the inputs are.

    The residual ``||P 1 - r||_1`` of the plan after sweep k costs no pass over the (m, n) matrix: the next
    row update computes ``log(P 1) - log r = f_k - f_{k+1}`` anyway.
    """
    log_K = -gamma * M
    log_r, log_c = torch.log(r), torch.log(c)
    f = log_r - torch.logsumexp(log_K, dim=2)                              # g = 0 to start
    residual, k = float("inf"), 0
    for k in range(1, max_iter + 1):
        g = log_c - torch.logsumexp(log_K + f.unsqueeze(2), dim=1)         # columns sum to c (exactly)
        if tol is None and k < max_iter:
            f = log_r - torch.logsumexp(log_K + g.unsqueeze(1), dim=2)     # rows sum to r
            continue
        f_next = log_r - torch.logsumexp(log_K + g.unsqueeze(1), dim=2)
        residual = (r.detach() * torch.expm1(f.detach() - f_next.detach())).abs().sum(1).max().item()
        if k == max_iter or residual <= tol:
            break
        f = f_next
    return log_K + f.unsqueeze(2) + g.unsqueeze(1), k, residual


def sinkhorn_info(M, r=None, c=None, gamma=1.0, tol=None, max_iter=1000, on_failure="warn"):
    """The entropic plan by log-domain Sinkhorn, without a gradient, and the solver's report.

    ``P = argmin <P, M> + (1/gamma) sum_ij P_ij log P_ij`` subject to ``P 1 = r``, ``P^T 1 = c``, i.e.
    ``P = diag(e^f) exp(-gamma M) diag(e^g)``; M (m, n) or (b, m, n), r (m,) or (b, m), c (n,) or (b, n),
    uniform by default. The residual is the largest ``||P 1 - r||_1`` (the columns are exact after each
    sweep); ``tol`` defaults to 1e-10 in float64, 1e-6 otherwise; ``tol=0`` runs exactly ``max_iter``
    sweeps (and reports no failure). Returns (P, SolverInfo). See chapter 9, section
    "The optimal-transport node", :eq:`eq-ch9-ot`.
    """
    batched, Mb, r, c, gamma = _check_ot_inputs(M, r, c, gamma)
    check_on_failure(on_failure)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    tol = _default_tol(Mb.dtype, 1e-10, 1e-6) if tol is None else float(tol)
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol!r}")
    with torch.no_grad():
        log_P, k, residual = _sinkhorn(Mb.detach(), r.detach(), c.detach(), gamma, tol if tol > 0 else None, max_iter)
        P = log_P.exp()
    if not math.isfinite(residual) or not torch.isfinite(P).all():
        raise FloatingPointError("Sinkhorn produced NaN or infinity; check M and gamma")
    info = SolverInfo("Sinkhorn (log domain)", k, residual, tol, tol == 0 or residual <= tol)
    report(info, on_failure, hint="raise max_iter, or lower gamma (more regularization)")
    return (P if batched else P[0]), info


def _center(g):
    return g - g.mean(-1, keepdim=True)


def ot_backward(P, v, gamma, method="block", dropped=0):
    """The implicit backward pass of the entropic plan: ``(dJ/dM, dJ/dr, dJ/dc)`` from P and ``v = dJ/dP``.

    With ``H^{-1} = diag(gamma P)``, B = I and the marginal constraints less one, eq. (3) reduces to
    ``dJ/dM = gamma P * (mu_i + nu_j - v_ij)``, where ``(mu, nu)`` solves
    ``S (mu, nu) = (rows of P*v, columns of P*v)`` with ``S = A diag(P) A^T``, and
    ``(dJ/dr, dJ/dc) = (mu, nu)`` (eqs. (24)-(27)), returned centred (mean zero): gradients in r and c are
    defined up to constants, which a step that keeps them histograms cannot see.
    ``method="block"`` drops the first row constraint and eliminates the diagonal block of S with a
    Cholesky factorization of its (m-1)-by-(m-1) Schur complement (eqs. (20)-(23)); ``method="full"``
    forms the (m+n-1)-square S, dropping constraint ``dropped`` (0..m-1 rows, m..m+n-1 columns), and
    inverts it densely. P, v (b, m, n) -> (b, m, n), (b, m), (b, n). See chapter 9, section
    "The backward pass of the optimal-transport node", :eq:`eq-ch9-ot-block`.
    """
    if method not in ("block", "full"):
        raise ValueError(f"method must be 'block' or 'full' for ot_backward, got {method!r}")
    b, m, n = P.shape
    Q = P * v
    a_rows, a_cols = Q.sum(2), Q.sum(1)                               # A (P * v): (b, m), (b, n)
    row_sums, col_sums = P.sum(2), P.sum(1)
    if method == "block":
        if m == 1:
            mu = torch.zeros_like(a_rows)
            nu = a_cols / col_sums
        else:
            P2 = P[:, 1:]                                              # (b, m-1, n): row constraint 1 dropped
            P2_div_c = P2 / col_sums.unsqueeze(1)
            schur = torch.diag_embed(row_sums[:, 1:]) - P2_div_c @ P2.transpose(1, 2)   # (b, m-1, m-1), eq. (21)
            L, info = torch.linalg.cholesky_ex(schur)
            if bool((info > 0).any()):
                raise FloatingPointError("optimal_transport backward: the Schur complement of A H^-1 A^T is not positive "
                                         "definite (a plan with underflowed entries?); try method='full' or a smaller gamma")
            rhs = a_rows[:, 1:] - (P2_div_c @ a_cols.unsqueeze(-1)).squeeze(-1)
            mu2 = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)                 # Lambda_11 (...)
            nu = (a_cols - (P2.transpose(1, 2) @ mu2.unsqueeze(-1)).squeeze(-1)) / col_sums   # eqs. (22)-(23)
            mu = torch.cat([torch.zeros_like(mu2[:, :1]), mu2], dim=1)
    else:
        if isinstance(dropped, bool) or not isinstance(dropped, int) or not 0 <= dropped < m + n:
            raise ValueError(f"dropped must be an integer in [0, {m + n}), got {dropped!r}")
        S = torch.cat([torch.cat([torch.diag_embed(row_sums), P], 2),
                       torch.cat([P.transpose(1, 2), torch.diag_embed(col_sums)], 2)], 1)   # (b, m+n, m+n)
        keep = [k for k in range(m + n) if k != dropped]
        S_inv = torch.linalg.inv(S[:, keep][:, :, keep])                                  # the full inverse
        a = torch.cat([a_rows, a_cols], 1)[:, keep]
        lam = (S_inv @ a.unsqueeze(-1)).squeeze(-1)
        lam = torch.cat([lam[:, :dropped], torch.zeros_like(lam[:, :1]), lam[:, dropped:]], 1)
        mu, nu = lam[:, :m], lam[:, m:]
    dM = gamma * P * (mu.unsqueeze(2) + nu.unsqueeze(1) - v)
    return dM, _center(mu), _center(nu)


class OptimalTransportFunction(torch.autograd.Function):
    """The entropic optimal-transport node: Sinkhorn forward (no graph), implicit backward.

    ``OptimalTransportFunction.apply(M, r, c, gamma, method, tol, max_iter, on_failure)`` with M (b, m, n),
    r (b, m), c (b, n) checked; ``method`` "block" or "full". See chapter 9, section
    "The backward pass of the optimal-transport node".
    """

    @staticmethod
    def forward(ctx, M, r, c, gamma, method, tol, max_iter, on_failure):
        """The plan P by Sinkhorn, with no graph recorded; saves P (all the backward needs)."""
        P, _ = sinkhorn_info(M, r, c, gamma, tol, max_iter, on_failure)
        ctx.save_for_backward(P)
        ctx.gamma, ctx.method = gamma, method
        return P

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v):
        """dJ/dM, dJ/dr, dJ/dc from v = dJ/dP by :func:`ot_backward`."""
        (P,) = ctx.saved_tensors
        dM, dr, dc = ot_backward(P, v, ctx.gamma, ctx.method)
        return dM, dr, dc, None, None, None, None, None


def optimal_transport(M, r=None, c=None, gamma=1.0, method="block", tol=None, max_iter=1000, on_failure="warn"):
    """The entropic optimal-transport plan as a differentiable node.

    ``P = argmin_P <P, M> + (1/gamma) sum_ij P_ij log P_ij`` subject to ``P 1 = r``, ``P^T 1 = c``
    (the paper's objective subtracts ``(1/gamma) sum P log(r_i c_j)``, a constant on the constraints;
    POT's ``ot.sinkhorn(r, c, M, reg=1/gamma)`` computes the same plan). M (m, n) or (batch, m, n);
    r (m,) or (batch, m) and c (n,) or (batch, n), positive and summing to one, uniform by default;
    returns P of M's shape. Forward: log-domain Sinkhorn (see :func:`sinkhorn_info`) with no graph;
    backward ``method="block"`` (eqs. (20)-(23)), ``"full"`` (dense inverse) or ``"unrolled"``
    (autograd through the Sinkhorn sweeps, whose memory grows with their number). Gradients flow to
    M, r and c (those in r and c centred, see :func:`ot_backward`). See chapter 9, section
    "The optimal-transport node", :eq:`eq-ch9-ot`.
    """
    if method not in OT_METHODS:
        raise ValueError(f"method must be one of {OT_METHODS}, got {method!r}")
    batched, Mb, rb, cb, gamma = _check_ot_inputs(M, r, c, gamma)
    check_on_failure(on_failure)
    if method == "unrolled":
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        tol_ = _default_tol(Mb.dtype, 1e-10, 1e-6) if tol is None else float(tol)
        log_P, k, residual = _sinkhorn(Mb, rb, cb, gamma, tol_ if tol_ > 0 else None, max_iter)
        report(SolverInfo("Sinkhorn (log domain, unrolled)", k, residual, tol_, tol_ == 0 or residual <= tol_),
               on_failure, hint="raise max_iter, or lower gamma (more regularization)")
        P = log_P.exp()
    else:
        P = OptimalTransportFunction.apply(Mb, rb, cb, gamma, method, tol, max_iter, on_failure)
    return P if batched else P[0]


class OptimalTransport(nn.Module):
    """The layer form of :func:`optimal_transport`: ``OptimalTransport(gamma=1.0, method="block")(M, r=None, c=None)``.
    See chapter 9, section "The optimal-transport node"."""

    def __init__(self, gamma=1.0, method="block", tol=None, max_iter=1000, on_failure="warn"):
        super().__init__()
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
        if method not in OT_METHODS:
            raise ValueError(f"method must be one of {OT_METHODS}, got {method!r}")
        self.gamma, self.method = float(gamma), method
        self.tol, self.max_iter, self.on_failure = tol, max_iter, check_on_failure(on_failure)

    def forward(self, M, r=None, c=None):
        return optimal_transport(M, r, c, self.gamma, self.method, self.tol, self.max_iter, self.on_failure)

    def extra_repr(self):
        return f"gamma={self.gamma}, method={self.method!r}"
