"""Finite differences, the complex step, and checking gradients (chapter 1).

For a function ``f: R^p -> R`` the gradient is the vector of the p partial
derivatives, and each of them can be approximated by a difference quotient
along one coordinate direction ``e_i`` (chapter 1):

=============  ===========================================  ===============  ===========
method         quotient for df/dx_i                         evaluations      error
=============  ===========================================  ===============  ===========
forward        (f(x + h e_i) - f(x)) / h                    p + 1            O(h)
central        (f(x + h e_i) - f(x - h e_i)) / (2 h)        2 p              O(h^2)
complex step   Im f(x + i h e_i) / h                        p (complex)      O(h^2), no cancellation
=============  ===========================================  ===============  ===========

How ``f`` is called
-------------------
By default ``f`` takes one point shaped like ``x`` and returns a scalar (a 0-d
tensor, a one-element tensor or a Python number), and the perturbed points are
evaluated one after the other in a Python loop.

A function that can evaluate many points at once **signals it** by carrying the
attribute ``accepts_batch = True``; the decorator :func:`accepts_batch` sets it::

    @accepts_batch
    def f(X):                     # X: (B, *x.shape) -> (B,)
        return (X ** 2).sum(dim=-1)

Then all the perturbed points are stacked into one tensor of shape
``(B, *x.shape)`` and ``f`` is called once (or once per ``chunk_size`` points),
so that a gradient with p = 10,000 is one vectorized computation on a GPU rather
than 10,000 Python calls. ``torch.func.vmap`` turns a one-point function made
of torch operations into a batched one: ``accepts_batch(torch.func.vmap(f))``.
The keyword ``batched=True`` or ``batched=False`` overrides the attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch

Method = Literal["forward", "central", "complex"]
Step = Union[float, torch.Tensor, None]

_METHODS = ("forward", "central", "complex")
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}

__all__ = [
    "accepts_batch",
    "EvaluationCounter",
    "default_step",
    "forward_difference",
    "central_difference",
    "complex_step",
    "finite_difference_jacobian",
    "derivative_estimates",
    "predicted_optimal_step",
    "measured_optimal_step",
    "GradientCheck",
    "GradientCheckError",
    "check_gradient",
]


# ---------------------------------------------------------------------------
# How f is called
# ---------------------------------------------------------------------------


def accepts_batch(f: Callable) -> Callable:
    """Mark ``f`` as accepting a batch of points stacked along a new first axis.

    A marked ``f`` maps a tensor of shape ``(B, *x.shape)`` to ``(B,)`` (a
    scalar per point) or ``(B, *out_shape)`` (for Jacobians). Returns ``f``
    itself, with ``f.accepts_batch = True``.
    """
    if not callable(f):
        raise TypeError(f"accepts_batch needs a callable f, got {type(f).__name__}")
    f.accepts_batch = True
    return f


class EvaluationCounter:
    """Wrap ``f`` and count how often, and at how many points, it is evaluated.

    ``calls`` counts the Python calls; ``points`` counts the points evaluated
    (a batched call on ``B`` points counts ``B``). The wrapper keeps ``f``'s
    ``accepts_batch`` mark. Chapter 1 uses it to check that a forward-difference
    gradient costs p + 1 evaluations whether or not they are batched.
    """

    def __init__(self, f: Callable):
        if not callable(f):
            raise TypeError(f"EvaluationCounter needs a callable f, got {type(f).__name__}")
        self.f = f
        self.accepts_batch = bool(getattr(f, "accepts_batch", False))
        self.calls = 0
        self.points = 0

    def __call__(self, x):
        self.calls += 1
        self.points += x.shape[0] if self.accepts_batch else 1
        return self.f(x)

    def reset(self) -> None:
        """Set both counts back to zero."""
        self.calls = 0
        self.points = 0


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _check_callable(f, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(f"{name} must be a callable, got {type(f).__name__}")


def _check_point(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            f"for example torch.tensor([...], dtype=torch.float64)"
        )
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must have a real floating-point dtype (float32 or float64), got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: there is nothing to differentiate with respect to")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        where = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"{name} must be finite, but {name}[{where}] = {x[where].item()}")
    return x.detach()


def _check_method(method) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _complex_dtype(dtype: torch.dtype, name: str = "x") -> torch.dtype:
    if dtype not in _COMPLEX_OF:
        raise TypeError(
            f"the complex step needs {name} in float32 or float64 (evaluated as complex64 or "
            f"complex128), got {dtype}, which has no complex counterpart PyTorch can compute with"
        )
    return _COMPLEX_OF[dtype]


def default_step(x: torch.Tensor, method: Method) -> torch.Tensor:
    """The default step for each coordinate of ``x``, chosen for x's dtype.

    Balancing truncation error against rounding error (chapter 1, section
    "Truncation against rounding") gives an optimal step that scales like
    ``eps^(1/2)`` for forward differences and ``eps^(1/3)`` for central
    differences, where ``eps`` is the machine epsilon of ``x.dtype``; it is
    scaled by ``max(1, |x_i|)`` so that it stays relative to large
    coordinates. The complex step has no rounding trade-off and uses
    ``1e-20``.

    Returns a tensor shaped like ``x``.
    """
    _check_method(method)
    if method == "complex":
        return torch.full_like(x, 1e-20)
    eps = torch.finfo(x.dtype).eps
    power = 0.5 if method == "forward" else 1.0 / 3.0
    return eps**power * torch.clamp(x.abs(), min=1.0)


def _steps(x: torch.Tensor, h: Step, method: Method) -> torch.Tensor:
    """Per-coordinate steps, validated, shaped like x."""
    if h is None:
        steps = default_step(x, method)
    else:
        if isinstance(h, bool) or not isinstance(h, (int, float, torch.Tensor)) or (
            isinstance(h, torch.Tensor) and (h.is_complex() or h.dtype == torch.bool)
        ):
            kind = f"a {h.dtype} tensor" if isinstance(h, torch.Tensor) else type(h).__name__
            raise TypeError(f"h must be a positive real number or a tensor of positive real numbers, got {kind}")
        steps = torch.as_tensor(h, dtype=torch.float64)
        if not bool(torch.isfinite(steps).all()) or not bool((steps > 0).all()):
            raise ValueError(f"h must be positive and finite, got h = {h}")
        try:
            steps = steps.to(x.device).expand_as(x).to(x.dtype)
        except RuntimeError as err:
            raise ValueError(f"h of shape {tuple(steps.shape)} does not broadcast to x's shape {tuple(x.shape)}") from err
        if method == "complex" and not bool((steps > 0).all()):
            raise ValueError(f"h = {h} underflows to 0 in {x.dtype}; use a larger step for the complex step")
    if method != "complex":
        # Use the step that the floating-point numbers actually take: x + h is
        # rounded, so the true distance between x and x + h is (x + h) - x
        # (central differences divide by the distance between x + h and x - h).
        steps = (x + steps) - x
        if not bool((steps > 0).all()):
            where = tuple(int(i) for i in torch.nonzero(steps <= 0)[0])
            spacing = torch.finfo(x.dtype).eps * max(abs(x[where].item()), torch.finfo(x.dtype).tiny)
            raise ValueError(
                f"h is too small for x in {x.dtype}: x + h == x at index {where} "
                f"(x = {x[where].item()}); the step must exceed the spacing of floating-point "
                f"numbers there, about {spacing:.3g}"
            )
    return steps


def _check_precision(F: torch.Tensor, input_dtype: torch.dtype, name: str) -> None:
    """Refuse values of f rounded more coarsely than its input (a float32 f of a float64 x)."""
    if (F.is_floating_point() or F.is_complex()) and torch.finfo(F.dtype).eps > torch.finfo(input_dtype).eps:
        raise ValueError(
            f"f returned {F.dtype} for an input in {input_dtype}: its values are rounded more coarsely than {name}, "
            f"so the differences would carry {F.dtype}'s rounding error; compute f in {input_dtype} "
            "(no casts to a lower precision inside f)"
        )


def _check_finite_values(F: torch.Tensor, where: Callable[[int], str], advice: str) -> None:
    """Refuse NaN or infinite values of f; ``F`` has one row per point, ``where(row)`` names the point."""
    bad = ~torch.isfinite(F)
    if bool(bad.any()):
        row = int(torch.nonzero(bad.reshape(F.shape[0], -1).any(dim=1))[0])
        raise ValueError(f"f is not finite at {where(row)}: the point may lie outside f's domain; {advice}")


def _check_log_spaced(steps: torch.Tensor, name: str = "steps") -> None:
    """Refuse steps that are not increasing and evenly spaced in log10 (as from ``torch.logspace``)."""
    if steps.numel() < 3 or not bool((steps > 0).all()) or not bool((steps[1:] > steps[:-1]).all()):
        raise ValueError(f"{name} must be positive and increasing, at least 3 of them")
    gaps = torch.diff(torch.log10(steps.double()))
    if float(gaps.max() - gaps.min()) > 1e-3 * float(gaps.mean()):  # leaves room for steps rounded to float32
        raise ValueError(
            f"{name} must be evenly spaced in log10 (as from torch.logspace): the gaps between consecutive "
            f"log10 steps range from {float(gaps.min()):.4g} to {float(gaps.max()):.4g}"
        )


# ---------------------------------------------------------------------------
# The engine: evaluate f at the perturbed points and form the quotients
# ---------------------------------------------------------------------------


def _as_output(out, where: str, like: torch.Tensor) -> torch.Tensor:
    """f's output as a tensor; a Python number takes the dtype and device of the points ``like``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (int, float, complex)) and not isinstance(out, bool):
        if like.is_complex() and not isinstance(out, complex):
            raise ValueError(
                "f returned a real Python number for a complex input: the complex step needs f to return "
                "the complex result (a tensor, or a Python complex)"
            )
        return torch.as_tensor(out, dtype=like.dtype, device=like.device)
    raise TypeError(f"f must return a torch.Tensor or a number, but returned {type(out).__name__} at {where}")


def _describe_row(method: Method, coordinate: int, sign: int) -> str:
    if coordinate < 0:
        return "x"
    if method == "complex":
        return f"x + i h e_{coordinate}"
    return f"x {'+' if sign > 0 else '-'} h e_{coordinate}"


def _evaluate_rows(f, rows: torch.Tensor, x_shape, batched: bool, scalar_output: bool) -> torch.Tensor:
    """f at each row of ``rows`` (n, p): a tensor (n, *out_shape)."""
    n = rows.shape[0]
    points = rows.reshape(n, *x_shape)
    if batched:
        out = _as_output(f(points), "a batch of points", points)
        if out.dim() == 0 or out.shape[0] != n:
            raise ValueError(
                f"f is marked as accepting a batch, so f(X) with X of shape {tuple(points.shape)} must return "
                f"a tensor whose first dimension is {n}, but it returned shape {tuple(out.shape)}"
            )
        if scalar_output and out[0].numel() != 1:
            raise ValueError(
                f"f must return one scalar per point to take a gradient, but returned shape {tuple(out.shape)} "
                f"for a batch of {n}; use finite_difference_jacobian for vector-valued f"
            )
        return out.reshape(n) if scalar_output else out
    outs = []
    for i in range(n):
        out = _as_output(f(points[i]), "one point", points)
        if scalar_output and out.numel() != 1:
            raise ValueError(
                f"f must return a scalar to take a gradient, but returned a tensor of shape {tuple(out.shape)}; "
                f"use finite_difference_jacobian for vector-valued f"
            )
        if outs and out.shape != outs[0].shape:
            raise ValueError(f"f returned outputs of different shapes: {tuple(outs[0].shape)} and {tuple(out.shape)}")
        outs.append(out.reshape(()) if scalar_output else out)
    return torch.stack(outs)


def _difference_quotients(
    f, x: torch.Tensor, h: Step, method: Method, batched, chunk_size, scalar_output: bool
) -> torch.Tensor:
    """The p difference quotients, one per coordinate: a tensor (p, *out_shape)."""
    _check_callable(f)
    _check_method(method)
    x = _check_point(x)
    if batched is None:
        batched = bool(getattr(f, "accepts_batch", False))
    elif not batched and isinstance(f, EvaluationCounter) and f.accepts_batch:
        raise ValueError(
            "batched=False with an EvaluationCounter of a batch-marked f: the counter would count each "
            "single-point call as a batch; count an f without the accepts_batch mark instead"
        )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    steps = _steps(x, h, method)
    p = x.numel()
    flat_x, flat_h = x.reshape(p), steps.reshape(p)

    # Each row of the batch is x moved along one coordinate: (coordinate, sign);
    # coordinate -1 is x itself (forward differences need f(x)).
    coords = torch.arange(p, device=x.device)
    if method == "forward":
        coordinate = torch.cat([torch.tensor([-1], device=x.device), coords])
        sign = torch.ones_like(coordinate)
    elif method == "central":
        coordinate = torch.cat([coords, coords])
        sign = torch.cat([torch.ones_like(coords), -torch.ones_like(coords)])
    else:
        coordinate, sign = coords, torch.ones_like(coords)
    base = flat_x.to(_complex_dtype(x.dtype)) if method == "complex" else flat_x
    n_rows = coordinate.numel()
    # The perturbed points are built a chunk at a time, so that memory stays
    # linear in p for a looped f (and bounded by chunk_size for a batched one).
    chunk = chunk_size if chunk_size is not None else (n_rows if batched else 256)

    values = []
    for start in range(0, n_rows, chunk):
        c, s = coordinate[start : start + chunk], sign[start : start + chunk]
        rows = base.repeat(c.numel(), 1)
        moved = torch.nonzero(c >= 0).reshape(-1)
        delta = s[moved] * flat_h[c[moved]]
        rows[moved, c[moved]] += delta * 1j if method == "complex" else delta
        values.append(_evaluate_rows(f, rows, x.shape, batched, scalar_output))
    F = torch.cat(values)

    if method == "complex" and not F.is_complex():
        raise ValueError(
            "f returned a real tensor for a complex input: the complex step needs f written with operations "
            "that carry complex numbers through (no abs, no .real, no comparisons, no casts to float)"
        )
    _check_precision(F, base.dtype, "x")

    def where(row):
        i = int(coordinate[row])
        return _describe_row(method, i, int(sign[row])) + ("" if i < 0 else f" (step h = {flat_h[i].item():.3g})")

    _check_finite_values(F, where, "try a smaller h or another method")

    shape = (p,) + (1,) * (F.dim() - 1)
    if method == "forward":
        return (F[1:] - F[:1]) / flat_h.reshape(shape)
    if method == "central":
        span = (flat_x + flat_h) - (flat_x - flat_h)  # the exact distance between the two points
        return (F[:p] - F[p:]) / span.reshape(shape)
    return F.imag / flat_h.reshape(shape)


# ---------------------------------------------------------------------------
# Gradients and Jacobians
# ---------------------------------------------------------------------------

_GRADIENT_DOC = """
    Parameters
    ----------
    f:
        a function of one point shaped like ``x`` returning a scalar, or of a
        batch ``(B, *x.shape)`` returning ``(B,)`` if it is marked with
        :func:`accepts_batch` (see the module's docstring).
    x:
        the point, a real floating-point tensor of any shape (float64 for
        accuracy), on any device.
    h:
        the step: a positive number, a tensor broadcastable to ``x``, or
        ``None`` for ``{default}``.
    batched:
        override ``f``'s ``accepts_batch`` mark.
    chunk_size:
        with a batched ``f``, evaluate at most this many points per call: the
        stacked points take ``chunk_size * p`` numbers (all ``p + 1`` or ``2p``
        rows at once by default, quadratic in p). A looped ``f`` builds its
        points 256 at a time.

    Returns
    -------
    torch.Tensor
        the estimated gradient, shaped like ``x``, on x's device.
"""


def forward_difference(f, x: torch.Tensor, h: Step = None, *, batched=None, chunk_size=None) -> torch.Tensor:
    """Gradient of ``f`` at ``x`` by forward differences: p + 1 evaluations, error O(h).

    ``df/dx_i ~ (f(x + h e_i) - f(x)) / h`` (chapter 1, section "The gradient, one coordinate at a time").
    """
    return _difference_quotients(f, x, h, "forward", batched, chunk_size, True).reshape(x.shape)


def central_difference(f, x: torch.Tensor, h: Step = None, *, batched=None, chunk_size=None) -> torch.Tensor:
    """Gradient of ``f`` at ``x`` by central differences: 2p evaluations, error O(h^2).

    ``df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)`` (chapter 1, same section).
    """
    return _difference_quotients(f, x, h, "central", batched, chunk_size, True).reshape(x.shape)


def complex_step(f, x: torch.Tensor, h: float = 1e-20, *, batched=None, chunk_size=None) -> torch.Tensor:
    """Gradient of ``f`` at ``x`` by the complex step: p complex evaluations, no cancellation.

    ``df/dx_i ~ Im f(x + i h e_i) / h`` (chapter 1, section "The complex step"). There is no
    subtraction, so ``h`` can be tiny and the result is exact to machine
    precision, provided ``f`` is real-analytic and written with operations
    that carry complex numbers (no ``abs``, comparisons or casts to real).
    ``x`` must be float32 or float64 (evaluated as complex64 or complex128).
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        _complex_dtype(x.dtype)
    return _difference_quotients(f, x, h, "complex", batched, chunk_size, True).reshape(x.shape)


for _fn, _default in (
    (forward_difference, "``sqrt(eps) * max(1, |x_i|)``"),
    (central_difference, "``eps^(1/3) * max(1, |x_i|)``"),
    (complex_step, "``1e-20``"),
):
    _fn.__doc__ += _GRADIENT_DOC.format(default=_default)


def finite_difference_jacobian(
    f, x: torch.Tensor, h: Step = None, *, method: Method = "central", batched=None, chunk_size=None
) -> torch.Tensor:
    """Jacobian of ``f: R^p -> R^m`` at ``x`` by differences, one column per coordinate.

    ``f`` may take and return tensors of any shape. The result has shape
    ``f(x).shape + x.shape``, the layout of ``torch.autograd.functional.jacobian``.
    ``method`` is ``"forward"``, ``"central"`` (default) or ``"complex"``;
    ``h=None`` picks the default step of :func:`default_step`. A batched ``f``
    maps ``(B, *x.shape)`` to ``(B, *out_shape)``. Chapter 1, section "Jacobians, and checking gradients".
    """
    _check_method(method)
    if method == "complex" and isinstance(x, torch.Tensor) and x.is_floating_point():
        _complex_dtype(x.dtype)
    columns = _difference_quotients(f, x, h, method, batched, chunk_size, False)  # (p, *out_shape)
    out_shape = tuple(columns.shape[1:])
    p = columns.shape[0]
    return columns.reshape(p, -1).T.reshape(*out_shape, *x.shape)


def derivative_estimates(f, x: float, steps: torch.Tensor, method: Method) -> torch.Tensor:
    """The raw difference quotient of a scalar function at ``x`` for many steps at once.

    For studying the error as a function of ``h`` (chapter 1, figure of the
    error against the step): ``f`` acts elementwise on a 1-D tensor, ``x`` is a
    number, and ``steps`` is a 1-D tensor of positive steps whose dtype sets the
    precision of the computation. Unlike the gradient functions, the steps are
    used as given (no rounding to representable steps), so that the figure
    shows exactly what the textbook formulas compute in floating point. As
    the gradient functions do, it refuses an ``f`` that returns NaN or
    infinity, or that computes in a lower precision than the steps.

    Returns a tensor shaped like ``steps``.
    """
    _check_callable(f)
    _check_method(method)
    if not isinstance(steps, torch.Tensor) or steps.dim() != 1 or not steps.is_floating_point():
        raise TypeError("steps must be a 1-D floating-point tensor")
    if not bool(torch.isfinite(steps).all()) or not bool((steps > 0).all()):
        raise ValueError("steps must all be positive and finite")
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"x must be a finite number, got {x!r}")
    dtype = _complex_dtype(steps.dtype, "steps") if method == "complex" else steps.dtype
    x0 = torch.full_like(steps, float(x))

    def call(points, label):
        out = _as_output(f(points), "the points x + h", points)
        if out.shape != points.shape:
            raise ValueError(f"f must act elementwise: input shape {tuple(points.shape)}, output shape {tuple(out.shape)}")
        # the checks of the gradient functions, by the same helpers
        _check_precision(out, points.dtype, "the steps")
        _check_finite_values(out, lambda row: f"{label} with h = {steps[row].item():.3g}", "use smaller steps")
        return out

    if method == "forward":
        return (call(x0 + steps, "x + h") - call(x0, "x")) / steps
    if method == "central":
        return (call(x0 + steps, "x + h") - call(x0 - steps, "x - h")) / (2 * steps)
    out = call(x0.to(dtype) + 1j * steps.to(dtype), "x + i h")
    if not out.is_complex():
        raise ValueError("f returned a real tensor for a complex input; the complex step needs complex-safe f")
    return out.imag / steps


def predicted_optimal_step(method: Method, eps: float, f_value: float, derivative: float) -> tuple[float, float]:
    """The step that minimizes the error bound of a difference quotient, and that bound.

    Each evaluation of ``f`` carries a rounding error of about ``eps |f|``, and
    Taylor's theorem gives the truncation error (chapter 1, section "Truncation
    against rounding"):

    - forward: ``E(h) = h |f''| / 2 + 2 eps |f| / h``, minimal at
      ``h* = 2 sqrt(eps |f| / |f''|)``, where ``E(h*) = 2 sqrt(eps |f f''|)``;
    - central: ``E(h) = h^2 |f'''| / 6 + eps |f| / h``, minimal at
      ``h* = (3 eps |f| / |f'''|)^(1/3)``.

    ``derivative`` is ``|f''(x)|`` for forward and ``|f'''(x)|`` for central
    differences; ``eps`` is the machine epsilon (``torch.finfo(dtype).eps``).
    Returns ``(h*, E(h*))``.
    """
    if method not in ("forward", "central"):
        raise ValueError(f"method must be 'forward' or 'central' (the complex step has no optimal step), got {method!r}")
    for name, value in (("eps", eps), ("f_value", f_value), ("derivative", derivative)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value == 0:
            raise ValueError(f"{name} must be a finite non-zero number, got {value!r}")
    eps, f_value, derivative = abs(eps), abs(f_value), abs(derivative)
    if method == "forward":
        h = 2 * math.sqrt(eps * f_value / derivative)
        return h, h * derivative / 2 + 2 * eps * f_value / h
    h = (3 * eps * f_value / derivative) ** (1 / 3)
    return h, h**2 * derivative / 6 + eps * f_value / h


def measured_optimal_step(steps: torch.Tensor, errors: torch.Tensor, decades: float = 0.5) -> tuple[float, float]:
    """The bottom of a measured error curve: ``(h*, E(h*))``.

    Rounding errors are erratic: at some steps they cancel by luck, and the raw
    minimum of a dense sweep lands on such an accident. The curve is therefore
    smoothed first, by a running median of ``log10(error)`` over a window of
    ``decades`` decades of ``h``, and the minimum of the smoothed curve is
    returned (its step, and the median error there; the middle of the lowest
    plateau when the median is flat at the bottom). ``steps`` must be
    increasing and evenly spaced in ``log10``, as from ``torch.logspace``
    (the window is counted in steps; a ``ValueError`` otherwise).
    Chapter 1, section "Truncation against rounding".
    """
    if not (isinstance(steps, torch.Tensor) and isinstance(errors, torch.Tensor)):
        raise TypeError("steps and errors must be tensors")
    if steps.dim() != 1 or steps.shape != errors.shape:
        raise ValueError(f"steps and errors must be 1-D of the same length, got {tuple(steps.shape)} and {tuple(errors.shape)}")
    _check_log_spaced(steps)
    if not bool(torch.isfinite(errors).all()) or bool((errors < 0).any()):
        raise ValueError("errors must be finite and non-negative")
    log_h = torch.log10(steps.double())
    half = max(1, int(round(decades / float(log_h[1] - log_h[0]) / 2)))
    log_e = torch.log10(errors.double().clamp(min=1e-300))
    padded = torch.cat([log_e[:1].expand(half), log_e, log_e[-1:].expand(half)])
    smoothed = padded.unfold(0, 2 * half + 1, 1).median(dim=1).values
    # a median has flat bottoms: take the middle of the lowest plateau
    lowest = torch.nonzero(smoothed <= smoothed.min() + 1e-12).reshape(-1)
    best = int(lowest[len(lowest) // 2])
    return float(steps[best]), float(10 ** smoothed[best])


# ---------------------------------------------------------------------------
# Checking a gradient
# ---------------------------------------------------------------------------


class GradientCheckError(AssertionError):
    """Raised by :func:`check_gradient` with ``raise_on_failure=True`` when the check fails."""


@dataclass(frozen=True)
class GradientCheck:
    """The outcome of :func:`check_gradient`.

    The check passes when every component satisfies
    ``|claimed - reference| <= atol + rtol * |reference|``, the criterion of
    ``torch.testing.assert_close``. ``relative_error`` is elementwise
    ``|claimed - reference| / max(|reference|, atol)``: the plain relative error,
    except for components smaller than ``atol``, which are compared absolutely.
    ``worst_index`` is the component that is furthest from passing.
    """

    claimed: torch.Tensor
    reference: torch.Tensor
    rtol: float
    atol: float
    method: str

    @property
    def relative_error(self) -> torch.Tensor:
        """Elementwise ``|claimed - reference| / max(|reference|, atol)``."""
        return (self.claimed - self.reference).abs() / torch.clamp(self.reference.abs(), min=self.atol)

    @property
    def max_relative_error(self) -> float:
        """The worst relative error over all components."""
        return float(self.relative_error.max())

    @property
    def _violation(self) -> torch.Tensor:
        return (self.claimed - self.reference).abs() / (self.atol + self.rtol * self.reference.abs())

    @property
    def worst_index(self) -> tuple:
        """Index of the component furthest from passing."""
        flat = int(torch.argmax(self._violation.reshape(-1)))
        return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), self.claimed.shape))

    @property
    def passed(self) -> bool:
        """Whether every component agrees within ``atol + rtol * |reference|``."""
        return bool((self._violation <= 1).all())

    def __str__(self) -> str:
        i = self.worst_index
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"gradient check {verdict}: worst relative error {self.max_relative_error:.3g}; "
            f"furthest from passing at index {i}: claimed {self.claimed[i].item():.12g}, "
            f"{'central differences' if self.method == 'central' else 'complex step'} "
            f"{self.reference[i].item():.12g} (rtol {self.rtol:g}, atol {self.atol:g})"
        )


def check_gradient(
    f,
    x: torch.Tensor,
    claimed,
    *,
    method: Method = "central",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    h: Step = None,
    batched=None,
    chunk_size=None,
    raise_on_failure: bool = False,
) -> GradientCheck:
    """Compare a claimed gradient of ``f`` at ``x`` with finite differences in float64.

    ``claimed`` is a tensor shaped like ``x`` or a function returning one when
    called on ``x``. ``x`` is copied to float64 and ``f`` is evaluated there,
    so ``f`` must accept float64 inputs. ``method`` is ``"central"`` (default)
    or ``"complex"`` (exact to machine precision when ``f`` is complex-safe).

    The defaults ``rtol=1e-6, atol=1e-8`` leave room for the error of central
    differences in float64 (about 1e-10 relative, more on badly scaled ``f``);
    with ``method="complex"`` they can be tightened to ``rtol=1e-13``.

    Returns a :class:`GradientCheck` with the worst relative error, where it
    occurs and whether it passed; with ``raise_on_failure=True`` a failed check
    raises :class:`GradientCheckError` with the same message. Chapter 1,
    section "Jacobians, and checking gradients".
    """
    x = _check_point(x)
    if method not in ("central", "complex"):
        raise ValueError(f"method must be 'central' or 'complex' for a gradient check, got {method!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    x64 = x.to(torch.float64)
    if callable(claimed):
        claimed = claimed(x.clone())
    if not isinstance(claimed, torch.Tensor):
        raise TypeError(f"claimed must be a tensor or a function returning one, got {type(claimed).__name__}")
    if claimed.shape != x.shape:
        raise ValueError(f"claimed gradient has shape {tuple(claimed.shape)}, but x has shape {tuple(x.shape)}")
    claimed = claimed.detach().to(device=x.device, dtype=torch.float64)
    if not bool(torch.isfinite(claimed).all()):
        raise ValueError("claimed gradient is not finite")
    if method == "central":
        reference = central_difference(f, x64, h, batched=batched, chunk_size=chunk_size)
    else:
        reference = complex_step(f, x64, 1e-20 if h is None else h, batched=batched, chunk_size=chunk_size)
    result = GradientCheck(claimed, reference, float(rtol), float(atol), method)
    if raise_on_failure and not result.passed:
        raise GradientCheckError(str(result))
    return result
