"""ad_lib.layers against torch.nn.functional, torch.nn.RNN, the adjoint identity and finite differences."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import layers
from ad_lib.layers import (conv1d, conv1d_direct, conv2d, conv2d_direct, conv_output_size, conv_transpose2d,
                           conv_transpose_output_size, dense, inputs_read, rnn, rnn_cell)

F64 = torch.float64
PROPERTY = settings(max_examples=40, deadline=None)
TOL = dict(rtol=1e-12, atol=1e-12)


def randn(*shape, seed=0, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(device)


def pair(draw, low, high):
    a, b = draw(st.integers(low, high)), draw(st.integers(low, high))
    return draw(st.sampled_from([a, (a, b)]))


@st.composite
def conv2d_case(draw):
    stride, padding = pair(draw, 1, 3), pair(draw, 0, 2)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    size = tuple(draw(st.integers(max(1, k - 2 * q), 9)) for k, q in zip(kernel, p))
    return dict(n=draw(st.integers(1, 2)), c_in=draw(st.integers(1, 3)), c_out=draw(st.integers(1, 3)),
                kernel=kernel, size=size, stride=stride, padding=padding, s=s, p=p,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


# ----------------------------------------------------------------------------- dense
def test_dense_is_linear_then_activation(device):
    x, W, b = randn(5, 4, device=device), randn(3, 4, seed=1, device=device), randn(3, seed=2, device=device)
    torch.testing.assert_close(dense(x, W, b, torch.tanh), torch.tanh(F.linear(x, W, b)), **TOL)
    torch.testing.assert_close(dense(x[0], W), W @ x[0], **TOL)


# ----------------------------------------------------------------------------- output sizes
@PROPERTY
@given(n=st.integers(1, 30), k=st.integers(1, 8), s=st.integers(1, 5), p=st.integers(0, 4))
def test_output_size_is_the_length_of_torchs_output(n, k, s, p):
    if k > n + 2 * p:
        with pytest.raises(ValueError, match="kernel_size"):
            conv_output_size(n, k, s, p)
        return
    m = conv_output_size(n, k, s, p)
    assert m == F.conv1d(torch.zeros(1, 1, n), torch.zeros(1, 1, k), stride=s, padding=p).shape[-1]
    read = inputs_read(n, k, s, p)
    # an input is read iff some output's gradient reaches it
    x = torch.zeros(1, 1, n, requires_grad=True)
    F.conv1d(x, torch.ones(1, 1, k), stride=s, padding=p).sum().backward()
    assert torch.equal(read, x.grad[0, 0] != 0)
    for op in range(s):
        assert conv_transpose_output_size(m, k, s, p, op) == F.conv_transpose1d(
            torch.zeros(1, 1, m), torch.zeros(1, 1, k), stride=s, padding=p, output_padding=op).shape[-1] \
            if (m - 1) * s - 2 * p + k + op >= 1 else True


def test_a_stride_larger_than_the_kernel_skips_inputs():
    assert inputs_read(7, 2, 3).tolist() == [True, True, False, True, True, False, False]
    assert inputs_read(8, 3, 1, 1).all()


# ----------------------------------------------------------------------------- the definition
@PROPERTY
@given(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2), seed=st.integers(0, 999))
def test_conv1d_direct_is_the_definition(n, k, s, p, seed):
    if k > n + 2 * p:
        return
    x, u = randn(n, seed=seed), randn(k, seed=seed + 1)
    expected = F.conv1d(x[None, None], u[None, None], stride=s, padding=p)[0, 0]
    torch.testing.assert_close(conv1d_direct(x, u, s, p), expected, **TOL)


def test_conv1d_direct_by_hand():
    # y_i = sum_j x_{i+j} u_j, written out for a 5-vector and a 2-kernel
    x, u = torch.tensor([1., 2., 3., 4., 5.], dtype=F64), torch.tensor([1., -1.], dtype=F64)
    assert conv1d_direct(x, u).tolist() == [-1., -1., -1., -1.]


@settings(max_examples=15, deadline=None)
@given(case=conv2d_case())
def test_conv2d_direct_matches_torch(case):
    x = randn(case["n"], case["c_in"], *case["size"], seed=case["seed"])
    w = randn(case["c_out"], case["c_in"], *case["kernel"], seed=case["seed"] + 1)
    b = randn(case["c_out"], seed=case["seed"] + 2) if case["bias"] else None
    torch.testing.assert_close(conv2d_direct(x, w, b, case["stride"], case["padding"]),
                               F.conv2d(x, w, b, case["stride"], case["padding"]), **TOL)


# ----------------------------------------------------------------------------- unfold and matrix products
@PROPERTY
@given(n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3), length=st.integers(1, 12),
       k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2), bias=st.booleans(), seed=st.integers(0, 999))
def test_conv1d_matches_torch(n, c_in, c_out, length, k, s, p, bias, seed):
    if k > length + 2 * p:
        return
    x, w = randn(n, c_in, length, seed=seed), randn(c_out, c_in, k, seed=seed + 1)
    b = randn(c_out, seed=seed + 2) if bias else None
    torch.testing.assert_close(conv1d(x, w, b, s, p), F.conv1d(x, w, b, s, p), **TOL)
    torch.testing.assert_close(conv1d(x[0], w, b, (s,), (p,)), F.conv1d(x[0], w, b, s, p), **TOL)


@PROPERTY
@given(case=conv2d_case())
def test_conv2d_matches_torch(case):
    x = randn(case["n"], case["c_in"], *case["size"], seed=case["seed"])
    w = randn(case["c_out"], case["c_in"], *case["kernel"], seed=case["seed"] + 1)
    b = randn(case["c_out"], seed=case["seed"] + 2) if case["bias"] else None
    torch.testing.assert_close(conv2d(x, w, b, case["stride"], case["padding"]),
                               F.conv2d(x, w, b, case["stride"], case["padding"]), **TOL)


@PROPERTY
@given(case=conv2d_case(), data=st.data())
def test_conv_transpose2d_matches_torch_and_is_the_adjoint(case, data):
    s, p = case["s"], case["p"]
    # the transposed convolution's input is a conv2d output of shape (n, c_out, h, w)
    h, w = (conv_output_size(n, k, a, q) for n, k, a, q in zip(case["size"], case["kernel"], s, p))
    op = tuple(data.draw(st.integers(0, a - 1)) for a in s)
    out_size = tuple((m - 1) * a - 2 * q + k + o for m, a, q, k, o in zip((h, w), s, p, case["kernel"], op))
    if min(out_size) < 1 or any(k > m + 2 * q for k, m, q in zip(case["kernel"], out_size, p)):
        return
    weight = randn(case["c_out"], case["c_in"], *case["kernel"], seed=case["seed"] + 1)
    y = randn(case["n"], case["c_out"], h, w, seed=case["seed"] + 3)
    b = randn(case["c_in"], seed=case["seed"] + 2) if case["bias"] else None
    ours = conv_transpose2d(y, weight, b, case["stride"], case["padding"], op)
    torch.testing.assert_close(ours, F.conv_transpose2d(y, weight, b, case["stride"], case["padding"], op), **TOL)
    # <conv2d(x), y> = <x, conv_transpose2d(y)> for x of the transposed convolution's output shape
    x = randn(case["n"], case["c_in"], *out_size, seed=case["seed"] + 4)
    cy = conv2d(x, weight, None, case["stride"], case["padding"])
    assert cy.shape == y.shape
    lhs = (cy * y).sum()
    rhs = (x * conv_transpose2d(y, weight, None, case["stride"], case["padding"], op)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-11)


def test_convolutions_on_the_device(device):
    x, w, b = randn(2, 3, 10, 9, device=device), randn(4, 3, 3, 2, seed=1, device=device), randn(4, seed=2, device=device)
    out = conv2d(x, w, b, stride=(2, 1), padding=1)
    assert out.device.type == device.type and out.dtype == F64
    torch.testing.assert_close(out, F.conv2d(x, w, b, stride=(2, 1), padding=1), **TOL)
    torch.testing.assert_close(conv_transpose2d(out, w, None, (2, 1), 1, (1, 0)),
                               F.conv_transpose2d(out, w, None, (2, 1), 1, (1, 0)), **TOL)
    x1, w1 = randn(2, 3, 10, device=device), randn(4, 3, 3, seed=1, device=device)
    torch.testing.assert_close(conv1d(x1, w1, b, 2, 1), F.conv1d(x1, w1, b, 2, 1), **TOL)
    assert conv2d(x.float(), w.float()).dtype == torch.float32


# ----------------------------------------------------------------------------- gradients through autograd
@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((2, 3), (0, 2))])
def test_conv2d_gradients_are_torchs(device, stride, padding):
    leaves = [randn(2, 3, 9, 8, device=device).requires_grad_(), randn(4, 3, 3, 3, seed=1, device=device).requires_grad_(),
              randn(4, seed=2, device=device).requires_grad_()]
    seed = randn(*F.conv2d(*leaves, stride=stride, padding=padding).shape, seed=3, device=device)
    ours = torch.autograd.grad((conv2d(*leaves, stride=stride, padding=padding) * seed).sum(), leaves)
    theirs = torch.autograd.grad((F.conv2d(*leaves, stride=stride, padding=padding) * seed).sum(), leaves)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_gradcheck_of_the_transposed_convolution_and_conv1d():
    y, w, b = randn(1, 2, 3, 3).requires_grad_(), randn(2, 3, 2, 3, seed=1).requires_grad_(), randn(3, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: conv_transpose2d(*a, stride=2, padding=(1, 0), output_padding=1), (y, w, b))
    x1, w1 = randn(2, 2, 7).requires_grad_(), randn(3, 2, 3, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: conv1d(*a, stride=2, padding=1), (x1, w1))


# ----------------------------------------------------------------------------- recursion
def rnn_parameters(n_in=3, n_h=4, device="cpu"):
    return [randn(n_h, n_in, seed=10, device=device) * 0.5, randn(n_h, n_h, seed=11, device=device) * 0.5,
            randn(n_h, seed=12, device=device) * 0.1]


def test_rnn_is_torchs_rnn(device):
    W_x, W_h, b = rnn_parameters(device=device)
    reference = torch.nn.RNN(3, 4, nonlinearity="tanh").to(device=device, dtype=F64)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(W_x)
        reference.weight_hh_l0.copy_(W_h)
        reference.bias_ih_l0.copy_(b)
        reference.bias_hh_l0.zero_()
    for length in (1, 4, 9):
        seq, h0 = randn(length, 2, 3, seed=length, device=device), randn(2, 4, seed=20, device=device)
        out, h_T = reference(seq, h0[None])
        torch.testing.assert_close(rnn(seq, h0, W_x, W_h, b, return_all=True), out, **TOL)
        torch.testing.assert_close(rnn(list(seq), h0, W_x, W_h, b), h_T[0], **TOL)
    assert torch.equal(rnn(torch.zeros(0, 2, 3, dtype=F64, device=device), h0, W_x, W_h, b), h0)


@pytest.mark.parametrize("length", [1, 3, 7])
def test_rnn_gradient_through_the_data_dependent_loop_is_the_finite_difference(length):
    params = [p.requires_grad_() for p in rnn_parameters()]
    seq, h0 = randn(length, 3, seed=length), randn(4, seed=20)

    def loss(*ps):
        return (rnn(seq, h0, *ps) ** 2).sum()

    grads = torch.autograd.grad(loss(*params), params)
    eps = 1e-6
    for index, (p, g) in enumerate(zip(params, grads)):
        direction = randn(*p.shape, seed=30 + index)
        shifted = [q.detach() + (eps * direction if i == index else 0) for i, q in enumerate(params)]
        back = [q.detach() - (eps * direction if i == index else 0) for i, q in enumerate(params)]
        fd = (loss(*shifted) - loss(*back)) / (2 * eps)
        torch.testing.assert_close((g * direction).sum(), fd, rtol=1e-7, atol=1e-9)
    assert torch.autograd.gradcheck(loss, tuple(params))


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_with_the_arguments_name():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="kernel.*larger than the padded input"):
        conv2d(randn(1, 2, 2, 5), w)
    with pytest.raises(ValueError, match="kernel.*larger than the padded input"):
        conv1d(randn(1, 2, 2), randn(3, 2, 4), padding=0)
    conv2d(randn(1, 2, 2, 5), w, padding=1)  # fits once padded
    with pytest.raises(ValueError, match="channels"):
        conv2d(randn(1, 4, 5, 5), w)
    with pytest.raises(ValueError, match="channels"):
        conv_transpose2d(randn(1, 2, 5, 5), w)
    with pytest.raises(ValueError, match="input must have 4 dimensions"):
        conv2d(randn(5, 5), w)
    with pytest.raises(ValueError, match="weight must have 4 dimensions"):
        conv2d(x, randn(3, 2, 3))
    with pytest.raises(ValueError, match="input must have 3 dimensions"):
        conv1d(x, randn(3, 2, 3))
    with pytest.raises(ValueError, match="stride must be positive"):
        conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="stride must be positive"):
        conv1d(randn(1, 2, 5), randn(3, 2, 3), stride=-1)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        conv2d(x, w, padding=(1, -1))
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        conv_transpose2d(randn(1, 3, 4, 4), w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        conv_transpose2d(randn(1, 3, 4, 4), w, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="bias"):
        conv2d(x, w, randn(2))
    with pytest.raises(TypeError, match="stride"):
        conv2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match="stride"):
        conv2d(x, w, stride=(1, 1, 1))
    with pytest.raises(TypeError, match="input"):
        conv2d(x.numpy(), w)
    with pytest.raises(ValueError, match="dilation"):
        conv2d(x, w, dilation=2)
    with pytest.raises(ValueError, match="groups"):
        conv_transpose2d(randn(1, 3, 4, 4), w, groups=3)
    with pytest.raises(ValueError, match="too large"):
        conv_transpose2d(randn(1, 3, 1, 1), randn(3, 2, 1, 1), padding=1)
    with pytest.raises(ValueError, match="x_t"):
        rnn_cell(randn(2, 5), randn(2, 4), *rnn_parameters())
    with pytest.raises(TypeError, match="sequence"):
        rnn(3, randn(4), *rnn_parameters())
    with pytest.raises(ValueError, match="W"):
        dense(randn(2, 3), randn(4, 5))


def test_public_names_are_documented_with_their_section():
    for name in layers.__all__:
        doc = getattr(layers, name).__doc__
        assert doc and 'chapter 10, section "' in doc, name


# ----------------------------------------------------------------------------- review (rev10): edge cases and regressions
def test_layouts_dtypes_and_edge_shapes_match_torch(device):
    x, w, b = randn(2, 3, 7, 9, device=device), randn(4, 3, 3, 2, seed=1, device=device), randn(4, seed=2, device=device)
    cases = [
        (x.to(memory_format=torch.channels_last), w, b, 1, 0),            # channels_last input
        (randn(2, 7, 3, 9, device=device).transpose(1, 2), w, b, (2, 1), (1, 0)),  # non-contiguous input
        (x, randn(3, 4, 3, 2, seed=3, device=device).transpose(0, 1), b, 1, 1),    # non-contiguous weight
        (x, randn(5, 3, 1, 1, seed=4, device=device), None, 3, 2),        # 1 x 1 kernel
        (x, w, b, (5, 4), (1, 2)),                                        # stride larger than the kernel
        (x, randn(4, 3, 9, 11, seed=5, device=device), b, 1, 1),          # kernel == padded input: one output pixel
        (x[0], w, b, 2, 1),                                               # unbatched
        (x[:0], w, b, 1, 1),                                              # empty batch
    ]
    for input, weight, bias, stride, padding in cases:
        torch.testing.assert_close(conv2d(input, weight, bias, stride, padding),
                                   F.conv2d(input, weight, bias, stride, padding), **TOL)
    # no output channels (torch.nn.functional refuses them): an empty output of the right shape
    assert conv2d(x, randn(0, 3, 3, 2, device=device)).shape == (2, 0, 5, 8)
    x32, w32, b32 = x.float(), w.float(), b.float()
    out = conv2d(x32, w32, b32, 2, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.conv2d(x32, w32, b32, 2, 1), rtol=1e-5, atol=1e-5)
    y = randn(2, 4, 4, 5, device=device)
    wt = randn(4, 3, 3, 2, seed=6, device=device)
    for stride, padding, output_padding in [(4, 0, 3), ((3, 2), (0, 1), (2, 1)), ((2, 3), 0, (1, 2))]:
        torch.testing.assert_close(
            conv_transpose2d(y.to(memory_format=torch.channels_last), wt, None, stride, padding, output_padding),
            F.conv_transpose2d(y, wt, None, stride, padding, output_padding), **TOL)
    torch.testing.assert_close(conv_transpose2d(y[0], wt, None, 2, 1, 1), F.conv_transpose2d(y[0], wt, None, 2, 1, 1), **TOL)
    torch.testing.assert_close(conv1d(x[:, :, :, 0].transpose(1, 2).contiguous().transpose(1, 2), w[:, :, :, 0], b, 2, 1),
                               F.conv1d(x[:, :, :, 0], w[:, :, :, 0], b, 2, 1), **TOL)


def test_double_backward_through_the_convolutions():
    # conv2d, conv1d and conv_transpose2d are built of differentiable operations: second derivatives work too
    x, w, b = randn(1, 2, 5, 4).requires_grad_(), randn(3, 2, 2, 2, seed=1).requires_grad_(), randn(3, seed=2).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda *a: conv2d(*a, stride=(2, 1), padding=(1, 0)), (x, w, b))
    y, wt = randn(1, 2, 3, 4, seed=3).requires_grad_(), randn(2, 3, 2, 2, seed=4).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda *a: conv_transpose2d(*a, stride=(2, 1), padding=(1, 0), output_padding=(1, 0)),
                                        (y, wt, b))
    x1, w1 = randn(1, 2, 7, seed=5).requires_grad_(), randn(3, 2, 3, seed=6).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda *a: conv1d(*a, stride=2, padding=1), (x1, w1, b))
    # and equal torch's second derivatives
    leaves = [randn(2, 3, 7, 6, seed=7).requires_grad_(), randn(4, 3, 3, 3, seed=8).requires_grad_()]
    seconds = []
    for conv in (conv2d, F.conv2d):
        grads = torch.autograd.grad(conv(*leaves, stride=2, padding=1).square().sum(), leaves, create_graph=True)
        seconds.append(torch.autograd.grad(sum(g.square().sum() for g in grads), leaves))
    for a, c in zip(*seconds):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-10)


def test_dtype_device_and_size_mismatches_are_refused_by_name():
    x, w, b = randn(1, 2, 5, 5), randn(3, 2, 3, 3), randn(3)
    with pytest.raises(TypeError, match="weight must have input's dtype and device"):
        conv2d(x.float(), w)
    with pytest.raises(TypeError, match="bias must have input's dtype"):
        conv2d(x, w, b.float())                        # was silently promoted to float64
    with pytest.raises(TypeError, match="weight must have input's dtype and device"):
        conv2d(x, w.to("meta"))                        # was accepted, returning a meta tensor
    with pytest.raises(TypeError, match="weight must have input's dtype"):
        conv_transpose2d(randn(1, 3, 4, 4), w.float())
    with pytest.raises(TypeError, match="weight must have input's dtype"):
        conv1d(randn(1, 2, 5).float(), randn(3, 2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        conv2d(torch.ones(1, 2, 5, 5, dtype=torch.long), torch.ones(3, 2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel.*>= 1"):
        conv1d(randn(1, 2, 5), randn(3, 2, 0))        # was accepted, with an output longer than the input
    with pytest.raises(ValueError, match="kernel.*>= 1"):
        conv_transpose2d(randn(1, 3, 4, 4), randn(3, 2, 0, 2))
    with pytest.raises(ValueError, match="spatial size"):
        conv_transpose2d(randn(1, 3, 0, 4), randn(3, 2, 2, 2))
    with pytest.raises(TypeError, match="u must have x's dtype"):
        conv1d_direct(randn(5), randn(2).float())
    with pytest.raises(TypeError, match="x must have W's dtype"):
        dense(randn(2, 4).float(), randn(3, 4))
    W_x, W_h, bias = rnn_parameters()
    with pytest.raises(TypeError, match="sequence must have W_x's dtype"):
        rnn(randn(3, 3).float(), randn(4), W_x, W_h, bias)
    with pytest.raises(TypeError, match="h must have W_x's dtype"):
        rnn_cell(randn(3), randn(4).float(), W_x, W_h, bias)


def test_rnn_with_no_steps_still_checks_its_arguments_and_keeps_the_batch_shape():
    W_x, W_h, b = rnn_parameters()
    # T = 0 used to skip every check: the loop never ran
    with pytest.raises(ValueError, match="W_x must be"):
        rnn(torch.zeros(0, 3, dtype=F64), randn(4), W_x, randn(5, 5, seed=1), b)
    with pytest.raises(ValueError, match="sequence must end with n_in"):
        rnn(torch.zeros(0, 2, 5, dtype=F64), randn(2, 4), W_x, W_h, b)
    with pytest.raises(ValueError, match="h must end with n_h"):
        rnn([], randn(3), W_x, W_h, b)
    # batched inputs with one shared initial state: the states' shape is the broadcast one, also for T = 0
    h0 = randn(4, seed=2)
    for T in (0, 1, 3):
        states = rnn(randn(T, 2, 3, seed=T), h0, W_x, W_h, b, return_all=True)
        assert states.shape == (T, 2, 4)
    assert rnn(randn(0, 2, 3), h0, W_x, W_h, b).shape == (4,)      # h_T = h_0 when T = 0, as documented
    states = rnn(randn(5, 2, 3, seed=9), h0, W_x, W_h, b, return_all=True)
    torch.testing.assert_close(states, rnn(randn(5, 2, 3, seed=9), h0.expand(2, 4), W_x, W_h, b, return_all=True), **TOL)


def test_conv2d_forward_makes_no_copy_beyond_unfold():
    # regression: conv2d used to multiply (C_out, K) @ (N, K, L) with matmul's broadcasting, which copied the
    # unfolded columns and then the output (4x slower than unfold + product); bmm on expanded filters copies
    # nothing (baddbmm writes the bias into the output once). Counted, not timed.
    from torch.profiler import profile
    x, w, b = randn(4, 3, 8, 8), randn(5, 3, 3, 3, seed=1), randn(5, seed=2)
    for call, copies in ((lambda: conv2d(x, w, None, 1, 1), 0), (lambda: conv2d(x, w, b, 1, 1), 1),
                         (lambda: conv_transpose2d(randn(4, 5, 6, 6), w, None, 2, 1), 0)):
        with torch.no_grad(), profile() as prof:
            call()
        assert sum(e.name in ("aten::copy_", "aten::clone") for e in prof.events()) == copies
