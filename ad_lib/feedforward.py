"""Feed-forward architectures: the multi-layer perceptron and residual networks (chapter 6).

A feed-forward architecture computes ``x_k = f_k(x_{k-1}, theta_{k-1})`` for
``k = 1, ..., t`` and a loss ``f(theta) = L(x_t)`` (chapter 6, section
"Feed-forward architectures", :eq:`eq-ff-layers`). Back-propagation runs the
adjoints ``z_k = grad_{x_k} f`` from the output back, and each layer gives
the gradient of its own parameters on the way (:eq:`eq-ff-backprop`).

Two architectures, each with a forward pass that keeps what the backward
needs and a backward written by hand:

1. The multi-layer perceptron ``x_k = rho(theta_{k-1} x_{k-1})`` for a
   pointwise non-linearity ``rho`` (:func:`mlp_forward`, :func:`mlp_backward`,
   and :func:`mlp` / :class:`MLP` which plug the hand-written backward into
   ``torch.autograd``). The only new ingredient is the diagonal matrix
   ``w_k = diag(rho'(theta_{k-1} x_{k-1}))`` (chapter 6, section "The
   multi-layer perceptron").

2. Residual networks ``x_k = x_{k-1} + tau u(x_{k-1}, theta_{k-1}, k tau)``,
   the explicit Euler scheme of the ODE ``x'(t) = u(x(t), theta(t), t)``
   (:func:`resnet_forward`, :func:`resnet_backward`, :func:`resnet`). Their
   back-propagation is the discrete adjoint of the scheme, and
   ``(1/tau) grad_{theta_{k-1}} f`` tends to the gradient of the continuous
   problem (:func:`parameter_gradient_density`; chapter 6, section "Residual
   networks as explicit Euler steps").

Shapes: a state ``x`` is a vector ``(n,)`` or a batch ``(batch, n)`` of
vectors (any leading dimensions are batch dimensions); a weight
``theta_{k-1}`` of the perceptron is a matrix ``(n_k, n_{k-1})``, applied to
each vector of the batch, and its gradient is summed over the batch, as a loss
summed over examples requires.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Sequence, Union

import torch
from torch import nn

from ad_lib.compositions import check_widths

__all__ = [
    "Activation", "TANH", "RELU", "SIGMOID", "SOFTPLUS", "IDENTITY", "activation",
    "MLPCache", "mlp_forward", "mlp_backward", "MLPFunction", "mlp", "MLP",
    "resnet_forward", "resnet_backward", "ResNetFunction", "resnet", "parameter_gradient_density",
]


# ---------------------------------------------------------------------------
# Pointwise non-linearities, with their derivatives
# ---------------------------------------------------------------------------


class Activation(NamedTuple):
    """A pointwise non-linearity ``rho`` and its derivative ``rho'``.

    Both take the pre-activation ``a = theta_{k-1} x_{k-1}`` (any shape) and
    return a tensor of the same shape: ``function(a) = rho(a)`` and
    ``derivative(a) = rho'(a)``, the diagonal of ``w_k`` (chapter 6, section
    "The multi-layer perceptron").
    """

    function: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    name: str = "rho"


def _tanh_derivative(a):
    return 1 - torch.tanh(a) ** 2


def _sigmoid_derivative(a):
    s = torch.sigmoid(a)
    return s * (1 - s)


TANH = Activation(torch.tanh, _tanh_derivative, "tanh")
RELU = Activation(torch.relu, lambda a: (a > 0).to(a.dtype), "relu")  # rho'(0) = 0, as torch.relu's backward
SIGMOID = Activation(torch.sigmoid, _sigmoid_derivative, "sigmoid")
SOFTPLUS = Activation(torch.nn.functional.softplus, torch.sigmoid, "softplus")
IDENTITY = Activation(lambda a: a, torch.ones_like, "identity")
_NAMED = {a.name: a for a in (TANH, RELU, SIGMOID, SOFTPLUS, IDENTITY)}


def activation(rho: Union[str, Activation]) -> Activation:
    """``rho`` as an :class:`Activation`: one already, or one of the names ``tanh``, ``relu``, ``sigmoid``,
    ``softplus``, ``identity``. Anything else is a ``TypeError`` or ``ValueError``. Chapter 6, section
    "The multi-layer perceptron"."""
    if isinstance(rho, Activation):
        if not (callable(rho.function) and callable(rho.derivative)):
            raise TypeError("rho: an Activation needs a callable function and a callable derivative")
        return rho
    if isinstance(rho, str):
        if rho not in _NAMED:
            raise ValueError(f"rho: unknown activation {rho!r}; expected one of {sorted(_NAMED)} or an Activation")
        return _NAMED[rho]
    raise TypeError(
        f"rho must be an Activation(function, derivative) or one of the names {sorted(_NAMED)}, got {type(rho).__name__}"
    )


# ---------------------------------------------------------------------------
# 1. The multi-layer perceptron
# ---------------------------------------------------------------------------


class MLPCache(NamedTuple):
    """What the forward pass of the perceptron keeps for its backward pass.

    ``inputs[k-1]`` is the layer input ``x_{k-1}`` and ``slopes[k-1]`` is
    ``rho'(theta_{k-1} x_{k-1})``, the diagonal of ``w_k``, for ``k = 1..t``:
    two tensors per layer (chapter 6, section "Back-propagation by hand").
    """

    inputs: list
    slopes: list


def _check_state(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must be a vector (n,) or a batch (batch, n) of vectors, got a 0-d tensor")
    return x


def _check_weights(x0: torch.Tensor, thetas) -> list:
    """The perceptron's weights as a list, checked against x0 and against each other."""
    if isinstance(thetas, torch.Tensor) or not isinstance(thetas, (Sequence, nn.ParameterList)):
        raise TypeError(
            "thetas must be a sequence (list, tuple, nn.ParameterList) of weight matrices theta_0, ..., theta_{t-1}, "
            f"got {type(thetas).__name__}"
        )
    thetas = list(thetas)
    if not thetas:
        raise ValueError("thetas is empty: a perceptron needs at least one layer")
    width = x0.shape[-1]
    for k, theta in enumerate(thetas):
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"thetas[{k}] must be a tensor, got {type(theta).__name__}")
        if theta.dim() != 2:
            raise ValueError(f"thetas[{k}] must be a matrix of shape (n_{k + 1}, n_{k}), got shape {tuple(theta.shape)}")
        if theta.shape[1] != width:
            raise ValueError(
                f"thetas[{k}] has shape {tuple(theta.shape)} but its layer's input has width {width}: "
                f"theta_{k} must have {width} columns"
            )
        if theta.dtype != x0.dtype or theta.device != x0.device:
            raise ValueError(
                f"thetas[{k}] is {theta.dtype} on {theta.device} but x0 is {x0.dtype} on {x0.device}; they must match"
            )
        width = theta.shape[0]
    return thetas


def mlp_forward(x0: torch.Tensor, thetas: Sequence[torch.Tensor], rho: Union[str, Activation] = "tanh"):
    """The perceptron's forward pass ``x_k = rho(theta_{k-1} x_{k-1})``, keeping what the backward needs.

    ``x0`` has shape ``(n_0,)`` or ``(batch, n_0)``; ``thetas[k-1]`` is
    ``theta_{k-1}`` of shape ``(n_k, n_{k-1})``. Returns ``(x_t, cache)``,
    ``x_t`` of shape ``(n_t,)`` or ``(batch, n_t)`` and ``cache`` an
    :class:`MLPCache` with the layer inputs ``x_{k-1}`` and the slopes
    ``rho'(theta_{k-1} x_{k-1})`` (chapter 6, section "The multi-layer
    perceptron", :eq:`eq-mlp`). Runs without recording an autograd graph.
    """
    x = _check_state(x0, "x0")
    thetas = _check_weights(x, thetas)
    rho = activation(rho)
    inputs, slopes = [], []
    with torch.no_grad():
        for theta in thetas:
            pre_activation = x @ theta.mT  # theta_{k-1} x_{k-1}, for each vector of the batch
            inputs.append(x)
            slopes.append(rho.derivative(pre_activation))
            x = rho.function(pre_activation)
    return x, MLPCache(inputs, slopes)


def _outer_summed(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum over the batch of s x^T``: (..., m) and (..., n) -> (m, n)."""
    return s.reshape(-1, s.shape[-1]).mT @ x.reshape(-1, x.shape[-1])


def _check_grad_output(grad_output, output: torch.Tensor, name: str) -> None:
    """grad_output must be shaped like the network's output, with its dtype and device."""
    if not isinstance(grad_output, torch.Tensor) or grad_output.shape != output.shape:
        got = tuple(grad_output.shape) if isinstance(grad_output, torch.Tensor) else type(grad_output).__name__
        raise ValueError(f"grad_output must be shaped like {name}, {tuple(output.shape)}, got {got}")
    if grad_output.dtype != output.dtype or grad_output.device != output.device:
        raise ValueError(
            f"grad_output is {grad_output.dtype} on {grad_output.device} but {name} is {output.dtype} on "
            f"{output.device}; grad_output must have its dtype and device"
        )


def mlp_backward(cache: MLPCache, thetas: Sequence[torch.Tensor], grad_output: torch.Tensor):
    """Back-propagation through the perceptron by hand: eqs. (5)-(6) of the notes.

    Starting from ``z_t = grad_output`` (the gradient of the loss with
    respect to ``x_t``, shaped like it), for ``k = t, ..., 1``::

        s_k             = rho'(theta_{k-1} x_{k-1}) * z_k      (w_k z_k)
        grad theta_{k-1} = s_k x_{k-1}^T                      (summed over the batch)
        z_{k-1}         = theta_{k-1}^T s_k

    Returns ``(grad_x0, grads)`` with ``grad_x0`` shaped like ``x0`` and
    ``grads[k-1]`` shaped like ``theta_{k-1}`` (chapter 6, section
    "Back-propagation by hand", :eq:`eq-mlp-backward`).
    """
    if not isinstance(cache, MLPCache):
        raise TypeError(f"cache must be the MLPCache returned by mlp_forward, got {type(cache).__name__}")
    thetas = list(thetas)
    if len(thetas) != len(cache.inputs):
        raise ValueError(f"thetas has {len(thetas)} layer(s) but the cache was recorded for {len(cache.inputs)} layers")
    last = cache.slopes[-1]
    _check_grad_output(grad_output, last, "the output x_t")
    z = grad_output
    grads = [None] * len(thetas)
    for k in range(len(thetas), 0, -1):
        s = cache.slopes[k - 1] * z  # w_k z_k: w_k is diagonal
        grads[k - 1] = _outer_summed(s, cache.inputs[k - 1])
        z = s @ thetas[k - 1]  # theta_{k-1}^T w_k z_k, for each vector of the batch
    return z, grads


class MLPFunction(torch.autograd.Function):
    """The perceptron as a ``torch.autograd.Function`` whose backward is :func:`mlp_backward`.

    ``MLPFunction.apply(x0, rho, *thetas)`` returns ``x_t``; ``torch.autograd``
    then back-propagates through the hand-written rule, to ``x0`` and to every
    ``theta`` (chapter 6, section "Checked against torch.autograd and the
    tape"). The backward is not itself differentiable (no second derivatives).
    """

    @staticmethod
    def forward(ctx, x0, rho, *thetas):
        """``x_t`` by :func:`mlp_forward`; saves the cache (two tensors per layer) and the weights."""
        out, cache = mlp_forward(x0, thetas, rho)
        ctx.layers = len(thetas)
        ctx.save_for_backward(*cache.inputs, *cache.slopes, *thetas)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """The gradients for ``x0`` and every ``theta`` by :func:`mlp_backward` (none for ``rho``)."""
        saved, t = ctx.saved_tensors, ctx.layers
        cache = MLPCache(list(saved[:t]), list(saved[t : 2 * t]))
        grad_x0, grads = mlp_backward(cache, saved[2 * t :], grad_output)
        return (grad_x0, None, *grads)


def mlp(x0: torch.Tensor, thetas: Sequence[torch.Tensor], rho: Union[str, Activation] = "tanh") -> torch.Tensor:
    """``x_t`` of the perceptron, differentiable by ``torch.autograd`` through the hand-written backward.

    Same shapes as :func:`mlp_forward` (chapter 6, section "Checked against
    torch.autograd and the tape").
    """
    _check_state(x0, "x0")
    return MLPFunction.apply(x0, activation(rho), *_check_weights(x0, thetas))


class MLP(nn.Module):
    """The perceptron ``x_k = rho(theta_{k-1} x_{k-1})`` as an ``nn.Module``, with the hand-written backward.

    ``widths = [n_0, ..., n_t]``; ``self.thetas`` is an ``nn.ParameterList``
    of the weights ``theta_{k-1}`` of shape ``(n_k, n_{k-1})``, drawn from a
    normal law of variance ``1/n_{k-1}`` with ``generator`` (a
    ``torch.Generator``, for repeatable weights). ``forward(x0)`` is
    :func:`mlp`. No biases, as in the notes (append a constant 1 to the
    input for one). Chapter 6, section "The multi-layer perceptron".
    """

    def __init__(self, widths: Sequence[int], rho: Union[str, Activation] = "tanh", generator=None, dtype=None,
                 device=None):
        super().__init__()
        widths = check_widths(widths)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.widths = widths
        self.rho = activation(rho)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        gen_device = generator.device if generator is not None else "cpu"
        self.thetas = nn.ParameterList(
            nn.Parameter(
                (torch.randn(n_out, n_in, generator=generator, dtype=dtype, device=gen_device) / math.sqrt(n_in)).to(device)
            )
            for n_in, n_out in zip(widths[:-1], widths[1:])
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``x_t`` for an input ``x0`` of shape ``(n_0,)`` or ``(batch, n_0)``: :func:`mlp`."""
        return mlp(x0, list(self.thetas), self.rho)

    def extra_repr(self) -> str:
        """The widths and the activation, for ``repr``."""
        return f"widths={self.widths}, rho={self.rho.name}"


# ---------------------------------------------------------------------------
# 2. Residual networks: explicit Euler steps
# ---------------------------------------------------------------------------


def _check_tau(tau) -> None:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive real number (the step), got {tau!r}")


def _check_residual(u, x0, thetas, tau):
    if not callable(u):
        raise TypeError(f"u must be a callable u(x, theta, t), got {type(u).__name__}")
    x0 = _check_state(x0, "x0")
    _check_tau(tau)
    if isinstance(thetas, torch.Tensor):
        if thetas.dim() < 1:
            raise ValueError("thetas as a tensor must have a leading dimension K (one theta per layer), got a 0-d tensor")
        thetas = list(thetas.unbind(0))
    elif isinstance(thetas, (Sequence, nn.ParameterList)):
        thetas = list(thetas)
    else:
        raise TypeError(f"thetas must be a sequence of K tensors or a tensor (K, ...), got {type(thetas).__name__}")
    if not thetas:
        raise ValueError("thetas is empty: a residual network needs at least one layer")
    for k, theta in enumerate(thetas):
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"thetas[{k}] must be a tensor, got {type(theta).__name__}")
    return x0, thetas, float(tau)


def _residual_step(u, x, theta, t, tau, k):
    velocity = u(x, theta, t)
    if not isinstance(velocity, torch.Tensor) or velocity.shape != x.shape:
        got = tuple(velocity.shape) if isinstance(velocity, torch.Tensor) else type(velocity).__name__
        raise ValueError(f"u(x, theta, t) must return a tensor shaped like x, {tuple(x.shape)}; at layer {k} it returned {got}")
    return x + tau * velocity


def resnet_forward(u: Callable, x0: torch.Tensor, thetas, tau: float) -> list:
    """The residual network ``x_k = x_{k-1} + tau u(x_{k-1}, theta_{k-1}, k tau)``, ``k = 1..K``: Euler steps.

    ``u(x, theta, t)`` returns a tensor shaped like ``x`` (which may carry
    batch dimensions); ``thetas`` holds the ``K`` parameters ``theta_0, ...,
    theta_{K-1}`` (a sequence, or a tensor whose first dimension is ``K``);
    ``tau > 0`` is the step. Returns the list ``[x_0, ..., x_K]`` of every
    state, which the backward needs (chapter 6, section "Residual networks as
    explicit Euler steps", :eq:`eq-resnet`). Runs without recording an
    autograd graph.
    """
    x, thetas, tau = _check_residual(u, x0, thetas, tau)
    xs = [x]
    with torch.no_grad():
        for k, theta in enumerate(thetas, start=1):
            x = _residual_step(u, x, theta, k * tau, tau, k)
            xs.append(x)
    return xs


def resnet_backward(u: Callable, xs: Sequence[torch.Tensor], thetas, tau: float, grad_output: torch.Tensor):
    """The discrete adjoint of the residual network: back-propagation through its Euler steps.

    From ``z_K = grad_output`` (shaped like ``x_K``), for ``k = K, ..., 1``::

        grad theta_{k-1} = tau [d_theta u(x_{k-1}, theta_{k-1}, k tau)]^T z_k
        z_{k-1}         = z_k + tau [d_x u(x_{k-1}, theta_{k-1}, k tau)]^T z_k

    the vector-Jacobian products of ``u`` computed by ``torch.func.vjp``.
    ``xs`` is the list returned by :func:`resnet_forward`. Returns
    ``(grad_x0, grads)``, ``grads[k-1]`` shaped like ``theta_{k-1}``
    (chapter 6, section "The discrete adjoint", :eq:`eq-resnet-adjoint`).
    """
    if isinstance(xs, torch.Tensor) or not isinstance(xs, Sequence):
        raise TypeError(f"xs must be the list [x_0, ..., x_K] returned by resnet_forward, got {type(xs).__name__}")
    if not xs:
        raise ValueError("xs is empty: it must be the list [x_0, ..., x_K] returned by resnet_forward")
    for k, x in enumerate(xs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"xs[{k}] must be a tensor (xs is the list returned by resnet_forward), got {type(x).__name__}")
    _, thetas, tau = _check_residual(u, xs[0], thetas, tau)
    xs = list(xs)
    if len(xs) != len(thetas) + 1:
        raise ValueError(f"xs must hold K + 1 = {len(thetas) + 1} states (x_0, ..., x_K), got {len(xs)}")
    _check_grad_output(grad_output, xs[-1], "x_K")
    z = grad_output
    grads = [None] * len(thetas)
    for k in range(len(thetas), 0, -1):
        t = k * tau
        _, vjp_fn = torch.func.vjp(lambda x, theta: u(x, theta, t), xs[k - 1], thetas[k - 1])
        z_x, z_theta = vjp_fn(z)
        grads[k - 1] = tau * z_theta
        z = z + tau * z_x
    return z, grads


class ResNetFunction(torch.autograd.Function):
    """The residual network as a ``torch.autograd.Function`` whose backward is :func:`resnet_backward`.

    ``ResNetFunction.apply(u, tau, x0, *thetas)`` returns ``x_K``. Gradients
    reach ``x0`` and the ``thetas``; tensors that ``u`` closes over get none.
    Chapter 6, section "The discrete adjoint".
    """

    @staticmethod
    def forward(ctx, u, tau, x0, *thetas):
        """``x_K`` by :func:`resnet_forward`; saves every state and the parameters."""
        xs = resnet_forward(u, x0, thetas, tau)
        ctx.u, ctx.tau, ctx.layers = u, tau, len(thetas)
        ctx.save_for_backward(*xs, *thetas)
        return xs[-1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """The gradients for ``x0`` and every ``theta`` by :func:`resnet_backward` (none for ``u``, ``tau``)."""
        saved, K = ctx.saved_tensors, ctx.layers
        with torch.enable_grad():
            grad_x0, grads = resnet_backward(ctx.u, list(saved[: K + 1]), list(saved[K + 1 :]), ctx.tau, grad_output)
        return (None, None, grad_x0, *grads)


def resnet(u: Callable, x0: torch.Tensor, thetas, tau: float) -> torch.Tensor:
    """``x_K`` of the residual network, differentiable by ``torch.autograd`` through :func:`resnet_backward`.

    Same arguments as :func:`resnet_forward` (chapter 6, section "The discrete adjoint").
    Gradients reach ``x0`` and the ``thetas`` only: whatever else ``u`` uses
    is a constant. So a ``u`` that is an ``nn.Module`` with parameters that
    require grad is a ``ValueError`` (they would silently get no gradient):
    pass those parameters through ``thetas`` (``u(x, theta, t)`` reading them
    from ``theta``, e.g. with ``torch.func.functional_call``), freeze them
    (``requires_grad_(False)``), or unroll the Euler steps under
    ``torch.autograd``. Tensors that a closure ``u`` captures are constants
    in the same way, but cannot be detected.
    """
    if isinstance(u, nn.Module):
        trained = [name for name, p in u.named_parameters() if p.requires_grad]
        if trained:
            raise ValueError(
                f"u is an nn.Module whose parameters {trained} require grad, but resnet back-propagates only to x0 "
                "and thetas, so they would get no gradient: pass them through thetas (u(x, theta, t) reading them "
                "from theta, e.g. with torch.func.functional_call), freeze them with requires_grad_(False), or "
                "unroll the Euler steps x = x + tau * u(x, theta, k * tau) under torch.autograd"
            )
    x0, thetas, tau = _check_residual(u, x0, thetas, tau)
    return ResNetFunction.apply(u, tau, x0, *thetas)


def parameter_gradient_density(grads, tau: float) -> torch.Tensor:
    """``(1/tau) grad_{theta_{k-1}} f`` for ``k = 1..K``, stacked: shape ``(K, *theta.shape)``.

    A layer's parameter gradient is ``tau`` times ``[d_theta u]^T z_k``, so it
    vanishes as ``tau -> 0``; divided by ``tau`` it tends to
    ``grad_{theta(t)} f = [d_theta u(x(t), theta(t), t)]^T z(t)`` at ``t = k tau``,
    the gradient of the continuous problem, at order 1 in ``tau`` (chapter 6,
    section "The normalization of the parameter gradient", :eq:`eq-normalization`).
    """
    _check_tau(tau)
    if isinstance(grads, torch.Tensor):
        return grads / tau
    if not isinstance(grads, Sequence) or not grads or not all(isinstance(g, torch.Tensor) for g in grads):
        raise TypeError("grads must be a non-empty sequence of tensors (the gradients of theta_0, ..., theta_{K-1})")
    return torch.stack(list(grads)) / tau
