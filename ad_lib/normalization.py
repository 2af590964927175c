"""Dropout, batch normalization with its backward pass by hand, and group normalization (chapter 11).

- :func:`dropout` and :class:`Dropout`: units zeroed with probability p in training, the survivors
  scaled by ``1 / (1 - p)`` so that the mean is kept; the identity in evaluation;
- :func:`batch_norm` and :class:`BatchNorm`: ``torch.nn.functional.batch_norm``'s signature; in
  training mode the forward and the backward pass (:class:`BatchNormFunction`) are written out,
  the gradient flowing through the batch mean and the batch variance; the running statistics are
  updated in place with the unbiased variance, as torch does;
- :func:`group_norm` and :class:`GroupNorm`: ``torch.nn.functional.group_norm``'s signature,
  statistics over groups of channels of each sample; its backward is torch.autograd's.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = ["dropout", "Dropout", "batch_norm", "BatchNormFunction", "BatchNorm", "group_norm", "GroupNorm"]


def _check_tensor(name, x, min_dim=1):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")


def _check_real(name, value, low=None, high=None, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    bad = not math.isfinite(value) or (low is not None and value < low) or \
        (high is not None and (value >= high if high_open else value > high))
    if bad:
        what = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {what}, got {value}")
    return value


# -- dropout --------------------------------------------------------------------------------------

def dropout(x, p=0.5, training=True, generator=None):
    r"""Dropout: ``y = x * m / (1 - p)`` with ``m`` a mask of independent Bernoulli(1 - p) variables.

    Each entry is zeroed with probability p and the others are scaled by ``1 / (1 - p)``, so that
    ``E[y] = x``; in evaluation (``training=False``) or with ``p = 0`` it is the identity (x itself is
    returned). The gradient is the same mask times ``1 / (1 - p)`` (torch.autograd's, through the
    product). x: any shape; p in [0, 1); generator: a ``torch.Generator`` on x's device for a
    repeatable mask. See chapter 11, section "Dropout", :eq:`eq-ch11-dropout`.
    """
    _check_tensor("x", x, min_dim=0)
    p = _check_real("p", p, 0.0, 1.0, high_open=True)
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not training or p == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep.div_(1.0 - p)


class Dropout(nn.Module):
    """The module form of :func:`dropout`: active in ``train()`` mode, the identity in ``eval()``.

    ``generator`` (optional) makes the masks repeatable. See chapter 11, section "Dropout".
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        self.p = _check_real("p", p, 0.0, 1.0, high_open=True)
        self.generator = generator

    def forward(self, x):
        """:func:`dropout` of x, in training mode while the module is."""
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}"


# -- batch normalization --------------------------------------------------------------------------

def _channel_shape(x):
    # (1, C, 1, ..., 1): a per-channel vector broadcast against x (N, C, *spatial)
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _reduced_dims(x):
    return (0,) + tuple(range(2, x.dim()))


class BatchNormFunction(torch.autograd.Function):
    r"""Batch normalization in training mode, with the backward pass derived by hand.

    Forward, per channel over the ``n = N * prod(spatial)`` values of the batch:
    ``mu = mean(x)``, ``sigma^2 = mean((x - mu)^2)`` (biased), ``x_hat = (x - mu) / sqrt(sigma^2 + eps)``,
    ``y = gamma x_hat + beta``. Backward, with ``g = dL/dy`` and ``d = gamma g``:

    ``dL/dx = (d - mean(d) - x_hat mean(d x_hat)) / sqrt(sigma^2 + eps)``,
    ``dL/dgamma = sum(g x_hat)``, ``dL/dbeta = sum(g)``,

    the means over the same n values: the two subtracted terms are the gradient's flow through mu and
    through sigma^2. ``apply(x, weight, bias, eps)`` returns ``(y, mean, biased_var)``; weight and bias
    may be None. See chapter 11, section "The gradient flow through batch normalization",
    :eq:`eq-ch11-bn-backward`.
    """

    @staticmethod
    def forward(x, weight, bias, eps):
        """The normalized and scaled x, and the batch mean and biased variance per channel."""
        dims, shape = _reduced_dims(x), _channel_shape(x)
        # two-pass statistics, corrected: the mean of x - mean is the first mean's rounding error (large
        # in float32 when |mean| >> std), added back to the mean and taken out of the variance
        # (torch.var_mean, a Welford pass, is several times slower on CPU)
        mean = x.mean(dim=dims)
        centred = x - mean.view(shape)
        error = centred.mean(dim=dims)
        var = centred.square_().mean(dim=dims) - error.square()  # biased
        mean = mean + error
        del centred
        inv_std = torch.rsqrt(var + eps)
        # y = gamma (x - mu) / sigma + beta, regrouped per channel as x * scale + shift: one pass over x
        scale = inv_std * weight if weight is not None else inv_std
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        y = torch.addcmul(shift.view(shape), x, scale.view(shape))
        return y, mean, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        """Saves x, weight and the two statistics (x_hat is recomputed in the backward pass)."""
        x, weight, bias, eps = inputs
        _, mean, var = output
        ctx.eps = eps
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.save_for_backward(x, weight, mean, var)
        ctx.mark_non_differentiable(mean, var)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        """dL/dx, dL/dweight, dL/dbias from dL/dy, by :eq:`eq-ch11-bn-backward`."""
        # dL/dx = (d - mean(d) - x_hat mean(d x_hat)) / sigma with d = gamma g. gamma and sigma are constant
        # over a channel, so the two means are gamma sum(g) / n and gamma sum(g x_hat) / n, the very sums
        # that are dL/dbeta and dL/dgamma: two reductions serve all three gradients, and
        # dL/dx = k g + c (x - mu) + k0 per channel, with k = gamma / sigma, c = -k mean(g x_hat) / sigma,
        # k0 = -k mean(g), is formed in three passes without d or x_hat as whole tensors.
        x, weight, mean, var = ctx.saved_tensors
        dims, shape = _reduced_dims(x), _channel_shape(x)
        n = x.numel() // x.shape[1]
        inv_std = torch.rsqrt(var + ctx.eps)
        centred = x - mean.view(shape)
        sum_g = grad_y.sum(dim=dims)                                   # sum(g)
        sum_g_x_hat = torch.mul(grad_y, centred).sum(dim=dims) * inv_std  # sum(g x_hat)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            k = inv_std * weight if ctx.has_weight else inv_std
            grad_x = centred.mul_((-k * inv_std * sum_g_x_hat / n).view(shape))  # through sigma^2 (centred reused)
            grad_x.addcmul_(grad_y, k.view(shape))                             # d / sigma
            grad_x.add_((-k * sum_g / n).view(shape))                          # through mu
        if ctx.has_weight and ctx.needs_input_grad[1]:
            grad_weight = sum_g_x_hat
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sum_g
        return grad_x, grad_weight, grad_bias, None


def _check_channel_vector(name, v, x, allow_none=True):
    if v is None:
        if not allow_none:
            raise ValueError(f"{name} is None; it is needed in evaluation mode (training=False)")
        return
    _check_tensor(name, v)
    if v.shape != (x.shape[1],):
        raise ValueError(f"{name} must have shape ({x.shape[1]},), one value per channel of x "
                         f"(shape {tuple(x.shape)}), got {tuple(v.shape)}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    r"""Batch normalization, with ``torch.nn.functional.batch_norm``'s signature.

    x: ``(N, C)`` or ``(N, C, *spatial)``; running_mean, running_var, weight, bias: (C,) or None. Each channel
    is normalized by statistics over the batch and the spatial positions, then scaled by weight and
    shifted by bias: ``y = weight (x - mu) / sqrt(var + eps) + bias``.

    - ``training=True``: mu and var are the batch's (var biased), the backward pass is
      :class:`BatchNormFunction`'s, written by hand; running statistics that are given are updated in
      place, ``r <- (1 - momentum) r + momentum s``, with the unbiased variance ``var n / (n - 1)`` in
      running_var. At least two values per channel are needed.
    - ``training=False``: mu and var are the running statistics (both needed), an affine map of x.

    See chapter 11, section "Batch normalization", :eq:`eq-ch11-bn`, and section
    "The gradient flow through batch normalization".
    """
    _check_tensor("x", x, min_dim=2)
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    momentum = _check_real("momentum", momentum, 0.0, 1.0)
    eps = _check_real("eps", eps, 0.0)
    for name, v in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_channel_vector(name, v, x, allow_none=training or name in ("weight", "bias"))
    shape = _channel_shape(x)
    if not training:
        y = (x - running_mean.view(shape)) * torch.rsqrt(running_var.view(shape) + eps)
        if weight is not None:
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        return y
    n = x.numel() // x.shape[1]
    if n < 2:
        raise ValueError(f"batch_norm in training mode needs more than one value per channel, got x of shape "
                         f"{tuple(x.shape)} (batch size {x.shape[0]}): the batch variance would be zero")
    y, mean, var = BatchNormFunction.apply(x, weight, bias, eps)
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            running_var.mul_(1 - momentum).add_(var.to(running_var.dtype), alpha=momentum * n / (n - 1))
    return y


class BatchNorm(nn.Module):
    """Batch normalization as a layer, for inputs ``(N, C)`` or ``(N, C, *spatial)`` (nn.BatchNorm1d/2d/3d in one).

    Learned weight (ones) and bias (zeros) when ``affine``; running statistics (buffers) used in
    ``eval()`` mode, with nn.BatchNorm's buffers (``num_batches_tracked`` too, so that state_dicts are
    interchangeable). ``momentum=None`` makes the running statistics cumulative averages (the factor of
    the t-th training batch is 1 / t), as in torch. See chapter 11, section "Batch normalization".
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features = num_features
        self.eps = _check_real("eps", eps, 0.0)
        self.momentum = None if momentum is None else _check_real("momentum", momentum, 0.0, 1.0)
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        """:func:`batch_norm` of x (batch statistics in training mode, running ones in evaluation)."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          training=self.training, momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.weight is not None}"


# -- group normalization --------------------------------------------------------------------------

def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    r"""Group normalization, with ``torch.nn.functional.group_norm``'s signature.

    x: ``(N, C, *)`` with C divisible by num_groups; weight, bias: (C,) or None. The C channels of each
    sample are split into num_groups groups of C / num_groups consecutive channels; each group is
    normalized by its own mean and (biased) variance over its channels and positions, then each
    channel scaled and shifted: no statistic crosses the batch, so training and evaluation agree and
    a batch of one is fine. The backward pass is torch.autograd's through these operations. See
    chapter 11, section "Group normalization", :eq:`eq-ch11-gn`.
    """
    _check_tensor("x", x, min_dim=2)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be a positive integer, got {num_groups!r}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups}")
    channels = x.shape[1]
    if channels % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels, {channels} (x of shape "
                         f"{tuple(x.shape)})")
    eps = _check_real("eps", eps, 0.0)
    _check_channel_vector("weight", weight, x)
    _check_channel_vector("bias", bias, x)
    grouped = x.reshape(x.shape[0], num_groups, -1)
    mean = grouped.mean(dim=-1, keepdim=True)
    centred = grouped - mean
    var = centred.square().mean(dim=-1, keepdim=True)
    y = (centred * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = _channel_shape(x)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class GroupNorm(nn.Module):
    """Group normalization as a layer (nn.GroupNorm's arguments). See chapter 11, section "Group normalization"."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 \
                or num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups!r} must be a positive integer dividing num_channels={num_channels}")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps = _check_real("eps", eps, 0.0)
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x):
        """:func:`group_norm` of x."""
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.weight is not None}"
