"""The building blocks of deep networks: dense layers, convolutions and recursion (chapter 10).

Every block here is a composition of differentiable ``torch`` operations, so
``torch.autograd`` back-propagates through it with no backward pass written by
hand; what the chapter teaches is how each block computes its forward pass.
In the order of the chapter:

1. :func:`dense`, the layer ``sigma(W x + b)``.
2. The convolution from its definition, with loops: :func:`conv1d_direct`
   ``(x * u)_i = sum_j x_{i+j} u_j`` and :func:`conv2d_direct` in two
   dimensions with channels, stride and padding; the output size
   :func:`conv_output_size` ``floor((n + 2p - k) / s) + 1`` and the inputs a
   strided convolution reads (:func:`inputs_read`).
3. The same convolutions as matrix products of unfolded inputs ("im2col"),
   with the signatures and shapes of ``torch.nn.functional``: :func:`conv1d`,
   :func:`conv2d`, and the transposed convolution :func:`conv_transpose2d`,
   the adjoint of :func:`conv2d` (its matrix product is transposed and
   ``fold`` sums the overlapping patches back).
4. Recursion over inputs of varying length: :func:`rnn_cell` and :func:`rnn`.

As in deep-learning libraries, "convolution" means cross-correlation (the
kernel is not flipped): ``y_i = sum_j x_{i+j} u_j``.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "dense", "conv1d_direct", "conv2d_direct", "conv_output_size", "conv_transpose_output_size", "inputs_read",
    "conv1d", "conv2d", "conv_transpose2d", "rnn_cell", "rnn",
]


# ----------------------------------------------------------------------------- argument checks
def _check_tensor(value, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _check_like(value: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str = "input") -> None:
    """``value`` must have ``reference``'s dtype and device (torch would fail later with a message naming neither)."""
    if value.dtype != reference.dtype or value.device != reference.device:
        raise TypeError(f"{name} must have {reference_name}'s dtype and device ({reference.dtype}, {reference.device}), "
                        f"got ({value.dtype}, {value.device})")


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


def _tuple(value, name: str, dims: int, least: int, what: str) -> tuple[int, ...]:
    """An int or a sequence of ``dims`` ints, each at least ``least``, as a tuple of ``dims`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != dims:
            raise ValueError(f"{name} must be an int or a sequence of {dims} ints, got {value!r}")
        values = tuple(_int(v, name) for v in value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int or a sequence of {dims} ints, got {value!r}")
        values = (int(value),) * dims
    if any(v < least for v in values):
        raise ValueError(f"{name} must be {what} (>= {least}), got {value!r}")
    return values


def _unsupported(dilation, groups, function: str) -> None:
    if dilation not in (1, (1, 1), [1, 1], (1,), [1]):
        raise ValueError(f"{function}: dilation={dilation!r} is not implemented here (only dilation=1); "
                         f"use torch.nn.functional.{function} for dilated convolutions")
    if groups != 1:
        raise ValueError(f"{function}: groups={groups!r} is not implemented here (only groups=1); "
                         f"use torch.nn.functional.{function} for grouped convolutions")


def _check_conv(input, weight, bias, rank: int, function: str, transposed: bool = False):
    """Check ranks, channels and bias; return (input with a batch dimension, was it unbatched)."""
    _check_tensor(input, "input")
    _check_tensor(weight, "weight")
    spatial = rank - 2
    if input.dim() not in (rank - 1, rank):
        raise ValueError(f"{function}: input must have {rank} dimensions (batch, channels, {spatial} spatial) "
                         f"or {rank - 1} (unbatched), got shape {tuple(input.shape)}")
    if weight.dim() != rank:
        layout = "(in_channels, out_channels, *kernel)" if transposed else "(out_channels, in_channels, *kernel)"
        raise ValueError(f"{function}: weight must have {rank} dimensions {layout}, got shape {tuple(weight.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"{function}: input must be a floating-point tensor, got dtype {input.dtype}")
    _check_like(weight, "weight", input)
    if any(k < 1 for k in weight.shape[2:]):
        raise ValueError(f"{function}: the kernel (weight.shape[2:] = {tuple(weight.shape[2:])}) must have "
                         "every size >= 1")
    if any(n < 1 for n in input.shape[-spatial:]):
        raise ValueError(f"{function}: input must have every spatial size >= 1, got shape {tuple(input.shape)}")
    unbatched = input.dim() == rank - 1
    if unbatched:
        input = input.unsqueeze(0)
    in_channels = weight.shape[0] if transposed else weight.shape[1]
    if input.shape[1] != in_channels:
        where = "weight.shape[0]" if transposed else "weight.shape[1]"
        raise ValueError(f"{function}: input has {input.shape[1]} channels but {where} = {in_channels}; "
                         "the channel counts must match")
    out_channels = weight.shape[1] if transposed else weight.shape[0]
    if bias is not None:
        _check_tensor(bias, "bias")
        _check_like(bias, "bias", input)
        if tuple(bias.shape) != (out_channels,):
            raise ValueError(f"{function}: bias must have shape ({out_channels},) (one entry per output channel), "
                             f"got {tuple(bias.shape)}")
    return input, unbatched


def _check_fits(sizes, kernel, padding, function: str) -> None:
    for axis, (n, k, p) in enumerate(zip(sizes, kernel, padding)):
        if k > n + 2 * p:
            raise ValueError(f"{function}: the kernel ({k} along spatial axis {axis}, weight) is larger than the "
                             f"padded input ({n} + 2*{p} = {n + 2 * p}); pad more or use a smaller kernel")


# ----------------------------------------------------------------------------- dense layers
def _check_offset(b, size, like, like_name):
    """An offset b of a dense layer or a recurrent cell: None, or a vector of ``size`` entries with the dtype
    and device of ``like``."""
    if b is None:
        return
    _check_tensor(b, "b")
    _check_like(b, "b", like, like_name)
    if tuple(b.shape) != (size,):
        raise ValueError(f"b must have shape ({size},), got {tuple(b.shape)}")


def dense(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None,
          activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The dense layer ``sigma(W x + b)``, applied to each row of ``x``.

    Shapes: ``x`` (..., n_in), ``W`` (n_out, n_in), ``b`` (n_out,) -> (..., n_out), i.e. ``x @ W.T + b``
    as ``torch.nn.functional.linear``; ``activation`` (``sigma``) is applied elementwise when given.

    Explained in chapter 10, section "Dense layers".
    """
    _check_tensor(x, "x")
    _check_tensor(W, "W")
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (n_out, n_in), got shape {tuple(W.shape)}")
    _check_like(x, "x", W, "W")
    if x.dim() < 1 or x.shape[-1] != W.shape[1]:
        raise ValueError(f"x must end with n_in = W.shape[1] = {W.shape[1]} features, got shape {tuple(x.shape)}")
    _check_offset(b, W.shape[0], W, "W")
    z = x @ W.T
    if b is not None:
        z = z + b
    return z if activation is None else activation(z)


# ----------------------------------------------------------------------------- convolutions from the definition
def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """The length of a convolution's output along one axis: ``floor((n + 2 padding - kernel_size) / stride) + 1``.

    ``n`` inputs, padded with ``padding`` zeros at each end, are read by windows of ``kernel_size``
    placed every ``stride`` inputs; the last window must fit. Explained in
    chapter 10, section "Stride and padding", eq. :eq:`eq-ch10-output-size`.
    """
    n, k = _int(n, "n"), _int(kernel_size, "kernel_size")
    s, p = _int(stride, "stride"), _int(padding, "padding")
    if n < 1 or k < 1:
        raise ValueError(f"n and kernel_size must be >= 1, got n={n}, kernel_size={k}")
    if s < 1:
        raise ValueError(f"stride must be positive (>= 1), got {s}")
    if p < 0:
        raise ValueError(f"padding must be non-negative, got {p}")
    if k > n + 2 * p:
        raise ValueError(f"kernel_size={k} is larger than the padded input n + 2 padding = {n + 2 * p}")
    return (n + 2 * p - k) // s + 1


def conv_transpose_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0) -> int:
    """The length of a transposed convolution's output along one axis: ``(n - 1) stride - 2 padding + kernel_size + output_padding``.

    The convolution with the same ``kernel_size``, ``stride`` and ``padding`` sends ``stride`` input
    lengths to ``n`` (the floor of :func:`conv_output_size`); this is the smallest of them plus
    ``output_padding`` (< stride), which picks one.

    Explained in chapter 10, section "The transposed convolution is the adjoint".
    """
    n, k = _int(n, "n"), _int(kernel_size, "kernel_size")
    s, p, op = _int(stride, "stride"), _int(padding, "padding"), _int(output_padding, "output_padding")
    if s < 1:
        raise ValueError(f"stride must be positive (>= 1), got {s}")
    if p < 0 or op < 0:
        raise ValueError(f"padding and output_padding must be non-negative, got {p}, {op}")
    if op >= s:
        raise ValueError(f"output_padding must be smaller than stride ({s}), got {op}")
    m = (n - 1) * s - 2 * p + k + op
    if m < 1:
        raise ValueError(f"the output would have length {m}: padding={p} is too large for n={n}, kernel_size={k}")
    return m


def inputs_read(n: int, kernel_size: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Which of ``n`` inputs at least one output of a convolution reads, as a boolean tensor (n,).

    Output ``i`` reads the padded inputs ``i stride, ..., i stride + kernel_size - 1``, that is the
    original inputs ``i stride - padding + j``. When ``stride > kernel_size``, or when the last window
    stops short of the end, some inputs are read by no output: a strided convolution may ignore
    part of its input. For a 2-D input, the pixels read are the outer product of the two axes'
    masks.

    Explained in chapter 10, section "Stride and padding".
    """
    m = conv_output_size(n, kernel_size, stride, padding)
    read = torch.zeros(n, dtype=torch.bool)
    for i in range(m):
        start = i * stride - padding
        read[max(start, 0):max(min(start + kernel_size, n), 0)] = True
    return read


def conv1d_direct(x: torch.Tensor, u: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The 1-D convolution from its definition, one output at a time: ``y_i = sum_j x_{i s + j} u_j``.

    ``x`` (n,) is first padded with ``padding`` zeros at each end; ``u`` (k,) is the kernel; the
    output has ``conv_output_size(n, k, stride, padding)`` entries. Python loops over ``i`` and ``j``,
    for small examples only.

    Explained in chapter 10, section "Convolution in one dimension", eq. :eq:`eq-ch10-conv1d`.
    """
    _check_tensor(x, "x")
    _check_tensor(u, "u")
    _check_like(u, "u", x, "x")
    if x.dim() != 1 or u.dim() != 1:
        raise ValueError(f"x and u must be vectors, got shapes {tuple(x.shape)} and {tuple(u.shape)}")
    s = _tuple(stride, "stride", 1, 1, "positive")[0]
    p = _tuple(padding, "padding", 1, 0, "non-negative")[0]
    k = u.shape[0]
    _check_fits((x.shape[0],), (k,), (p,), "conv1d_direct")
    xp = F.pad(x, (p, p))
    m = (x.shape[0] + 2 * p - k) // s + 1
    out = []
    for i in range(m):
        total = x.new_zeros(())
        for j in range(k):
            total = total + xp[i * s + j] * u[j]
        out.append(total)
    return torch.stack(out)


def conv2d_direct(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0) -> torch.Tensor:
    """The 2-D convolution with channels from its definition, one output pixel at a time.

    ``y[n, o, i, j] = b_o + sum_{c, a, b} x_pad[n, c, i s_0 + a, j s_1 + b] w[o, c, a, b]``, with
    ``input`` (N, C_in, H, W), ``weight`` (C_out, C_in, k_h, k_w), ``bias`` (C_out,) -> (N, C_out,
    H_out, W_out) as ``torch.nn.functional.conv2d``. Loops over the output pixels: small sizes only.
    Explained in chapter 10, section "Convolution in two dimensions, with channels", eq. :eq:`eq-ch10-conv2d`.
    """
    input, unbatched = _check_conv(input, weight, bias, 4, "conv2d_direct")
    s = _tuple(stride, "stride", 2, 1, "positive")
    p = _tuple(padding, "padding", 2, 0, "non-negative")
    kernel = tuple(weight.shape[2:])
    _check_fits(input.shape[2:], kernel, p, "conv2d_direct")
    xp = F.pad(input, (p[1], p[1], p[0], p[0]))
    h_out = (input.shape[2] + 2 * p[0] - kernel[0]) // s[0] + 1
    w_out = (input.shape[3] + 2 * p[1] - kernel[1]) // s[1] + 1
    rows = []
    for i in range(h_out):
        row = []
        for j in range(w_out):
            patch = xp[:, :, i * s[0]:i * s[0] + kernel[0], j * s[1]:j * s[1] + kernel[1]]
            row.append((patch.unsqueeze(1) * weight).sum(dim=(2, 3, 4)))  # (N, C_out)
        rows.append(torch.stack(row, dim=-1))
    out = torch.stack(rows, dim=-2)
    if bias is not None:
        out = out + bias[:, None, None]
    return out[0] if unbatched else out


# ----------------------------------------------------------------------------- convolutions as matrix products
def conv1d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups=1) -> torch.Tensor:
    """The 1-D convolution as ``torch.nn.functional.conv1d``, by ``Tensor.unfold`` and one matrix product.

    ``input`` (N, C_in, L) or (C_in, L), ``weight`` (C_out, C_in, k), ``bias`` (C_out,) -> (N, C_out, L_out),
    ``L_out = floor((L + 2 padding - k) / stride) + 1``. The padded input is unfolded into its windows
    (N, C_in, L_out, k); each output is the dot product of one window with each filter, which for all
    windows at once is a product with the (C_out, C_in k) matrix of filters. ``stride`` and ``padding``
    are ints or 1-tuples; ``dilation`` and ``groups`` other than 1 are refused.

    Explained in chapter 10, section "Convolution as a matrix product".
    """
    _unsupported(dilation, groups, "conv1d")
    input, unbatched = _check_conv(input, weight, bias, 3, "conv1d")
    (s,) = _tuple(stride, "stride", 1, 1, "positive")
    (p,) = _tuple(padding, "padding", 1, 0, "non-negative")
    out_channels, in_channels, k = weight.shape
    _check_fits(input.shape[2:], (k,), (p,), "conv1d")
    windows = F.pad(input, (p, p)).unfold(2, k, s)                       # (N, C_in, L_out, k)
    n, _, length, _ = windows.shape
    columns = windows.transpose(2, 3).reshape(n, in_channels * k, length)  # (N, C_in k, L_out)
    # one (C_out, C_in k) x (C_in k, L_out) product per sample; bmm on the expanded (not copied) filters
    # gives a contiguous (N, C_out, L_out) output, where matmul's broadcasting would copy twice
    filters = weight.reshape(out_channels, in_channels * k).expand(n, out_channels, in_channels * k)
    if bias is None:
        out = torch.bmm(filters, columns)                                 # (N, C_out, L_out)
    else:  # the bias added within the product
        out = torch.baddbmm(bias[None, :, None], filters, columns)
    return out[0] if unbatched else out


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups=1) -> torch.Tensor:
    """The 2-D convolution as ``torch.nn.functional.conv2d``, by ``unfold`` (im2col) and one matrix product.

    ``input`` (N, C_in, H, W) or (C_in, H, W), ``weight`` (C_out, C_in, k_h, k_w), ``bias`` (C_out,) ->
    (N, C_out, H_out, W_out) with ``H_out = floor((H + 2 p_0 - k_h) / s_0) + 1`` and likewise ``W_out``.
    ``torch.nn.functional.unfold`` lays every (C_in, k_h, k_w) patch of the padded input out as a column
    of a (N, C_in k_h k_w, H_out W_out) matrix; the (C_out, C_in k_h k_w) matrix of filters times it is
    the output. ``stride`` and ``padding`` are ints or pairs; ``dilation`` and ``groups`` other than 1
    are refused. Back-propagation is autograd's, through ``unfold`` and the product.

    Explained in chapter 10, section "Convolution as a matrix product", eq. :eq:`eq-ch10-im2col`.
    """
    _unsupported(dilation, groups, "conv2d")
    input, unbatched = _check_conv(input, weight, bias, 4, "conv2d")
    s = _tuple(stride, "stride", 2, 1, "positive")
    p = _tuple(padding, "padding", 2, 0, "non-negative")
    out_channels, in_channels, kh, kw = weight.shape
    _check_fits(input.shape[2:], (kh, kw), p, "conv2d")
    n = input.shape[0]
    h_out = (input.shape[2] + 2 * p[0] - kh) // s[0] + 1
    w_out = (input.shape[3] + 2 * p[1] - kw) // s[1] + 1
    columns = F.unfold(input, (kh, kw), padding=p, stride=s)            # (N, C_in kh kw, H_out W_out)
    # one (C_out, C_in kh kw) x (C_in kh kw, H_out W_out) product per sample; bmm on the expanded (not
    # copied) filters gives a contiguous output, where matmul's broadcasting would copy twice
    filters = weight.reshape(out_channels, in_channels * kh * kw).expand(n, -1, -1)
    if bias is None:
        out = torch.bmm(filters, columns)                                 # (N, C_out, H_out W_out)
    else:  # the bias added within the product
        out = torch.baddbmm(bias[None, :, None], filters, columns)
    out = out.reshape(n, out_channels, h_out, w_out)
    return out[0] if unbatched else out


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups=1, dilation=1) -> torch.Tensor:
    """The transposed convolution as ``torch.nn.functional.conv_transpose2d``: the adjoint of :func:`conv2d`.

    ``input`` (N, C_in, H, W) or (C_in, H, W), ``weight`` (C_in, C_out, k_h, k_w) (the weight of a
    convolution from C_out to C_in channels), ``bias`` (C_out,) -> (N, C_out, H_out, W_out) with
    ``H_out = (H - 1) s_0 - 2 p_0 + k_h + output_padding_0``, likewise ``W_out``. Without bias it is
    the adjoint of ``conv2d(., weight, stride=stride, padding=padding)`` on (C_out, H_out, W_out)
    inputs: ``<conv2d(x), y> = <x, conv_transpose2d(y)>``. It transposes :func:`conv2d`'s two steps:
    the filters' matrix transposed times the input gives one (C_out, k_h, k_w) patch per input pixel,
    and ``torch.nn.functional.fold`` (col2im, the adjoint of ``unfold``) adds the overlapping patches
    into the output and drops the padding. Each input pixel is spread over a patch placed every
    ``stride`` pixels: the "de-convolution" that enlarges an image. ``output_padding`` (< stride) adds
    rows and columns at the end, telling apart the input sizes that a strided conv2d sends to the same
    size. ``dilation`` and ``groups`` other than 1 are refused.

    Explained in chapter 10, section "The transposed convolution is the adjoint", eq. :eq:`eq-ch10-adjoint`.
    """
    _unsupported(dilation, groups, "conv_transpose2d")
    input, unbatched = _check_conv(input, weight, bias, 4, "conv_transpose2d", transposed=True)
    s = _tuple(stride, "stride", 2, 1, "positive")
    p = _tuple(padding, "padding", 2, 0, "non-negative")
    op = _tuple(output_padding, "output_padding", 2, 0, "non-negative")
    for axis in range(2):
        if op[axis] >= s[axis]:
            raise ValueError(f"conv_transpose2d: output_padding must be smaller than stride along each axis, "
                             f"got output_padding={output_padding!r}, stride={stride!r}")
    in_channels, out_channels, kh, kw = weight.shape
    n, _, h, w = input.shape
    h_out = (h - 1) * s[0] - 2 * p[0] + kh + op[0]
    w_out = (w - 1) * s[1] - 2 * p[1] + kw + op[1]
    if h_out < 1 or w_out < 1:
        raise ValueError(f"conv_transpose2d: the output would be {h_out} x {w_out}: padding={padding!r} is too "
                         f"large for a {h} x {w} input and a {kh} x {kw} kernel")
    filters_t = weight.reshape(in_channels, out_channels * kh * kw).T.expand(n, -1, -1)
    patches = torch.bmm(filters_t, input.reshape(n, in_channels, h * w))  # (N, C_out kh kw, H W)
    out = F.fold(patches, (h_out, w_out), (kh, kw), padding=p, stride=s)  # (N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias[:, None, None]
    return out[0] if unbatched else out


# ----------------------------------------------------------------------------- recursion
def rnn_cell(x_t: torch.Tensor, h: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor,
             b: torch.Tensor | None = None,
             activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh) -> torch.Tensor:
    """One step of the recurrent cell: ``h' = activation(W_x x_t + W_h h + b)``.

    Shapes: ``x_t`` (..., n_in), ``h`` (..., n_h), ``W_x`` (n_h, n_in), ``W_h`` (n_h, n_h), ``b`` (n_h,)
    -> (..., n_h). With ``tanh`` and ``b = b_ih + b_hh`` it is one step of ``torch.nn.RNN``.

    Explained in chapter 10, section "Varying lengths by recursion", eq. :eq:`eq-ch10-rnn`.
    """
    _check_rnn_parameters(h, W_x, W_h, b)
    _check_tensor(x_t, "x_t")
    _check_like(x_t, "x_t", W_x, "W_x")
    if x_t.shape[-1:] != W_x.shape[1:]:
        raise ValueError(f"x_t must end with n_in = W_x.shape[1] = {W_x.shape[1]} features, got {tuple(x_t.shape)}")
    z = x_t @ W_x.T + h @ W_h.T
    if b is not None:
        z = z + b
    return activation(z)


def _check_rnn_parameters(h, W_x, W_h, b) -> None:
    for name, value in (("h", h), ("W_x", W_x), ("W_h", W_h)):
        _check_tensor(value, name)
    if W_x.dim() != 2 or W_h.dim() != 2 or W_h.shape[0] != W_h.shape[1] or W_x.shape[0] != W_h.shape[0]:
        raise ValueError(f"W_x must be (n_h, n_in) and W_h (n_h, n_h), got {tuple(W_x.shape)} and {tuple(W_h.shape)}")
    for name, value in (("h", h), ("W_h", W_h)):
        _check_like(value, name, W_x, "W_x")
    if h.shape[-1:] != W_h.shape[:1]:
        raise ValueError(f"h must end with n_h = W_h.shape[0] = {W_h.shape[0]} features, got {tuple(h.shape)}")
    _check_offset(b, W_h.shape[0], W_x, "W_x")


def rnn(sequence: torch.Tensor | Sequence[torch.Tensor], h0: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor,
        b: torch.Tensor | None = None, activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
        return_all: bool = False) -> torch.Tensor:
    """The recurrent network over a sequence of any length: ``h_t = rnn_cell(x_t, h_{t-1}, ...)``, t = 1..T.

    ``sequence`` is a tensor (T, ..., n_in) or a list of T tensors (..., n_in); ``h0`` (..., n_h).
    Returns ``h_T`` (..., n_h), or with ``return_all=True`` all states (T, ..., n_h) as
    ``torch.nn.RNN``'s output. The loop runs as many times as the data has steps (T = 0 returns
    ``h0``, or with ``return_all`` an empty (0, ..., n_h) tensor; the arguments are checked all the same;
    the batch dimensions of ``x_t`` and ``h0`` broadcast), and autograd records whatever ran: the same parameters serve every length.

    Explained in chapter 10, section "Varying lengths by recursion".
    """
    _check_tensor(h0, "h0")
    # the parameters are checked before the loop, which may run zero times (T = 0)
    _check_rnn_parameters(h0, W_x, W_h, b)
    empty_shape = h0.shape
    if isinstance(sequence, torch.Tensor):
        if sequence.dim() < 2:
            raise ValueError(f"sequence must be (T, ..., n_in), got shape {tuple(sequence.shape)}")
        if sequence.shape[-1] != W_x.shape[1]:
            raise ValueError(f"sequence must end with n_in = W_x.shape[1] = {W_x.shape[1]} features, "
                             f"got shape {tuple(sequence.shape)}")
        _check_like(sequence, "sequence", W_x, "W_x")
        # the states' shape, also when T = 0: the batch dimensions of x_t and h0 broadcast
        empty_shape = (*torch.broadcast_shapes(sequence.shape[1:-1], h0.shape[:-1]), h0.shape[-1])
        steps = sequence.unbind(0)
    elif isinstance(sequence, (list, tuple)):
        steps = tuple(sequence)
    else:
        raise TypeError(f"sequence must be a tensor (T, ..., n_in) or a list of tensors, got {type(sequence).__name__}")
    h, states = h0, []
    for x_t in steps:
        h = rnn_cell(x_t, h, W_x, W_h, b, activation)
        states.append(h)
    if return_all:
        return torch.stack(states) if states else h0.new_zeros((0, *empty_shape))
    return h
