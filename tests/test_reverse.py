"""Reverse mode (ad_lib.reverse) against torch.autograd/torch.func, closed forms and the slides' table."""

import math

import pytest
import torch
from expressions import evaluate, expressions
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import ops
from ad_lib.forward import jacfwd, jvp
from ad_lib.reverse import Value, grad, hvp, jacrev, vjp

F64 = torch.float64


def test_the_slides_reverse_trace_at_2_5():
    f = lambda x1, x2: ops.log(x1) + x1 * x2 - ops.sin(x2)  # noqa: E731
    x1_bar, x2_bar = grad(f, argnums=(0, 1))(2.0, 5.0)
    assert x1_bar.item() == pytest.approx(5.5, rel=1e-15)
    assert x2_bar.item() == pytest.approx(2 - math.cos(5), rel=1e-15)
    assert round(x2_bar.item(), 4) == 1.7163  # the table's value


# ------------------------------------------------------------------ the scalar engine


def test_value_engine_on_the_notes_example():
    x, y = Value(2.0), Value(3.0)
    b = y * x.log()
    f = b + b**0.5  # y log x + sqrt(y log x): b has two children
    f.backward()
    s = 1 + 1 / (2 * math.sqrt(3 * math.log(2)))
    assert x.grad == pytest.approx(3 / 2 * s, rel=1e-14)
    assert y.grad == pytest.approx(math.log(2) * s, rel=1e-14)


@settings(max_examples=50, deadline=None)
@given(a=st.floats(0.2, 3), b=st.floats(-2, 2), c=st.floats(-2, 2))
def test_value_engine_matches_torch_autograd(a, b, c):
    def program(x, y, z, exp, log, tanh, relu):
        u = x * y + 3.0 - z / (1.5 + x)
        v = exp(tanh(u)) + log(x) * 2.0 - (1.0 - y) ** 2 + relu(z - y)
        return v * u + 1.0 / x

    va, vb, vc = Value(a), Value(b), Value(c)
    out = program(va, vb, vc, Value.exp, Value.log, Value.tanh, Value.relu)
    out.backward()
    ta, tb, tc = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (a, b, c))
    reference = program(ta, tb, tc, torch.exp, torch.log, torch.tanh, torch.relu)
    reference.backward()
    assert out.data == pytest.approx(reference.item(), rel=1e-12, abs=1e-12)
    for mine, theirs in ((va, ta), (vb, tb), (vc, tc)):
        assert mine.grad == pytest.approx(theirs.grad.item(), rel=1e-10, abs=1e-10)


def test_value_backward_twice_accumulates_and_zero_grad_resets():
    x = Value(3.0)
    y = x * x
    y.backward()
    assert x.grad == 6.0
    y.backward()  # as documented: gradients add up, as in PyTorch
    assert x.grad == 12.0
    y.zero_grad()
    y.backward()
    assert x.grad == 6.0


@pytest.mark.parametrize("op", ["rsub", "rtruediv", "rpow"])
@pytest.mark.parametrize("a", [0.5, 3.0, -1.5])
def test_value_with_a_number_on_the_left_matches_torch(op, a):
    program = {"rsub": lambda v: 2 - v, "rtruediv": lambda v: 2 / v, "rpow": lambda v: 2**v}[op]
    v = Value(a)
    out = program(v)
    out.backward()
    t = torch.tensor(a, dtype=F64, requires_grad=True)
    reference = program(t)
    reference.backward()
    assert out.data == pytest.approx(reference.item(), rel=1e-14)
    assert v.grad == pytest.approx(t.grad.item(), rel=1e-14)


def test_value_powers_at_the_edges_of_their_domain():
    with pytest.raises(ValueError, match="negative base.*non-integer exponent"):
        Value(-8.0) ** (1 / 3)
    assert (Value(-2.0) ** 3).data == -8.0  # an integer exponent is fine
    with pytest.raises(ValueError, match="base > 0"):
        0.0 ** Value(2.0)
    with pytest.raises(ValueError, match="base > 0"):
        (-2) ** Value(2.0)
    # d/dx sqrt(x) at 0 is infinite: inf, as torch.autograd gives
    x = Value(0.0)
    (x**0.5).backward()
    t = torch.tensor(0.0, dtype=F64, requires_grad=True)
    (t**0.5).backward()
    assert x.grad == t.grad.item() == math.inf
    # exponent 0: derivative 0 at base 0, as torch
    x = Value(0.0)
    (x**0).backward()
    assert x.grad == 0.0


def test_value_errors():
    with pytest.raises(TypeError, match="constant real exponent"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(ValueError, match="non-positive"):
        Value(-1.0).log()


# ------------------------------------------------------------------ the tensor tape


@settings(max_examples=60, deadline=None)
@given(expression=expressions, seed=st.integers(0, 2**31 - 1))
def test_random_programs_match_torch_func_vjp(expression, seed):
    g = torch.Generator().manual_seed(seed)
    x, y, u = (torch.randn(3, dtype=F64, generator=g) for _ in range(3))
    program = lambda a, b: evaluate(expression, a, b)  # noqa: E731
    out, vjp_fn = vjp(program, x, y)
    reference_out, reference_vjp = torch.func.vjp(program, x, y)
    torch.testing.assert_close(out, reference_out)
    for mine, theirs in zip(vjp_fn(u), reference_vjp(u)):
        torch.testing.assert_close(mine, theirs)


@settings(max_examples=40, deadline=None)
@given(expression=expressions, seed=st.integers(0, 2**31 - 1))
def test_adjoint_identity_on_random_programs(expression, seed):
    """<u, J v> (forward mode) = <J^T u, v> (reverse mode), two independent passes."""
    g = torch.Generator().manual_seed(seed)
    x, y, vx, vy, u = (torch.randn(3, dtype=F64, generator=g) for _ in range(5))
    program = lambda a, b: evaluate(expression, a, b)  # noqa: E731
    _, Jv = jvp(program, (x, y), (vx, vy))
    _, vjp_fn = vjp(program, x, y)
    ux, uy = vjp_fn(u)
    torch.testing.assert_close((u * Jv).sum(), (ux * vx).sum() + (uy * vy).sum())


def test_shared_subexpressions_accumulate():
    def f(x):
        y = x * x  # used three times below
        return ops.sum(y + y * y + ops.sin(y))

    x = torch.linspace(-1, 1, 5, dtype=F64)
    expected = 2 * x + 4 * x**3 + 2 * x * torch.cos(x * x)
    torch.testing.assert_close(grad(f)(x), expected)


def test_vjp_fn_can_be_called_again_with_the_same_result():
    x = torch.randn(4, dtype=F64)
    _, vjp_fn = vjp(lambda a: ops.exp(a) * a, x)
    u = torch.randn(4, dtype=F64)
    first = vjp_fn(u)[0].clone()
    assert torch.equal(vjp_fn(2 * u)[0], 2 * first)
    assert torch.equal(vjp_fn(u)[0], first)


def test_mlp_gradient_matches_torch_autograd(device):
    g = torch.Generator().manual_seed(0)
    sizes = [8, 16, 16, 3]
    params = [p.to(device) for i in range(3) for p in (
        torch.randn(sizes[i], sizes[i + 1], dtype=F64, generator=g) / math.sqrt(sizes[i]),
        torch.randn(sizes[i + 1], dtype=F64, generator=g),
    )]
    X = torch.randn(32, 8, dtype=F64, generator=g).to(device)
    Y = torch.randn(32, 3, dtype=F64, generator=g).to(device)

    def loss(*ps):
        h = X
        for i in range(3):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < 2:
                h = ops.relu(h)
        return ops.mean((h - Y) ** 2)

    ours = grad(loss, argnums=tuple(range(6)))(*params)
    torch_params = [p.clone().requires_grad_() for p in params]
    loss(*torch_params).backward()
    for mine, p in zip(ours, torch_params):
        torch.testing.assert_close(mine, p.grad)


@pytest.mark.parametrize("vectorize", [True, False])
def test_jacrev_matches_torch(device, vectorize):
    W = torch.randn(4, 6, dtype=F64, device=device)
    f = lambda X: ops.tanh(W @ X.reshape(6)) * ops.sum(X * X)  # noqa: E731
    f_torch = lambda X: torch.tanh(W @ X.reshape(6)) * (X * X).sum()  # noqa: E731
    X = torch.randn(2, 3, dtype=F64, device=device)
    J = jacrev(f, vectorize=vectorize)(X)
    assert J.shape == (4, 2, 3)
    torch.testing.assert_close(J, torch.func.jacrev(f_torch)(X))


@pytest.mark.parametrize("jacobian, reference", [(jacrev, torch.func.jacrev), (jacfwd, torch.func.jacfwd)])
@pytest.mark.parametrize("case", ["scalar->scalar", "vector->scalar", "scalar->vector", "vector->vector"])
def test_jacobians_of_scalars_and_vectors_match_torch_func(jacobian, reference, case):
    W = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=F64)
    f, f_torch, x = {
        "scalar->scalar": (ops.sin, torch.sin, torch.tensor(0.5, dtype=F64)),
        "vector->scalar": (lambda v: ops.sum(ops.sin(v)), lambda v: torch.sin(v).sum(), torch.tensor([0.5, -1.0, 2.0], dtype=F64)),
        "scalar->vector": (lambda s: ops.sin(s * W[0]), lambda s: torch.sin(s * W[0]), torch.tensor(0.5, dtype=F64)),
        "vector->vector": (lambda v: ops.tanh(W @ v), lambda v: torch.tanh(W @ v), torch.tensor([0.5, -1.0, 2.0], dtype=F64)),
    }[case]
    J = jacobian(f)(x)
    expected = reference(f_torch)(x)
    assert J.shape == expected.shape
    torch.testing.assert_close(J, expected)


@pytest.mark.parametrize("vectorize", [True, False])
def test_jacfwd_of_jacrev_is_the_hessian(vectorize):
    A = torch.tensor([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8]], dtype=F64)
    f = lambda x: ops.sum(ops.tanh(A @ x) ** 3) + ops.sum(x * x) * ops.sum(ops.exp(x))  # noqa: E731
    f_torch = lambda x: (torch.tanh(A @ x) ** 3).sum() + (x * x).sum() * torch.exp(x).sum()  # noqa: E731
    x = torch.tensor([0.3, -0.7, 1.1], dtype=F64)
    H = jacfwd(jacrev(f, vectorize=vectorize), vectorize=vectorize)(x)
    torch.testing.assert_close(H, torch.func.hessian(f_torch)(x))


def test_hessian_vector_product_matches_torch_func(device):
    A = torch.randn(5, 5, dtype=F64, device=device)
    f = lambda x: ops.sum(ops.tanh(A @ x) ** 3) + ops.sum(x * x) * ops.sum(ops.exp(x))  # noqa: E731
    f_torch = lambda x: (torch.tanh(A @ x) ** 3).sum() + (x * x).sum() * torch.exp(x).sum()  # noqa: E731
    x, v = torch.randn(5, dtype=F64, device=device), torch.randn(5, dtype=F64, device=device)
    reference = torch.func.jvp(torch.func.grad(f_torch), (x,), (v,))[1]
    torch.testing.assert_close(hvp(f, x, v), reference)
    torch.testing.assert_close(hvp(f, x, v), torch.autograd.functional.hessian(f_torch, x) @ v)


def test_bad_input_is_explained():
    x = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match=r"grad needs f to return a scalar.*\(3,\)"):
        grad(ops.exp)(x)
    _, vjp_fn = vjp(ops.exp, x)
    with pytest.raises(ValueError, match=r"cotangent has shape \(2,\) but f's output has shape \(3,\)"):
        vjp_fn(torch.ones(2, dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        vjp(ops.exp, torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"torch\.sin"):
        grad(lambda a: torch.sin(a).sum())(x)
    with pytest.raises(TypeError, match="argnums"):
        grad(ops.exp, argnums="0")
    with pytest.raises(ValueError, match="at least one primal"):
        vjp(ops.exp)
    with pytest.raises(ValueError, match=r"v has shape \(2,\) but x has shape \(3,\)"):
        hvp(lambda a: ops.sum(a * a), x, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match=r"v has dtype torch.float32"):
        hvp(lambda a: ops.sum(a * a), x, torch.ones(3, dtype=torch.float32))
